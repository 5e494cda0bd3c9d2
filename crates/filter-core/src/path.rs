//! Request paths as an upstream may act on them.
//!
//! The filter decides on the *normalized* path: what Envoy forwards with
//! `normalize_path` and `merge_slashes` — percent-escapes of unreserved
//! characters decoded (RFC 3986 §6.2.2.2), dot segments removed (§5.2.4),
//! then runs of slashes merged. Without those settings (or behind another
//! proxy) a backend may act on other readings of the same bytes: the raw
//! path, every escape decoded (a second time for double encoding), `\` taken
//! as `/`, `;` parameters dropped, the path cut at a NUL or at a decoded `?`
//! or `#` (a hop that splits the decoded path again), overlong UTF-8 read
//! as the ASCII it spells, the non-ASCII letters Java and .NET fold onto
//! ASCII letters folded, slashes merged before dot segments, trailing dots
//! and spaces of a segment dropped (Windows). Not the suffix patterns of
//! Spring MVC before 5.3 (`/admin` served as `/admin.json`): that reading
//! would refuse every public `exact` rule for a file (`/robots.txt` reads
//! as `/robots`, under the default policy). [`readings`] lists them, so the route policy can
//! refuse a path whose readings would need a stronger policy than the one
//! decided on — and only such a path: `%2F` in an id is fine where it
//! changes nothing.
//!
//! Paths without any of `%`, `\`, `;`, `.`, control characters or `//`
//! read one way only and cost no allocation.

use std::borrow::Cow;

use authflow_contract::percent::{self, decode_where, escape_at};
use authflow_contract::text;

/// Why a path cannot be placed at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// A `%` not followed by two hex digits: not a URI (RFC 3986 §2.1), and
    /// servers disagree on what it means (`%u0061` is `a` to some).
    InvalidEscape,
    /// Still percent-encoded after [`percent::MAX_DECODE_ROUNDS`] rounds of decoding.
    TooDeeplyEncoded,
    /// Longer than [`MAX_AMBIGUOUS_PATH_LEN`] and not reading one way.
    TooLong,
}

/// The longest path judged in all its readings. Each costs a few passes
/// over the path, and a request is judged several times (its rule, its
/// credentials' route, a browser redirect): a 60 KiB path of escapes and
/// dots cost a worker milliseconds. No client sends such a path (servers
/// refuse URLs of 8 KiB with their query); a longer one that reads one
/// way costs nothing and is judged as ever.
pub const MAX_AMBIGUOUS_PATH_LEN: usize = 4096;

impl From<percent::TooDeeplyEncoded> for Unreadable {
    fn from(_: percent::TooDeeplyEncoded) -> Self {
        Unreadable::TooDeeplyEncoded
    }
}

/// The path decided on, and the other forms a backend may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readings<'a> {
    pub normalized: Cow<'a, str>,
    /// Empty when the path reads one way only.
    pub others: Vec<String>,
}

/// `:path` without its query string or fragment.
pub fn without_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

/// Every reading of `path` (already without its query).
pub fn readings(path: &str) -> Result<Readings<'_>, Unreadable> {
    if reads_one_way(path) {
        return Ok(Readings {
            normalized: Cow::Borrowed(path),
            others: Vec::new(),
        });
    }
    if path.len() > MAX_AMBIGUOUS_PATH_LEN {
        return Err(Unreadable::TooLong);
    }
    if has_invalid_escape(path.as_bytes()) {
        return Err(Unreadable::InvalidEscape);
    }
    let unreserved = decode_unreserved(path);
    let normalized = merge_slashes(&remove_dot_segments(&unreserved));
    let mut candidates = vec![
        path.to_owned(),
        remove_dot_segments(&merge_slashes(&unreserved)),
    ];
    // Each round of decoding, not just the last: a backend that decodes a
    // set number of times routes `/api%2Fadmin/%252e%252e/x` as
    // `/api/admin/%2e%2e/x`, under `/api/admin`, where every escape decoded
    // reads `/api/x`.
    let mut decodings = Vec::new();
    for round in decode_rounds(path)? {
        decodings.push(strip_params(&String::from_utf8_lossy(&round)).into_bytes());
        decodings.push(round);
    }
    decodings.extend(decode_rounds(&strip_params(path))?);
    for decoded in decodings {
        let lenient = lenient(&decoded);
        let dots_first = merge_slashes(&remove_dot_segments(&lenient));
        candidates.push(merge_slashes(&remove_dot_segments(&windows_name(
            &dots_first,
        ))));
        candidates.push(dots_first);
        candidates.push(remove_dot_segments(&merge_slashes(&lenient)));
    }
    // A few dozen candidates at most (eleven without `%25`): a linear
    // check for duplicates needs no sort (and links none into the module).
    let mut others: Vec<String> = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        if candidate != normalized && !others.contains(&candidate) {
            others.push(candidate);
        }
    }
    Ok(Readings {
        normalized: Cow::Owned(normalized),
        others,
    })
}

