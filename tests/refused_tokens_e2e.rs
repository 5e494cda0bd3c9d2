//! A token the filter refused goes no further, on a public route too: the
//! gateway as shipped (`envoy/local.yaml`: routes, filter configuration,
//! rate limits) with the built module, the real auth service configured as
//! `make run` configures it (one trusted `x-forwarded-for` hop: Envoy's),
//! and the echo backend.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::stack::ShippedGateway;
use support::*;

/// The shipped local configuration's issuer: its filter configuration is used unchanged.
const ISSUER: &str = "http://127.0.0.1:8081";

/// The auth service as `make run` starts it (scripts/lib.sh): Envoy appends the
/// client's address to `x-forwarded-for`, one trusted hop.
fn gateway() -> ShippedGateway {
    ShippedGateway::start(ISSUER, &[("AUTHFLOW_SERVER__XFF_NUM_TRUSTED_HOPS", "1")])
}

/// A user created with the CLI, signed in through Envoy (password, then the mailed code).
fn sign_in(g: &ShippedGateway, email: &str) -> stack::Session {
    g.auth.cli(&[
        "user",
        "create",
        "--email",
        email,
        "--password",
        stack::PASSWORD,
    ]);
    let r = g.envoy.post(
        "/v1/auth/signin",
        &stack::device_headers(),
        &serde_json::json!({"email": email, "password": stack::PASSWORD}),
    );
    assert_eq!(r.status, 200, "signin: {r:?}");
    let challenge = r.json()["challenge_id"].as_str().unwrap().to_owned();
    let code = g.auth.latest_mail(email, "sign-in code", "code");
    let r = g.envoy.post(
        "/v1/auth/signin/verify",
        &stack::device_headers(),
        &serde_json::json!({"challenge_id": challenge, "code": code}),
    );
    assert_eq!(r.status, 200, "second factor: {r:?}");
    let j = r.json();
    let text = |name: &str| j[name].as_str().unwrap().to_owned();
    stack::Session {
        bearer: format!("Bearer {}", text("access_token")),
        access: text("access_token"),
        refresh: text("refresh_token"),
        device: text("device_secret"),
    }
}

/// Finding: "the access cookie never reaches an application backend" (README,
/// Browser sign-in), yet on the shipped public backend route `/healthz` a
/// token cookie the filter did not accept went upstream as sent: a live one
/// from a browser whose fingerprinted headers differ (a same-site page's
/// `fetch` may set `Accept-Language`, a CORS-safelisted header), and one
/// whose session has ended.
#[test]
fn an_access_cookie_the_filter_refused_never_reaches_a_public_backend_route() {
    let g = gateway();
    let s = sign_in(&g, "cookie-leak@example.com");
    let cookie = format!("__Host-authflow-access={}", s.access);
    let seen_cookie = |r: &Reply| r.echoed("cookie").unwrap_or_default();
    // `/healthz` (public) with the access cookie, from this browser or one
    // whose `Accept-Language` differs (another device to the fingerprint).
    let public_with_cookie = |language: &str| {
        let r = g.envoy.get(
            "/healthz",
            &[
                ("cookie", &cookie),
                ("x-authflow-device", &s.device),
                ("user-agent", stack::UA),
                ("accept-language", language),
            ],
        );
        assert_eq!(r.status, 200, "{r:?}");
        r
    };
    // Accepted: the cookie is removed (as documented).
    let r = public_with_cookie(stack::LANG);
    assert!(
        !seen_cookie(&r).contains(&s.access),
        "verified cookie forwarded: {r:?}"
    );
    // A live token from the same browser with another Accept-Language: the filter refuses it
    // (another device) and lets the public request through anonymously, cookie and all.
    let r = public_with_cookie("xx");
    assert_eq!(r.echoed("x-auth-user"), None, "{r:?}");
    assert!(
        !seen_cookie(&r).contains(&s.access),
        "a live access token the filter refused reached the backend in its cookie: {r:?}"
    );
    // After logout: the ended session's cookie.
    let r = g
        .envoy
        .post("/v1/auth/logout", &s.headers(), &serde_json::json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(eventually(Duration::from_secs(5), || g
        .envoy
        .get("/app/x", &s.headers())
        .status
        == 401));
    let r = public_with_cookie(stack::LANG);
    assert!(
        !seen_cookie(&r).contains(&s.access),
        "a revoked access token reached the backend in its cookie: {r:?}"
    );
}

/// Finding: a bearer token of this issuer, live and correctly signed, that
/// the filter refused for its device binding still reached the backend of a
/// public route in `Authorization` (the device secret did not, so the
/// backend could not replay it here; it could wherever the binding is not
/// enforced, and it landed in the backend's logs). Another issuer's token is
/// left alone: a public backend may take its own kind.
#[test]
fn a_live_bearer_token_of_our_issuer_refused_for_its_device_never_reaches_a_public_backend_route() {
    let g = gateway();
    let s = sign_in(&g, "bearer-leak@example.com");
    let r = g.envoy.get(
        "/healthz",
        &[
            ("authorization", &s.bearer),
            ("x-authflow-device", &s.device),
            ("user-agent", "another-device/1.0"),
            ("accept-language", stack::LANG),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("x-auth-user"), None, "{r:?}");
    assert_eq!(r.echoed("x-authflow-device"), None, "{r:?}");
    assert_eq!(
        r.echoed("authorization"),
        None,
        "a live token of our issuer, refused by the filter, reached the backend: {r:?}"
    );
    let theirs = "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2Vsc2V3aGVyZS5leGFtcGxlIn0.c2ln";
    let r = g.envoy.get("/healthz", &[("authorization", theirs)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("authorization").as_deref(), Some(theirs), "{r:?}");
}
