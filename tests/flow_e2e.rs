//! The whole flow through Envoy: the real auth service (SQLite, development
//! mailer), the echo backend, and Envoy with the built filter — sign-up to
//! logout, bans, device binding, outages and restarts.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use authflow_contract::fingerprint::DEVICE_HEADER;
use serde_json::{json, Value};
use support::stack::*;
use support::*;

fn stack() -> Stack {
    Stack::start(
        StackOptions {
            issuer: "http://authflow.e2e",
            service_env: &[],
            extra_clusters: &[],
        },
        |_| {},
    )
}

impl Stack {
    /// Polls until `path` is refused for `s` by every worker (a streak of
    /// refusals spanning more than one 100 ms adoption tick); the time from
    /// the start to the first refusal of that streak.
    fn refused_within(&self, path: &str, s: &Session, bound: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut streak: Option<(Duration, u32)> = None;
        while start.elapsed() <= bound + Duration::from_millis(800) {
            if self.call(path, s).status == 401 {
                let (first, n) = streak.unwrap_or((start.elapsed(), 0));
                if n + 1 >= 8 {
                    return Some(first);
                }
                streak = Some((first, n + 1));
            } else {
                streak = None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }
}

#[test]
fn user_journey_through_envoy() {
    let st = stack();
    let user_id = st.sign_up("alice@e2e.test");
    let s = st.sign_in("alice@e2e.test");

    let r = st.call("/api/profile", &s);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("x-auth-user").as_deref(), Some(user_id.as_str()));
    assert!(r.echoed("x-auth-session").is_some());

    // Refresh through Envoy with the same device: a new token that works.
    let mut refresh_headers = device_headers().to_vec();
    refresh_headers.push((DEVICE_HEADER, &s.device));
    let r = st.envoy.post(
        "/v1/auth/refresh",
        &refresh_headers,
        &json!({"refresh_token": s.refresh}),
    );
    assert_eq!(r.status, 200, "refresh: {r:?}");
    let j = r.json();
    let refreshed = Session {
        refresh: j["refresh_token"].as_str().unwrap().to_owned(),
        ..s.with_access(j["access_token"].as_str().unwrap().to_owned())
    };
    assert_ne!(refreshed.access, s.access);
    assert_eq!(st.call("/api/profile", &refreshed).status, 200);

    // Logout: every token of the session is refused shortly after.
    st.logout(&refreshed);
    let took = st.refused_within("/api/profile", &refreshed, Duration::from_secs(2));
    let took = took.unwrap_or_else(|| {
        panic!(
            "token refused after logout; feed: {}; entries {} ok {} rejected {} failed {} 304 {}\n{}",
            get(&st.auth.url("/v1/revocations"), &[]).body,
            st.envoy.stat("revocations.entries"),
            st.envoy.stat("revocations.fetch_ok"),
            st.envoy.stat("revocations.rejected"),
            st.envoy.stat("revocations.fetch_failed"),
            st.envoy.stat("revocations.not_modified"),
            st.envoy.log().lines().filter(|l| l.contains("authflow")).take(30).collect::<Vec<_>>().join("\n")
        )
    });
    let r = st.call("/api/profile", &s);
    assert_eq!(
        r.status, 401,
        "the pre-refresh token of the session is refused too"
    );
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("session ended"));
    println!("logout took effect in {took:?}");
}

#[test]
fn stolen_token_does_not_work_from_another_device() {
    let st = stack();
    st.sign_up("bob@e2e.test");
    let s = st.sign_in("bob@e2e.test");
    assert_eq!(st.call("/api/x", &s).status, 200);

    let other_secret = Session {
        device: "a-different-device-secret".into(),
        ..s.clone()
    };
    let r = st.call("/api/x", &other_secret);
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("token is bound to another device"));

    let mut other_browser = s.headers();
    other_browser[2].1 = "Mozilla/5.0 (stolen)";
    assert_eq!(st.envoy.get("/api/x", &other_browser).status, 401);

    let r = st.envoy.get("/api/x", &[("authorization", &s.bearer)]);
    assert_eq!(r.status, 401, "no device secret at all");
    assert!(st.envoy.stat("denied.device_mismatch") >= 3);
    assert!(st.envoy.stat("device.secret_missing") >= 1);

    // Each such refusal is logged at `info`: a line of bounded length,
    // whatever path the client sends (up to Envoy's header limit).
    let long = format!("/api/{}", "a".repeat(16 * 1024));
    let r = st.envoy.get(&long, &[("authorization", &s.bearer)]);
    assert_eq!(r.status, 401);
    let log = st.envoy.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("device check")).collect();
    assert!(!lines.is_empty(), "the refusals are logged");
    assert!(
        lines.iter().all(|l| l.len() < 1024),
        "a device check's log line grows with the client's path"
    );
}

