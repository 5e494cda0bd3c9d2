//! Browser sign-in: a page a browser navigates to, on a route marked
//! `browser_redirect`, is not answered with a JSON 401 the user cannot act
//! on but with a `302` to the auth service's refresh endpoint
//! (`browser.refresh_path`), carrying where to come back to. The service
//! rotates the refresh cookie and sends the browser back, or shows sign-in.
//!
//! Only a refusal that is a 401 becomes a redirect, and only for a
//! navigation: `GET`/`HEAD` whose `accept` lists `text/html` with a non-zero
//! weight (what browsers send for a page; `fetch`, `curl` and API clients
//! send `*/*` or `application/json`). A 403 (signed in, not allowed) stays a
//! 403: signing in again would not change it. A request presenting a token
//! with the `DPoP` scheme, or refused for a DPoP reason, keeps its RFC 9449
//! answer: its client is a program that handles challenges.
//!
//! The route is the one the request's normalized path matches (the same
//! match as the route rules; an ambiguous path was already refused with
//! 400), and the return target is that normalized path with the query,
//! checked by [`authflow_contract::return_to`]: `/` when it is not a safe
//! same-origin target.

use authflow_contract::return_to;

use crate::config::FilterConfig;
use crate::deny::{DenyReason, DenyResponse};
use crate::dpop::presented_as_dpop;
use crate::path;
use crate::policy::route_for;
use crate::request::Request;

/// The `302` that sends a browser to sign in, when this refusal of this
/// request should be one.
pub fn redirect(
    config: &FilterConfig,
    req: &Request,
    reason: DenyReason,
    refused: &DenyResponse,
) -> Option<DenyResponse> {
    let refresh_path = config.browser.as_ref()?.refresh_path.as_str();
    if refused.status != 401
        || matches!(reason, DenyReason::Dpop(_))
        || !is_navigation(req)
        || presented_as_dpop(req)
    {
        return None;
    }
    if !route_for(config, req)?.browser_redirect {
        return None;
    }
    let location = return_to::location(refresh_path, &return_target(req).unwrap_or_default());
    let headers = vec![
        ("location".to_owned(), location),
        ("cache-control".to_owned(), "no-store".to_owned()),
    ];
    Some(DenyResponse {
        status: 302,
        headers,
        body: String::new(),
    })
}

/// A browser loading a page: `GET` or `HEAD` with `text/html` acceptable,
/// and a top-level page load where the browser says (a page's own `fetch`
/// asking for HTML is none: its script needs the 401), as the service's
/// refresh page reads it.
pub fn is_navigation(req: &Request) -> bool {
    let header = |name: &'static str| req.header(name).map(str::as_bytes);
    matches!(req.method(), "GET" | "HEAD")
        && authflow_contract::browser::is_page_load(
            header("sec-fetch-mode"),
            header("sec-fetch-dest"),
        )
        && accepts_html(req.header_values("accept"))
}

/// Whether any of the `accept` header values lists `text/html` without
/// refusing it by weight (`q=0`, RFC 9110 §12.5.1). Wildcards (`*/*`,
/// `text/*`) do not count: every HTTP client sends those.
pub fn accepts_html<'a>(accept_values: impl IntoIterator<Item = &'a str>) -> bool {
    accept_values
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            parts
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/html"))
                && !parts.any(is_zero_weight)
        })
}

/// `q=0`, `q=0.0`, … `q=0.000`: "not acceptable".
fn is_zero_weight(param: &str) -> bool {
    param.split_once('=').is_some_and(|(name, value)| {
        let value = value.trim();
        name.trim().eq_ignore_ascii_case("q")
            && value.starts_with('0')
            && value.bytes().all(|b| b == b'0' || b == b'.')
    })
}

