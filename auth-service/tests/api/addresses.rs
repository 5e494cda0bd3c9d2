//! Client addresses behind the proxy: taken `xff_num_trusted_hops` entries
//! from the right of `x-forwarded-for` (the address the proxy saw), so one
//! client's failures lock out that client only and a forged first hop changes
//! nothing.

use serde_json::json;

use crate::common::*;

/// A failed sign-in as a client the proxy saw at `seen_by_proxy`, having written `forged` itself.
async fn fail_signin(app: &TestApp, email: &str, forged: Option<&str>, seen_by_proxy: &str) -> u16 {
    let xff = match forged {
        Some(f) => format!("{f}, {seen_by_proxy}"),
        None => seen_by_proxy.to_owned(),
    };
    app.http
        .post(app.url("/v1/auth/signin"))
        .header("x-forwarded-for", xff)
        .json(&json!({"email": email, "password": "wrong password!!"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn behind_one_proxy(c: &mut authflow_auth_service::config::Config) {
    c.server.xff_num_trusted_hops = 1;
    c.throttle.ip_max_failures = 3;
    c.throttle.account_max_failures = 1000;
}

#[tokio::test]
async fn rotating_a_forged_first_hop_does_not_bypass_the_address_limit() {
    let app = spawn_app_with(behind_one_proxy).await;
    for i in 0..3 {
        let status = fail_signin(&app, &format!("a{i}@example.com"), Some(&format!("198.51.100.{i}")), "203.0.113.5").await;
        assert_eq!(status, 401);
    }
    let status = fail_signin(&app, "a9@example.com", Some("198.51.100.99"), "203.0.113.5").await;
    assert_eq!(status, 429, "the address the proxy saw is locked, whatever the client wrote before it");
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    assert!(log.iter().all(|e| e.ip.as_deref() == Some("203.0.113.5")), "forged addresses in the audit log: {log:?}");
}

#[tokio::test]
async fn one_clients_failures_do_not_lock_out_the_others() {
    let app = spawn_app_with(behind_one_proxy).await;
    for i in 0..4 {
        fail_signin(&app, &format!("b{i}@example.com"), None, "203.0.113.5").await;
    }
    assert_eq!(fail_signin(&app, "b9@example.com", None, "203.0.113.5").await, 429);
    // Everyone else behind the same proxy still gets an answer.
    assert_eq!(fail_signin(&app, "b9@example.com", None, "203.0.113.6").await, 401);
    assert_eq!(fail_signin(&app, "c0@example.com", Some("203.0.113.5"), "192.0.2.44").await, 401);
}
