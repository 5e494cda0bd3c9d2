//! CSRF protection for every form of the pages (signed double submit).
//!
//! Each browser gets a random value in the `__Host-authflow-csrf` cookie; a
//! form carries `HMAC(csrf_key, value)`. A POST passes only when its cookie
//! (exactly one value: a second, tossed cookie is refused) and its token
//! agree. The key is derived from the KEK, so every replica accepts every
//! other's forms, and a site that cannot read our pages cannot mint a token
//! — nor plant a `__Host-` cookie, which only this origin over a secure
//! channel can set. `Origin` and `Sec-Fetch-Site`, when a browser sends them,
//! must name this origin too.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;

use authflow_contract::cookie::single_value;

use crate::kek::DerivedKeys;

/// The per-browser value (the filter only keeps it from other backends).
pub use authflow_contract::browser::CSRF_COOKIE;

/// Why a POST was refused (logged, never shown in detail).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    CrossSite,
    MissingCookie,
    DuplicateCookie,
    BadToken,
}

fn cookie_headers(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes())
}

/// What a form's token tags: this browser's cookie value.
fn tagged(value: &str) -> [&[u8]; 2] {
    [b"authflow csrf v1\0", value.as_bytes()]
}

/// The token for this browser's forms, and the `Set-Cookie` value when the
/// browser has no (single) CSRF cookie yet.
pub fn token_for(keys: &DerivedKeys, headers: &HeaderMap) -> (String, Option<String>) {
    if let Ok(Some(value)) = single_value(cookie_headers(headers), CSRF_COOKIE) {
        return (keys.tag(&tagged(value)), None);
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let value = URL_SAFE_NO_PAD.encode(bytes);
    let cookie = format!("{CSRF_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path=/");
    (keys.tag(&tagged(&value)), Some(cookie))
}

/// The checks of one form POST: same origin, one CSRF cookie, its token
/// (made with any of `keys`: a form served before a KEK rotation still posts).
pub fn check(keys: &DerivedKeys, headers: &HeaderMap, token: &str) -> Result<(), Refusal> {
    if !same_origin(headers) {
        return Err(Refusal::CrossSite);
    }
    let value = single_value(cookie_headers(headers), CSRF_COOKIE)
        .map_err(|()| Refusal::DuplicateCookie)?
        .ok_or(Refusal::MissingCookie)?;
    if keys.verifies(&tagged(value), token) {
        Ok(())
    } else {
        Err(Refusal::BadToken)
    }
}

/// `Sec-Fetch-Site` and `Origin` as browsers send them: absent (older
/// browsers, non-browser clients: the token still decides) or this origin.
/// `Origin: null` is what a browser sends for a form POST from a page with
/// `Referrer-Policy: no-referrer` (ours): it passes only when the browser's
/// own `Sec-Fetch-Site` says same-origin.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
    let site = text("sec-fetch-site");
    if let Some(site) = site {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    match text("origin") {
        None => true,
        Some("null") => site == Some("same-origin"),
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            !host.is_empty() && authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// The keys of KEK `[byte; 32]`, with `previous` as `kek.previous`.
    fn keys(byte: u8, previous: Option<u8>) -> DerivedKeys {
        let previous: Vec<[u8; 32]> = previous.map(|p| [p; 32]).into_iter().collect();
        crate::kek::Kek::new(&[byte; 32], &previous)
            .unwrap()
            .derive_keys("browser-csrf")
            .unwrap()
    }

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_token_fits_only_its_cookie_and_key() {
        let key = keys(7, None);
        let (token, cookie) = token_for(&key, &HeaderMap::new());
        let cookie = cookie.unwrap();
        let value = cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned();
        let jar = format!("{CSRF_COOKIE}={value}");
        assert_eq!(check(&key, &with(&[("cookie", &jar)]), &token), Ok(()));
        assert_eq!(
            token_for(&key, &with(&[("cookie", &jar)])),
            (token.clone(), None),
            "the same token while the cookie lives"
        );
        assert_eq!(
            check(&keys(8, None), &with(&[("cookie", &jar)]), &token),
            Err(Refusal::BadToken)
        );
        assert_eq!(
            check(&key, &with(&[("cookie", &jar)]), "forged"),
            Err(Refusal::BadToken)
        );
        assert_eq!(
            check(&key, &HeaderMap::new(), &token),
            Err(Refusal::MissingCookie)
        );
        assert_eq!(
            check(&keys(8, Some(7)), &with(&[("cookie", &jar)]), &token),
            Ok(()),
            "a form served before a KEK rotation, after it"
        );
        let tossed = format!("{jar}; {CSRF_COOKIE}=attacker");
        assert_eq!(
            check(&key, &with(&[("cookie", &tossed)]), &token),
            Err(Refusal::DuplicateCookie)
        );
    }

    #[test]
    fn cross_site_posts_are_refused_before_the_token() {
        let key = keys(7, None);
        let (token, cookie) = token_for(&key, &HeaderMap::new());
        let jar = cookie.unwrap().split(';').next().unwrap().to_owned();
        let ok = |extra: &[(&'static str, &str)]| {
            let mut pairs = vec![("cookie", jar.as_str()), ("host", "app.example:8080")];
            pairs.extend_from_slice(extra);
            check(&key, &with(&pairs), &token)
        };
        assert_eq!(
            ok(&[
                ("origin", "http://app.example:8080"),
                ("sec-fetch-site", "same-origin")
            ]),
            Ok(())
        );
        assert_eq!(
            ok(&[("origin", "https://evil.example")]),
            Err(Refusal::CrossSite)
        );
        assert_eq!(ok(&[("origin", "null")]), Err(Refusal::CrossSite));
        assert_eq!(
            ok(&[("sec-fetch-site", "cross-site")]),
            Err(Refusal::CrossSite)
        );
        assert_eq!(
            ok(&[("sec-fetch-site", "same-site")]),
            Err(Refusal::CrossSite)
        );
        assert_eq!(
            ok(&[("origin", "null"), ("sec-fetch-site", "cross-site")]),
            Err(Refusal::CrossSite)
        );
    }

    #[test]
    fn a_same_origin_form_post_under_no_referrer_passes() {
        // What Chromium sends for a form on these pages: their `Referrer-Policy:
        // no-referrer` makes a POST's `Origin` "null" (Fetch, "serializing a
        // request origin"); `Sec-Fetch-Site`, which no page can set, says where it came from.
        let key = keys(7, None);
        let (token, cookie) = token_for(&key, &HeaderMap::new());
        let jar = cookie.unwrap().split(';').next().unwrap().to_owned();
        let headers = with(&[
            ("cookie", &jar),
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(check(&key, &headers, &token), Ok(()));
    }
}
