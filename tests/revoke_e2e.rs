//! Revocation edge cases through the real Envoy with the built filter, the
//! real auth service (SQLite) and the echo backend: revocations that must
//! outlive their tokens, public routes while the list is stale, and which
//! credentials reach the upstream.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authflow_contract::fingerprint::DEVICE_HEADER;
use serde_json::{json, Value};
use support::stack::*;
use support::*;

/// The stack with `service_env` for the auth service; `tweak` edits the filter configuration.
fn stack(service_env: &[(&str, &str)], tweak: impl FnOnce(&mut Value)) -> Stack {
    Stack::start(
        StackOptions {
            issuer: "http://authflow.revoke-e2e",
            service_env,
            extra_clusters: &[],
        },
        tweak,
    )
}

/// A claim of the session's access token.
fn claim(s: &Session, name: &str) -> Value {
    use base64::Engine;
    let payload = s.access.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()[name].clone()
}

fn exp(s: &Session) -> u64 {
    claim(s, "exp").as_u64().unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sleep_until(unix_secs: u64) {
    while unix_now() < unix_secs {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The auth service's own verdict on a token (its ext_authz endpoint, called directly).
fn service_verdict(st: &Stack, s: &Session) -> u16 {
    get(&st.auth.url("/v1/ext-authz"), &s.headers()).status
}

/// Finding: a revoked token worked again between its `exp` and `exp` +
/// `clock_skew_secs`, in the filter as soon as the next feed change pruned the
/// list, and in the service's own checks at once. A logged-out session, a
/// banned user and a token revoked by `jti` must stay refused there.
#[test]
fn revocations_outlive_their_tokens_by_the_clock_skew() {
    let st = stack(
        &[
            ("AUTHFLOW_ACCESS_TTL_SECS", "15"),
            ("AUTHFLOW_MAINTENANCE_INTERVAL_SECS", "1"),
        ],
        |f| f["clock_skew_secs"] = json!(30),
    );
    st.sign_up("alice@e2e.test");
    let bob = st.sign_up("bob@e2e.test");
    st.sign_up("carol@e2e.test");
    st.sign_up("dave@e2e.test");

    let alice = st.sign_in("alice@e2e.test");
    let bob_s = st.sign_in("bob@e2e.test");
    let carol = st.sign_in("carol@e2e.test");
    let admin = st.admin("admin@e2e.test");
    for s in [&alice, &bob_s, &carol] {
        assert_eq!(st.call("/api/x", s).status, 200);
    }

    st.logout(&alice);
    let r = st.envoy.post(
        &format!("/v1/admin/users/{bob}/ban"),
        &admin.headers(),
        &json!({}),
    );
    assert_eq!(r.status, 200, "ban: {r:?}");
    let r = st.envoy.post(
        "/v1/admin/tokens/revoke",
        &admin.headers(),
        &json!({"jti": claim(&carol, "jti")}),
    );
    assert_eq!(r.status, 200, "revoke: {r:?}");
    let revoked_at = unix_now();
    for s in [&alice, &bob_s, &carol] {
        assert!(st.refused("/api/x", s), "refused once revoked");
    }

    // Past every token's `exp` (and the 10 s a logout/ban entry used to last),
    // still inside the 30 s skew the filter grants.
    let last_exp = [&alice, &bob_s, &carol]
        .iter()
        .map(|s| exp(s))
        .max()
        .unwrap();
    sleep_until(last_exp.max(revoked_at + 10) + 1);
    // The next feed change: the filter applies a delta (and prunes its list).
    let dave = st.sign_in("dave@e2e.test");
    st.logout(&dave);
    assert!(st.refused("/api/x", &dave), "the new delta arrived");

    let now = unix_now();
    for (who, s, why) in [
        ("alice", &alice, "session ended"),
        ("bob", &bob_s, "account disabled"),
        ("carol", &carol, "token revoked"),
    ] {
        assert!(
            now > exp(s) && now < exp(s) + 30,
            "{who}: between exp and exp + skew"
        );
        let r = st.call("/api/x", s);
        assert_eq!(r.status, 401, "{who} at exp+{}: {r:?}", now - exp(s));
        assert!(
            r.header("www-authenticate")
                .unwrap_or_default()
                .contains(why),
            "{who}: {r:?}"
        );
        assert_eq!(
            service_verdict(&st, s),
            401,
            "{who}: the service's own check at exp+{}",
            now - exp(s)
        );
    }
}

/// Finding: with the revocation list stale (feed source down longer than
/// `max_staleness_secs`, `on_stale: deny`), a public route answered 503.
/// Public means anonymous works: the request passes, with no identity
/// headers (the token's revocation status is unknown); other routes still
/// answer 503 with `Retry-After`.
#[test]
fn public_routes_stay_open_when_the_revocation_list_is_stale() {
    let mut st = stack(&[], |f| {
        f["revocation"] = json!({"max_staleness_secs": 2, "on_stale": "deny"});
        f["retry_after_secs"] = json!(7);
    });
    st.sign_up("erin@e2e.test");
    let erin = st.sign_in("erin@e2e.test");
    let r = st.call("/public/page", &erin);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.echoed("x-auth-user").is_some(),
        "a fresh list: the token's identity is forwarded"
    );

    st.auth.kill();
    // Every worker judges staleness on its own clock tick: wait until several
    // calls in a row (spread over the workers) are refused, not just the first.
    assert!(
        eventually(Duration::from_secs(8), || (0..8)
            .all(|_| st.call("/api/x", &erin).status == 503)),
        "the list goes stale in every worker once the feed is gone for max_staleness_secs"
    );
    let r = st.call("/api/x", &erin);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("7"));

    for _ in 0..6 {
        let r = st.call("/public/page", &erin);
        assert_eq!(
            r.status, 200,
            "public route with a token on a stale list: {r:?}"
        );
        for h in [
            "x-auth-user",
            "x-auth-roles",
            "x-auth-session",
            "x-auth-scopes",
        ] {
            assert_eq!(
                r.echoed(h),
                None,
                "{h}: no identity from an unverifiable token"
            );
        }
        let r = st.envoy.get("/public/page", &device_headers());
        assert_eq!(r.status, 200, "anonymous on a public route: {r:?}");
    }
}

/// The cookie header a browser-like client sends: the device secret and a
/// cookie of the application's own.
fn browser_cookie(s: &Session) -> String {
    format!("theme=dark; __Host-authflow-device={}", s.device)
}

/// The session's headers with that cookie: the token, the device secret as
/// header and cookie, and the application's cookie.
fn with_credentials<'a>(s: &'a Session, cookie: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut h = s.headers();
    h.push(("cookie", cookie));
    h
}

