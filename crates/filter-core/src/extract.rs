//! Finding the token in a request: `Authorization: Bearer` (or `DPoP`) and
//! configured headers, the explicit sources; else configured cookies. More
//! than one token among the explicit sources, or among the cookies, is
//! refused: a request must not be able to smuggle a second identity past the
//! check. An explicit token wins over cookies: a browser attaches the
//! access cookie to every request of the origin by itself, also to a page's
//! own API call that carries its token in `Authorization` (the DPoP client);
//! the cookie is never forwarded, so no one downstream reads it instead.

use crate::config::TokenSources;
use crate::request::Request;

#[derive(Debug, PartialEq, Eq)]
pub enum Extracted<'a> {
    None,
    Token(&'a str),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ExtractError {
    /// More than one token, or an `Authorization: Bearer` with nothing usable after it.
    Malformed,
    TooLarge,
}

pub fn extract<'a>(req: &'a Request, sources: &'a TokenSources, max_bytes: usize) -> Result<Extracted<'a>, ExtractError> {
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
            let value = value.trim();
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            // RFC 6750 §2.1: the scheme is case-insensitive; other schemes (Basic …) are not ours.
            // A DPoP-bound token comes as `DPoP <token>` (RFC 9449 §7.1); its proof is checked later.
            if !scheme.eq_ignore_ascii_case("bearer") && !scheme.eq_ignore_ascii_case("dpop") {
                continue;
            }
            let token = rest.trim();
            if token.is_empty() || token.contains(' ') {
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
                take(token)?;
                explicit = true;
            }
        }
    }
    // Cookies only when no explicit token came: every occurrence, in every
    // `cookie` header; a second value is a second token.
    for c in sources.cookies.iter().filter(|_| !explicit) {
        for token in req.cookie_values(c).filter(|t| !t.is_empty()) {
            take(token)?;
        }
    }
    match found {
        None => Ok(Extracted::None),
        Some(t) if t.len() > max_bytes => Err(ExtractError::TooLarge),
        Some(t) => Ok(Extracted::Token(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> TokenSources {
        TokenSources { authorization_bearer: true, cookies: vec!["at".into()], headers: vec!["x-token".into()] }
    }

    fn req(h: &[(&str, &str)]) -> Request {
        Request::from_headers(h.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(), None)
    }

    #[test]
    fn finds_each_source() {
        let s = sources();
        assert_eq!(extract(&req(&[("authorization", "Bearer a.b.c")]), &s, 100), Ok(Extracted::Token("a.b.c")));
        assert_eq!(extract(&req(&[("authorization", "bearer   a.b.c ")]), &s, 100), Ok(Extracted::Token("a.b.c")));
        assert_eq!(extract(&req(&[("x-token", "a.b.c")]), &s, 100), Ok(Extracted::Token("a.b.c")));
        assert_eq!(extract(&req(&[("cookie", "x=1; at=a.b.c")]), &s, 100), Ok(Extracted::Token("a.b.c")));
        assert_eq!(extract(&req(&[("authorization", "Basic Zm9vOmJhcg==")]), &s, 100), Ok(Extracted::None));
        assert_eq!(extract(&req(&[("authorization", "DPoP a.b.c")]), &s, 100), Ok(Extracted::Token("a.b.c")));
        assert_eq!(extract(&req(&[("authorization", "DPoP")]), &s, 100), Err(ExtractError::Malformed));
        assert_eq!(extract(&req(&[]), &s, 100), Ok(Extracted::None));
    }

    #[test]
    fn refuses_ambiguity_and_size() {
        let s = sources();
        assert_eq!(extract(&req(&[("authorization", "Bearer a.b.c"), ("x-token", "d.e.f")]), &s, 100), Err(ExtractError::Malformed));
        assert_eq!(extract(&req(&[("authorization", "Bearer a.b.c"), ("x-token", "a.b.c")]), &s, 100), Ok(Extracted::Token("a.b.c")));
        assert_eq!(extract(&req(&[("authorization", "Bearer")]), &s, 100), Err(ExtractError::Malformed));
        assert_eq!(extract(&req(&[("authorization", "Bearer a b")]), &s, 100), Err(ExtractError::Malformed));
        assert_eq!(extract(&req(&[("authorization", "Bearer abcdef")]), &s, 3), Err(ExtractError::TooLarge));
        // Cookies: every header, every occurrence.
        assert_eq!(extract(&req(&[("cookie", "x=1"), ("cookie", "at=a.b.c")]), &s, 100), Ok(Extracted::Token("a.b.c")));
        assert_eq!(extract(&req(&[("cookie", "at=a.b.c; at=d.e.f")]), &s, 100), Err(ExtractError::Malformed));
        assert_eq!(extract(&req(&[("cookie", "at=a.b.c"), ("cookie", "at=d.e.f")]), &s, 100), Err(ExtractError::Malformed));
        assert_eq!(extract(&req(&[("authorization", "Bearer a.b.c"), ("cookie", "at=a.b.c; at=")]), &s, 100), Ok(Extracted::Token("a.b.c")));
    }

    #[test]
    fn an_explicit_token_wins_over_ambient_cookies() {
        let s = sources();
        // A browser attaches its cookies to a page's own API call: the header is the token.
        assert_eq!(
            extract(&req(&[("authorization", "Bearer a.b.c"), ("cookie", "x=1"), ("cookie", "at=d.e.f")]), &s, 100),
            Ok(Extracted::Token("a.b.c"))
        );
        assert_eq!(extract(&req(&[("authorization", "DPoP a.b.c"), ("cookie", "at=d.e.f; at=g.h.i")]), &s, 100), Ok(Extracted::Token("a.b.c")));
        assert_eq!(extract(&req(&[("x-token", "a.b.c"), ("cookie", "at=d.e.f")]), &s, 100), Ok(Extracted::Token("a.b.c")));
        // Explicit sources still may not disagree, and a bad header is not rescued by a cookie.
        assert_eq!(extract(&req(&[("authorization", "Bearer a.b.c"), ("x-token", "d.e.f"), ("cookie", "at=a.b.c")]), &s, 100), Err(ExtractError::Malformed));
        assert_eq!(extract(&req(&[("authorization", "Bearer"), ("cookie", "at=a.b.c")]), &s, 100), Err(ExtractError::Malformed));
    }
}
