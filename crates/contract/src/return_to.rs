//! Where a browser goes back to after signing in: the `return_to` parameter.
//!
//! The filter puts the path of a refused navigation into
//! `/auth/refresh?return_to=…`; the auth service carries it through sign-in
//! and finally answers `303 Location: <return_to>`. Whatever arrives there
//! came from a URL anyone can craft, so both sides accept only what
//! [`is_safe`] accepts and use `/` for anything else ([`or_root`]): otherwise
//! the sign-in page becomes an open redirect.
//!
//! A safe target is an origin-relative path (`/…`, optional `?query` and
//! `#fragment`) that every browser resolves on the same origin, also after one
//! more percent-decoding by some hop on the way:
//! - printable ASCII only (no space, no control character, no non-ASCII): the
//!   WHATWG URL parser silently drops tab, LF and CR (`/\t/evil.example` is
//!   `//evil.example`), and CR/LF in a `Location` header split the response;
//! - starts with `/`; no `\` anywhere (browsers read `/\evil.example` as
//!   `//evil.example`, a host);
//! - well-formed `%XX` escapes; decoded once, still no control character and
//!   no `\` (`%0d%0a`, `%5C`), and the path holds no `//` and no dot segment
//!   (`/%2F%2Fevil.example`, `/..//evil.example`, `/%2e%2e/`) — a normalized
//!   request path never does, so a real page is never refused;
//! - at most [`MAX_LEN`] bytes.
//!
//! The scheme-relative `//host` and every `scheme:` form fail the first two
//! rules, so no scheme or host can be named at all.

/// Longest return target accepted, in bytes (before encoding).
pub const MAX_LEN: usize = 2048;
/// Name of the query parameter (and form field) carrying the target.
pub const PARAM: &str = "return_to";
/// Where a browser goes when no safe target was given.
pub const DEFAULT: &str = "/";

/// Whether `target` is a same-origin path a redirect may send a browser to.
///
/// One pass over the bytes, each escape decoded on the way (no allocation:
/// the filter asks this on the request path).
pub fn is_safe(target: &str) -> bool {
    let raw = target.as_bytes();
    if raw.len() > MAX_LEN || raw.first() != Some(&b'/') {
        return false;
    }
    let mut in_path = true;
    let mut after_slash = false;
    // The current path segment (decoded): its length and how many dots it holds.
    let (mut segment_len, mut segment_dots) = (0usize, 0usize);
    let mut at = 0;
    while let Some(&b) = raw.get(at) {
        if !b.is_ascii_graphic() || b == b'\\' {
            return false;
        }
        let byte = if b == b'%' {
            let Some(decoded) = raw.get(at + 1..at + 3).and_then(hex_pair) else {
                return false;
            };
            at += 3;
            decoded
        } else {
            at += 1;
            b
        };
        if byte.is_ascii_control() || byte == b'\\' {
            return false;
        }
        if !in_path {
            continue;
        }
        let dot_segment = segment_len == segment_dots && (1..=2).contains(&segment_dots);
        // Only a raw `?` or `#` ends the path (an escaped one is data).
        if b == b'?' || b == b'#' || byte == b'/' {
            if dot_segment || (byte == b'/' && after_slash) {
                return false;
            }
            in_path = byte == b'/';
            after_slash = in_path;
            (segment_len, segment_dots) = (0, 0);
        } else {
            after_slash = false;
            segment_len += 1;
            segment_dots += usize::from(byte == b'.');
        }
    }
    !(in_path && segment_len == segment_dots && (1..=2).contains(&segment_dots))
}

/// Whether the browser may land on `target` at the end of a sign-in or a
/// refresh: it [`is_safe`], and names no other method to run
/// (`?_method=DELETE`). The browser follows that last redirect from this
/// site, where the access cookie authenticates the request: a target that a
/// link from another site carried through the sign-in page must not run as
/// another method there (the filter does not authenticate such a `GET` by the
/// cookie across sites).
pub fn is_landing(target: &str) -> bool {
    is_safe(target) && !crate::query::gives(crate::query::of_target(target), "_method")
}

/// `target` when it [`is_landing`], else [`DEFAULT`].
pub fn or_root(target: &str) -> &str {
    if is_landing(target) {
        target
    } else {
        DEFAULT
    }
}