/// Finding: by default the token and the device secret reached the
/// upstream. Like `jwt_authn` without `forward`, a verified token is removed
/// before the request goes on, and the device secret (header and cookie) is
/// never forwarded; the application's other cookies are.
#[test]
fn credentials_stay_out_of_the_upstream_by_default() {
    // Nothing about forwarding configured (routes without `forward_credentials`).
    let st = stack(&[], |f| {
        f["routes"] = json!([
            {"match": {"prefix": "/v1/auth/"}, "policy": "public"},
            {"match": {"prefix": "/public/"}, "policy": "public"}
        ]);
    });
    let user = st.sign_up("gina@e2e.test");
    let gina = st.sign_in("gina@e2e.test");
    let cookie = browser_cookie(&gina);
    for path in ["/api/x", "/public/page"] {
        let r = st.envoy.get(path, &with_credentials(&gina, &cookie));
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(
            r.echoed("x-auth-user").as_deref(),
            Some(user.as_str()),
            "{path}: identity headers instead"
        );
        assert_eq!(
            r.echoed("authorization"),
            None,
            "{path}: the token is not forwarded"
        );
        assert_eq!(
            r.echoed(DEVICE_HEADER),
            None,
            "{path}: the device secret header is not forwarded"
        );
        assert_eq!(
            r.echoed("cookie").as_deref(),
            Some("theme=dark"),
            "{path}: only the device cookie is taken out"
        );
    }
    // Anonymous on a public route: the device secret stays out too.
    let r = st.envoy.get(
        "/public/page",
        &[
            (DEVICE_HEADER, "s3cret"),
            ("cookie", "__Host-authflow-device=s3cret"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed(DEVICE_HEADER), None);
    assert_eq!(
        r.echoed("cookie"),
        None,
        "a cookie header holding only the device secret is removed"
    );
}

/// Forwarding is a configured choice: `forward_token` per provider,
/// `forward_device_secret` for the device secret, and `forward_credentials`
/// per route for an upstream that needs them (the auth service: logout
/// through Envoy works).
#[test]
fn credentials_are_forwarded_when_configured() {
    let st = stack(&[], |f| {
        f["providers"][0]["forward_token"] = json!(true);
        f["forward_device_secret"] = json!(true);
    });
    st.sign_up("hank@e2e.test");
    let hank = st.sign_in("hank@e2e.test");
    let cookie = browser_cookie(&hank);
    let r = st.envoy.get("/api/x", &with_credentials(&hank, &cookie));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.echoed("authorization"),
        Some(format!("Bearer {}", hank.access))
    );
    assert_eq!(r.echoed(DEVICE_HEADER), Some(hank.device.clone()));
    assert_eq!(r.echoed("cookie"), Some(cookie));

    let default = stack(&[], |_| {});
    default.sign_up("ivy@e2e.test");
    let ivy = default.sign_in("ivy@e2e.test");
    let cookie = browser_cookie(&ivy);
    assert_eq!(
        default
            .envoy
            .get("/api/x", &with_credentials(&ivy, &cookie))
            .echoed("authorization"),
        None
    );
    // The auth service's routes get what they need: logout needs the token and the device secret.
    default.logout(&ivy);
    assert!(default.refused("/api/x", &ivy));
}

/// A signing key whose private half leaked is withdrawn with the CLI: a new
/// key signs at once, its first token makes the filter fetch the key set
/// early (its refresh interval is a minute here), and from then on the
/// filter refuses every token of the withdrawn key, as the service does.
#[test]
fn a_withdrawn_signing_key_is_refused_through_envoy_once_its_successor_signs() {
    let st = stack(&[], |_| {});
    st.sign_up("kim@withdraw.test");
    let before = st.sign_in("kim@withdraw.test");
    let allowed = |s: &Session| st.envoy.get("/api/x", &s.headers()).status;
    assert!(
        eventually(Duration::from_secs(10), || allowed(&before) == 200),
        "signed in, allowed"
    );

    let leaked = before.kid();
    let out = st.auth.cli(&["keys", "withdraw", "--kid", &leaked]);
    assert!(out.contains(&leaked), "{out}");
    assert!(
        eventually(Duration::from_secs(3), || service_verdict(&st, &before)
            == 401),
        "the running service follows within a second"
    );

    let after = st.sign_in("kim@withdraw.test");
    assert_ne!(after.kid(), leaked, "the successor signs at once");
    assert!(
        eventually(Duration::from_secs(10), || allowed(&after) == 200),
        "the successor's token passes (the filter fetched the new key set)"
    );
    assert!(
        eventually(Duration::from_secs(5), || allowed(&before) == 401),
        "the withdrawn key's token is refused through Envoy"
    );
}
