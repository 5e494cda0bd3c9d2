//! Browser sign-in through the real Envoy with the built filter, the real
//! auth service and the echo backend: a page a browser navigates to on a
//! `browser_redirect` route, refused for want of a valid token, is answered
//! with a `302` to the refresh endpoint carrying a same-origin return target;
//! API clients keep their RFC 6750 answers; the access-token cookie signs the
//! browser in and never reaches the backend.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use authflow_contract::browser::{ACCESS_COOKIE, DEVICE_COOKIE};
use authflow_contract::return_to;
use serde_json::{json, Value};
use support::stack::*;
use support::*;

/// What Chromium sends when it loads a page.
const NAVIGATION: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
/// Access tokens live this long in these tests, so one can be seen expiring.
const ACCESS_TTL_SECS: u64 = 15;

/// The stack, with `/app` on the echo backend marked `browser_redirect`, the
/// token read from the access cookie too, and no clock skew (so a token is
/// expired as soon as its `exp` has passed).
fn stack() -> Stack {
    let ttl = ACCESS_TTL_SECS.to_string();
    let env = [("AUTHFLOW_TOKENS__ACCESS_TTL_SECS", ttl.as_str())];
    Stack::start(
        StackOptions {
            issuer: "http://authflow.e2e",
            service_env: &env,
            extra_clusters: &[],
        },
        |filter: &mut Value| {
            filter["clock_skew_secs"] = json!(0);
            filter["token_sources"] =
                json!({"authorization_bearer": true, "cookies": [ACCESS_COOKIE]});
            filter["browser"] = json!({"refresh_path": "/auth/refresh"});
            let routes = filter["routes"].as_array_mut().unwrap();
            routes.insert(0, json!({"match": {"path_prefix": "/auth"}, "policy": "public", "forward_credentials": true}));
            routes.push(json!({"match": {"path_prefix": "/app"}, "policy": "authenticated", "browser_redirect": true}));
        },
    )
}

/// A browser's page load: `accept` as Chromium sends it, plus `more`.
fn navigate(st: &Stack, path: &str, more: &[(&str, &str)]) -> Reply {
    let mut headers = vec![
        ("accept", NAVIGATION),
        ("user-agent", UA),
        ("accept-language", LANG),
    ];
    headers.extend_from_slice(more);
    st.envoy.get(path, &headers)
}

/// Lets a token minted this second become valid by the filter's clock: with
/// no clock skew allowed, a token whose `nbf` is this very second is "not yet
/// valid" to a filter whose whole-second clock still reads the one before.
fn wait_until_valid() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn assert_sent_to_sign_in(r: &Reply, location: &str, what: &str) {
    assert_eq!(r.status, 302, "{what}: {r:?}");
    assert_eq!(r.header("location"), Some(location), "{what}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(
        r.header("www-authenticate"),
        None,
        "{what}: no challenge details for a browser"
    );
    assert!(r.body.is_empty(), "{what}: {:?}", r.body);
}

fn assert_json_401(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {r:?}");
    assert_eq!(r.header("location"), None, "{what}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer")),
        "{what}: {r:?}"
    );
    assert!(r.json()["error"].is_string(), "{what}: {}", r.body);
}

