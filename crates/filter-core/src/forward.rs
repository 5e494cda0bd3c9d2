//! Which of the request's credentials reach the upstream.
//!
//! A backend behind the filter needs the identity headers, not the
//! credentials: a token or device secret it receives can be logged, leaked
//! and replayed. So, like Envoy's `jwt_authn` with `forward: false`:
//! - a token that verified is removed from where it can travel (a `Bearer`
//!   `Authorization` header, the configured token cookies and headers) unless
//!   its provider sets `forward_token` — and then only that token goes: the
//!   token cookies beside an explicit token were never checked and are removed;
//! - the device secret (`x-authflow-device`, the device cookie) is a
//!   credential for the auth service alone: removed from every request let
//!   through unless `forward_device_secret`;
//! - with browser sign-in configured, the service's sign-in cookies
//!   (challenge, CSRF) and the refresh token are removed likewise: its pages' alone;
//! - a route with `forward_credentials` (matched as sent: see
//!   `policy::route_as_sent`; the auth service's own API, which
//!   needs both for logout, refresh and admin calls) gets everything as sent.
//!
//! A token that did not verify is not forwarded either when it is one of
//! ours: a token cookie (the service's cookie: whatever it holds, it goes
//! upstream only as the token that verified), or a token naming a configured
//! issuer that the filter refused on a public route (revoked, expired, bound
//! to another device: in a backend's logs, or at a backend that checks
//! signatures only, it would outlive that refusal). A token no configured
//! issuer signed is left alone, as `jwt_authn` does: a public route's
//! backend may take its own kind.

use authflow_contract::browser::{CHALLENGE_COOKIE, CSRF_COOKIE, REFRESH_COOKIE};
use authflow_contract::client_address::ADDRESS_HEADERS;
use authflow_contract::fingerprint::{DEVICE_COOKIE, DEVICE_HEADER};

use crate::config::FilterConfig;
use crate::extract::{find_token, split_authorization, Source};
use crate::policy::route_as_sent;
use crate::provider_id::ProviderId;
use crate::request::{HeaderReads, Request};

/// Whether a request trailer named `name` is kept from the upstream (beside
/// the identity headers, which the glue removes there too). A backend that
/// folds trailers into the header section (RFC 9110 §6.5.1 forbids it;
/// Apache's `MergeTrailers On` does it) would read them as headers the
/// decision never saw: a method, path or host override the route rules
/// judge in the headers, a credential beside the one verified, or a client
/// address (`x-forwarded-for` to the right of the proxies' entries) that
/// the edge removes from the headers only. A name that is not UTF-8 is
/// kept away too.
pub fn withheld_trailer(config: &FilterConfig, name: &[u8]) -> bool {
    use crate::header_spellings::same_header;
    use crate::policy::{HOST_OVERRIDE_HEADERS, METHOD_OVERRIDE_HEADERS, PATH_OVERRIDE_HEADERS};
    let Ok(name) = std::str::from_utf8(name) else {
        return true;
    };
    const FORWARDED_PREFIX: &str = "x-forwarded-";
    if name
        .get(..FORWARDED_PREFIX.len())
        .is_some_and(|prefix| same_header(prefix, FORWARDED_PREFIX))
    {
        return true;
    }
    let credentials = ["authorization", "cookie", "dpop", DEVICE_HEADER];
    let mut judged = METHOD_OVERRIDE_HEADERS
        .iter()
        .chain(&PATH_OVERRIDE_HEADERS)
        .chain(&HOST_OVERRIDE_HEADERS)
        .chain(&credentials)
        .chain(&ADDRESS_HEADERS)
        .copied()
        .chain(config.token_sources.headers.iter().map(String::as_str));
    judged.any(|h| same_header(name, h))
}

/// Whether the answer to `req` may not set the credential cookies
/// ([`sets_credential_cookie`]): where browsers are served (browser sign-in,
/// token cookies, or the auth service's routes behind the filter), every
/// backend's answer but the service's own (a `forward_credentials` route,
/// matched as sent). Credentials are kept from a backend on the way in; on
/// the way out, a `Set-Cookie` from any backend would otherwise plant an
/// attacker's access or refresh token in the browser (login CSRF) or clear
/// its device secret (its tokens stop working there): a response header
/// can do what the page's scripts cannot (the cookies are `HttpOnly`).
pub fn guards_response_cookies(config: &FilterConfig, req: &Request) -> bool {
    let serves_browsers = config.browser.is_some()
        || !config.token_sources.cookies.is_empty()
        || config.routes.iter().any(|r| r.forward_credentials);
    serves_browsers && !route_as_sent(config, req).is_some_and(|r| r.forward_credentials)
}

/// Whether a `Set-Cookie` value sets one of the cookies the filter and the
/// auth service own (the token cookies, the device secret, the refresh
/// token, the sign-in cookies), in any spelling a reader may take for it.
pub fn sets_credential_cookie(config: &FilterConfig, set_cookie: &[u8]) -> bool {
    use authflow_contract::cookie::{raw_pairs, split_pair};
    // Without a name (no `=`, or nothing before it) a browser stores the
    // text as a nameless cookie's value, and sends it back alone: `=a=b`
    // comes back as `a=b`. Read here as the browser sends it back.
    let Some(pair) = raw_pairs(set_cookie).next() else {
        return false;
    };
    let name = match split_pair(pair) {
        (b"", value) => split_pair(value).0,
        (name, _) => name,
    };
    let named = |ours: &str| name == ours.as_bytes() || another_spelling(name, ours);
    [DEVICE_COOKIE, REFRESH_COOKIE, CHALLENGE_COOKIE, CSRF_COOKIE]
        .into_iter()
        .any(named)
        || config.token_sources.cookies.iter().any(|c| named(c))
}

