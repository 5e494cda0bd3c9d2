//! Reading cookies the same way on both sides.
//!
//! A request may carry several `Cookie` headers (HTTP/1.1 clients may send
//! more than one; HTTP/2 splits them into crumbs) and a name may appear more
//! than once: every occurrence is returned, so a caller can refuse values
//! that disagree rather than silently pick one.
//!
//! Read on bytes, pair by pair: a header line holding another cookie that is
//! not ASCII (`lang=café`, or Latin-1 bytes) loses nothing else on it. Names
//! compare byte for byte after ASCII whitespace only, as browsers compare
//! them for the `__Host-` and `__Secure-` prefixes: a name that is a prefixed
//! one behind a Unicode space (`\u{2000}__Host-…`, which any sibling site may
//! set) is another cookie, never ours.

/// What a value that is not UTF-8 reads as: never a token or a secret, and
/// unlike any other value (so two copies of a cookie disagree).
pub const NOT_UTF8: &str = "\u{FFFD}";

/// The `name=value` pairs of one `cookie` header value as sent, each
/// trimmed of ASCII whitespace.
pub fn raw_pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header
        .split(|b| *b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
}

/// A pair's name and value, each trimmed of ASCII whitespace (a pair
/// without `=` has an empty value).
pub fn split_pair(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|b| *b == b'=') {
        Some(at) => (
            pair.get(..at).unwrap_or_default().trim_ascii(),
            pair.get(at + 1..).unwrap_or_default().trim_ascii(),
        ),
        None => (pair, &[]),
    }
}

/// Every value of cookie `name` across all `cookie` header values, in order;
/// one pair of double quotes (RFC 6265) removed; a value that is not UTF-8
/// as [`NOT_UTF8`].
pub fn values<'a>(
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    cookie_headers
        .into_iter()
        .flat_map(raw_pairs)
        .map(split_pair)
        .filter(move |(k, _)| *k == name.as_bytes())
        .map(|(_, v)| {
            let v = std::str::from_utf8(v).unwrap_or(NOT_UTF8);
            v.strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(v)
        })
}

/// The one non-empty value of cookie `name`: `Err(())` when two occurrences disagree.
#[allow(clippy::result_unit_err)]
pub fn single_value<'a>(
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
    name: &'a str,
) -> Result<Option<&'a str>, ()> {
    let mut found: Option<&str> = None;
    for v in values(cookie_headers, name).filter(|v| !v.is_empty()) {
        match found {
            Some(f) if f != v => return Err(()),
            _ => found = Some(v),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_in_every_header() {
        let headers = ["a=1; tok=\"x\"", "tok=y", " b = 2 ;tok=x"].map(str::as_bytes);
        assert_eq!(values(headers, "tok").collect::<Vec<_>>(), ["x", "y", "x"]);
        assert_eq!(values(headers, "b").collect::<Vec<_>>(), ["2"]);
        assert_eq!(values(headers, "c").count(), 0);
        assert_eq!(single_value(headers, "tok"), Err(()));
        assert_eq!(
            single_value(["tok=x", "tok=x; tok="].map(str::as_bytes), "tok"),
            Ok(Some("x"))
        );
        assert_eq!(single_value([b"a=1".as_slice()], "tok"), Ok(None));
    }

    /// A prefixed name behind a Unicode space is another cookie (browsers
    /// let any site of the domain set it); ASCII whitespace around a name is not.
    #[test]
    fn names_compare_byte_for_byte_after_ascii_whitespace() {
        for planted in [
            "\u{2000}__Host-d=evil",
            "\u{a0}__Host-d=evil",
            "\u{3000}__Host-d=evil",
            "__Host-d\u{2000}=evil",
        ] {
            let line = format!("{planted}; __Host-d=mine");
            assert_eq!(
                single_value([line.as_bytes()], "__Host-d"),
                Ok(Some("mine")),
                "{planted:?}"
            );
        }
        assert_eq!(
            single_value([b" \t__Host-d = mine ;".as_slice()], "__Host-d"),
            Ok(Some("mine"))
        );
    }

    /// Another cookie that is not ASCII, or not UTF-8, on the same line hides nothing.
    #[test]
    fn other_cookies_of_any_bytes_leave_ours_readable() {
        let line: &[u8] = b"lang=caf\xc3\xa9; name=Jos\xe9; tok=t1";
        assert_eq!(single_value([line], "tok"), Ok(Some("t1")));
        assert_eq!(values([line], "name").collect::<Vec<_>>(), [NOT_UTF8]);
        // A copy of ours that is not UTF-8 disagrees with the readable one.
        assert_eq!(
            single_value([b"tok=t1; tok=\xff".as_slice()], "tok"),
            Err(())
        );
        let split: Vec<_> = raw_pairs(b"a; =b ;; c = ").map(split_pair).collect();
        assert_eq!(
            split,
            [
                (&b"a"[..], &b""[..]),
                (&b""[..], &b"b"[..]),
                (&b"c"[..], &b""[..])
            ]
        );
    }
}
