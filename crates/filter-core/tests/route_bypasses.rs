//! Requests a backend may serve under a stronger route rule than the one
//! the filter would decide on: spellings the filter must read as that rule
//! (and refuse as ambiguous, or judge by it).
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use authflow_filter_core::config::Policy;
use authflow_filter_core::policy::{policy_for, AmbiguousPath};
use authflow_filter_core::{FilterConfig, Request};

fn config() -> FilterConfig {
    let v = serde_json::json!({
        "providers": [{"name": "p", "issuer": "i", "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": {"remote": {"cluster": "c", "path": "/j"}}}],
        "routes": [
            {"match": {"prefix": "/public"}, "policy": "public"},
            {"match": {"exact": "/robots.txt"}, "policy": "public"},
            {"match": {"path_prefix": "/api/admin"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"path_prefix": "/api/keys"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"path_prefix": "/internal/billing"}, "policy": {"client_ids_any": ["billing"]}},
            {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}}
        ]
    });
    FilterConfig::from_json(v.to_string().as_bytes()).unwrap()
}

fn decide<'a>(
    c: &'a FilterConfig,
    authority: &str,
    path: &str,
) -> Result<&'a Policy, AmbiguousPath> {
    let headers = [
        (":path", path),
        (":method", "GET"),
        (":authority", authority),
    ];
    policy_for(
        c,
        &Request::from_headers(
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            None,
        ),
    )
    .map(|r| r.policy)
}

/// Case-insensitive backends do not stop at ASCII: Java's `equalsIgnoreCase`
/// (Spring's `AntPathMatcher` with `caseSensitive=false` compares literal
/// patterns with it) folds `ı` (U+0131), `İ` (U+0130), `ſ` (U+017F) and the
/// Kelvin sign (U+212A) onto `i`, `i`, `s`, `k`; Spring's `PathPattern`
/// (`Character.toLowerCase`) folds `İ` and `K`; .NET's `OrdinalIgnoreCase`
/// (ASP.NET Core routing) folds `ı` and `ſ`. Percent-encoded, these pass
/// Envoy's `normalize_path` unchanged (checked: `/api/adm%C4%B1n` is
/// forwarded as it is) and such a backend serves `/api/admın` with the
/// `/api/admin` handler. The filter folds case on ASCII only, so it decides
/// on the default policy (`authenticated`) instead of refusing.
#[test]
fn unicode_letters_that_fold_onto_ascii_read_as_a_stronger_rule() {
    let c = config();
    for p in [
        "/api/adm%C4%B1n", // ı
        "/api/adm%C4%B0n", // İ
        "/api/adm%C4%B1n/users",
        "/%C4%B1nternal/billing/x", // ı
        "/%C4%B0nternal/billing/x", // İ
        "/api/%E2%84%AAeys",        // K (Kelvin sign)
        "/api/key%C5%BF/1",         // ſ (long s)
    ] {
        assert_eq!(decide(&c, "api", p), Err(AmbiguousPath), "{p}");
    }
    // Sent as raw UTF-8 (HTTP/2 lets it through; Envoy's `normalize_path`
    // is off by default), the same letters read the same way.
    for p in [
        "/api/adm\u{131}n/users",
        "/\u{130}nternal/billing/x",
        "/api/key\u{17f}/1",
    ] {
        assert_eq!(decide(&c, "api", p), Err(AmbiguousPath), "{p}");
    }
    // What folds onto nothing stronger stays decided as before.
    assert_eq!(
        decide(&c, "api", "/api/items/%C4%B1"),
        Ok(&Policy::Authenticated)
    );
    assert_eq!(
        decide(&c, "api", "/api/items/\u{131}"),
        Ok(&Policy::Authenticated)
    );
}

/// Overlong UTF-8 (`%C0%AF` for `/`, `%C0%AE` for `.`): decoders that accept
/// it (IIS's "Unicode" traversal, Tomcat CVE-2008-2938, other hand-rolled
/// ones) read `..%C0%AF` as `../`. The filter reads those bytes only as
/// U+FFFD, so `/public/..%C0%AF../api/admin` is decided public.
#[test]
fn overlong_utf8_separators_and_dots_read_as_a_stronger_rule() {
    let c = config();
    for p in [
        "/public/..%C0%AF../api/admin",
        "/public/%C0%AE%C0%AE/api/admin",
        "/api%C0%AFadmin",
        "/api%E0%80%AFadmin",
        "/public/..%C1%9C../api/admin", // `\` overlong
    ] {
        assert_eq!(decide(&c, "api", p), Err(AmbiguousPath), "{p}");
    }
}

/// `Host: admin.example:` — an empty port, valid in RFC 3986
/// (`port = *DIGIT`) — is the host `admin.example` to Go's
/// `net.SplitHostPort` (hence `http.ServeMux` host patterns) and to most URL
/// parsers. `request::without_port` keeps the `:` when the port is empty,
/// so the host rule does not match and the default policy applies.
#[test]
fn a_host_rule_is_not_dodged_with_an_empty_port() {
    let c = config();
    let admin = Policy::RolesAny(vec!["admin".into()]);
    for host in ["admin.example:", "ADMIN.example:", "admin.example.:"] {
        assert_eq!(decide(&c, host, "/x"), Ok(&admin), "{host}");
    }
}

/// Windows drops trailing dots and spaces from a path segment (`admin.` and
/// `admin%20` name `admin` to IIS and to a backend serving files from
/// NTFS). Each reads as the admin rule, so each is refused rather than
/// decided on the default. A file's extension is no such reading: a public
/// `exact` rule for `/robots.txt` stays usable.
#[test]
fn trailing_dots_spaces_and_a_suffix_read_as_a_stronger_rule() {
    let c = config();
    for p in [
        "/api/admin.",
        "/api/admin%20",
        "/api/admin.%20.",
        "/api./admin/x",
        "/api/keys%2E",
    ] {
        assert_eq!(decide(&c, "api", p), Err(AmbiguousPath), "{p}");
    }
    // What reads as nothing stronger stays decided as before.
    for p in [
        "/api/items/1.5",
        "/public/app.js",
        "/api/admin.json",
        "/api/.well-known",
        "/robots.txt",
    ] {
        assert_ne!(decide(&c, "api", p), Err(AmbiguousPath), "{p}");
    }
}
