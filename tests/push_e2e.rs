//! Revocations pushed through a long poll, through the real Envoy (two
//! workers) with the built filter and the real auth service (SQLite): with a
//! polling interval far too long to deliver it, a ban is enforced in every
//! worker within a couple of seconds; and against a feed that does not wait,
//! the filter polls at its interval, never in a loop.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use authflow_contract::fingerprint::DEVICE_HEADER;
use authflow_echo::EchoServer;
use serde_json::json;
use support::*;

const ISSUER: &str = "http://authflow.push-e2e";
const UA: &str = "authflow-e2e/1.0";
const LANG: &str = "en-GB";
const PASSWORD: &str = "correct-horse-battery-staple-42";

struct Stack {
    auth: AuthService,
    envoy: Envoy,
    _backend: EchoServer,
}

/// The auth service and Envoy (`--concurrency 2`) with the filter; the
/// revocation feed comes from `feed_cluster` every `poll_interval_ms`.
fn stack(poll_interval_ms: u64, feed_cluster: Option<(&str, u16)>) -> Stack {
    let auth = AuthService::start(ISSUER, &[("AUTHFLOW_KEY_PUBLISH_LEAD_SECS", "0")]);
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let feed = feed_cluster.map_or("authflow_auth", |(name, _)| name);
    let filter = json!({
        "providers": [{
            "name": "authflow", "issuer": ISSUER, "audiences": ["authflow-demo"], "algorithms": ["EdDSA", "ES256"],
            "token_type": "at+jwt", "required_claims": ["sub", "jti", "sid"],
            "jwks": {"remote": {"cluster": "authflow_auth", "path": "/.well-known/jwks.json", "refresh_interval_secs": 60}},
            // No `wait_secs`: the default long poll.
            "revocations": {"cluster": feed, "path": "/v1/revocations", "poll_interval_ms": poll_interval_ms}
        }],
        "device_binding": {"mode": "enforce", "attributes": ["user-agent", "accept-language"]},
        "revocation": {"max_staleness_secs": 120, "on_stale": "deny"},
        "routes": [
            {"match": {"prefix": "/v1/auth/"}, "policy": "public", "forward_credentials": true},
            {"match": {"prefix": "/.well-known/"}, "policy": "public"},
            {"match": {"prefix": "/v1/admin/"}, "policy": {"roles_any": ["admin"]}, "forward_credentials": true}
        ]
    });
    let mut clusters = vec![("backend".into(), backend.addr.port()), ("authflow_auth".into(), auth.port)];
    if let Some((name, port)) = feed_cluster {
        clusters.push((name.into(), port));
    }
    let envoy = Envoy::start(EnvoyOptions {
        filter,
        routes: routes_to("authflow_auth", &["/v1/auth/", "/v1/admin/", "/.well-known/"]),
        clusters,
        concurrency: 2,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    Stack { auth, envoy, _backend: backend }
}

struct Session {
    access: String,
    device: String,
}

impl Session {
    fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("authorization", self.access.as_str()),
            (DEVICE_HEADER, self.device.as_str()),
            ("user-agent", UA),
            ("accept-language", LANG),
        ]
    }
}

fn device_headers() -> [(&'static str, &'static str); 2] {
    [("user-agent", UA), ("accept-language", LANG)]
}

impl Stack {
    fn sign_up(&self, email: &str) -> String {
        let r = self.envoy.post("/v1/auth/signup", &device_headers(), &json!({"email": email, "password": PASSWORD}));
        assert_eq!(r.status, 201, "signup: {r:?}");
        let user_id = r.json()["user_id"].as_str().unwrap().to_owned();
        let token = self.auth.latest_mail(email, "Verify", "token");
        let r = self.envoy.post("/v1/auth/verify-email", &device_headers(), &json!({"token": token}));
        assert_eq!(r.status, 200, "verify-email: {r:?}");
        user_id
    }

    fn sign_in(&self, email: &str) -> Session {
        let r = self.envoy.post("/v1/auth/signin", &device_headers(), &json!({"email": email, "password": PASSWORD}));
        assert_eq!(r.status, 200, "signin: {r:?}");
        let challenge = r.json()["challenge_id"].as_str().unwrap().to_owned();
        let code = self.auth.latest_mail(email, "sign-in code", "code");
        let r = self.envoy.post("/v1/auth/signin/verify", &device_headers(), &json!({"challenge_id": challenge, "code": code}));
        assert_eq!(r.status, 200, "second factor: {r:?}");
        let j = r.json();
        Session {
            access: format!("Bearer {}", j["access_token"].as_str().unwrap()),
            device: j["device_secret"].as_str().unwrap().to_owned(),
        }
    }

    /// The statuses of `n` requests, each on its own connection (spread over the workers).
    fn statuses(&self, s: &Session, n: usize) -> Vec<u16> {
        std::thread::scope(|scope| {
            let calls: Vec<_> = (0..n).map(|_| scope.spawn(|| self.envoy.get("/api/x", &s.headers()).status)).collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        })
    }
}

/// The polling interval (30 s) cannot deliver the ban in time; only the long
/// poll can. Every worker refuses the banned user's token within a couple of
/// seconds of the admin's 200.
#[test]
fn a_ban_reaches_every_worker_through_the_long_poll() {
    let st = stack(30_000, None);
    let bob = st.sign_up("bob@push.test");
    st.auth.cli(&["user", "create", "--email", "admin@push.test", "--password", PASSWORD, "--role", "admin"]);
    let admin = st.sign_in("admin@push.test");
    let bob_s = st.sign_in("bob@push.test");
    // Every worker has its keys and list (a worker still loading keys may pause a request).
    let ready = eventually(Duration::from_secs(5), || st.statuses(&bob_s, 8).iter().all(|s| *s == 200));
    assert!(ready, "signed in, allowed everywhere");
    // Let the holder's poll of the current cursor be parked at the service.
    std::thread::sleep(Duration::from_millis(500));

    let r = st.envoy.post(&format!("/v1/admin/users/{bob}/ban"), &admin.headers(), &json!({}));
    assert_eq!(r.status, 200, "ban: {r:?}");
    let banned_at = Instant::now();
    let everywhere = eventually(Duration::from_secs(3), || st.statuses(&bob_s, 8).iter().all(|s| *s == 401));
    assert!(everywhere, "not refused in every worker within 3 s of the ban (polling interval 30 s)");
    let took = banned_at.elapsed();
    eprintln!("ban to 401 in every worker: {took:?}");
    assert!(st.statuses(&admin, 4).iter().all(|s| *s == 200), "others unaffected");
}

/// A feed that answers at once (and always the same document) is polled at
/// the polling interval, not in a loop: the long poll never spins.
#[test]
fn a_feed_that_does_not_wait_is_polled_at_the_interval() {
    let feed = JwksServer::start(json!({"issuer": ISSUER, "cursor": "static.1", "snapshot": true}).to_string());
    let st = stack(500, Some(("static_feed", feed.port)));
    assert!(eventually(Duration::from_secs(5), || feed.hits() > 0), "the feed is polled");
    std::thread::sleep(Duration::from_millis(500));
    let before = feed.hits();
    std::thread::sleep(Duration::from_secs(4));
    let polls = feed.hits() - before;
    eprintln!("polls of a non-waiting feed in 4 s at a 500 ms interval: {polls}");
    assert!((4..=12).contains(&polls), "{polls} polls in 4 s: expected about 8 (one Envoy, one lease holder)");
    let _ = st.envoy.log();
}