/// One change to the request before it goes upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    Remove(String),
    /// Replace every copy of the header with this one value.
    Set(String, String),
}

/// The edits that keep the credentials the configuration does not forward
/// away from the upstream. `verified_by`: the provider whose token verified
/// on this request, if one did; `refused_token`: the request's token was
/// refused on this public route and is ours, or its tokens were several
/// (`Allowed`'s fields).
pub fn credential_edits(
    config: &FilterConfig,
    req: &Request,
    verified_by: Option<ProviderId>,
    refused_token: bool,
) -> Vec<HeaderEdit> {
    if route_as_sent(config, req).is_some_and(|r| r.forward_credentials) {
        return Vec::new();
    }
    let sources = &config.token_sources;
    let provider = verified_by.and_then(|p| config.provider(p));
    let strip_token = provider.is_some_and(|p| !p.forward_token) || refused_token;
    // `forward_token` forwards the token that verified and no other: beside
    // an explicit token the token cookies were never looked at (it wins over
    // them), so one may be revoked, or someone else's.
    // (Extraction run again: the engine reports only that a token verified.
    // Without token cookies there is nothing to tell apart.)
    let found = match provider {
        Some(_) if !sources.cookies.is_empty() => {
            find_token(req, sources, config.max_token_bytes).unwrap_or(None)
        }
        _ => None,
    };
    // The token cookies go upstream only as the token that verified: one
    // that did not (refused, or withheld from another site's state-changing
    // request, never checked) reaches no backend, a public one included.
    let strip_cookies = strip_token
        || provider.is_none()
        || matches!(found, Some((_, Source::Explicit)))
        || (!sources.cookies.is_empty() && !crate::extract::ambient_credentials_allowed(req));
    // The token cookie that verified and goes upstream: one copy of it, the
    // name as configured holding exactly the token. An empty copy, a quoted
    // one or a duplicate (extraction reads them as the same token) is read
    // by a backend that keeps the first copy, or does not unquote, as
    // something else.
    let forwarded = match found {
        Some((token, Source::Cookie)) if !strip_cookies => Some(token),
        _ => None,
    };
    let strip_device = !config.forward_device_secret;
    let mut edits = Vec::new();
    let mut cookies: Vec<&str> = Vec::new();
    if strip_cookies {
        cookies.extend(sources.cookies.iter().map(String::as_str));
    }
    if strip_token {
        // Any copy: extraction reads every one (and a `Bearer` after a comma).
        if sources.authorization_bearer
            && req
                .header_values("authorization")
                .any(is_token_authorization)
        {
            edits.push(HeaderEdit::Remove("authorization".to_owned()));
        }
        // The DPoP proof goes with its token, from whichever source: it is a
        // credential for this hop only.
        if req.header(authflow_contract::dpop::PROOF_HEADER).is_some() {
            edits.push(HeaderEdit::Remove(
                authflow_contract::dpop::PROOF_HEADER.to_owned(),
            ));
        }
        edits.extend(
            sources
                .headers
                .iter()
                .filter(|h| carries(config, req, h))
                .map(|h| HeaderEdit::Remove(h.clone())),
        );
    }
    // The service's sign-in cookies (`__Host-`, so `Path=/`: the browser
    // sends them everywhere) are for its pages alone: a pending sign-in's
    // challenge id in another backend's logs could spend the user's code
    // attempts. Where browsers are served: a `browser_redirect` route, or
    // a token cookie (the service's pages set the access cookie).
    // So is the refresh token: its `Path` is the path the browser sent, not
    // the one routed here (nor does `__Secure-` keep a sibling's `Path=/` away).
    if config.browser.is_some() || !sources.cookies.is_empty() {
        cookies.extend([CHALLENGE_COOKIE, CSRF_COOKIE, REFRESH_COOKIE]);
    }
    if strip_device {
        if carries(config, req, DEVICE_HEADER) {
            edits.push(HeaderEdit::Remove(DEVICE_HEADER.to_owned()));
        }
        cookies.push(DEVICE_COOKIE);
    }
    // No `_` spelling of a token header goes either: a CGI-style backend
    // reads `x_token` as `x-token`, and extraction never read it (with no
    // token read, a revoked one of ours there would pass unchecked).
    edits.extend(token_header_spellings(config, req).map(HeaderEdit::Remove));
    // No other spelling of a token cookie goes either (see
    // `another_spelling`): never checked, and a backend may read it as the
    // token cookie (even when the verified one is forwarded).
    if let Some(edit) = cookie_edit(req, &cookies, &sources.cookies, forwarded) {
        edits.push(edit);
    }
    edits
}

/// Whether a cookie name as sent is another spelling of `ours` that some
/// backend reads as `ours`: ASP.NET Core compares cookie names ignoring
/// ASCII case; PHP's `$_COOKIE` percent-decodes a name (`+` as a space) and
/// reads ` `, `.` and an unclosed `[` as `_` (a closed one makes an array,
/// whose `]` no name of ours holds). Not `ours` itself.
fn another_spelling(sent: &[u8], ours: &str) -> bool {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    fn fold(b: u8) -> u8 {
        match b {
            b' ' | b'+' | b'.' | b'[' => b'_',
            b => b.to_ascii_lowercase(),
        }
    }
    // Decoded once, on the fly: no allocation per cookie of every request.
    fn decoded(name: &[u8]) -> impl Iterator<Item = u8> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let b = *name.get(at)?;
            if b == b'%' {
                let high = name.get(at + 1).copied().and_then(hex);
                let low = name.get(at + 2).copied().and_then(hex);
                if let (Some(h), Some(l)) = (high, low) {
                    at += 3;
                    return Some(h * 16 + l);
                }
            }
            at += 1;
            Some(b)
        })
    }
    sent != ours.as_bytes()
        && sent.len() >= ours.len()
        && decoded(sent).map(fold).eq(ours.bytes().map(fold))
}

