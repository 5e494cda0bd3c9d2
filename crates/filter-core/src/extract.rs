//! Finding the token in a request: `Authorization: Bearer` (or `DPoP`) and
//! configured headers, the explicit sources; else configured cookies. More
//! than one token among the explicit sources, or among the cookies, is
//! refused: a request must not be able to smuggle a second identity past the
//! check. An explicit token wins over cookies: a browser attaches the
//! access cookie to every request of the origin by itself, also to a page's
//! own API call that carries its token in `Authorization` (the DPoP client);
//! the cookie is never forwarded then, even with `forward_token` (see
//! `crate::forward`), so no one downstream reads it instead.

use crate::config::TokenSources;
use crate::request::{Request, NOT_UTF8};

#[derive(Debug, PartialEq, Eq)]
pub enum Extracted<'a> {
    None,
    Token(&'a str),
}

/// Where the token was found.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Source {
    /// `Authorization` or a configured token header.
    Explicit,
    /// A configured token cookie (no explicit token came).
    Cookie,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ExtractError {
    /// More than one token, or an `Authorization: Bearer` with nothing usable after it.
    Malformed,
    TooLarge,
}

pub use authflow_contract::authorization::{
    is_b64token, is_token_scheme, lists_a_token, split_authorization,
};

pub fn extract<'a>(
    req: &'a Request,
    sources: &'a TokenSources,
    max_bytes: usize,
) -> Result<Extracted<'a>, ExtractError> {
    Ok(find_token(req, sources, max_bytes)?.map_or(Extracted::None, |(t, _)| Extracted::Token(t)))
}

/// [`extract`], with where the token came from.
pub fn find_token<'a>(
    req: &'a Request,
    sources: &'a TokenSources,
    max_bytes: usize,
) -> Result<Option<(&'a str, Source)>, ExtractError> {
    let mut found: Option<&str> = None;
    let mut explicit = false;
    let mut take = |candidate: &'a str| -> Result<(), ExtractError> {
        if found.is_some_and(|f| f != candidate) {
            return Err(ExtractError::Malformed);
        }
        found = Some(candidate);
        Ok(())
    };
    if sources.authorization_bearer {
        for value in req.header_values("authorization") {
            // Not UTF-8 (obs-text) reads as one marker here, but a backend
            // decoding Latin-1 splits `Bearer<0xA0>t` into a token: refused.
            if value == NOT_UTF8 {
                return Err(ExtractError::Malformed);
            }
            let (scheme, token) = split_authorization(value);
            if !is_token_scheme(scheme) {
                // A token this reading would pass unread, to a backend that reads a list.
                if lists_a_token(value) {
                    return Err(ExtractError::Malformed);
                }
                continue;
            }
            // Not RFC 6750's b64token (whitespace, a comma, a byte past
            // ASCII inside): some backend may take a part of it. One pass
            // over the bytes (every request's token goes through here).
            if !is_b64token(token) {
                return Err(ExtractError::Malformed);
            }
            take(token)?;
            explicit = true;
        }
    }
    for h in &sources.headers {
        for value in req.header_values(h) {
            let token = value.trim();
            let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
            if !token.is_empty() {
                // As in `Authorization`: a list or a second word is not one token.
                if !is_b64token(token) {
                    return Err(ExtractError::Malformed);
                }
                take(token)?;
                explicit = true;
            }
        }
    }
    // Cookies only when no explicit token came: every occurrence, in every
    // `cookie` header; a second value is a second token. Not for a
    // state-changing request the browser marks as sent by another origin
    // (see [`ambient_credentials_allowed`]).
    let cookies_usable = !explicit && ambient_credentials_allowed(req);
    for c in sources.cookies.iter().filter(|_| cookies_usable) {
        for token in req.cookie_values(c).filter(|t| !t.is_empty()) {
            take(token)?;
        }
    }
    let source = if explicit {
        Source::Explicit
    } else {
        Source::Cookie
    };
    // RFC 6750 §2.3's third method: a token in the query beside this one is a
    // second method (§3.1), and a backend reading the query first would take
    // it unverified.
    if found.is_some()
        && crate::policy::query_pairs(req).any(|(name, value)| {
            !value.is_empty() && authflow_contract::query::is_parameter(name, "access_token")
        })
    {
        return Err(ExtractError::Malformed);
    }
    match found {
        None => Ok(None),
        Some(t) if t.len() > max_bytes => Err(ExtractError::TooLarge),
        Some(t) => Ok(Some((t, source))),
    }
}

