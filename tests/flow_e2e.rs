//! The whole flow through Envoy: the real auth service (SQLite, development
//! mailer), the echo backend, and Envoy with the built filter — sign-up to
//! logout, bans, device binding, outages and restarts.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use authflow_contract::fingerprint::DEVICE_HEADER;
use authflow_echo::EchoServer;
use serde_json::{json, Value};
use support::*;

const ISSUER: &str = "http://authflow.e2e";
const UA: &str = "authflow-e2e/1.0";
const LANG: &str = "en-GB";
const PASSWORD: &str = "correct-horse-battery-staple-42";

struct Stack {
    auth: AuthService,
    envoy: Envoy,
    _backend: EchoServer,
}

fn stack() -> Stack {
    let auth = AuthService::start(ISSUER, &[("AUTHFLOW_KEY_PUBLISH_LEAD_SECS", "0")]);
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let filter = json!({
        "providers": [{
            "name": "authflow", "issuer": ISSUER, "audiences": ["authflow-demo"], "algorithms": ["EdDSA", "ES256"],
            "token_type": "at+jwt", "required_claims": ["sub", "jti", "sid"],
            "jwks": {"remote": {"cluster": "authflow_auth", "path": "/.well-known/jwks.json", "refresh_interval_secs": 60}},
            "revocations": {"cluster": "authflow_auth", "path": "/v1/revocations", "poll_interval_ms": 200}
        }],
        "device_binding": {"mode": "enforce", "attributes": ["user-agent", "accept-language"]},
        "revocation": {"max_staleness_secs": 120, "on_stale": "deny"},
        "routes": [
            {"match": {"prefix": "/v1/auth/"}, "policy": "public", "forward_credentials": true},
            {"match": {"prefix": "/.well-known/"}, "policy": "public"},
            {"match": {"prefix": "/v1/admin/"}, "policy": {"roles_any": ["admin"]}, "forward_credentials": true}
        ]
    });
    let envoy = Envoy::start(EnvoyOptions {
        filter,
        routes: routes_to("authflow_auth", &["/v1/auth/", "/v1/admin/", "/.well-known/"]),
        clusters: vec![("backend".into(), backend.addr.port()), ("authflow_auth".into(), auth.port)],
        concurrency: 2,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    Stack { auth, envoy, _backend: backend }
}

/// A signed-in device: its tokens and the secret it was given.
#[derive(Clone)]
struct Session {
    access: String,
    refresh: String,
    device: String,
}

impl Session {
    fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("authorization".into(), format!("Bearer {}", self.access)),
            (DEVICE_HEADER.into(), self.device.clone()),
            ("user-agent".into(), UA.into()),
            ("accept-language".into(), LANG.into()),
        ]
    }
}

fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn device_headers() -> [(&'static str, &'static str); 2] {
    [("user-agent", UA), ("accept-language", LANG)]
}

impl Stack {
    fn call(&self, path: &str, s: &Session) -> Reply {
        self.envoy.get(path, &refs(&s.headers()))
    }

    /// Sign-up and e-mail verification, all through Envoy; the mail comes from the development outbox.
    fn sign_up(&self, email: &str) -> String {
        let r = self.envoy.post("/v1/auth/signup", &device_headers(), &json!({"email": email, "password": PASSWORD}));
        assert_eq!(r.status, 201, "signup: {r:?}");
        let user_id = r.json()["user_id"].as_str().unwrap().to_owned();
        let token = self.auth.latest_mail(email, "Verify", "token");
        let r = self.envoy.post("/v1/auth/verify-email", &device_headers(), &json!({"token": token}));
        assert_eq!(r.status, 200, "verify-email: {r:?}");
        user_id
    }