/// Whether a route path is written the way the filter compares paths:
/// starting with `/`, normalized, with nothing that reads two ways, and no
/// pattern: `*` is no wildcard, and `{id}`, `[0-9]`, a space or non-ASCII
/// arrive percent-encoded, so such a rule would never match and the
/// default policy would apply instead.
pub fn is_normalized_rule_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.bytes().any(|b| {
            matches!(
                b,
                b'%' | b'\\' | b';' | b'?' | b'#' | b'*' | b'{' | b'}' | b'[' | b']'
            ) || !b.is_ascii_graphic()
        })
        && !text::contains(p, "//")
        && !p.split('/').any(|segment| matches!(segment, "." | ".."))
}

/// Whether a request target begins with two slashes (`\` counting as `/`):
/// a network-path reference (RFC 3986 §4.2), `//host/a`, whose path is `/a`
/// to PHP's `parse_url` and Node's `new URL(target, base)`, and
/// `/host/a` to a proxy merging slashes: no one reading to decide on.
pub fn is_network_path(target: &str) -> bool {
    matches!(target.as_bytes(), [b'/' | b'\\', b'/' | b'\\', ..])
}

fn reads_one_way(path: &str) -> bool {
    !path
        .bytes()
        .any(|b| matches!(b, b'%' | b'\\' | b';' | b'.') || !b.is_ascii_graphic())
        && !text::contains(path, "//")
}

/// Each round of decoding `text` (the text itself when it has no escape).
fn decode_rounds(text: &str) -> Result<Vec<Vec<u8>>, Unreadable> {
    let rounds = percent::decode_rounds(text)?;
    Ok(if rounds.is_empty() {
        vec![text.as_bytes().to_vec()]
    } else {
        rounds
    })
}

fn has_invalid_escape(path: &[u8]) -> bool {
    path.iter()
        .enumerate()
        .any(|(i, b)| *b == b'%' && path.get(i..).and_then(escape_at).is_none())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §6.2.2.2: `%61` is `a`; `%2F` stays an escaped slash.
fn decode_unreserved(path: &str) -> String {
    // Only ASCII is decoded, so the result is as valid UTF-8 as the input.
    String::from_utf8_lossy(&decode_where(path.as_bytes(), is_unreserved)).into_owned()
}

/// What a forgiving server does with decoded bytes: `\` is a separator, a
/// C string ends at the first NUL (any control character, to be safe), a
/// decoded `?` or `#` ends the path for a hop that splits it again (`%3F`
/// is a query to it), an
/// overlong UTF-8 form of an ASCII character is that character (`%C0%AF` is
/// `/` to IIS's and old Tomcat's decoders), and the letters that Java's and
/// .NET's case-insensitive comparisons fold onto ASCII are those ASCII
/// letters (`ı` and `İ` are `i`, `ſ` is `s`, the Kelvin sign is `k`).
fn lenient(decoded: &[u8]) -> String {
    let decoded = decode_overlong_ascii(decoded);
    let end = decoded
        .iter()
        .position(|b| b.is_ascii_control() || matches!(b, b'?' | b'#'))
        .unwrap_or(decoded.len());
    let bytes: Vec<u8> = decoded
        .iter()
        .take(end)
        .map(|&b| if b == b'\\' { b'/' } else { b })
        .collect();
    String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| match c {
            '\u{130}' | '\u{131}' => 'i',
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c,
        })
        .collect()
}