/// Whether a cookie (an ambient credential: the browser attaches it by
/// itself) may authenticate this request. Always for the safe methods
/// (`GET`, `HEAD`, `OPTIONS`) that name no other method to run (an override
/// a backend may honour on a `GET` too) and switch no protocol (a WebSocket
/// handshake is a `GET`, but no CORS keeps another page from reading and
/// writing on the socket). Otherwise not when the browser says another
/// origin sent it: `Sec-Fetch-Site` other than `same-origin` or `none`
/// (which no page can forge), or, from a browser that sends no
/// `Sec-Fetch-Site`, an `Origin` that is not this request's `:authority`.
/// `SameSite=Lax` alone lets every site of the same registrable domain
/// (`evil.example.com` for `app.example.com`) post with the cookie, and the
/// backend, seeing only identity headers, cannot tell.
pub fn ambient_credentials_allowed(req: &Request) -> bool {
    if matches!(req.method(), "GET" | "HEAD" | "OPTIONS")
        && !req.has_header("upgrade")
        && crate::policy::named_methods(req)
            .iter()
            .all(String::is_empty)
    {
        return true;
    }
    let first = |name| req.header_values(name).next();
    if let Some(site) = first("sec-fetch-site") {
        return matches!(site.trim(), "same-origin" | "none");
    }
    match first("origin") {
        None => true,
        Some(origin) => {
            let origin = origin.trim();
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let host = req.header(":authority").unwrap_or_default();
            !host.is_empty() && authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> TokenSources {
        TokenSources {
            authorization_bearer: true,
            cookies: vec!["at".into()],
            headers: vec!["x-token".into()],
            header_spellings: vec!["x_token".into()],
        }
    }

    fn req(h: &[(&str, &str)]) -> Request {
        Request::of(h)
    }

    #[test]
    fn finds_each_source() {
        let s = sources();
        assert_eq!(
            extract(&req(&[("authorization", "Bearer a.b.c")]), &s, 100),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(&req(&[("authorization", "bearer   a.b.c ")]), &s, 100),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(&req(&[("x-token", "a.b.c")]), &s, 100),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(&req(&[("cookie", "x=1; at=a.b.c")]), &s, 100),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(&req(&[("authorization", "Basic Zm9vOmJhcg==")]), &s, 100),
            Ok(Extracted::None)
        );
        assert_eq!(
            extract(&req(&[("authorization", "DPoP a.b.c")]), &s, 100),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(&req(&[("authorization", "DPoP")]), &s, 100),
            Err(ExtractError::Malformed)
        );
        assert_eq!(extract(&req(&[]), &s, 100), Ok(Extracted::None));
    }

    /// Finding: a token in the query (RFC 6750 §2.3, `?access_token=`) beside
    /// the one the filter verified went upstream untouched, and a backend
    /// reading the query first took it unverified. A second method is
    /// `invalid_request` (§3.1), in the spellings a backend reads the name
    /// in (percent-encoded, PHP's `.` and ` ` for `_`).
    #[test]
    fn a_token_in_the_query_beside_another_is_a_second_method() {
        let s = sources();
        for path in [
            "/api?access_token=forged",
            "/api?a=1&access_token=forged",
            "/api?a=1;access_token=forged",
            "/api?access%5Ftoken=forged",
            "/api?access.token=forged",
            "/api?access+token=forged",
        ] {
            for credential in [("authorization", "Bearer a.b.c"), ("cookie", "at=a.b.c")] {
                assert_eq!(
                    extract(&req(&[(":path", path), credential]), &s, 100),
                    Err(ExtractError::Malformed),
                    "{path} {credential:?}"
                );
            }
        }
        // No second token: an empty parameter, another name, or the query alone.
        for (path, token) in [
            ("/api?access_token=", Some("a.b.c")),
            ("/api?my_access_token=x", Some("a.b.c")),
            ("/api#access_token=x", Some("a.b.c")),
            ("/api?access_token=x", None),
        ] {
            let h = token.map(|t| ("authorization", format!("Bearer {t}")));
            let mut headers = vec![(":path", path)];
            headers.extend(h.as_ref().map(|(n, v)| (*n, v.as_str())));
            assert!(extract(&req(&headers), &s, 100).is_ok(), "{path}");
        }
    }

    #[test]
    fn refuses_ambiguity_and_size() {
        let s = sources();
        assert_eq!(
            extract(
                &req(&[("authorization", "Bearer a.b.c"), ("x-token", "d.e.f")]),
                &s,
                100
            ),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            extract(
                &req(&[("authorization", "Bearer a.b.c"), ("x-token", "a.b.c")]),
                &s,
                100
            ),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(&req(&[("authorization", "Bearer")]), &s, 100),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            extract(&req(&[("authorization", "Bearer a b")]), &s, 100),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            extract(&req(&[("authorization", "Bearer abcdef")]), &s, 3),
            Err(ExtractError::TooLarge)
        );
        // Cookies: every header, every occurrence.
        assert_eq!(
            extract(&req(&[("cookie", "x=1"), ("cookie", "at=a.b.c")]), &s, 100),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(&req(&[("cookie", "at=a.b.c; at=d.e.f")]), &s, 100),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            extract(
                &req(&[("cookie", "at=a.b.c"), ("cookie", "at=d.e.f")]),
                &s,
                100
            ),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            extract(
                &req(&[
                    ("authorization", "Bearer a.b.c"),
                    ("cookie", "at=a.b.c; at=")
                ]),
                &s,
                100
            ),
            Ok(Extracted::Token("a.b.c"))
        );
    }

    /// Envoy joins two `Authorization` lines into one value with a comma,
    /// and a backend reading it as a list (Flask-JWT-Extended) takes the
    /// `Bearer` after one. The value was read by its first scheme only: a
    /// token after `Basic x,` (or in `,Bearer t`, `Bearer,t`) was never
    /// checked, and reached the backend beside a cookie's identity.
    #[test]
    fn a_token_scheme_after_a_comma_is_refused() {
        let s = sources();
        for value in [
            "Basic dTpw,Bearer a.b.c",
            "Basic dTpw, bearer a.b.c",
            ",Bearer a.b.c",
            "x,DPoP a.b.c",
            "Bearer,a.b.c",
            "Digest realm=\"a\", Bearer\ta.b.c",
        ] {
            for cookie in [None, Some(("cookie", "at=d.e.f"))] {
                let mut h = vec![("authorization", value)];
                h.extend(cookie);
                assert_eq!(
                    extract(&req(&h), &s, 100),
                    Err(ExtractError::Malformed),
                    "{value:?} {cookie:?}"
                );
            }
        }
        // Other schemes' lists carry no token of ours, and pass as before.
        for value in [
            "Digest username=\"bearer\", realm=\"a\", nonce=\"b\"",
            "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=c",
        ] {
            assert_eq!(
                extract(&req(&[("authorization", value)]), &s, 100),
                Ok(Extracted::None),
                "{value}"
            );
        }
    }

    #[test]
    fn an_explicit_token_wins_over_ambient_cookies() {
        let s = sources();
        // A browser attaches its cookies to a page's own API call: the header is the token.
        assert_eq!(
            extract(
                &req(&[
                    ("authorization", "Bearer a.b.c"),
                    ("cookie", "x=1"),
                    ("cookie", "at=d.e.f")
                ]),
                &s,
                100
            ),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(
                &req(&[
                    ("authorization", "DPoP a.b.c"),
                    ("cookie", "at=d.e.f; at=g.h.i")
                ]),
                &s,
                100
            ),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(
                &req(&[("x-token", "a.b.c"), ("cookie", "at=d.e.f")]),
                &s,
                100
            ),
            Ok(Extracted::Token("a.b.c"))
        );
        // Explicit sources still may not disagree, and a bad header is not rescued by a cookie.
        assert_eq!(
            extract(
                &req(&[
                    ("authorization", "Bearer a.b.c"),
                    ("x-token", "d.e.f"),
                    ("cookie", "at=a.b.c")
                ]),
                &s,
                100
            ),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            extract(
                &req(&[("authorization", "Bearer"), ("cookie", "at=a.b.c")]),
                &s,
                100
            ),
            Err(ExtractError::Malformed)
        );
    }

    /// RFC 7235 puts one SP between scheme and token, but backends that split
    /// on `\s+` read `Bearer<TAB>t` as the token `t`: so does the filter.
    #[test]
    fn a_tab_after_the_scheme_is_read_as_a_separator() {
        let s = sources();
        assert_eq!(split_authorization("Bearer\ta.b.c"), ("Bearer", "a.b.c"));
        assert_eq!(split_authorization(" DPoP \t a.b.c "), ("DPoP", "a.b.c"));
        assert_eq!(split_authorization("Basic"), ("Basic", ""));
        assert_eq!(
            extract(&req(&[("authorization", "Bearer\ta.b.c")]), &s, 100),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(
            extract(&req(&[("authorization", "dpop\ta.b.c")]), &s, 100),
            Ok(Extracted::Token("a.b.c"))
        );
        // Read as a token, it is explicit: it wins over the cookie, and may not disagree with a token header.
        assert_eq!(
            extract(
                &req(&[("authorization", "Bearer\td.e.f"), ("cookie", "at=a.b.c")]),
                &s,
                100
            ),
            Ok(Extracted::Token("d.e.f"))
        );
        assert_eq!(
            extract(
                &req(&[("authorization", "Bearer\td.e.f"), ("x-token", "a.b.c")]),
                &s,
                100
            ),
            Err(ExtractError::Malformed)
        );
        // Whitespace of any kind inside the token: not one token.
        for bad in [
            "Bearer a\tb",
            "Bearer a\u{a0}b",
            "Bearer\ta\u{2028}b",
            "Bearer\t",
        ] {
            assert_eq!(
                extract(&req(&[("authorization", bad)]), &s, 100),
                Err(ExtractError::Malformed),
                "{bad:?}"
            );
        }
    }

    /// Go's `strings.Fields` splits on any Unicode space; a backend decoding
    /// the header as Latin-1 (Node, Python) splits `Bearer<0xA0>t` too.
    #[test]
    fn any_space_after_the_scheme_is_a_separator() {
        let s = sources();
        assert_eq!(
            split_authorization("Bearer\u{a0}a.b.c"),
            ("Bearer", "a.b.c")
        );
        assert_eq!(
            extract(
                &req(&[
                    ("authorization", "Bearer\u{3000}d.e.f"),
                    ("cookie", "at=a.b.c")
                ]),
                &s,
                100
            ),
            Ok(Extracted::Token("d.e.f"))
        );
        // Not UTF-8: unreadable here, so not let through beside a cookie token.
        let raw = Request::new(
            crate::request::HeaderBlock::from_pairs(&[
                (b"authorization".as_slice(), b"Bearer\xa0d.e.f".as_slice()),
                (b"cookie", b"at=a.b.c"),
            ]),
            None,
        );
        assert_eq!(extract(&raw, &s, 100), Err(ExtractError::Malformed));
    }

    #[test]
    fn reports_where_the_token_came_from() {
        let s = sources();
        let from = |h: &[(&str, &str)]| {
            find_token(&req(h), &s, 100)
                .map(|found| found.map(|(t, source)| (t.to_owned(), source)))
        };
        assert_eq!(
            from(&[("authorization", "Bearer a.b.c"), ("cookie", "at=d.e.f")]),
            Ok(Some(("a.b.c".into(), Source::Explicit)))
        );
        assert_eq!(
            from(&[("x-token", "a.b.c")]),
            Ok(Some(("a.b.c".into(), Source::Explicit)))
        );
        assert_eq!(
            from(&[("authorization", "Basic Zm9v"), ("cookie", "at=d.e.f")]),
            Ok(Some(("d.e.f".into(), Source::Cookie)))
        );
        assert_eq!(from(&[]), Ok(None));
    }

    /// Finding: spellings under which backends read `access_token` that the
    /// second-method check missed: any case (ASP.NET Core), arrays (PHP,
    /// Rack, qs), PHP's unclosed `[`, Rack's dropped brackets.
    #[test]
    fn a_token_in_the_query_is_found_in_every_parser_spelling() {
        let s = sources();
        let mut passed = Vec::new();
        for path in [
            // ASP.NET Core: `Request.Query["access_token"]` ignores case
            // (the documented SignalR `OnMessageReceived` pattern).
            "/api?ACCESS_TOKEN=forged",
            "/api?Access_Token=forged",
            // PHP, Rack, qs (Express): an array under `access_token`.
            "/api?access_token[]=forged",
            "/api?access_token%5B%5D=forged",
            "/api?access_token[0]=forged",
            // PHP: an unclosed `[` becomes `_`: `$_GET['access_token']`.
            "/api?access[token=forged",
            // Rack 2 (Rails 6/7.0): leading `[`/`]` and trailing `]` dropped.
            "/api?access_token]=forged",
            "/api?[access_token=forged",
        ] {
            if extract(
                &req(&[(":path", path), ("authorization", "Bearer a.b.c")]),
                &s,
                100,
            )
            .is_ok()
            {
                passed.push(path);
            }
        }
        assert!(passed.is_empty(), "a second token passed in {passed:?}");
    }
}
