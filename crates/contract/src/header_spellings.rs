//! Other spellings of a header name that a backend may take for it (the
//! filter's identity headers, and the auth service's ext_authz answer).
//!
//! Envoy folds case, but CGI-style servers (and the frameworks built on that
//! convention: WSGI, Rack, PHP) turn both `-` and `_` into `_`, so a client's
//! `x_auth_user: admin` reaches them as `X-Auth-User`. The filter owns every
//! such spelling of its identity headers and removes it.

/// Most `-`/`_` separators an owned header name may have: its spellings
/// number 2^n − 1, and each is one host call on a request.
pub const MAX_SEPARATORS: usize = 6;

/// Every spelling of the `names` with any `-` and `_` exchanged for each
/// other, except the names themselves (which the filter sets or removes
/// anyway). Names with more than [`MAX_SEPARATORS`] separators contribute
/// only what fits (configuration refuses them).
pub fn underscore_spellings(names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let separators: Vec<usize> = name
            .bytes()
            .enumerate()
            .filter(|(_, b)| matches!(b, b'-' | b'_'))
            .map(|(i, _)| i)
            .collect();
        if separators.len() > MAX_SEPARATORS {
            continue;
        }
        for mask in 0u32..(1 << separators.len()) {
            let mut spelling = name.as_bytes().to_vec();
            for (bit, at) in separators.iter().enumerate() {
                if let Some(b) = spelling.get_mut(*at) {
                    *b = if mask & (1 << bit) != 0 { b'_' } else { b'-' };
                }
            }
            let spelling = String::from_utf8_lossy(&spelling).into_owned();
            if !names.contains(&spelling.as_str()) && !out.contains(&spelling) {
                out.push(spelling);
            }
        }
    }
    out
}

/// Whether two (lower-case) header names are one header to a backend that
/// reads `_` as `-`: what the configuration refuses among identity headers
/// (two of them, or one and a reserved name).
pub fn same_header(a: &str, b: &str) -> bool {
    let fold = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// Whether a name from a request is one of `spellings` (names from Envoy are lower-case).
pub fn is_one_of(name: &[u8], spellings: &[String]) -> bool {
    spellings.iter().any(|s| s.as_bytes() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mix_of_separators() {
        let mut s = underscore_spellings(&["x-auth-user"]);
        s.sort();
        assert_eq!(s, ["x-auth_user", "x_auth-user", "x_auth_user"]);
        assert_eq!(underscore_spellings(&["x_user"]), ["x-user"]);
        assert!(underscore_spellings(&["xuser"]).is_empty());
        // Owned names are not "other" spellings of each other.
        assert_eq!(underscore_spellings(&["x-a", "x_a"]), Vec::<String>::new());
        assert_eq!(underscore_spellings(&["a-b-c-d-e-f-g"]).len(), 63);
        assert!(underscore_spellings(&["a-b-c-d-e-f-g-h"]).is_empty());
    }

    /// `same_header` and the spellings agree: every spelling is the same header, nothing else is.
    #[test]
    fn the_same_header_is_every_spelling_and_nothing_more() {
        for spelling in underscore_spellings(&["x-auth-user"]) {
            assert!(same_header("x-auth-user", &spelling), "{spelling}");
        }
        assert!(same_header("x-auth-user", "x-auth-user"));
        for other in [
            "x-auth-users",
            "x-auth-use",
            "x.auth-user",
            "xauth-user",
            "x-auth-usEr",
        ] {
            assert!(!same_header("x-auth-user", other), "{other}");
        }
    }
}
