//! The comparison form of an HTTP(S) URI for `htu` (RFC 9449 §4.3 step 9):
//! query and fragment dropped, then RFC 3986 §6.2.2 syntax-based
//! normalization (case of scheme and host, upper-case percent-encoding hex,
//! unreserved characters decoded, dot segments removed) and §6.2.3
//! scheme-based normalization (default port and empty port removed, an empty
//! path is `/`). Both the proof's `htu` and the URI of the request are put in
//! this form and compared as strings.
//!
//! Only what a client can legitimately send is accepted: `http` or `https`,
//! no user information, ASCII without spaces or controls, well-formed
//! percent-encoding. Anything else has no comparison form and never matches.

use super::MAX_HTU_LEN;

/// The comparison form of `uri`, or `None` if it is not an acceptable HTTP(S) URI.
pub fn normalize(uri: &str) -> Option<String> {
    // The query dropped first: a request's may be long, or hold anything
    // its backend takes, and no proof names it.
    let uri = uri.split(['?', '#']).next().unwrap_or_default();
    if uri.len() > MAX_HTU_LEN || !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let (scheme, rest) = crate::text::split_once(uri, "://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let (authority, path) = rest
        .find('/')
        .map_or((rest, ""), |slash| rest.split_at(slash));
    let authority = normalize_authority(authority, default_port)?;
    let path = remove_dot_segments(&normalize_percent_encoding(
        if path.is_empty() { "/" } else { path },
        false,
    )?);
    Some(format!("{scheme}://{authority}{path}"))
}

/// The URI of a request as its client addressed it, from the pieces a proxy
/// sees: scheme, `:authority` (Host) and `:path` (its query is dropped later).
/// `None` when the pieces would not stay apart once joined: an authority
/// with `/`, `?`, `#` or `@` in it (glued to the path it would move where the
/// path starts, and a proof for one URL would pass on another), or a path
/// that does not start with `/`.
pub fn request_uri(scheme: &str, authority: &str, path: &str) -> Option<String> {
    if authority.contains(['/', '?', '#', '@']) || !path.starts_with('/') {
        return None;
    }
    Some(format!("{scheme}://{authority}{path}"))
}

/// Lower-case host, port kept only when it is not the scheme's default.
fn normalize_authority(authority: &str, default_port: &str) -> Option<String> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        // An IP literal: "[v6]" or "[v6]:port".
        let close = authority.find(']')?;
        let (host, after) = authority.split_at(close + 1);
        match after {
            "" => (host, ""),
            _ => (host, after.strip_prefix(':')?),
        }
    } else {
        authority.rsplit_once(':').unwrap_or((authority, ""))
    };
    let host_ok = |c: char| c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=[]:".contains(c);
    if host.is_empty()
        || !host.chars().all(host_ok)
        || (!host.starts_with('[') && host.contains([':', '[', ']']))
    {
        return None;
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return None;
    }
    let host = normalize_percent_encoding(host, true)?;
    Some(if port.is_empty() || port == default_port {
        host
    } else {
        format!("{host}:{port}")
    })
}

