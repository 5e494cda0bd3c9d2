//! A request's query as the parsers of backends read it: which parameter
//! a name is to them (`access_token`, `_method`), however it is spelt.

use crate::percent::decode_query_part;

/// The `name=value` pairs of `query` (the part after `?`, before any `#`),
/// undecoded: split at `&` and at `;`, which some backends also take.
pub fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split(['&', ';'])
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The query of a request target (`/path?query#fragment`), or `""`.
pub fn of_target(target: &str) -> &str {
    let before_fragment = target.split('#').next().unwrap_or_default();
    before_fragment.split_once('?').map_or("", |(_, q)| q)
}

/// Whether `query` gives parameter `wanted` (see [`is_parameter`]) a
/// non-empty value: an `access_token` there beside a token in a header is
/// a second one (RFC 6750 §3.1), which a backend reading the query first
/// would take unverified.
pub fn gives(query: &str, wanted: &str) -> bool {
    pairs(query).any(|(name, value)| !value.is_empty() && is_parameter(name, wanted))
}

/// Whether a query parameter's name is `wanted` (written with `_`s, lower
/// case) as any common parser may register it: PHP (Laravel, Symfony):
/// `+` a space, decoded, leading spaces dropped, ` `, `.` and an unclosed
/// `[` made `_` (`.method`, `+_method`, `access+token`, `access[token`);
/// PHP, Rack and qs: `name[]`, `name[0]` an array under `name`; Rack:
/// leading `[`/`]` and a trailing `]` dropped; ASP.NET: any case.
pub fn is_parameter(name: &str, wanted: &str) -> bool {
    // (A `+` decoded from `%2B` stays a `+` to PHP: taken as a space too, to be safe.)
    // PHP takes the decoded name as a C string: it ends at a first NUL.
    let decoded = decode_query_part(name);
    let decoded = decoded.split('\0').next().unwrap_or_default();
    let name = decoded.trim_start_matches([' ', '+', '[', ']']);
    let name = match name.split_once('[') {
        Some((array, rest)) if rest.contains(']') => array,
        _ => name,
    };
    let name = name.trim_end_matches(']');
    let folded = |b: u8| {
        if matches!(b, b' ' | b'.' | b'+' | b'[') {
            b'_'
        } else {
            b.to_ascii_lowercase()
        }
    };
    name.len() == wanted.len() && name.bytes().map(folded).eq(wanted.bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_found_in_every_parser_s_spelling() {
        for query in [
            "access_token=x",
            "page=2&access_token=x",
            "a=1;access_token=x",
            "Access_Token=x",
            "access.token=x",
            "access+token=x",
            "access%20token=x",
            "access[token=x",
            "access_token[]=x",
            "access_token[0]=x",
            "[access_token]=x",
            "%61ccess_token=x",
            "%2561ccess_token=x",
            "access_token%00junk=x",
        ] {
            assert!(gives(query, "access_token"), "{query}");
        }
        for query in [
            "",
            "access_token=",
            "access_token",
            "access_tokens=x",
            "xaccess_token=x",
        ] {
            assert!(!gives(query, "access_token"), "{query}");
        }
        assert_eq!(of_target("/a?b=1#c=2"), "b=1");
        assert_eq!(of_target("/a#?b=1"), "");
    }
}