/// The `_`/`-` spellings of the configured token headers the request
/// carries (not the names themselves), or every such spelling when the
/// whole header map was not read.
fn token_header_spellings<'a>(
    config: &'a FilterConfig,
    req: &'a Request,
) -> impl Iterator<Item = String> + 'a {
    let known = req.has_every_header(&HeaderReads::for_config(config));
    config
        .token_sources
        .header_spellings
        .iter()
        .filter(move |s| !known || req.has_header(s))
        .cloned()
}

/// Whether the request may carry a header (any case of its name). Removing
/// one it does not carry would cost a host call for nothing; that is known
/// only when the glue read the whole header map, which a configuration that
/// strips the device secret or names token headers makes it do
/// (`HeaderReads::for_config`, an early answer there) and the read worked
/// (a request's map is never empty). Otherwise: assume so.
fn carries(config: &FilterConfig, req: &Request, name: &str) -> bool {
    !req.has_every_header(&HeaderReads::for_config(config)) || req.has_header(name)
}

/// `Bearer <token>` or `DPoP <token>`, read as extraction reads it, a
/// value listing one after a comma, or one that is not UTF-8 (a Latin-1
/// reader splits `Bearer<0xA0>t` into the token): the last two extraction
/// refuses.
fn is_token_authorization(value: &str) -> bool {
    // The list last: a token's own value (every request's) needs no comma search.
    let (scheme, token) = split_authorization(value);
    (!token.is_empty() && crate::extract::is_token_scheme(scheme))
        || value == crate::request::NOT_UTF8
        || crate::extract::lists_a_token(value)
}