/// `%xx` with upper-case hex, and decoded when it encodes an unreserved
/// character (RFC 3986 §2.3); `None` for a `%` not followed by two hex digits.
/// With `lower_case` (a host), letters, literal or decoded, are made lower-case.
fn normalize_percent_encoding(text: &str, lower_case: bool) -> Option<String> {
    let case = |b: u8| {
        char::from(if lower_case {
            b.to_ascii_lowercase()
        } else {
            b
        })
    };
    let mut out = String::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(case(b));
            continue;
        }
        let high = hex_value(bytes.next()?)?;
        let low = hex_value(bytes.next()?)?;
        let decoded = high << 4 | low;
        if decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded) {
            out.push(case(decoded));
        } else {
            out.push('%');
            out.push(char::from(
                b"0123456789ABCDEF".get(usize::from(high)).copied()?,
            ));
            out.push(char::from(
                b"0123456789ABCDEF".get(usize::from(low)).copied()?,
            ));
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments dropped, `..` removes
/// the segment before it (never above the root); a trailing dot segment
/// leaves a trailing `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    kept.pop();
                }
                if i == last {
                    kept.push("");
                }
            }
            other => kept.push(other),
        }
    }
    format!("/{}", kept.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_and_scheme_based_normalization() {
        let same = [
            ("HTTPS://Example.COM:443/a", "https://example.com/a"),
            ("https://example.com:/a", "https://example.com/a"),
            ("http://example.com:80/a", "http://example.com/a"),
            ("https://example.com", "https://example.com/"),
            ("https://example.com/a?x=1#f", "https://example.com/a"),
            ("https://example.com/a#f?x", "https://example.com/a"),
            (
                "https://example.com/%7Euser/%2e/b",
                "https://example.com/~user/b",
            ),
            (
                "https://example.com/a/b/../c/./d",
                "https://example.com/a/c/d",
            ),
            ("https://example.com/a/b/..", "https://example.com/a/"),
            ("https://example.com/../../a", "https://example.com/a"),
            ("https://example.com/a%2fb", "https://example.com/a%2Fb"),
            ("https://[::1]:443/x", "https://[::1]/x"),
            ("https://[::1]:8443/x", "https://[::1]:8443/x"),
            ("https://Ex%41mple.com/", "https://example.com/"),
            ("https://ex%c3%a9.com/", "https://ex%C3%A9.com/"),
        ];
        for (input, expected) in same {
            assert_eq!(normalize(input).as_deref(), Some(expected), "{input}");
        }
    }

    #[test]
    fn what_differs_stays_different() {
        let pairs = [
            ("https://example.com/a", "http://example.com/a"),
            ("https://example.com/a", "https://example.com:8443/a"),
            ("https://example.com/a", "https://example.com/A"),
            ("https://example.com/a", "https://example.com/a/"),
            ("https://example.com/a%2Fb", "https://example.com/a/b"),
            ("https://example.com/a", "https://example.org/a"),
        ];
        for (a, b) in pairs {
            assert_ne!(normalize(a), normalize(b), "{a} vs {b}");
        }
    }

    #[test]
    fn unacceptable_uris_have_no_form() {
        for bad in [
            "",
            "/a",
            "example.com/a",
            "ftp://example.com/a",
            "https://user@example.com/a",
            "https:///a",
            "https://example.com:44x/a",
            "https://example.com:123456/a",
            "https://exa mple.com/a",
            "https://example.com/a b",
            "https://example.com/%zz",
            "https://example.com/%4",
            "https://example.com/caf\u{e9}",
            "https://[::1/a",
            "https://[::1]x/a",
            "https://a:b:c/",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
        assert_eq!(
            normalize(&format!("https://e.com/{}", "a".repeat(MAX_HTU_LEN))),
            None
        );
    }

    #[test]
    fn an_authority_cannot_move_where_the_path_starts() {
        for (authority, path) in [
            ("api.example.com/v1", "/items"),
            ("api.example.com?", "/admin"),
            ("api.example.com#", "/admin"),
            ("u@api.example.com", "/"),
            ("api.example.com", "items"),
            ("api.example.com", "*"),
        ] {
            assert_eq!(
                request_uri("https", authority, path),
                None,
                "{authority} {path}"
            );
        }
        assert!(request_uri("https", "api.example.com", "/v1/items").is_some());
    }

    /// The query was measured and checked before it was dropped: a request
    /// whose URL passed the bound (or held a byte the check refuses) only
    /// by its query had no form, and no proof matched it.
    #[test]
    fn the_query_is_dropped_before_the_uri_is_judged() {
        for query in ["a".repeat(MAX_HTU_LEN), "q=caf\u{e9} x".into()] {
            assert_eq!(
                normalize(&format!("https://e.com/a?{query}")).as_deref(),
                Some("https://e.com/a")
            );
        }
    }

    #[test]
    fn request_uri_from_proxy_pieces() {
        let uri = request_uri("https", "API.example.com:443", "/v1/items?page=2").unwrap();
        assert_eq!(
            normalize(&uri).as_deref(),
            Some("https://api.example.com/v1/items")
        );
    }
}