/// `target` percent-encoded as a query parameter value: every byte but the
/// unreserved characters and `/` is escaped, so `&`, `=`, `+`, `#`, `?` and
/// `%` in the target survive the trip through `?return_to=`.
pub fn encode(target: &str) -> String {
    let hex = |nibble: u8| {
        char::from(
            b"0123456789ABCDEF"
                .get(usize::from(nibble))
                .copied()
                .unwrap_or(b'0'),
        )
    };
    let mut out = String::with_capacity(target.len());
    for &b in target.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.extend(['%', hex(b >> 4), hex(b & 0xf)]);
        }
    }
    out
}

/// Reads back a query parameter value written by [`encode`] (or by a browser
/// submitting a form: `+` is a space). `None` for a malformed escape or bytes
/// that are not UTF-8. The result still has to pass [`is_safe`].
pub fn decode(value: &str) -> Option<String> {
    let plus_as_space: Vec<u8> = value
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    String::from_utf8(percent_decode(&plus_as_space)?).ok()
}

/// The landing target named by the `return_to` parameter of a query string
/// (without the leading `?`), or [`DEFAULT`]: what a sign-in page carries on.
pub fn from_query(query: &str) -> String {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(PARAM)?.strip_prefix('='))
        .and_then(decode)
        .filter(|t| is_landing(t))
        .unwrap_or_else(|| DEFAULT.to_owned())
}

/// `<endpoint>?return_to=<target, encoded>`, with `/` for an unsafe target:
/// the `Location` that sends a browser to `endpoint` (itself a fixed,
/// configured path) and lets it come back.
pub fn location(endpoint: &str, target: &str) -> String {
    [endpoint, "?", PARAM, "=", &encode(or_root(target))].concat()
}

/// Two hex digits as the byte they spell.
fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |c: &u8| char::from(*c).to_digit(16);
    let value = digit(pair.first()?)? * 16 + digit(pair.get(1)?)?;
    u8::try_from(value).ok()
}

