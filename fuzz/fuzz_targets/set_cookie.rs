//! Which of a backend's `Set-Cookie` lines the filter drops
//! (`forward::sets_credential_cookie`), over arbitrary lines: any bytes,
//! whitespace, `;` and `=` anywhere, other spellings of the owned names.
//!
//! Checked against a reading written here, as a browser stores the line
//! (RFC 6265bis §5.6: the name-value pair ends at the first `;`; without `=`
//! the cookie is nameless and the text its value, which the browser sends
//! back alone) and as a server then reads the name it sends back (the text
//! before `=`, trimmed; compared ignoring ASCII case, as ASP.NET Core does):
//! - (a) a line the browser would store under one of the owned names (the
//!   token cookie, the device secret, the refresh and sign-in cookies), or
//!   as a nameless cookie whose text reads as one, is dropped;
//! - (b) no panic.
#![no_main]

use std::sync::OnceLock;

use authflow_filter_core::forward::sets_credential_cookie;
use authflow_filter_core::FilterConfig;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const OWNED: [&str; 5] = [
    "access_token",
    "__Host-authflow-device",
    "__Secure-authflow-refresh",
    "__Host-authflow-challenge",
    "__Host-authflow-csrf",
];

fn config() -> &'static FilterConfig {
    static CONFIG: OnceLock<FilterConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let c = json!({
            "providers": [{
                "name": "a", "issuer": "https://a", "audiences": ["api"], "algorithms": ["EdDSA"],
                "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}}
            }],
            "token_sources": {"cookies": [OWNED[0]]},
            "routes": [{"match": {"prefix": "/v1/auth/"}, "policy": "public", "forward_credentials": true}]
        });
        FilterConfig::from_json(c.to_string().as_bytes()).expect("the fuzzing config is valid")
    })
}

/// RFC 6265bis whitespace (space and horizontal tab) trimmed.
fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t')).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !matches!(c, b' ' | b'\t')).map_or(start, |e| e + 1);
    b.get(start..end.max(start)).unwrap_or_default()
}

/// The name a server reads in what the browser sends back for this line.
fn name_sent_back(line: &[u8]) -> &[u8] {
    let pair = line.split(|b| *b == b';').next().unwrap_or_default();
    let sent = match pair.iter().position(|b| *b == b'=') {
        // Nameless (nothing before `=`): the browser sends the value alone.
        Some(at) if trim(&pair[..at]).is_empty() => trim(&pair[at + 1..]),
        Some(_) => pair,
        // Nameless: the browser sends the text alone, read as a name.
        None => return trim(pair),
    };
    match sent.iter().position(|b| *b == b'=') {
        Some(at) => trim(&sent[..at]),
        None => trim(sent),
    }
}

fuzz_target!(|line: &[u8]| {
    let dropped = sets_credential_cookie(config(), line);
    let name = name_sent_back(line);
    let owned = OWNED.iter().any(|o| name.eq_ignore_ascii_case(o.as_bytes()));
    assert!(
        !owned || dropped,
        "a line the browser stores as {:?} was let through: {:?}",
        String::from_utf8_lossy(name),
        String::from_utf8_lossy(line)
    );
});