    /// Password, then the 6-digit code from the outbox.
    fn sign_in(&self, email: &str, password: &str) -> Session {
        let r = self.envoy.post("/v1/auth/signin", &device_headers(), &json!({"email": email, "password": password}));
        assert_eq!(r.status, 200, "signin: {r:?}");
        let challenge = r.json()["challenge_id"].as_str().unwrap().to_owned();
        let code = self.auth.latest_mail(email, "sign-in code", "code");
        let r = self.envoy.post("/v1/auth/signin/verify", &device_headers(), &json!({"challenge_id": challenge, "code": code}));
        assert_eq!(r.status, 200, "second factor: {r:?}");
        assert!(r.header("set-cookie").unwrap_or_default().contains("__Secure-authflow-device="), "device cookie: {r:?}");
        let j = r.json();
        Session {
            access: j["access_token"].as_str().unwrap().to_owned(),
            refresh: j["refresh_token"].as_str().unwrap().to_owned(),
            device: j["device_secret"].as_str().unwrap().to_owned(),
        }
    }

    fn admin(&self) -> Session {
        self.auth.cli(&["user", "create", "--email", "admin@e2e.test", "--password", PASSWORD, "--role", "admin"]);
        self.sign_in("admin@e2e.test", PASSWORD)
    }

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
    let s = st.sign_in("alice@e2e.test", PASSWORD);

