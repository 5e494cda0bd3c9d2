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

/// Quiet 200 s (the throttle's `2 × max`), a limit of 3. Times from now on:
/// the maintenance task deletes keys quiet for its own quiet period.
const QUIET_THROTTLE: (u64, u64, u32) = (10, 100, 3);

fn quiet_throttle() -> authflow_auth_service::throttle::Throttle {
    let (base, max, _) = QUIET_THROTTLE;
    authflow_auth_service::throttle::Throttle::new(std::time::Duration::from_secs(base), std::time::Duration::from_secs(max))
}

/// One attempt against `key` at `at`, as `Throttle::attempt` counts it; the store's answer.
async fn count_attempt(app: &TestApp, key: &str, at: i64) -> authflow_auth_service::store::SigninAttempt {
    let (base, max, limit) = QUIET_THROTTLE;
    let quiet = quiet_throttle().quiet_secs();
    app.state.store.signin_attempt(key, at, quiet, limit, base as i64, max as i64).await.unwrap()
}

/// On a shared address (an office behind NAT) where someone signs in
/// successfully every 150 s, a typo is forgotten once the quiet period has
/// passed since it: a right password takes back its attempt, its time too.
#[tokio::test]
async fn right_passwords_do_not_keep_an_addresss_old_failures_alive() {
    use authflow_auth_service::store::SigninAttempt;
    let app = spawn_app().await;
    let (store, throttle, limit) = (app.state.store.as_ref(), quiet_throttle(), QUIET_THROTTLE.2);
    let (key, t0) = ("ip:192.0.2.7", authflow_auth_service::clock::now());
    // t = 0: a wrong password, counted and kept.
    assert!(matches!(count_attempt(&app, key, t0).await, SigninAttempt::Counted { failures: 1, .. }));
    // t = 150, 300: right passwords, counted and taken back.
    for at in [t0 + 150, t0 + 300] {
        let attempt = throttle.attempt(store, key, limit, at).await.unwrap().unwrap();
        throttle.undo(store, &attempt).await.unwrap();
    }
    // t = 450: the one failure, at t = 0, is older than the quiet period.
    let next = count_attempt(&app, key, t0 + 450).await;
    assert!(matches!(next, SigninAttempt::Counted { failures: 1, .. }), "{next:?}");
}

/// A right password taken back after a later attempt was counted leaves
/// that attempt's time: the later failure keeps the count alive for the
/// whole quiet period (taking back never forgets a failure early).
#[tokio::test]
async fn taking_back_a_right_password_keeps_a_later_failures_time() {
    use authflow_auth_service::store::SigninAttempt;
    let app = spawn_app().await;
    let (store, throttle, limit) = (app.state.store.as_ref(), quiet_throttle(), QUIET_THROTTLE.2);
    let (key, t0) = ("ip:192.0.2.8", authflow_auth_service::clock::now());
    // A right password and a wrong one in flight together at t = 150; the right one is taken back last.
    let right = throttle.attempt(store, key, limit, t0 + 150).await.unwrap().unwrap();
    assert!(matches!(count_attempt(&app, key, t0 + 150).await, SigninAttempt::Counted { failures: 2, .. }));
    throttle.undo(store, &right).await.unwrap();
    // t = 300: the failure at 150 is within the quiet period, so it still counts.
    let next = count_attempt(&app, key, t0 + 300).await;
    assert!(matches!(next, SigninAttempt::Counted { failures: 2, .. }), "{next:?}");
}