/// Overlong 2- and 3-byte UTF-8 encodings of ASCII (`C0 AF`, `E0 80 AF`)
/// replaced by the ASCII byte they spell; every other byte as it is.
fn decode_overlong_ascii(bytes: &[u8]) -> Vec<u8> {
    let cont = |b: Option<&u8>| b.copied().filter(|b| b & 0xC0 == 0x80);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, cont(bytes.get(i + 1)), cont(bytes.get(i + 2))) {
            (0xC0 | 0xC1, Some(c1), _) => {
                out.push((b & 0x01) << 6 | (c1 & 0x3F));
                i += 2;
            }
            (0xE0, Some(c1), Some(c2)) if c1 & 0xFE == 0x80 => {
                out.push((c1 & 0x01) << 6 | (c2 & 0x3F));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// What Windows names a path (IIS, files served from NTFS): each segment
/// without its trailing dots and spaces (`/admin.` and `/admin ` are
/// `/admin`); a segment of dots alone stays a dot segment.
fn windows_name(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg.trim_end_matches(['.', ' ']) {
            "" => seg,
            trimmed => trimmed,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Path parameters dropped from every segment (`/a;x/b;y=1` → `/a/b`), as servlet containers do.
fn strip_params(path: &str) -> String {
    path.split('/')
        .map(|seg| seg.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// RFC 3986 §5.2.4 for an absolute path; anything else is left as it is.
fn remove_dot_segments(path: &str) -> String {
    let Some(rest) = path.strip_prefix('/') else {
        return path.to_owned();
    };
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in rest.split('/') {
        trailing_slash = matches!(segment, "." | "..");
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &out {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || normalized.is_empty() {
        normalized.push('/');
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(p: &str) -> String {
        readings(p).unwrap().normalized.into_owned()
    }

    fn all(p: &str) -> Vec<String> {
        let r = readings(p).unwrap();
        let mut v = r.others;
        v.push(r.normalized.into_owned());
        v
    }

    #[test]
    fn plain_paths_read_one_way_without_copying() {
        for p in ["/", "/api/admin", "/api/items/42", "/a-b_c~d", "*"] {
            let r = readings(p).unwrap();
            assert!(
                matches!(r.normalized, Cow::Borrowed(_)) && r.others.is_empty(),
                "{p}"
            );
        }
    }

    #[test]
    fn normalizes_like_envoy() {
        assert_eq!(normalized("/api/x/../admin"), "/api/admin");
        assert_eq!(normalized("/api/./admin/"), "/api/admin/");
        assert_eq!(normalized("/api//admin"), "/api/admin");
        assert_eq!(normalized("//api///admin"), "/api/admin");
        assert_eq!(normalized("/api/%61dmin"), "/api/admin");
        assert_eq!(normalized("/api/x/%2e%2E/admin"), "/api/admin");
        assert_eq!(normalized("/.."), "/");
        assert_eq!(normalized("/a/.."), "/");
        assert_eq!(normalized("/a/."), "/a/");
        // Dot segments first, then slashes merged (Envoy's order) …
        assert_eq!(normalized("/a//../b"), "/a/b");
        // … and the other order is one of the readings.
        assert!(all("/a//../b").contains(&"/b".to_owned()));
        // Reserved escapes stay escaped in the normalized form.
        assert_eq!(normalized("/api%2Fadmin"), "/api%2Fadmin");
        assert_eq!(normalized("/items/a%2fb"), "/items/a%2fb");
        assert_eq!(
            normalized("/.well-known/jwks.json"),
            "/.well-known/jwks.json"
        );
    }

    #[test]
    fn readings_cover_what_lenient_backends_do() {
        let has = |p: &str, reading: &str| {
            assert!(all(p).contains(&reading.to_owned()), "{p}: {:?}", all(p))
        };
        has("/api%2Fadmin", "/api/admin");
        has("/api%5Cadmin", "/api/admin");
        has("/api\\admin", "/api/admin");
        has("/api;x/admin", "/api/admin");
        has("/api/admin;jsessionid=1/users", "/api/admin/users");
        has("/public/..;/api/admin", "/api/admin");
        has("/api/%2561dmin", "/api/admin");
        has("/api%252Fadmin", "/api/admin");
        // A backend decoding a set number of times stops short of the dots
        // a further round would add.
        has("/api%2Fadmin/%252e%252e/x", "/api/admin/%2e%2e/x");
        has("/api%252Fadmin/%25252e%25252e/x", "/api/admin/%2e%2e/x");
        has("/api/x/..%2Fadmin", "/api/admin");
        has("/api/admin%00.json", "/api/admin");
        has("/api/admin%0a", "/api/admin");
        has("/api/admin%3F", "/api/admin");
        has("/api/admin%3fx=1", "/api/admin");
        has("/api/admin%23", "/api/admin");
        has("/api/admin%253F/users", "/api/admin");
        has("/public/x/../../api/admin", "/api/admin");
        // The raw form is a reading too: a backend may route before normalizing.
        has("/api/admin/../items", "/api/admin/../items");
    }

    #[test]
    fn unreadable_paths() {
        for p in [
            "/api/admin%zz",
            "/api/%u0061dmin",
            "/api/admin%",
            "/api/admin%4",
        ] {
            assert_eq!(readings(p), Err(Unreadable::InvalidEscape), "{p}");
        }
        assert_eq!(readings("/a%2525252561"), Err(Unreadable::TooDeeplyEncoded));
        // An escaped percent that decodes to a lone `%` is data, not an error.
        assert!(readings("/items/100%25").is_ok());
    }

    /// Finding: a path of tens of KiB of escapes, dots and `;` was read in
    /// every way, on each of the several judgements of one request: one
    /// unauthenticated request cost a worker milliseconds. Past the bound
    /// such a path is not placed; one that reads one way is, at any length.
    #[test]
    fn a_long_path_is_read_several_ways_only_within_a_bound() {
        let segment = "/%252e%252e;x";
        let at_bound = segment.repeat(MAX_AMBIGUOUS_PATH_LEN / segment.len());
        assert!(readings(&at_bound).is_ok());
        let past = segment.repeat(MAX_AMBIGUOUS_PATH_LEN / segment.len() + 1);
        assert_eq!(readings(&past), Err(Unreadable::TooLong));
        let plain = "/a".repeat(MAX_AMBIGUOUS_PATH_LEN);
        let r = readings(&plain).unwrap();
        assert!(r.others.is_empty() && r.normalized == plain);
    }

    #[test]
    fn rule_paths_must_be_normalized() {
        assert!(is_normalized_rule_path("/api/admin"));
        assert!(is_normalized_rule_path("/.well-known/"));
        assert!(is_normalized_rule_path("/v1/auth/"));
        for p in [
            "api", "/a//b", "/a/../b", "/a/./b", "/a%2Fb", "/a;b", "/a\\b", "/a?x", "/a\n",
            "/a/..", "/.",
        ] {
            assert!(!is_normalized_rule_path(p), "{p}");
        }
    }
}