/// The normalized request path and its query: where the browser comes back to.
fn return_target(req: &Request) -> Option<String> {
    let raw = req.header(":path").unwrap_or_default();
    let normalized = path::readings(path::without_query(raw)).ok()?.normalized;
    let mut target = normalized.into_owned();
    if let Some((_, query)) = raw.split_once('?') {
        target.push('?');
        target.push_str(query.split('#').next().unwrap_or_default());
    }
    Some(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> FilterConfig {
        let c = json!({
            "providers": [{"name": "p", "issuer": "i", "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": {"remote": {"cluster": "c", "path": "/j"}}}],
            "browser": {"refresh_path": "/auth/refresh"},
            "routes": [
                {"match": {"path_prefix": "/auth"}, "policy": "public"},
                {"match": {"path_prefix": "/app/admin"}, "policy": {"roles_any": ["admin"]}, "browser_redirect": true},
                {"match": {"path_prefix": "/app"}, "policy": "authenticated", "browser_redirect": true}
            ]
        });
        FilterConfig::from_json(c.to_string().as_bytes()).unwrap()
    }

    const PAGE: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut h = vec![(":method", method), (":path", path)];
        h.extend_from_slice(headers);
        Request::of(&h)
    }

    fn decide(r: &Request, reason: DenyReason) -> DenyResponse {
        let refused = reason.response(5, None);
        redirect(&config(), r, reason, &refused).unwrap_or(refused)
    }

    fn location(r: &DenyResponse) -> Option<&str> {
        r.headers
            .iter()
            .find(|(n, _)| n == "location")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_navigation_that_would_get_401_is_sent_to_refresh() {
        for reason in [
            DenyReason::MissingToken,
            DenyReason::Expired,
            DenyReason::BadSignature,
            DenyReason::SessionRevoked,
            DenyReason::SubjectBanned,
        ] {
            let r = decide(
                &req("GET", "/app/hello?x=1&y=2", &[("accept", PAGE)]),
                reason,
            );
            assert_eq!(r.status, 302, "{reason:?}");
            assert_eq!(
                location(&r),
                Some("/auth/refresh?return_to=/app/hello%3Fx%3D1%26y%3D2")
            );
            assert!(r
                .headers
                .contains(&("cache-control".to_owned(), "no-store".to_owned())));
            assert!(
                !r.headers.iter().any(|(n, _)| n == "www-authenticate"),
                "no challenge details"
            );
            assert!(r.body.is_empty());
        }
        assert_eq!(
            decide(
                &req("HEAD", "/app", &[("accept", "text/html")]),
                DenyReason::MissingToken
            )
            .status,
            302
        );
    }

    /// A page's own `fetch` (or an image, a frame's sub-request) asking for
    /// HTML is no navigation: redirected to sign-in it got the sign-in page
    /// as its answer where its script expects a 401 to refresh on. The
    /// browser says which is which (`Sec-Fetch-Mode`, as the service's
    /// refresh page reads it); without it, `Accept` decides as before.
    #[test]
    fn a_browser_request_that_is_no_navigation_keeps_its_401() {
        let html = ("accept", "text/html,application/xhtml+xml");
        for mode in ["cors", "no-cors", "same-origin", "websocket"] {
            let r = req("GET", "/app", &[html, ("sec-fetch-mode", mode)]);
            assert_eq!(decide(&r, DenyReason::Expired).status, 401, "{mode}");
        }
        let r = req(
            "GET",
            "/app",
            &[
                html,
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ],
        );
        assert_eq!(decide(&r, DenyReason::Expired).status, 302);
    }

    #[test]
    fn everything_else_keeps_its_answer() {
        let nav = [("accept", PAGE)];
        let kept = [
            (
                req("GET", "/app/admin", &nav),
                DenyReason::InsufficientRole,
                403,
            ),
            (
                req("GET", "/app/x", &[("accept", "application/json")]),
                DenyReason::MissingToken,
                401,
            ),
            (
                req("GET", "/app/x", &[("accept", "*/*")]),
                DenyReason::MissingToken,
                401,
            ),
            (req("GET", "/app/x", &[]), DenyReason::MissingToken, 401),
            (req("POST", "/app/x", &nav), DenyReason::MissingToken, 401),
            (req("GET", "/other", &nav), DenyReason::MissingToken, 401),
            (
                req(
                    "GET",
                    "/app/x",
                    &[("accept", PAGE), ("authorization", "DPoP a.b.c")],
                ),
                DenyReason::Expired,
                401,
            ),
            (
                req("GET", "/app/x", &nav),
                DenyReason::Dpop(authflow_contract::dpop::DpopError::BearerDowngrade),
                401,
            ),
            (req("GET", "/app/x", &nav), DenyReason::KeysUnavailable, 503),
            (req("GET", "/app/x", &nav), DenyReason::InvalidRequest, 400),
        ];
        for (r, reason, status) in kept {
            let answer = decide(&r, reason);
            assert_eq!(
                answer.status,
                status,
                "{reason:?} on {:?}",
                r.header(":path")
            );
            assert_eq!(location(&answer), None);
        }
    }

    #[test]
    fn the_route_is_matched_on_the_normalized_path() {
        let nav = [("accept", PAGE)];
        // `/other/../app/x` is `/app/x`: a redirect route; `/app/../other` is not.
        assert_eq!(
            location(&decide(
                &req("GET", "/other/../app/x", &nav),
                DenyReason::MissingToken
            )),
            Some("/auth/refresh?return_to=/app/x")
        );
        assert_eq!(
            decide(&req("GET", "/app/../other", &nav), DenyReason::MissingToken).status,
            401
        );
        assert_eq!(
            location(&decide(
                &req("GET", "/app//%68ello", &nav),
                DenyReason::MissingToken
            )),
            Some("/auth/refresh?return_to=/app/hello")
        );
    }

    #[test]
    fn the_return_target_never_leaves_the_origin() {
        let nav = [("accept", PAGE)];
        for (path, target) in [
            // Normalized to `/evil.example/app/x`: not a redirect route at all.
            ("//evil.example/app/x", None),
            (
                "/app//evil.example/x",
                Some("/auth/refresh?return_to=/app/evil.example/x"),
            ),
            (
                "/app/x?next=%0d%0aSet-Cookie:a",
                Some("/auth/refresh?return_to=/"),
            ),
            ("/app/x?a=\\b", Some("/auth/refresh?return_to=/")),
            (
                "/app/x?a=b#frag",
                Some("/auth/refresh?return_to=/app/x%3Fa%3Db"),
            ),
            ("/app/%2F%2Fevil.example", Some("/auth/refresh?return_to=/")),
            ("/app/%5Cevil.example", Some("/auth/refresh?return_to=/")),
        ] {
            let r = decide(&req("GET", path, &nav), DenyReason::MissingToken);
            assert_eq!(location(&r), target, "{path}");
            assert_eq!(r.status, if target.is_some() { 302 } else { 401 }, "{path}");
        }
    }

    #[test]
    fn accept_is_parsed_by_media_range_and_weight() {
        for yes in [
            vec!["text/html"],
            vec![PAGE],
            vec!["TEXT/HTML; charset=utf-8"],
            vec!["application/json", "text/html;q=0.5"],
            vec!["text/html;q=1", "x"],
            vec!["text/html ; Q=0.001"],
            vec!["text/html;level=1;q=1.000"],
        ] {
            assert!(accepts_html(yes.iter().copied()), "{yes:?}");
        }
        for no in [
            vec![],
            vec!["*/*"],
            vec!["text/*"],
            vec!["application/json"],
            vec!["text/html;q=0"],
            vec!["text/html;q=0.000"],
            vec!["text/html; Q = 0.0"],
            vec!["text/html;charset=utf-8;q=0", "application/json"],
            vec!["text/htmlx", "xtext/html"],
            vec!["application/xhtml+xml"],
        ] {
            assert!(!accepts_html(no.iter().copied()), "{no:?}");
        }
    }
}
