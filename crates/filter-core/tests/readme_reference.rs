//! The README's "Filter configuration reference" names every setting the
//! filter reads: a field of the configuration's schema (`src/config/raw.rs`)
//! missing from the table is a setting an operator cannot learn of, and a
//! row naming no field is one the filter refuses as unknown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

const RAW: &str = include_str!("../src/config/raw.rs");
const README: &str = include_str!("../../../README.md");

/// The fields of `struct NAME` in `raw.rs`, as the JSON spells them.
fn fields(name: &str) -> Vec<String> {
    let start = RAW
        .find(&format!("pub(super) struct {name} {{"))
        .unwrap_or_else(|| panic!("no struct {name} in raw.rs"));
    let body = &RAW[start..start + RAW[start..].find("\n}").unwrap()];
    let mut out = Vec::new();
    let mut rename = None;
    for line in body.lines().skip(1).map(str::trim) {
        if let Some(r) = line.strip_prefix("#[serde(rename = \"") {
            rename = r.split('"').next().map(str::to_owned);
        } else if let Some(f) = line.strip_prefix("pub(super) ") {
            let field = f.split(':').next().unwrap().to_owned();
            out.push(rename.take().unwrap_or(field));
        }
    }
    out
}

/// The configuration section of the README: up to the next `## ` heading.
fn reference() -> &'static str {
    let start = README.find("## Filter configuration reference").unwrap();
    let rest = &README[start + 3..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn every_setting_is_in_the_readme_reference() {
    let text = reference();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| `")).collect();
    // A list is written `name[]`.
    let row_of = |name: &str| {
        rows.iter().any(|r| {
            r.starts_with(&format!("| `{name}`")) || r.starts_with(&format!("| `{name}[]`"))
        })
    };
    let mut missing = Vec::new();
    for f in fields("RawConfig") {
        if !row_of(&f) {
            missing.push(f);
        }
    }
    for f in fields("RawProvider") {
        if !row_of(&format!("providers[].{f}")) && !matches!(f.as_str(), "jwks") {
            missing.push(format!("providers[].{f}"));
        }
    }
    // Nested sections are described in their parent's row.
    for (parent, structs) in [
        ("providers[].jwks.remote", &["RawUpstream"][..]),
        ("providers[].revocations", &["RawUpstream"][..]),
        ("token_sources", &["RawTokenSources"][..]),
        ("identity_headers", &["RawIdentityHeaders"][..]),
        ("routes[]", &["RawRoute", "RawRouteMatch"][..]),
        ("device_binding", &["RawDeviceBinding"][..]),
        ("revocation", &["RawRevocationPolicy"][..]),
        ("browser", &["RawBrowser"][..]),
    ] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| `{parent}`")))
            .unwrap_or_else(|| panic!("no row for `{parent}`"));
        for s in structs {
            for f in fields(s) {
                // `wait_secs` is the feed's only; `refresh_interval_secs` the keys'.
                let own = !matches!(
                    (parent, f.as_str()),
                    ("providers[].jwks.remote", "poll_interval_ms" | "wait_secs")
                        | (
                            "providers[].revocations",
                            "refresh_interval_secs" | "min_refetch_interval_secs"
                        )
                );
                if own && !row.contains(&format!("`{f}`")) {
                    missing.push(format!("{parent}.{f}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "settings missing from the README: {missing:?}"
    );
}