/// `%XX` escapes decoded once; `None` when one is malformed.
fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            out.push(hex_pair(tail.get(..2)?)?);
            rest = tail.get(2..)?;
        } else {
            out.push(b);
            rest = tail;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_pages_are_safe() {
        for t in [
            "/",
            "/app/",
            "/app/hello",
            "/app/hello?x=1&y=two",
            "/app/a.b/c-d_e~f",
            "/app/%E2%82%AC?q=a%20b",
            "/app/hello#section",
            "/app/?next=//kept.in/the/query",
            "/javascript:alert(1)",
            "/app/..data/.hidden",
        ] {
            assert!(is_safe(t), "{t:?} should be safe");
            assert_eq!(or_root(t), t);
        }
    }

    #[test]
    fn other_origins_are_refused() {
        for t in [
            "",
            "//evil.example",
            "//evil.example/x",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/a\\b",
            "https://evil.example/",
            "http:evil.example",
            "javascript:alert(1)",
            "data:text/html,x",
            "evil.example",
            "./x",
            "../x",
            "?x=1",
            "#x",
            " /x",
            " //evil.example",
        ] {
            assert!(!is_safe(t), "{t:?} should be refused");
            assert_eq!(or_root(t), "/");
        }
    }

    #[test]
    fn characters_a_browser_drops_or_a_header_splits_on_are_refused() {
        for t in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/x\r\nSet-Cookie: a=b",
            "/x\0",
            "/x\u{7f}",
            "/x y",
            "/x\u{a0}",
            "/\u{3000}/evil.example",
            "/\u{ff0f}evil.example",
            "/caf\u{e9}",
        ] {
            assert!(!is_safe(t), "{t:?} should be refused");
        }
    }

    #[test]
    fn escaped_tricks_are_refused() {
        for t in [
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/x%0d%0aSet-Cookie:%20a=b",
            "/x?y=%0D%0A",
            "/x#%0a",
            "/x%00",
            "/x%09",
            "/x%7F",
            "/%09/evil.example",
            "/..//evil.example",
            "/../x",
            "/./x",
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/a/.",
            "/%2e%2e/x",
            "/%2E./x",
            "/a%2F..%2Fb",
            "/a//b",
            "/a/%2F/b",
            "/x%",
            "/x%2",
            "/x%zz",
            "/x%%41",
        ] {
            assert!(!is_safe(t), "{t:?} should be refused");
        }
    }

    #[test]
    fn length_is_bounded() {
        let at_limit = format!("/{}", "a".repeat(MAX_LEN - 1));
        assert!(is_safe(&at_limit));
        let over = format!("/{}", "a".repeat(MAX_LEN));
        assert!(!is_safe(&over));
    }

    #[test]
    fn encoding_round_trips_through_a_query() {
        for t in [
            "/",
            "/app/hello?x=1&y=a+b#f",
            "/app/%E2%82%AC?return_to=/x&a=%26",
            "/~user/a.b_c-d",
        ] {
            let query = format!("a=1&{PARAM}={}&b=2", encode(t));
            assert_eq!(from_query(&query), t, "through {query:?}");
            assert_eq!(decode(&encode(t)).as_deref(), Some(t));
        }
        assert_eq!(encode("/app/hello?x=1&y=2"), "/app/hello%3Fx%3D1%26y%3D2");
        assert_eq!(encode("/a b+c%d#e"), "/a%20b%2Bc%25d%23e");
    }

    #[test]
    fn a_query_without_a_safe_target_gives_the_root() {
        for q in [
            "",
            "x=1",
            "return_to",
            "return_to=",
            "return_to=%2F%2Fevil.example",
            "return_to=//evil.example",
            "return_to=/%5Cevil.example",
            "return_to=%2F%5Cevil.example",
            "return_to=%2F%09%2Fevil.example",
            "return_to=/x%0d%0aSet-Cookie:a",
            "return_to=/x%ZZ",
            "return_to=/%FF",
            "return_to=/a+b",
            "return_to=https%3A%2F%2Fevil.example",
            "xreturn_to=/app",
        ] {
            assert_eq!(from_query(q), "/", "{q:?}");
        }
        // The first occurrence counts.
        assert_eq!(from_query("return_to=/a&return_to=/b"), "/a");
    }

    /// A `return_to` naming another method (`?_method=DELETE`) is not carried
    /// to the final `303`, which the browser follows from this site: a link
    /// from another site to `/auth/refresh?return_to=/app/items/1%3F_method%3DDELETE`
    /// (or the filter's own redirect of such a cross-site `GET`, whose cookie
    /// it withheld) shows the Continue page or sign-in, and the user's click
    /// would land on the target as a same-origin `GET`, which the filter
    /// authenticates with the cookie, for a backend that runs it as `DELETE`.
    #[test]
    fn a_target_naming_another_method_is_not_carried_through_sign_in() {
        for q in [
            "return_to=/app/items/1%3F_method%3DDELETE",
            "return_to=/app/items/1%3Fa%3D1%26%255Fmethod%3Ddelete",
            "return_to=/app/items/1%3F_method%5B%5D%3DDELETE",
        ] {
            assert_eq!(from_query(q), "/", "{q:?}");
            let target = decode(q.strip_prefix("return_to=").unwrap()).unwrap();
            assert_eq!(or_root(&target), "/", "a posted field: {q:?}");
        }
        // An empty override names no method.
        assert_eq!(
            from_query("return_to=/app/x%3F_method%3D"),
            "/app/x?_method="
        );
    }

    #[test]
    fn location_carries_only_safe_targets() {
        assert_eq!(
            location("/auth/refresh", "/app/hello?x=1"),
            "/auth/refresh?return_to=/app/hello%3Fx%3D1"
        );
        assert_eq!(
            location("/auth/refresh", "//evil.example/x"),
            "/auth/refresh?return_to=/"
        );
        assert_eq!(
            location("/auth/refresh", "/x\r\nSet-Cookie: a"),
            "/auth/refresh?return_to=/"
        );
    }

    #[test]
    fn decode_refuses_malformed_input() {
        assert_eq!(decode("%"), None);
        assert_eq!(decode("%G0"), None);
        assert_eq!(decode("%FF"), None);
        assert_eq!(decode("a+b%2B"), Some("a b+".to_owned()));
    }
}