#[test]
fn a_browser_without_a_valid_token_is_sent_to_sign_in_and_api_clients_are_not() {
    let st = stack();

    let r = navigate(&st, "/app/hello?x=1&y=2", &[]);
    assert_sent_to_sign_in(
        &r,
        "/auth/refresh?return_to=/app/hello%3Fx%3D1%26y%3D2",
        "navigation without a token",
    );
    // The auth service reads that target back: without a refresh cookie, on to sign-in with it.
    let r = navigate(&st, r.header("location").unwrap(), &[]);
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("/auth/signin?return_to=/app/hello%3Fx%3D1%26y%3D2")
    );
    let r = http()
        .head(st.envoy.url("/app/"))
        .header("accept", "text/html")
        .call()
        .map(reply)
        .unwrap();
    assert_sent_to_sign_in(&r, "/auth/refresh?return_to=/app/", "HEAD");
    let r = navigate(
        &st,
        "/app/hello",
        &[("cookie", &format!("{ACCESS_COOKIE}=not.a.token"))],
    );
    assert_sent_to_sign_in(
        &r,
        "/auth/refresh?return_to=/app/hello",
        "a cookie that is no token",
    );

    // API calls and other requests keep their RFC 6750 answers.
    assert_json_401(
        &st.envoy
            .get("/app/hello", &[("accept", "application/json")]),
        "accept: application/json",
    );
    assert_json_401(
        &st.envoy.get("/app/hello", &[("accept", "*/*")]),
        "accept: */*",
    );
    assert_json_401(
        &st.envoy.get("/app/hello", &[("accept", "text/html;q=0")]),
        "text/html refused by weight",
    );
    assert_json_401(
        &st.envoy
            .post("/app/hello", &[("accept", NAVIGATION)], &json!({})),
        "POST",
    );
    assert_json_401(
        &navigate(&st, "/api/hello", &[]),
        "a route without browser_redirect",
    );
    let r = navigate(&st, "/app/hello", &[("authorization", "DPoP a.b.c")]);
    assert_eq!(
        (r.status, r.header("location")),
        (401, None),
        "the DPoP scheme keeps its challenge: {r:?}"
    );
    // Several accept headers: text/html in the second still makes a navigation.
    let r = st.envoy.get(
        "/app/hello",
        &[("accept", "application/json"), ("accept", "text/html")],
    );
    assert_sent_to_sign_in(
        &r,
        "/auth/refresh?return_to=/app/hello",
        "text/html in a second accept header",
    );

    // The route is the one the normalized path matches, as for the route rules.
    let r = navigate(&st, "/public/../app/x", &[]);
    assert_sent_to_sign_in(
        &r,
        "/auth/refresh?return_to=/app/x",
        "dot segments resolved",
    );
    assert_json_401(
        &navigate(&st, "/app/../v1/admin/users", &[]),
        "normalized onto the admin API",
    );
    assert_eq!(
        navigate(&st, "/app%2F..%2Fv1/admin/users", &[]).status,
        400,
        "an ambiguous path stays refused"
    );

    assert_eq!(
        st.envoy.stat("browser_redirect"),
        5,
        "each redirect counted"
    );
    assert!(
        st.envoy.stat("denied.missing_token") >= 5,
        "and still counted as the refusal it is"
    );
}

#[test]
fn a_crafted_path_never_yields_an_off_site_location() {
    let st = stack();
    let attempts = [
        "//evil.example/x",
        "//evil.example/app/x",
        "/app//evil.example/x",
        "/app/%2F%2Fevil.example",
        "/%2F%2Fevil.example/app",
        "/app/%5Cevil.example",
        "/app/%2F%5Cevil.example",
        "/app/x?next=%0d%0aSet-Cookie:%20a=b",
        "/app/%0d%0aLocation:%20http://evil.example/",
        "/app/%09/evil.example",
        "/app/..%2F..%2F%2Fevil.example",
        "/app/x?u=https://evil.example/",
        "/app/x?u=\\\\evil.example",
        "/app/https:%2F%2Fevil.example",
    ];
    for path in attempts {
        let r = navigate(&st, path, &[]);
        let Some(location) = r.header("location") else {
            assert!(matches!(r.status, 400 | 401 | 404), "{path}: {r:?}");
            continue;
        };
        assert_eq!(r.status, 302, "{path}: {r:?}");
        let query = location
            .strip_prefix("/auth/refresh?")
            .unwrap_or_else(|| panic!("{path}: Location {location:?}"));
        let target = return_to::from_query(query);
        assert!(return_to::is_safe(&target), "{path}: {location:?}");
        assert_eq!(
            return_to::location("/auth/refresh", &target),
            location,
            "{path}: the Location carries exactly that target"
        );
        assert!(
            !location.contains("evil.example") || target.starts_with("/app/"),
            "{path}: {location:?}"
        );
        assert!(
            !location.bytes().any(|b| b.is_ascii_control()),
            "{path}: {location:?}"
        );
        assert_eq!(
            r.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
                .count(),
            0,
            "{path}: {r:?}"
        );
    }
    assert_eq!(
        navigate(&st, "/app/x?next=%0d%0aSet-Cookie:%20a=b", &[]).header("location"),
        Some("/auth/refresh?return_to=/")
    );
    assert_eq!(
        navigate(&st, "/app/%2F%2Fevil.example", &[]).header("location"),
        Some("/auth/refresh?return_to=/")
    );
}

