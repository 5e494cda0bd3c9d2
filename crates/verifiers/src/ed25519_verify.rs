//! Ed25519 verification (RFC 8032 §5.1.7) with a table of multiples of the
//! key built once per key, for the keys the filter sees on every cold token.
//!
//! Why not ed25519-dalek's `verify_strict` alone: it computes
//! `[s]B − [k]A` with a variable-time double-scalar multiplication that
//! spends ~254 point doublings per signature, and it decompresses `R` (a
//! square root) on every call. With a radix-16 table of `−A` (the same shape
//! curve25519-dalek keeps for the base point `B`, 32 × 8 points, ~30 KiB),
//! `[k](−A)` costs 64 additions and 4 doublings, and comparing the
//! *encoding* of the result with `R` needs no decompression. The table costs
//! a few milliseconds to build, so it is made for JWKS keys (prepared once
//! per key set), not for one-off keys such as a DPoP proof's.
//!
//! Decisions are those of `verify_strict` — `s` must be canonical (< ℓ),
//! small-order keys and small-order `R` are refused — with one difference,
//! in the direction RFC 8032 §5.1.3 asks: an `R` that is not the canonical
//! encoding of its point (y ≥ p, or x = 0 with the sign bit set) is refused
//! here, where `verify_strict` decompresses and accepts it. BoringSSL (what
//! Envoy's `jwt_authn` uses) also compares encodings. The Wycheproof vectors
//! (`crates/contract/tests/wycheproof.rs`) and a differential fuzz target
//! against `verify_strict` (`fuzz/fuzz_targets/ed25519_differential.rs`)
//! hold it to that.
//!
//! Only curve25519-dalek's public API is used: its point arithmetic, its
//! table type (`EdwardsBasepointTable::create` works for any point) and its
//! constant-time table lookups. Nothing here is secret, so constant time is
//! not needed, only correctness. A key used once (a DPoP proof's) goes
//! through [`verify_once`], the same checks without a table.

use std::sync::OnceLock;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsBasepointTable, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable;
use sha2::{Digest, Sha512};

/// An Ed25519 public key prepared for verification.
#[derive(Clone)]
pub struct Ed25519Key {
    /// The key as it was given: `k = SHA-512(R ‖ A ‖ M)` hashes these bytes.
    encoded: [u8; 32],
    /// Multiples of `−A`; `None` for a small-order key, which verifies nothing
    /// (as with `verify_strict`: any signature would do for such a key).
    minus_a: Option<Box<EdwardsBasepointTable>>,
}

impl Ed25519Key {
    /// `None` when the 32 bytes are not a point on the curve (as
    /// `ed25519_dalek::VerifyingKey::from_bytes` decides).
    pub fn new(encoded: &[u8; 32]) -> Option<Ed25519Key> {
        let a = CompressedEdwardsY(*encoded).decompress()?;
        // Built now, with the key (when a key set arrives), not by the first request.
        base_table();
        let minus_a = (!a.is_small_order()).then(|| Box::new(EdwardsBasepointTable::create(&-a)));
        Some(Ed25519Key { encoded: *encoded, minus_a })
    }

    /// Whether `signature` (`R ‖ s`, 64 bytes) signs `message` under this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(minus_a) = &self.minus_a else { return false };
        check(&self.encoded, message, signature, |s, k| base_table().mul_base(s) + minus_a.mul_base(k))
    }
}

/// The same decision for a key used once (a DPoP proof's own key), without
/// building its table: `[s]B − [k]A` by curve25519-dalek's variable-time
/// double-scalar multiplication, as `verify_strict` computes it.
pub fn verify_once(encoded: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Some(a) = CompressedEdwardsY(*encoded).decompress() else { return false };
    if a.is_small_order() {
        return false;
    }
    let minus_a = -a;
    check(encoded, message, signature, |s, k| EdwardsPoint::vartime_double_scalar_mul_basepoint(k, &minus_a, s))
}

/// Whether 32 bytes encode a point on the curve (a usable public key).
pub fn is_point(encoded: &[u8; 32]) -> bool {
    CompressedEdwardsY(*encoded).decompress().is_some()
}

/// RFC 8032 §5.1.7 around `recompute`, which gives `R' = [s]B − [k]A`.
fn check(encoded: &[u8; 32], message: &[u8], signature: &[u8], recompute: impl Fn(&Scalar, &Scalar) -> EdwardsPoint) -> bool {
    let Some((r, s)) = split_signature(signature) else { return false };
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*s)) else { return false };
    let digest: [u8; 64] = Sha512::new().chain_update(r).chain_update(encoded).chain_update(message).finalize().into();
    let k = Scalar::from_bytes_mod_order_wide(&digest);
    // R' is never compared as a point: its encoding is canonical, so equality
    // with `r` also proves `r` canonical; R' of small order means R is.
    let expected = recompute(&s, &k);
    !expected.is_small_order() && expected.compress().as_bytes() == r
}

/// The same table for the base point `B`, built on first use rather than
/// taken from curve25519-dalek's `ED25519_BASEPOINT_TABLE`: that constant
/// would put its 30 KiB into the module, which is kept small.
fn base_table() -> &'static EdwardsBasepointTable {
    static TABLE: OnceLock<EdwardsBasepointTable> = OnceLock::new();
    TABLE.get_or_init(|| EdwardsBasepointTable::create(&ED25519_BASEPOINT_POINT))
}

fn split_signature(signature: &[u8]) -> Option<(&[u8; 32], &[u8; 32])> {
    let (r, s) = signature.split_first_chunk::<32>()?;
    Some((r, s.try_into().ok()?))
}

#[cfg(test)]
mod tests;
