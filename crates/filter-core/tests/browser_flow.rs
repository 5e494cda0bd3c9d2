//! The browser sign-in flow on the host: a configuration that would send
//! browsers round a redirect loop is refused, and the refresh cookie
//! reaches no backend but the auth service.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use authflow_contract::browser::{REFRESH_COOKIE, SIGNIN_PATH};
use authflow_filter_core::deny::DenyReason;
use authflow_filter_core::forward::{credential_edits, HeaderEdit};
use authflow_filter_core::{browser, FilterConfig, ProviderId, Request};
use serde_json::json;

const PAGE: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn config(extra: serde_json::Value) -> Result<FilterConfig, String> {
    let mut c = json!({
        "providers": [{"name": "p", "issuer": "i", "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": {"remote": {"cluster": "c", "path": "/j"}}}],
        "token_sources": {"authorization_bearer": true, "cookies": ["__Host-authflow-access"]},
        "browser": {"refresh_path": "/auth/refresh"}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    FilterConfig::from_json(c.to_string().as_bytes()).map_err(|e| e.0)
}

fn request(h: &[(&str, &str)]) -> Request {
    Request::from_headers(
        h.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        None,
    )
}

/// The answer to a browser's page load refused for want of a token.
fn navigation(c: &FilterConfig, path: &str) -> u32 {
    let r = request(&[(":method", "GET"), (":path", path), ("accept", PAGE)]);
    let refused = DenyReason::MissingToken.response(5, None);
    browser::redirect(c, &r, DenyReason::MissingToken, &refused)
        .map_or(refused.status, |d| d.status)
}

/// Finding: the refresh endpoint sends a browser without a refresh cookie on
/// to `SIGNIN_PATH`; a configuration whose redirecting route covers the
/// sign-in page (only the refresh path has its own public route) was
/// accepted, and every signed-out visitor went round
/// refresh → sign-in → refresh until the browser gave up: nobody could sign in.
#[test]
fn a_redirecting_route_over_the_sign_in_page_is_refused_as_a_loop() {
    let routes = json!({"routes": [
        {"match": {"exact": "/auth/refresh"}, "policy": "public"},
        {"match": {"prefix": "/"}, "policy": "authenticated", "browser_redirect": true}
    ]});
    if let Ok(c) = config(routes) {
        panic!(
            "accepted: GET {SIGNIN_PATH} is answered {} (to the refresh endpoint, which sends it back)",
            navigation(&c, SIGNIN_PATH)
        );
    }
}

/// Finding: the loop check compared the refresh path with the route rules
/// case-sensitively while `case_insensitive_paths` makes the filter match
/// them ignoring case: `/Auth` covers `/auth/refresh` at run time.
#[test]
fn the_loop_check_reads_paths_as_the_routes_do() {
    let routes = json!({"case_insensitive_paths": true, "routes": [
        {"match": {"path_prefix": "/Auth"}, "policy": "authenticated", "browser_redirect": true}
    ]});
    if let Ok(c) = config(routes) {
        panic!(
            "accepted: GET /auth/refresh is answered {}",
            navigation(&c, "/auth/refresh")
        );
    }
}

/// Finding: the refresh token (the longest-lived credential a browser holds)
/// was the one service cookie never removed on the way to a backend. Its
/// `Path=/auth/refresh` is all that kept it away, and that is the path the
/// browser sent, not the one Envoy routed (`/auth/refresh/..%2F..%2Fapp`
/// unescaped and normalized is `/app`), nor one any rewriting hop leaves
/// alone; and `__Secure-` lets a sibling subdomain set one for `Path=/`.
#[test]
fn the_refresh_cookie_reaches_no_backend_but_the_service() {
    let c = config(json!({"routes": [
        {"match": {"prefix": "/auth/"}, "policy": "public", "forward_credentials": true},
        {"match": {"path_prefix": "/app"}, "policy": "authenticated", "browser_redirect": true}
    ]}))
    .unwrap();
    let cookie = format!("a=1; {REFRESH_COOKIE}=refresh-secret");
    for verified_by in [Some(ProviderId::FIRST), None] {
        let sent = request(&[(":method", "GET"), (":path", "/app/x"), ("cookie", &cookie)]);
        assert_eq!(
            credential_edits(&c, &sent, verified_by, false),
            vec![HeaderEdit::Set("cookie".into(), "a=1".into())],
            "{verified_by:?}"
        );
    }
    // The service's own route still gets it.
    let to_service = request(&[
        (":method", "GET"),
        (":path", "/auth/refresh"),
        ("cookie", &cookie),
    ]);
    assert_eq!(credential_edits(&c, &to_service, None, false), vec![]);
}