    let r = st.call("/api/profile", &s);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("x-auth-user").as_deref(), Some(user_id.as_str()));
    assert!(r.echoed("x-auth-session").is_some());

    // Refresh through Envoy with the same device: a new token that works.
    let mut refresh_headers = device_headers().to_vec();
    refresh_headers.push((DEVICE_HEADER, &s.device));
    let r = st.envoy.post("/v1/auth/refresh", &refresh_headers, &json!({"refresh_token": s.refresh}));
    assert_eq!(r.status, 200, "refresh: {r:?}");
    let refreshed = Session {
        access: r.json()["access_token"].as_str().unwrap().to_owned(),
        refresh: r.json()["refresh_token"].as_str().unwrap().to_owned(),
        device: s.device.clone(),
    };
    assert_ne!(refreshed.access, s.access);
    assert_eq!(st.call("/api/profile", &refreshed).status, 200);

    // Logout: every token of the session is refused shortly after.
    let r = st.envoy.post("/v1/auth/logout", &refs(&refreshed.headers()), &json!({}));
    assert!(r.status == 200 || r.status == 204, "logout: {r:?}");
    let took = st.refused_within("/api/profile", &refreshed, Duration::from_secs(2));
    let took = took.unwrap_or_else(|| {
        panic!(
            "token refused after logout; feed: {}; logout said {r:?}; entries {} ok {} rejected {} failed {} 304 {}\n{}",
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
    assert_eq!(r.status, 401, "the pre-refresh token of the session is refused too");
    assert!(r.header("www-authenticate").unwrap().contains("session ended"));
    println!("logout took effect in {took:?}");
}

#[test]
fn stolen_token_does_not_work_from_another_device() {
    let st = stack();
    st.sign_up("bob@e2e.test");
    let s = st.sign_in("bob@e2e.test", PASSWORD);
    assert_eq!(st.call("/api/x", &s).status, 200);

    let other_secret = Session { device: "a-different-device-secret".into(), ..s.clone() };
    let r = st.call("/api/x", &other_secret);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("token is bound to another device"));

    let mut other_browser = s.headers();
    other_browser[2].1 = "Mozilla/5.0 (stolen)".into();
    assert_eq!(st.envoy.get("/api/x", &refs(&other_browser)).status, 401);

    let token_only = [("authorization", format!("Bearer {}", s.access))];
    let r = st.envoy.get("/api/x", &[(token_only[0].0, token_only[0].1.as_str())]);
    assert_eq!(r.status, 401, "no device secret at all");
    assert!(st.envoy.stat("denied.device_mismatch") >= 3);
    assert!(st.envoy.stat("device.secret_missing") >= 1);
}

#[test]
fn ban_and_password_reset_take_effect_through_envoy() {
    let st = stack();
    let carol = st.sign_up("carol@e2e.test");
    let carol_s = st.sign_in("carol@e2e.test", PASSWORD);
    st.sign_up("dave@e2e.test");
    let dave_s = st.sign_in("dave@e2e.test", PASSWORD);
    let admin = st.admin();
    assert_eq!(st.call("/api/x", &carol_s).status, 200);

    // A user without the admin role cannot reach the admin API.
    assert_eq!(st.envoy.post(&format!("/v1/admin/users/{carol}/ban"), &refs(&dave_s.headers()), &json!({})).status, 403);

    let r = st.envoy.post(&format!("/v1/admin/users/{carol}/ban"), &refs(&admin.headers()), &json!({}));
    assert!(r.status == 200 || r.status == 204, "ban: {r:?}");
    let took = st.refused_within("/api/x", &carol_s, Duration::from_secs(2));
    println!("ban propagation through the revocation feed: {took:?}");
    let took = took.expect("banned user's live token refused");
    assert!(took <= Duration::from_secs(2), "ban took {took:?}");
    assert!(st.call("/api/x", &carol_s).header("www-authenticate").unwrap().contains("account disabled"));
    let r = st.envoy.post("/v1/auth/signin", &device_headers(), &json!({"email": "carol@e2e.test", "password": PASSWORD}));
    assert_eq!(r.status, 403, "a banned user cannot sign in again: {r:?}");

    // Password reset ends dave's sessions.
    assert_eq!(st.call("/api/x", &dave_s).status, 200);
    let r = st.envoy.post("/v1/auth/password/forgot", &device_headers(), &json!({"email": "dave@e2e.test"}));
    assert!(r.status == 202 || r.status == 200, "forgot: {r:?}");
    let reset = st.auth.latest_mail("dave@e2e.test", "Reset", "token");
    let r = st.envoy.post("/v1/auth/password/reset", &device_headers(), &json!({"token": reset, "password": "another-long-passphrase-7"}));
    assert_eq!(r.status, 200, "reset: {r:?}");
    st.refused_within("/api/x", &dave_s, Duration::from_secs(2)).expect("old session refused after reset");
    let fresh = st.sign_in("dave@e2e.test", "another-long-passphrase-7");
    assert_eq!(st.call("/api/x", &fresh).status, 200);
}

#[test]
fn auth_service_outage_and_restart() {
    let mut st = stack();
    let erin = st.sign_up("erin@e2e.test");
    let erin_s = st.sign_in("erin@e2e.test", PASSWORD);
    st.sign_up("frank@e2e.test");
    let frank_s = st.sign_in("frank@e2e.test", PASSWORD);
    let admin = st.admin();
    let r = st.envoy.post(&format!("/v1/admin/users/{erin}/ban"), &refs(&admin.headers()), &json!({}));
    assert!(r.status == 200 || r.status == 204, "ban: {r:?}");
    st.refused_within("/api/x", &erin_s, Duration::from_secs(2)).expect("ban in force");

    st.auth.kill();
    // Valid tokens keep working on the last good keys and list; the banned one stays refused.
    for _ in 0..5 {
        assert_eq!(st.call("/api/x", &frank_s).status, 200);
        assert_eq!(st.call("/api/x", &erin_s).status, 401);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(eventually(Duration::from_secs(5), || st.envoy.stat("revocations.fetch_failed") >= 1));
    // Sign-in fails cleanly: a JSON 503 from Envoy, not a hang or an HTML page.
    let r = st.envoy.post("/v1/auth/signin", &device_headers(), &json!({"email": "frank@e2e.test", "password": PASSWORD}));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert!(r.header("retry-after").is_some());

    st.auth.restart();
    // The ban survived the crash: still in the feed, still refused, sign-in still refused.
    let feed: Value = get(&st.auth.url("/v1/revocations"), &[]).json();
    assert!(feed["banned_subjects"].as_array().unwrap().iter().any(|b| b["sub"] == erin.as_str()), "{feed}");
    assert_eq!(st.call("/api/x", &erin_s).status, 401);
    let r = st.envoy.post("/v1/auth/signin", &device_headers(), &json!({"email": "erin@e2e.test", "password": PASSWORD}));
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(st.call("/api/x", &frank_s).status, 200);
}
