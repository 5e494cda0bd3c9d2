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

/// Whether a value lists a `Bearer` or `DPoP` credential after a comma.
/// Envoy joins two `Authorization` lines into one value so (`Basic x,Bearer
/// t`), and a backend reading the value as a list (Flask-JWT-Extended) takes
/// the token after one, where a reader of the first scheme sees none
/// (`,Bearer t` and `Bearer,t` too).
pub fn lists_a_token(value: &str) -> bool {
    value.contains(',')
        && value
            .split(',')
            .any(|item| is_token_scheme(split_authorization(item).0))
}

/// Whether a token is RFC 6750 §2.1's `b64token` (`1*( ALPHA / DIGIT / "-" /
/// "." / "_" / "~" / "+" / "/" ) *"="`). Anything else around a token of
/// ours (`T,x.y`, `T x`, a byte past ASCII) is a list or two words to some
/// backend, which may take the token from it after the filter refused it.
pub fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(
            |b| matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'+' | b'/'),
        )
}

/// Whether an `Authorization` scheme carries a token of ours: `Bearer`
/// (case-insensitive, RFC 6750 §2.1) or `DPoP` (RFC 9449 §7.1; its proof is
/// checked later). Other schemes (Basic …) are not ours.
pub fn is_token_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("dpop")
}