/// The `cookie` header without the cookies named in `drop`, nor other
/// spellings of those in `spellings_of`, nor a copy of a name in
/// `spellings_of` but the first holding exactly `forwarded` (all copies of
/// the header joined into one), or `None` when none of them is there. Read
/// on bytes, as the device check reads it: a line with another cookie that is
/// not UTF-8 still loses ours (its bytes reach the upstream as U+FFFD then).
fn cookie_edit(
    req: &Request,
    drop: &[&str],
    spellings_of: &[String],
    forwarded: Option<&str>,
) -> Option<HeaderEdit> {
    use authflow_contract::cookie::{raw_pairs, split_pair};
    if drop.is_empty() && spellings_of.is_empty() {
        return None;
    }
    // `exact`: the token cookie's own name counts too (a copy never checked).
    let named = |name: &[u8], exact: bool| {
        drop.iter().any(|d| d.as_bytes() == name)
            || spellings_of
                .iter()
                .any(|s| another_spelling(name, s) || (exact && s.as_bytes() == name))
    };
    let mut removed = false;
    let mut kept: Vec<u8> = Vec::new();
    let mut forwarded_names: Vec<&[u8]> = Vec::new();
    for pair in req.header_bytes("cookie").flat_map(raw_pairs) {
        let (name, value) = split_pair(pair);
        // A copy of the forwarded token cookie other than the one that goes.
        let mut another_copy = || match forwarded {
            Some(token) if spellings_of.iter().any(|s| s.as_bytes() == name) => {
                if value != token.as_bytes() || forwarded_names.contains(&name) {
                    return true;
                }
                forwarded_names.push(name);
                false
            }
            _ => false,
        };
        // A parser that also splits on `,` (RFC 2109) reads a cookie after
        // each comma, Python's `http.cookies` after whitespace: one of ours
        // there goes with the pair that hides it.
        // Each parser splits at one of them (a space inside `access token`,
        // a PHP spelling, is no separator to an RFC 2109 parser).
        let hides_one = || {
            let behind = |split: fn(&u8) -> bool| {
                pair.split(split)
                    .skip(1)
                    .any(|part| named(split_pair(part.trim_ascii()).0, true))
            };
            behind(|b| *b == b',') || behind(u8::is_ascii_whitespace)
        };
        if named(name, false) || hides_one() || another_copy() {
            removed = true;
        } else {
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    match (removed, kept.is_empty()) {
        (false, _) => None,
        (true, true) => Some(HeaderEdit::Remove("cookie".to_owned())),
        (true, false) => Some(HeaderEdit::Set(
            "cookie".to_owned(),
            String::from_utf8_lossy(&kept).into_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: serde_json::Value) -> FilterConfig {
        let mut c = json!({
            "providers": [{
                "name": "a", "issuer": "https://a", "audiences": ["api"], "algorithms": ["EdDSA"],
                "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}}
            }],
            "token_sources": {"cookies": ["access_token"], "headers": ["x-token"]},
            "routes": [{"match": {"prefix": "/v1/auth/"}, "policy": "public", "forward_credentials": true}]
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        FilterConfig::from_json(c.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn only_the_auth_services_own_answers_set_the_credential_cookies() {
        let c = config(json!({}));
        assert!(!guards_response_cookies(&c, &req("/v1/auth/refresh", &[])));
        for path in ["/api", "/v1/auth", "/v1/auth/../../api", "/V1/AUTH/x"] {
            assert!(guards_response_cookies(&c, &req(path, &[])), "{path}");
        }
        // No browsers served (API tokens in headers, no service routes): nothing to guard.
        let api_only = FilterConfig::from_json(
            json!({"providers": [{
                "name": "a", "issuer": "https://a", "audiences": ["api"], "algorithms": ["EdDSA"],
                "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}}
            }]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert!(!guards_response_cookies(&api_only, &req("/api", &[])));
        for owned in [
            "access_token=x",
            " __Host-authflow-device=; Max-Age=0",
            "__Secure-authflow-refresh=r; Path=/; Secure",
            "__Host-authflow-challenge=c",
            "__Host-authflow-csrf=c",
            "__HOST-authflow-device=s",
            "access%5Ftoken=x",
            "Access.Token=x",
            "__Host-authflow-device",
            "__Host-authflow-device; Path=/",
            "=access_token=forged",
            " = access_token=forged",
            "=Access_Token=forged; Path=/",
        ] {
            assert!(sets_credential_cookie(&c, owned.as_bytes()), "{owned}");
        }
        for other in [
            "theme=dark",
            "access_token_hint=x",
            "x=__Host-authflow-device",
            "",
        ] {
            assert!(!sets_credential_cookie(&c, other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn trailers_judged_in_the_headers_are_withheld_in_any_spelling() {
        let c = config(json!({}));
        for name in [
            "x-http-method-override",
            "x_http_method",
            "x-original-url",
            "x_forwarded_host",
            "forwarded",
            "authorization",
            "cookie",
            "dpop",
            "x_authflow_device",
            "x_token",
            // A client's address to the right of the proxies' (finding:
            // withheld from the headers at the edge, not from trailers).
            "x-forwarded-for",
            "x_forwarded_for",
            "x-forwarded-proto",
            "x-real-ip",
            "true_client_ip",
        ] {
            assert!(withheld_trailer(&c, name.as_bytes()), "{name}");
        }
        assert!(withheld_trailer(&c, b"x-\xffoverride"));
        for kept in ["x-checksum", "grpc-status", "x-other", "x-forwarded"] {
            assert!(!withheld_trailer(&c, kept.as_bytes()), "{kept}");
        }
    }

    fn req(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut h = vec![(":path", path)];
        h.extend_from_slice(headers);
        Request::of(&h)
    }

    /// The provider forwards its token (`forward_token`), and the device secret goes too.
    fn forwarding() -> FilterConfig {
        let mut c = config(json!({"forward_device_secret": true}));
        c.providers
            .get_mut(ProviderId::FIRST)
            .unwrap()
            .forward_token = true;
        c
    }

    fn remove(name: &str) -> HeaderEdit {
        HeaderEdit::Remove(name.into())
    }

    const CREDENTIALS: &[(&str, &str)] = &[
        ("authorization", "Bearer t"),
        ("x-token", "t"),
        ("x-authflow-device", "secret"),
        ("cookie", "a=1; __Host-authflow-device=secret"),
        ("cookie", "access_token=t; b=2"),
    ];

    #[test]
    fn by_default_neither_the_verified_token_nor_the_device_secret_is_forwarded() {
        let c = config(json!({}));
        assert_eq!(
            credential_edits(
                &c,
                &req("/api", CREDENTIALS),
                Some(ProviderId::FIRST),
                false
            ),
            vec![
                remove("authorization"),
                remove("x-token"),
                remove("x-authflow-device"),
                HeaderEdit::Set("cookie".into(), "a=1; b=2".into()),
            ]
        );
        // Nothing but credentials in the cookie header: the header goes.
        let only = req(
            "/api",
            &[("cookie", " __Host-authflow-device=s ;access_token=t")],
        );
        assert_eq!(
            credential_edits(&c, &only, Some(ProviderId::FIRST), false),
            vec![remove("cookie")]
        );
        // A line with a cookie that is not UTF-8 still loses the device cookie.
        let block = crate::request::HeaderBlock::from_pairs(&[
            (":path", b"/api".as_slice()),
            (
                "cookie",
                b"name=Jos\xe9; __Host-authflow-device=s".as_slice(),
            ),
        ]);
        let latin1 = Request::new(block, None);
        assert_eq!(
            credential_edits(&c, &latin1, Some(ProviderId::FIRST), false),
            vec![HeaderEdit::Set("cookie".into(), "name=Jos\u{FFFD}".into())]
        );
        // No credential cookie: the cookie header is left as it is.
        assert_eq!(
            credential_edits(&c, &req("/api", &[("cookie", "a=1")]), None, false),
            vec![]
        );
        // A DPoP proof goes with its token whichever source carried it.
        for source in [("x-token", "t"), ("cookie", "access_token=t")] {
            let sent = req("/api", &[source, ("dpop", "proof")]);
            let edits = credential_edits(&c, &sent, Some(ProviderId::FIRST), false);
            assert!(edits.contains(&remove("dpop")), "{source:?}: {edits:?}");
        }
    }

    /// The service's sign-in cookies go to its own routes alone, where browser
    /// sign-in is configured, whether or not the request was authenticated.
    #[test]
    fn the_sign_in_cookies_reach_only_the_service() {
        let sent = req(
            "/app",
            &[(
                "cookie",
                "a=1; __Host-authflow-challenge=ch-1; __Host-authflow-csrf=c",
            )],
        );
        // (`config` names a token cookie: the access cookie of browser sign-in.)
        let browser = config(json!({}));
        for verified_by in [Some(ProviderId::FIRST), None] {
            assert_eq!(
                credential_edits(&browser, &sent, verified_by, false),
                vec![HeaderEdit::Set("cookie".into(), "a=1".into())]
            );
        }
        let to_service = req(
            "/v1/auth/x",
            &[("cookie", "__Host-authflow-challenge=ch-1")],
        );
        assert_eq!(credential_edits(&browser, &to_service, None, false), vec![]);
        let no_cookies = config(json!({"token_sources": {"headers": ["x-token"]}}));
        assert_eq!(
            credential_edits(&no_cookies, &sent, None, false),
            vec![],
            "no browser sign-in"
        );
    }

    /// Each removal is a host call on every request: a header the request
    /// does not carry is not removed. Only sound because the glue then reads
    /// the whole header map (every copy of every header).
    #[test]
    fn only_the_credentials_a_request_carries_are_removed() {
        let c = config(json!({}));
        assert_eq!(
            crate::request::HeaderReads::for_config(&c),
            crate::request::HeaderReads::All
        );
        let bare = req("/api", &[("authorization", "Bearer t")]);
        assert_eq!(
            credential_edits(&c, &bare, Some(ProviderId::FIRST), false),
            vec![remove("authorization")]
        );
        let shouted = req(
            "/api",
            &[
                ("authorization", "Bearer t"),
                ("X-Token", "t"),
                ("X-Authflow-Device", "s"),
            ],
        );
        assert_eq!(
            credential_edits(&c, &shouted, Some(ProviderId::FIRST), false),
            vec![
                remove("authorization"),
                remove("x-token"),
                remove("x-authflow-device")
            ],
            "whatever the case of the name"
        );
        let c = config(json!({"forward_device_secret": true}));
        assert_eq!(
            crate::request::HeaderReads::for_config(&c),
            crate::request::HeaderReads::All,
            "token headers are configured"
        );
        assert_eq!(
            credential_edits(&c, &bare, Some(ProviderId::FIRST), false),
            vec![remove("authorization")]
        );
        // A failed read leaves the map empty (a request always has pseudo-headers):
        // nothing is known absent, so every credential header is removed by name.
        let c = config(json!({}));
        let unread = Request::from_headers(Vec::new(), None);
        assert_eq!(
            credential_edits(&c, &unread, None, false),
            vec![remove("x-authflow-device"), remove("x_token")]
        );
    }

    /// A token no configured issuer signed, and other `Authorization`
    /// schemes, are left alone: a public route's backend may take its own.
    /// Not the token cookie: the service's, it goes upstream only as the
    /// token that verified.
    #[test]
    fn an_unverified_token_and_other_authorization_schemes_are_left_alone() {
        let c = config(json!({}));
        let edits = credential_edits(&c, &req("/public", CREDENTIALS), None, false);
        assert_eq!(
            edits,
            vec![
                remove("x-authflow-device"),
                HeaderEdit::Set("cookie".into(), "a=1; b=2".into())
            ]
        );
        let basic = req("/api", &[("authorization", "Basic dTpw")]);
        assert!(
            !credential_edits(&c, &basic, Some(ProviderId::FIRST), false)
                .contains(&remove("authorization"))
        );
    }

    /// Finding: on a public route a token of a configured issuer that the
    /// filter refused (revoked, expired, bound to another device) went on to
    /// the backend as sent, in `Authorization` or in the token cookie: in its
    /// logs, or at a backend checking signatures only, it outlived the
    /// refusal. The request goes on anonymously; the token does not.
    #[test]
    fn a_token_of_ours_refused_on_a_public_route_goes_no_further() {
        for c in [config(json!({})), forwarding()] {
            let edits = credential_edits(&c, &req("/public", CREDENTIALS), None, true);
            for gone in ["authorization", "x-token"] {
                assert!(edits.contains(&remove(gone)), "{gone}: {edits:?}");
            }
            assert!(
                edits.contains(&HeaderEdit::Set("cookie".into(), "a=1; b=2".into()))
                    || edits.contains(&HeaderEdit::Set(
                        "cookie".into(),
                        "a=1; __Host-authflow-device=secret; b=2".into()
                    )),
                "{edits:?}"
            );
        }
        let with_proof = req("/public", &[("authorization", "DPoP t"), ("dpop", "p")]);
        assert_eq!(
            credential_edits(&config(json!({})), &with_proof, None, true),
            vec![remove("authorization"), remove("dpop")]
        );
    }

    /// Finding: a `forward_credentials` rule was matched on the normalized
    /// path and on the host without its port, while Envoy routes the path
    /// and authority as sent: `//v1/auth/x`, `/v1/%61uth/x` or
    /// `auth.example:8443` matched the rule here, went to another route
    /// there (the application's backend), and took the token and device
    /// secret with them. Credentials go only where the request reads as
    /// the rule says without any normalizing.
    #[test]
    fn credentials_are_forwarded_only_where_envoy_routes_as_the_rule_reads() {
        let c = config(json!({}));
        assert_eq!(
            credential_edits(&c, &req("/v1/auth/x", CREDENTIALS), None, false),
            vec![]
        );
        for path in [
            "//v1/auth/x",
            "/v1//auth/x",
            "/v1/%61uth/x",
            "/x/../v1/auth/x",
            "/v1/./auth/x",
        ] {
            assert_ne!(
                credential_edits(&c, &req(path, CREDENTIALS), None, false),
                vec![],
                "{path}"
            );
        }
        let by_host = config(json!({"routes": [
            {"match": {"prefix": "/", "host": "auth.example"}, "policy": "public", "forward_credentials": true}
        ]}));
        let on = |authority: &str| {
            let mut h = vec![(":authority", authority)];
            h.extend_from_slice(CREDENTIALS);
            credential_edits(&by_host, &req("/x", &h), None, false)
        };
        assert_eq!(on("auth.example"), vec![]);
        assert_eq!(on("Auth.Example"), vec![]);
        for authority in [
            "auth.example.",
            "auth.example:8443",
            "AUTH.example:",
            "auth.example.:80",
        ] {
            assert_ne!(on(authority), vec![], "{authority}");
        }
    }

    #[test]
    fn forwarding_is_a_configured_choice() {
        let c = config(json!({"forward_device_secret": true}));
        assert_eq!(
            credential_edits(
                &c,
                &req("/api", CREDENTIALS),
                Some(ProviderId::FIRST),
                false
            ),
            vec![
                remove("authorization"),
                remove("x-token"),
                HeaderEdit::Set(
                    "cookie".into(),
                    "a=1; __Host-authflow-device=secret; b=2".into()
                )
            ]
        );
        let mut c = config(json!({"forward_device_secret": true}));
        c.providers
            .get_mut(ProviderId::FIRST)
            .unwrap()
            .forward_token = true;
        // The explicit token goes upstream; the token cookie beside it was never
        // checked, so it does not (see `only_the_token_that_verified_is_forwarded`).
        assert_eq!(
            credential_edits(
                &c,
                &req("/api", CREDENTIALS),
                Some(ProviderId::FIRST),
                false
            ),
            vec![HeaderEdit::Set(
                "cookie".into(),
                "a=1; __Host-authflow-device=secret; b=2".into()
            )]
        );
        // A route for the credentials' own service gets them whatever the defaults.
        let c = config(json!({}));
        assert_eq!(
            credential_edits(
                &c,
                &req("/v1/auth/logout", CREDENTIALS),
                Some(ProviderId::FIRST),
                false
            ),
            vec![]
        );
    }

    /// `forward_token` forwards the token that verified, never a second one:
    /// a token cookie beside an explicit token was not checked (revoked, or
    /// another user's) and goes, whatever the provider forwards.
    #[test]
    fn only_the_token_that_verified_is_forwarded() {
        let mut c = config(json!({"forward_device_secret": true}));
        c.providers
            .get_mut(ProviderId::FIRST)
            .unwrap()
            .forward_token = true;
        let both = req(
            "/api",
            &[
                ("authorization", "Bearer t"),
                ("cookie", "a=1; access_token=other"),
                ("cookie", "b=2"),
            ],
        );
        assert_eq!(
            credential_edits(&c, &both, Some(ProviderId::FIRST), false),
            vec![HeaderEdit::Set("cookie".into(), "a=1; b=2".into())]
        );
        let header = req(
            "/api",
            &[("x-token", "t"), ("cookie", "access_token=other")],
        );
        assert_eq!(
            credential_edits(&c, &header, Some(ProviderId::FIRST), false),
            vec![remove("cookie")]
        );
        // The cookie is the token that verified: forwarded as configured.
        let cookie = req(
            "/api",
            &[
                ("authorization", "Basic dTpw"),
                ("cookie", "a=1; access_token=t"),
            ],
        );
        assert_eq!(
            credential_edits(&c, &cookie, Some(ProviderId::FIRST), false),
            vec![]
        );
        // No token verified (none of a configured issuer): the header token
        // is left alone; the token cookie, never vouched for, goes.
        assert_eq!(
            credential_edits(&c, &both, None, false),
            vec![HeaderEdit::Set("cookie".into(), "a=1; b=2".into())]
        );
    }

    /// Finding: only the exact token cookie name was removed. Backends read
    /// other spellings as the same cookie (ASP.NET Core ignores the case of
    /// cookie names; PHP's `$_COOKIE` percent-decodes names and reads ` `,
    /// `+` and `.` as `_`, and keeps the first copy): a client with a valid
    /// token sent `Access_Token=<forged>` or `access.token=<forged>` beside
    /// it and, with `forward_token`, the backend read the forged token while
    /// the identity headers came from the verified one.
    /// CGI-style servers (WSGI, Rack, PHP) read `x_token` as `x-token`: a
    /// copy of a token header spelled with `_` never goes upstream beside
    /// the token that verified, forwarded or not.
    #[test]
    fn underscore_spellings_of_a_token_header_do_not_travel() {
        let forwarding = forwarding();
        let from_header = req("/api", &[("x-token", "t"), ("x_token", "forged")]);
        assert_eq!(
            credential_edits(&forwarding, &from_header, Some(ProviderId::FIRST), false),
            vec![remove("x_token")]
        );
        let stripping = config(json!({"forward_device_secret": true}));
        let explicit = req(
            "/api",
            &[("authorization", "Bearer t"), ("x_token", "forged")],
        );
        assert_eq!(
            credential_edits(&stripping, &explicit, Some(ProviderId::FIRST), false),
            vec![remove("authorization"), remove("x_token")]
        );
    }

    /// Finding: a `_` spelling of a token header went upstream whenever no
    /// token verified or was refused. Extraction never reads it, so a
    /// revoked or expired token of a configured issuer sent as `x_token`
    /// on a public route passed as an anonymous request, and reached a
    /// CGI-style backend as its `x-token`: the token the filter strips once
    /// it refuses it (see the module's notes), unchecked.
    #[test]
    fn a_token_header_spelling_never_travels_even_without_a_token_read() {
        let c = config(json!({"forward_device_secret": true}));
        let r = req("/api", &[("x_token", "revoked")]);
        assert_eq!(
            crate::extract::extract(&r, &c.token_sources, c.max_token_bytes),
            Ok(crate::extract::Extracted::None),
            "never read as a token"
        );
        assert_eq!(
            credential_edits(&c, &r, None, false),
            vec![remove("x_token")]
        );
        // Beside a token of another issuer (left as sent), still not.
        let foreign = req(
            "/api",
            &[("authorization", "Bearer t"), ("x_token", "revoked")],
        );
        assert_eq!(
            credential_edits(&c, &foreign, None, false),
            vec![remove("x_token")]
        );
    }

    /// A legacy cookie parser (RFC 2109, still an option in some servers)
    /// splits on `,` too: `x=1, access_token=forged` is two cookies to it,
    /// the first of them a token copy the filter (splitting on `;` only, as
    /// RFC 6265 says) never looked at. Such a pair does not go upstream
    /// beside the verified token.
    #[test]
    fn a_token_cookie_hidden_behind_a_comma_does_not_travel() {
        let forwarding = forwarding();
        for hidden in [
            "x=1, access_token=forged",
            "x=1,access_token=forged",
            "x=1, b=2, Access.Token=forged",
        ] {
            let from_cookie = req(
                "/api",
                &[("cookie", &format!("{hidden}; access_token=t; b=2"))],
            );
            assert_eq!(
                credential_edits(&forwarding, &from_cookie, Some(ProviderId::FIRST), false),
                vec![HeaderEdit::Set(
                    "cookie".into(),
                    "access_token=t; b=2".into()
                )],
                "{hidden}"
            );
        }
        // A comma in an ordinary value is left alone.
        let plain = req("/api", &[("cookie", "x=1, 2; access_token=t; b=2")]);
        assert_eq!(
            credential_edits(&forwarding, &plain, Some(ProviderId::FIRST), false),
            vec![]
        );
    }

    /// Finding: with `forward_token`, a token cookie sent again empty,
    /// quoted or twice went upstream as sent (extraction reads them all as
    /// the one token): a backend keeping the first copy (PHP) read
    /// `access_token=; access_token=<valid>` as no token, or kept the
    /// quotes. Exactly one copy goes: the name as configured, the token.
    #[test]
    fn exactly_one_copy_of_the_forwarded_token_cookie_travels() {
        let forwarding = forwarding();
        for (sent, upstream) in [
            ("access_token=; access_token=t; b=2", "access_token=t; b=2"),
            (
                "access_token=\"t\"; b=2; access_token=t",
                "b=2; access_token=t",
            ),
            ("a=1; access_token=t; access_token=t", "a=1; access_token=t"),
            ("access_token=\"t\"", ""),
        ] {
            let r = req("/api", &[("cookie", sent)]);
            assert_eq!(
                find_token(&r, &forwarding.token_sources, 4096),
                Ok(Some(("t", Source::Cookie))),
                "{sent}"
            );
            let expected = if upstream.is_empty() {
                remove("cookie")
            } else {
                HeaderEdit::Set("cookie".into(), upstream.into())
            };
            assert_eq!(
                credential_edits(&forwarding, &r, Some(ProviderId::FIRST), false),
                vec![expected],
                "{sent}"
            );
        }
        let one = req(
            "/api",
            &[("cookie", "a=1; access_token=t"), ("cookie", "b=2")],
        );
        assert_eq!(
            credential_edits(&forwarding, &one, Some(ProviderId::FIRST), false),
            vec![]
        );
    }

    /// Finding: Python's `http.cookies` (Bottle, CherryPy, aiohttp before
    /// 3.12 read request cookies with it) splits pairs at whitespace too, and
    /// its last copy of a name wins: `access_token=<valid>; x=1
    /// access_token=<forged>` was the verified token to the filter and the
    /// forged one to such a backend, with `forward_token`. Nor did a device
    /// or sign-in cookie behind a space go.
    #[test]
    fn a_credential_cookie_hidden_behind_whitespace_does_not_travel() {
        let forwarding = forwarding();
        for hidden in [
            "x=1 access_token=forged",
            "x=1\taccess_token=forged",
            "x=1  b=2 Access.Token=forged",
            // A spelling with a space in it, behind a comma.
            "x=1, access token=forged",
        ] {
            let from_cookie = req(
                "/api",
                &[("cookie", &format!("access_token=t; {hidden}; b=2"))],
            );
            assert_eq!(
                credential_edits(&forwarding, &from_cookie, Some(ProviderId::FIRST), false),
                vec![HeaderEdit::Set(
                    "cookie".into(),
                    "access_token=t; b=2".into()
                )],
                "{hidden:?}"
            );
        }
        let c = config(json!({}));
        let device = req(
            "/api",
            &[("cookie", "x=1 __Host-authflow-device=secret; b=2")],
        );
        assert_eq!(
            credential_edits(&c, &device, None, false),
            vec![HeaderEdit::Set("cookie".into(), "b=2".into())]
        );
        // Spaces in an ordinary value, or around `=`, are left alone.
        let plain = req(
            "/api",
            &[("cookie", "x=hello world; access_token = t; b=2")],
        );
        assert_eq!(
            credential_edits(&forwarding, &plain, Some(ProviderId::FIRST), false),
            vec![]
        );
    }

    #[test]
    fn other_spellings_of_a_token_cookie_never_travel_beside_the_verified_token() {
        let forwarding = forwarding();
        let stripping = config(json!({"forward_device_secret": true}));
        for planted in [
            "ACCESS_TOKEN=forged",
            "Access_Token=forged",
            "access.token=forged",
            "access token=forged",
            "access+token=forged",
            "access%5Ftoken=forged",
            "%61ccess_token=forged",
            "access%5ftoken=forged",
        ] {
            // The token came from the cookie: it goes upstream, its other spellings do not.
            let from_cookie = req(
                "/api",
                &[("cookie", &format!("{planted}; access_token=t; b=2"))],
            );
            assert_eq!(
                credential_edits(&forwarding, &from_cookie, Some(ProviderId::FIRST), false),
                vec![HeaderEdit::Set(
                    "cookie".into(),
                    "access_token=t; b=2".into()
                )],
                "{planted}"
            );
            // An explicit token: no spelling of the token cookie goes.
            let explicit = req(
                "/api",
                &[
                    ("authorization", "Bearer t"),
                    ("cookie", &format!("{planted}; b=2")),
                ],
            );
            assert_eq!(
                credential_edits(&forwarding, &explicit, Some(ProviderId::FIRST), false),
                vec![HeaderEdit::Set("cookie".into(), "b=2".into())],
                "{planted}"
            );
            // Not forwarded: no spelling of it goes either.
            assert_eq!(
                credential_edits(&stripping, &from_cookie, Some(ProviderId::FIRST), false),
                vec![HeaderEdit::Set("cookie".into(), "b=2".into())],
                "{planted}"
            );
        }
        // Other cookies are not spellings of it.
        for other in [
            "access_tokens=x",
            "xaccess_token=x",
            "access-token=x",
            "access_toke=x",
        ] {
            let r = req("/api", &[("cookie", &format!("{other}; access_token=t"))]);
            assert_eq!(
                credential_edits(&forwarding, &r, Some(ProviderId::FIRST), false),
                vec![],
                "{other}"
            );
        }
    }

    /// Finding: PHP registers a name with an unclosed `[` with `_` in its
    /// place (`$_COOKIE['access_token']` for `access[token`), first copy
    /// winning: with `forward_token`, `access[token=<forged>` sent before
    /// the verified `access_token` reached such a backend as the token, and
    /// a backend could set it in the browser as a credential cookie.
    #[test]
    fn an_unclosed_bracket_spelling_of_a_token_cookie_does_not_travel() {
        let forwarding = forwarding();
        for planted in ["access[token=forged", "access%5Btoken=forged"] {
            let r = req(
                "/api",
                &[("cookie", &format!("{planted}; access_token=t; b=2"))],
            );
            assert_eq!(
                credential_edits(&forwarding, &r, Some(ProviderId::FIRST), false),
                vec![HeaderEdit::Set(
                    "cookie".into(),
                    "access_token=t; b=2".into()
                )],
                "{planted}"
            );
            assert!(
                sets_credential_cookie(&forwarding, planted.as_bytes()),
                "{planted}"
            );
        }
        // A closed bracket is an array under `access` to PHP: not the token.
        let array = req("/api", &[("cookie", "access[token]=x; access_token=t")]);
        assert_eq!(
            credential_edits(&forwarding, &array, Some(ProviderId::FIRST), false),
            vec![]
        );
    }

    /// Finding: extraction reads every `Authorization` copy, but removal
    /// looked at the first alone: `Basic …` first and the verified `Bearer`
    /// token second kept the token in the request sent upstream.
    #[test]
    fn a_token_in_any_authorization_copy_is_removed() {
        let c = config(json!({}));
        let r = req(
            "/api",
            &[
                ("authorization", "Basic dTpw"),
                ("authorization", "Bearer t"),
            ],
        );
        assert_eq!(
            find_token(&r, &c.token_sources, c.max_token_bytes),
            Ok(Some(("t", Source::Explicit))),
            "the token that verified"
        );
        assert_eq!(
            credential_edits(&c, &r, Some(ProviderId::FIRST), false),
            vec![remove("authorization")]
        );
    }

    #[test]
    fn a_tab_after_the_scheme_still_marks_the_token() {
        let c = config(json!({}));
        for value in ["Bearer\tt", "dpop\tt", " bearer \t t"] {
            let r = req("/api", &[("authorization", value)]);
            assert_eq!(
                credential_edits(&c, &r, Some(ProviderId::FIRST), false),
                vec![remove("authorization")],
                "{value:?}"
            );
        }
        let other = req(
            "/api",
            &[
                ("authorization", "Bearertoken"),
                ("authorization", "Basic\tdTpw"),
            ],
        );
        assert_eq!(
            credential_edits(&c, &other, Some(ProviderId::FIRST), false),
            vec![]
        );
    }

    /// Finding: with `case_insensitive_paths`, `/V1/AUTH/x` matched the
    /// `/v1/auth/` `forward_credentials` rule here, while Envoy's `prefix`
    /// (case-sensitive by default) routes it to the application's backend:
    /// the token and device secret went there.
    #[test]
    fn credentials_follow_a_rule_only_in_the_paths_own_case() {
        let c = config(json!({"case_insensitive_paths": true}));
        assert_eq!(
            credential_edits(&c, &req("/v1/auth/x", CREDENTIALS), None, false),
            vec![]
        );
        let forwarded: Vec<_> = ["/V1/AUTH/logout", "/v1/Auth/refresh"]
            .into_iter()
            .filter(|p| credential_edits(&c, &req(p, CREDENTIALS), None, false).is_empty())
            .collect();
        assert!(
            forwarded.is_empty(),
            "credentials forwarded as sent for {forwarded:?}"
        );
    }

    /// A method rule is judged ignoring the method's case, while a router
    /// matching `:method` compares it as sent: `get` gets no credentials.
    /// (`HEAD` under a `GET` rule still does: left as the rule reads.)
    #[test]
    fn credentials_follow_a_method_rule_only_for_the_method_as_sent() {
        let c = config(json!({"routes": [
            {"match": {"prefix": "/v1/auth/", "methods": ["GET"]}, "policy": "public", "forward_credentials": true}
        ]}));
        let on = |method: &str| {
            let mut h = vec![(":method", method)];
            h.extend_from_slice(CREDENTIALS);
            credential_edits(&c, &req("/v1/auth/x", &h), None, false)
        };
        assert_eq!(on("GET"), vec![]);
        let forwarded: Vec<_> = ["get", "head", "POST"]
            .into_iter()
            .filter(|m| on(m).is_empty())
            .collect();
        assert!(
            forwarded.is_empty(),
            "credentials forwarded as sent for {forwarded:?}"
        );
    }
}