#[test]
fn the_access_cookie_signs_a_browser_in_and_stays_away_from_the_backend() {
    let st = stack();
    let user_id = st.sign_up("erin@e2e.test");
    let s = st.sign_in("erin@e2e.test");
    let signed_in = Instant::now();
    wait_until_valid();
    // A browser holds the token and the device secret in cookies, among its own.
    let cookies = format!(
        "theme=dark; {ACCESS_COOKIE}={}; {DEVICE_COOKIE}={}; lang=en",
        s.access, s.device
    );

    let r = st.envoy.get(
        "/app/hello",
        &[
            ("accept", "application/json"),
            ("cookie", &cookies),
            ("user-agent", UA),
            ("accept-language", LANG),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("x-auth-user").as_deref(), Some(user_id.as_str()));
    assert_eq!(
        r.echoed("cookie").as_deref(),
        Some("theme=dark; lang=en"),
        "neither the token nor the device secret is forwarded"
    );
    // A link on another site that names another method to run (which
    // Rails or Laravel honour): not on the cookie.
    let r = st.envoy.get(
        "/app/hello?_method=DELETE",
        &[
            ("accept", "application/json"),
            ("cookie", &cookies),
            ("sec-fetch-site", "cross-site"),
            ("user-agent", UA),
            ("accept-language", LANG),
        ],
    );
    assert_json_401(&r, "a cross-site GET naming DELETE, on the cookie");

    let r = navigate(&st, "/app/hello", &[("cookie", &cookies)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains(&user_id),
        "the page names the user: {}",
        r.body
    );
    assert!(
        !r.body.contains(ACCESS_COOKIE) && !r.body.contains(&s.access[..40]),
        "the token never reaches the backend"
    );
    assert!(
        signed_in.elapsed() < Duration::from_secs(ACCESS_TTL_SECS),
        "the checks above ran on a live token"
    );

    // The same cookie once the token has expired: back to sign-in, not a JSON 401.
    // A token is valid through its `exp` second, and the filter's clock is its
    // last tick's (up to 100 ms old): a second and a bit past the TTL.
    std::thread::sleep(
        (Duration::from_secs(ACCESS_TTL_SECS + 1) + Duration::from_millis(300))
            .saturating_sub(signed_in.elapsed()),
    );
    let r = navigate(&st, "/app/hello?tab=2", &[("cookie", &cookies)]);
    assert_sent_to_sign_in(
        &r,
        "/auth/refresh?return_to=/app/hello%3Ftab%3D2",
        "an expired token cookie",
    );
    let r = st.envoy.get(
        "/app/hello",
        &[
            ("accept", "application/json"),
            ("cookie", &cookies),
            ("user-agent", UA),
            ("accept-language", LANG),
        ],
    );
    assert_json_401(&r, "an API call with the expired cookie");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("token expired"),
        "{r:?}"
    );
}

/// A page's own API call carries its token in `Authorization` (a DPoP client,
/// a script holding a token), while the browser attaches the access cookie to
/// every request of the origin by itself: the explicit token is the one
/// verified, and neither credential reaches the backend.
#[test]
fn an_explicit_authorization_header_wins_over_the_ambient_access_cookie() {
    let st = stack();
    st.sign_up("fay@e2e.test");
    let cookie_user = st.sign_in("fay@e2e.test");
    let header_user_id = st.sign_up("gus@e2e.test");
    let header_user = st.sign_in("gus@e2e.test");
    wait_until_valid();
    let cookies = format!(
        "theme=dark; {ACCESS_COOKIE}={}; lang=en",
        cookie_user.access
    );
    let bearer = format!("Bearer {}", header_user.access);
    let r = st.envoy.get(
        "/app/hello",
        &[
            ("accept", "application/json"),
            ("cookie", &cookies),
            ("authorization", &bearer),
            ("x-authflow-device", &header_user.device),
            ("user-agent", UA),
            ("accept-language", LANG),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.echoed("x-auth-user").as_deref(),
        Some(header_user_id.as_str()),
        "the header's token is the identity"
    );
    assert_eq!(
        r.echoed("cookie").as_deref(),
        Some("theme=dark; lang=en"),
        "the cookie token is not forwarded"
    );
    assert_eq!(r.echoed("authorization"), None, "nor the header's");

    // The header decides also when it is bad: no falling back to the cookie.
    let r = st.envoy.get(
        "/app/hello",
        &[
            ("accept", "application/json"),
            ("cookie", &cookies),
            ("authorization", "Bearer not.a.token"),
        ],
    );
    assert_json_401(&r, "a bad explicit token beside a good cookie");
}
