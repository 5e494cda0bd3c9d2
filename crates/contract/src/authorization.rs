//! Reading an `Authorization` value, one way for the filter and the service.

/// The scheme of an `Authorization` value and what follows it, both trimmed.
/// Split at the first whitespace: RFC 7235 allows only SP, but a backend
/// splitting on `\s+` reads `Bearer<TAB>t` as the token `t` (Go's
/// `strings.Fields` also at NBSP and other Unicode spaces), so the filter
/// must too. The one reading of the header for extraction and forwarding.
pub fn split_authorization(value: &str) -> (&str, &str) {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    (scheme, rest.trim())
}

/// Whether an `Authorization` scheme carries a token of ours: `Bearer`
/// (case-insensitive, RFC 6750 §2.1) or `DPoP` (RFC 9449 §7.1; its proof is
/// checked later). Other schemes (Basic …) are not ours.
pub fn is_token_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("dpop")
}
