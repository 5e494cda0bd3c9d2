//! The filter's DPoP server nonces (RFC 9449 §8, §9): the contract's
//! stateless HMAC nonces ([`authflow_contract::dpop::nonce`]) under a key
//! every worker of the Envoy process shares, and every replica too when the
//! key comes from the environment (`dpop_nonce_key_env`). What this module
//! decides: which key text is acceptable, where the process-wide key lives
//! in shared data, and what a request's proof is judged against. Reading
//! the environment and shared data is the glue's.

use authflow_contract::dpop::nonce::{self, MIN_KEY_BYTES};
use authflow_contract::dpop::{NonceCheck, NonceKey};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

use crate::config::{DpopNonce, DpopPolicy, FilterConfig};

/// How long a nonce is accepted after it was issued (it is issued in
/// 10-second steps): long enough for a client to use it on its next
/// requests, short enough that a proof cannot be signed far ahead.
pub const NONCE_WINDOW_SECS: u64 = 120;

/// The shared-data key of the random per-process key (when no key comes
/// from the environment).
pub const SHARED_DATA_KEY: &str = "authflow.dpop.nonce_key";

/// Whether any provider asks for nonces (else no key is needed at all).
pub fn needed(config: &FilterConfig) -> bool {
    config
        .providers
        .iter()
        .any(|p| p.dpop.nonce == DpopNonce::Required)
}

/// A key from the environment's text: base64 (standard or URL-safe, with or
/// without padding) of at least [`MIN_KEY_BYTES`] bytes. The error says what
/// is wrong, never the value.
pub fn parse_key(text: &str) -> Result<NonceKey, String> {
    let text = text.trim();
    let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or("it is not base64")?;
    NonceKey::new(&bytes).ok_or_else(|| {
        format!(
            "it decodes to {} bytes, fewer than {MIN_KEY_BYTES}",
            bytes.len()
        )
    })
}

/// The key another worker put in shared data, if it is one.
pub fn from_shared(bytes: &[u8]) -> Option<NonceKey> {
    NonceKey::new(bytes)
}

/// How `policy`'s proofs are judged for a nonce. Without a key (never the
/// case once the glue is configured) a required nonce never holds: closed.
pub fn check<'a>(policy: &DpopPolicy, key: Option<&'a NonceKey>) -> NonceCheck<'a> {
    fn none_holds(_: &str) -> bool {
        false
    }
    match (policy.nonce, key) {
        (DpopNonce::Off, _) => NonceCheck::NotRequired,
        (DpopNonce::Required, Some(key)) => NonceCheck::Stateless {
            key,
            window_secs: NONCE_WINDOW_SECS,
        },
        (DpopNonce::Required, None) => NonceCheck::Custom(&none_holds),
    }
}

/// Whether a request whose proof carried an accepted nonce issued at
/// `issued` should get a fresh one with its successful response (RFC 9449
/// §8.2): once the nonce is past half its window, so a client that keeps
/// using the latest one it got never meets `use_dpop_nonce` again.
pub fn renewal_due(issued: u64, now: u64) -> bool {
    now.saturating_sub(issued) > NONCE_WINDOW_SECS / 2
}

/// A fresh nonce for the `DPoP-Nonce` header.
pub fn fresh(key: &NonceKey, now: u64) -> String {
    nonce::issue(key, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_renewed_past_half_their_window() {
        let key = NonceKey::new(&[9; 32]).unwrap();
        let now = 1_900_000_005;
        let young = fresh(&key, now - 30);
        let old = fresh(&key, now - 70);
        assert!(!renewal_due(nonce::issued_at(&young).unwrap(), now));
        assert!(renewal_due(nonce::issued_at(&old).unwrap(), now));
        assert_eq!(nonce::issued_at("not base64!"), None);
    }

    #[test]
    fn keys_are_base64_of_32_bytes_or_more() {
        let raw = [7u8; 32];
        for text in [
            STANDARD.encode(raw),
            URL_SAFE_NO_PAD.encode(raw),
            format!(" {}\n", STANDARD.encode(raw)),
        ] {
            let key = parse_key(&text).unwrap();
            let n = fresh(&key, 1_900_000_000);
            assert!(
                nonce::check(&NonceKey::new(&raw).unwrap(), &n, 1_900_000_000, 60),
                "{text:?}"
            );
        }
        let short = parse_key(&STANDARD.encode([7u8; 31])).unwrap_err();
        assert!(short.contains("31 bytes"), "{short}");
        assert_eq!(parse_key("not base64!").unwrap_err(), "it is not base64");
        assert!(parse_key("").is_err());
    }
}
