//! Stateless server nonces for DPoP (RFC 9449 §8, §9): a nonce is the time
//! it was issued (rounded down to [`STEP_SECS`]) with an HMAC-SHA256 tag over
//! it. Any instance holding the same key checks it without shared state; it
//! stays valid for a window the checker chooses. A nonce narrows how long a
//! proof can be pre-computed by whoever steals the client's signing
//! capability, and pins `iat` to server time.
//!
//! Wire form: base64url(step as 8 bytes big-endian ‖ 32-byte tag), 54 characters.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Issue times are rounded down to this step, so nonces issued within one
/// step are equal (clients may share them; it costs no safety).
pub const STEP_SECS: u64 = 10;
/// Shortest key accepted.
pub const MIN_KEY_BYTES: usize = 32;
/// Length of every nonce this module issues.
pub const NONCE_LEN: usize = 54;
/// Domain separation: a tag made for anything else never passes as a nonce.
const CONTEXT: &[u8] = b"authflow-dpop-nonce-v1";

/// An HMAC key for nonces, at least [`MIN_KEY_BYTES`] long.
#[derive(Clone)]
pub struct NonceKey(Vec<u8>);

impl NonceKey {
    pub fn new(bytes: &[u8]) -> Option<NonceKey> {
        (bytes.len() >= MIN_KEY_BYTES).then(|| NonceKey(bytes.to_vec()))
    }

    fn tag(&self, step: u64) -> Option<[u8; 32]> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).ok()?;
        mac.update(CONTEXT);
        mac.update(&step.to_be_bytes());
        Some(mac.finalize().into_bytes().into())
    }
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// A fresh nonce for `now` (seconds since the Unix epoch).
pub fn issue(key: &NonceKey, now: u64) -> String {
    let step = now / STEP_SECS;
    let mut raw = step.to_be_bytes().to_vec();
    raw.extend(key.tag(step).unwrap_or_default());
    URL_SAFE_NO_PAD.encode(raw)
}

/// Whether `nonce` was issued with `key` at most `window_secs` before `now`
/// (and not after `now` by more than one step, for clocks a little apart).
pub fn check(key: &NonceKey, nonce: &str, now: u64, window_secs: u64) -> bool {
    if nonce.len() != NONCE_LEN {
        return false;
    }
    let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
        return false;
    };
    let Some((step_bytes, tag)) = raw.split_first_chunk::<8>() else {
        return false;
    };
    let step = u64::from_be_bytes(*step_bytes);
    let Some(expected) = key.tag(step) else {
        return false;
    };
    if !bool::from(tag.ct_eq(&expected)) {
        return false;
    }
    let issued = step.saturating_mul(STEP_SECS);
    issued <= now.saturating_add(STEP_SECS) && now.saturating_sub(issued) <= window_secs
}

/// When `nonce` says it was issued (seconds, rounded down to a step), read
/// without checking its tag: only for a nonce [`check`] accepted.
pub fn issued_at(nonce: &str) -> Option<u64> {
    let raw = URL_SAFE_NO_PAD.decode(nonce).ok()?;
    let (step, _) = raw.split_first_chunk::<8>()?;
    Some(u64::from_be_bytes(*step).saturating_mul(STEP_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> NonceKey {
        NonceKey::new(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_nonce_checks_within_its_window_only() {
        let k = key(1);
        let now = 1_764_547_200;
        let n = issue(&k, now);
        assert_eq!(n.len(), NONCE_LEN);
        assert!(check(&k, &n, now, 300));
        assert!(check(&k, &n, now + 300, 300));
        assert!(!check(&k, &n, now + 311, 300), "expired");
        assert!(
            check(&k, &n, now - STEP_SECS, 300),
            "a checker a step behind"
        );
        assert!(!check(&k, &n, now - 3 * STEP_SECS, 300), "from the future");
    }

    #[test]
    fn forged_or_foreign_nonces_fail() {
        let now = 1_764_547_200;
        let n = issue(&key(1), now);
        assert!(!check(&key(2), &n, now, 300), "another key");
        // Moving the time forward without the key breaks the tag.
        let mut raw = URL_SAFE_NO_PAD.decode(&n).unwrap();
        raw[7] ^= 1;
        assert!(!check(&key(1), &URL_SAFE_NO_PAD.encode(&raw), now, 300));
        let mut raw = URL_SAFE_NO_PAD.decode(&n).unwrap();
        raw[39] ^= 1;
        assert!(!check(&key(1), &URL_SAFE_NO_PAD.encode(&raw), now, 300));
        for bad in [
            "",
            "x",
            &n[1..],
            &format!("{n}A"),
            &"A".repeat(NONCE_LEN),
            &"!".repeat(NONCE_LEN),
        ] {
            assert!(!check(&key(1), bad, now, 300), "{bad:?}");
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(NonceKey::new(&[0; MIN_KEY_BYTES - 1]).is_none());
        assert!(NonceKey::new(&[0; MIN_KEY_BYTES]).is_some());
    }
}
