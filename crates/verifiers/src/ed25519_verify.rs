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
//! a few milliseconds to build, so a JWKS key gets it when the key set
//! arrives ([`Ed25519Key::new`]), and a DPoP proof's key only once it has
//! checked [`TABLE_AFTER_CHECKS`] signatures ([`Ed25519Key::lazy`]): a client
//! keeps its key, a key made up per request never gets that far.
//!
//! Decisions are those of `verify_strict` — `s` must be canonical (< ℓ),
//! small-order keys and small-order `R` are refused, and so is an `R` that
//! is not the canonical encoding of its point (y ≥ p, or x = 0 with the
//! sign bit set), as RFC 8032 §5.1.3 asks: both compare the encoding of the
//! point they compute with the `R` sent. BoringSSL (what Envoy's
//! `jwt_authn` uses) also compares encodings. The Wycheproof vectors
//! (`crates/contract/tests/wycheproof.rs`) and a differential fuzz target
//! against `verify_strict` (`fuzz/fuzz_targets/ed25519_differential.rs`)
//! hold it to that.
//!
//! Only curve25519-dalek's public API is used: its point arithmetic, its
//! table type (`EdwardsBasepointTable::create` works for any point) and its
//! constant-time table lookups. Nothing here is secret, so constant time is
//! not needed, only correctness. Without a table, `[s]B − [k]A` is
//! curve25519-dalek's variable-time double-scalar multiplication (what
//! `verify_strict` uses); the checks around it are the same.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsBasepointTable, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable;
use sha2::{Digest, Sha512};

/// Checks with a key before its table is built lazily (see
/// [`Ed25519Key::lazy`]): enough for a client that keeps its key, too many
/// for a key made up per request to be worth it — by then its proofs have
/// cost ~64 signature checks, several times the table.
pub const TABLE_AFTER_CHECKS: u32 = 64;

/// An Ed25519 public key prepared for verification. Clones share the table.
#[derive(Clone)]
pub struct Ed25519Key {
    /// The key as it was given: `k = SHA-512(R ‖ A ‖ M)` hashes these bytes.
    encoded: [u8; 32],
    /// `−A`; `None` for a small-order key, which verifies nothing (as with
    /// `verify_strict`: any signature would do for such a key).
    minus_a: Option<EdwardsPoint>,
    table: Arc<LazyTable>,
}

#[derive(Default)]
struct LazyTable {
    /// Multiples of `−A`, once built.
    table: OnceLock<Box<EdwardsBasepointTable>>,
    /// Checks made without the table (a lazy key builds it at [`TABLE_AFTER_CHECKS`]).
    checks: AtomicU32,
}

impl Ed25519Key {
    /// A key that checks many signatures (a JWKS key): its table is built
    /// now, when the key set arrives. `None` when the 32 bytes are not a
    /// point on the curve (as `ed25519_dalek::VerifyingKey::from_bytes` decides).
    pub fn new(encoded: &[u8; 32]) -> Option<Ed25519Key> {
        let key = Ed25519Key::lazy(encoded)?;
        // Built now, with the key, not by the first request.
        base_table();
        if let Some(minus_a) = &key.minus_a {
            let _ = key
                .table
                .table
                .set(Box::new(EdwardsBasepointTable::create(minus_a)));
        }
        Some(key)
    }

    /// A key whose use is not known yet (a DPoP proof's): checked without a
    /// table until it has been used [`TABLE_AFTER_CHECKS`] times, so a key
    /// seen once costs what `verify_strict` costs, and one a client keeps
    /// gets the faster checks.
    pub fn lazy(encoded: &[u8; 32]) -> Option<Ed25519Key> {
        let a = CompressedEdwardsY(*encoded).decompress()?;
        let minus_a = (!a.is_small_order()).then(|| -a);
        Some(Ed25519Key {
            encoded: *encoded,
            minus_a,
            table: Arc::default(),
        })
    }

    /// Whether `signature` (`R ‖ s`, 64 bytes) signs `message` under this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(minus_a) = &self.minus_a else {
            return false;
        };
        let lazy = &self.table;
        let table = lazy.table.get().or_else(|| {
            let checks = lazy
                .checks
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            (checks >= TABLE_AFTER_CHECKS).then(|| {
                lazy.table
                    .get_or_init(|| Box::new(EdwardsBasepointTable::create(minus_a)))
            })
        });
        match table {
            Some(minus_a) => check(&self.encoded, message, signature, &|s, k| {
                base_table().mul_base(s) + minus_a.mul_base(k)
            }),
            None => check(&self.encoded, message, signature, &|s, k| {
                EdwardsPoint::vartime_double_scalar_mul_basepoint(k, minus_a, s)
            }),
        }
    }

    /// Whether the key is of small order: it verifies nothing here.
    pub fn is_small_order(&self) -> bool {
        self.minus_a.is_none()
    }

    /// Whether the table of multiples is built (for tests and stats).
    pub fn has_table(&self) -> bool {
        self.table.table.get().is_some()
    }
}

/// The same decision for a key used once, without a table.
pub fn verify_once(encoded: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    Ed25519Key::lazy(encoded).is_some_and(|k| k.verify(message, signature))
}

/// Whether 32 bytes encode a point on the curve (a usable public key).
pub fn is_point(encoded: &[u8; 32]) -> bool {
    CompressedEdwardsY(*encoded).decompress().is_some()
}

/// RFC 8032 §5.1.7 around `recompute`, which gives `R' = [s]B − [k]A`.
fn check(
    encoded: &[u8; 32],
    message: &[u8],
    signature: &[u8],
    recompute: &dyn Fn(&Scalar, &Scalar) -> EdwardsPoint,
) -> bool {
    let Some((r, s)) = split_signature(signature) else {
        return false;
    };
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*s)) else {
        return false;
    };
    let digest: [u8; 64] = Sha512::new()
        .chain_update(r)
        .chain_update(encoded)
        .chain_update(message)
        .finalize()
        .into();
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