#[test]
fn ban_and_password_reset_take_effect_through_envoy() {
    let st = stack();
    let carol = st.sign_up("carol@e2e.test");
    let carol_s = st.sign_in("carol@e2e.test");
    st.sign_up("dave@e2e.test");
    let dave_s = st.sign_in("dave@e2e.test");
    let admin = st.admin("admin@e2e.test");
    assert_eq!(st.call("/api/x", &carol_s).status, 200);

    // A user without the admin role cannot reach the admin API.
    assert_eq!(
        st.envoy
            .post(
                &format!("/v1/admin/users/{carol}/ban"),
                &dave_s.headers(),
                &json!({})
            )
            .status,
        403
    );

    let r = st.envoy.post(
        &format!("/v1/admin/users/{carol}/ban"),
        &admin.headers(),
        &json!({}),
    );
    assert!(r.status == 200 || r.status == 204, "ban: {r:?}");
    let took = st.refused_within("/api/x", &carol_s, Duration::from_secs(2));
    println!("ban propagation through the revocation feed: {took:?}");
    let took = took.expect("banned user's live token refused");
    assert!(took <= Duration::from_secs(2), "ban took {took:?}");
    assert!(st
        .call("/api/x", &carol_s)
        .header("www-authenticate")
        .unwrap()
        .contains("account disabled"));
    let r = st.envoy.post(
        "/v1/auth/signin",
        &device_headers(),
        &json!({"email": "carol@e2e.test", "password": PASSWORD}),
    );
    assert_eq!(r.status, 403, "a banned user cannot sign in again: {r:?}");

    // Password reset ends dave's sessions.
    assert_eq!(st.call("/api/x", &dave_s).status, 200);
    let r = st.envoy.post(
        "/v1/auth/password/forgot",
        &device_headers(),
        &json!({"email": "dave@e2e.test"}),
    );
    assert!(r.status == 202 || r.status == 200, "forgot: {r:?}");
    let reset = st.auth.latest_mail("dave@e2e.test", "Reset", "token");
    let r = st.envoy.post(
        "/v1/auth/password/reset",
        &device_headers(),
        &json!({"token": reset, "password": "another-long-passphrase-7"}),
    );
    assert_eq!(r.status, 200, "reset: {r:?}");
    st.refused_within("/api/x", &dave_s, Duration::from_secs(2))
        .expect("old session refused after reset");
    let fresh = st.sign_in_with("dave@e2e.test", "another-long-passphrase-7");
    assert_eq!(st.call("/api/x", &fresh).status, 200);
}

#[test]
fn auth_service_outage_and_restart() {
    let mut st = stack();
    let erin = st.sign_up("erin@e2e.test");
    let erin_s = st.sign_in("erin@e2e.test");
    st.sign_up("frank@e2e.test");
    let frank_s = st.sign_in("frank@e2e.test");
    let admin = st.admin("admin@e2e.test");
    let r = st.envoy.post(
        &format!("/v1/admin/users/{erin}/ban"),
        &admin.headers(),
        &json!({}),
    );
    assert!(r.status == 200 || r.status == 204, "ban: {r:?}");
    st.refused_within("/api/x", &erin_s, Duration::from_secs(2))
        .expect("ban in force");

    st.auth.kill();
    // Valid tokens keep working on the last good keys and list; the banned one stays refused.
    for _ in 0..5 {
        assert_eq!(st.call("/api/x", &frank_s).status, 200);
        assert_eq!(st.call("/api/x", &erin_s).status, 401);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(eventually(Duration::from_secs(5), || st
        .envoy
        .stat("revocations.fetch_failed")
        >= 1));
    // Sign-in fails cleanly: a JSON 503 from Envoy, not a hang or an HTML page.
    let r = st.envoy.post(
        "/v1/auth/signin",
        &device_headers(),
        &json!({"email": "frank@e2e.test", "password": PASSWORD}),
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert!(r.header("retry-after").is_some());

    st.auth.restart();
    // The ban survived the crash: still in the feed, still refused, sign-in still refused.
    let feed: Value = get(&st.auth.url("/v1/revocations"), &[]).json();
    assert!(
        feed["banned_subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["sub"] == erin.as_str()),
        "{feed}"
    );
    assert_eq!(st.call("/api/x", &erin_s).status, 401);
    let r = st.envoy.post(
        "/v1/auth/signin",
        &device_headers(),
        &json!({"email": "erin@e2e.test", "password": PASSWORD}),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(st.call("/api/x", &frank_s).status, 200);
}
