//! ES256 (ECDSA over P-256 with SHA-256) verification for Wasm.
//!
//! The `p256` crate is constant-time and built on 64-bit limbs with 128-bit
//! products, which Wasm emulates in software. Verification handles only
//! public data, so this module trades that for speed: 32-bit limbs
//! ([`field`]), Jacobian points ([`point`]) and fixed-base comb tables for
//! both the generator and the public key ([`comb`]); the key's table is built
//! once, when the key is prepared. Scalars mod n are [`scalar`]'s, on the
//! same limbs.
//!
//! The decision is exactly the one of `p256::ecdsa::VerifyingKey::verify`
//! (high-S signatures are accepted, as JWS allows); the tests compare the two.

mod comb;
mod field;
mod point;
mod scalar;

use sha2::{Digest, Sha256};

use comb::CombTable;
use field::Fe;
use point::{batch_to_affine, Affine, Jacobian};
use scalar::Scalar;

/// The group order n, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// p − n, big-endian: an x-coordinate x ≥ n reduces to r = x − n < p − n.
const P_MINUS_ORDER: [u8; 32] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x43, 0x19, 0x05, 0x53, 0x58, 0xe8, 0x61, 0x7b,
    0x0c, 0x46, 0x35, 0x3d, 0x03, 0x9c, 0xda, 0xae,
];

/// A P-256 public key with its comb table (16 KB), ready to verify.
#[derive(Clone)]
pub struct P256Key {
    table: CombTable,
}

impl P256Key {
    /// From the SEC1 uncompressed encoding (0x04 ‖ x ‖ y); `None` unless the
    /// point is on the curve (the identity has no such encoding).
    pub fn from_sec1_uncompressed(bytes: &[u8]) -> Option<P256Key> {
        let (&tag, coordinates) = bytes.split_first()?;
        let coordinates: &[u8; 64] = coordinates.try_into().ok()?;
        let (x, y) = coordinates.split_at(32);
        if tag != 0x04 {
            return None;
        }
        let point = Affine::from_coordinates(x.try_into().ok()?, y.try_into().ok()?)?;
        // Built here, with the key, so that no request pays for it.
        comb::generator_table()?;
        Some(P256Key {
            table: CombTable::new(&point)?,
        })
    }

    /// Whether `signature` (r ‖ s, 32 bytes each, big-endian) signs `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.check(message, signature).unwrap_or(false)
    }

    fn check(&self, message: &[u8], signature: &[u8]) -> Option<bool> {
        let (u1, u2, r) = multipliers(message, signature)?;
        let sum = comb::double_mul(&u1, comb::generator_table()?, &u2, &self.table);
        Some(x_reduces_to(&sum, &r))
    }
}

/// Whether `signature` signs `message` under the key (x, y), big-endian:
/// for a key used once (a DPoP proof's own), without the comb table
/// [`P256Key`] builds, which costs several checks' work (a doubling and an
/// addition for each of its 255 points). Decides as [`P256Key::verify`].
pub fn verify_once(x: &[u8; 32], y: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let checked = || -> Option<bool> {
        let q = Affine::from_coordinates(x, y)?;
        let g = Affine::generator()?;
        let (u1, u2, r) = multipliers(message, signature)?;
        // Shamir's trick: one doubling a bit, then G, Q or G + Q added. G + Q
        // is the identity only for Q = −G, and adding it then adds nothing.
        let g_plus_q = batch_to_affine(&[Jacobian::from(&g).add_affine(&q)])
            .and_then(|sum| sum.into_iter().next());
        let bit = |k: &[u32; 8], i: usize| k.get(i / 32).is_some_and(|l| l >> (i % 32) & 1 == 1);
        let mut sum = Jacobian::IDENTITY;
        for i in (0..256).rev() {
            sum = sum.double();
            let added = match (bit(&u1, i), bit(&u2, i)) {
                (true, true) => g_plus_q.as_ref(),
                (true, false) => Some(&g),
                (false, true) => Some(&q),
                (false, false) => None,
            };
            if let Some(p) = added {
                sum = sum.add_affine(p);
            }
        }
        Some(x_reduces_to(&sum, &r))
    };
    checked().unwrap_or(false)
}

/// u₁ = e·s⁻¹ and u₂ = r·s⁻¹ (little-endian limbs) and r (big-endian) of an
/// r ‖ s signature of `message`; `None` unless r and s are in [1, n − 1].
fn multipliers(message: &[u8], signature: &[u8]) -> Option<([u32; 8], [u32; 8], [u8; 32])> {
    let signature: &[u8; 64] = signature.try_into().ok()?;
    let (r_bytes, s_bytes) = signature.split_at(32);
    let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
    let r = nonzero_scalar(&r_bytes)?;
    let s = nonzero_scalar(s_bytes.try_into().ok()?)?;
    // SHA-256 output is exactly as long as n, so no truncation: e = H(m) mod n.
    let digest: [u8; 32] = Sha256::digest(message).into();
    let e = Scalar::reduce_be_bytes(&digest);
    let w = s.invert()?;
    Some((e.mul(&w).limbs(), r.mul(&w).limbs(), r_bytes))
}

/// Whether (x, y), big-endian, is a point of P-256: a cheap check of a key
/// that is used once, without building its table.
pub fn is_curve_point(x: &[u8; 32], y: &[u8; 32]) -> bool {
    Affine::from_coordinates(x, y).is_some()
}

/// A scalar in [1, n − 1] from big-endian bytes; anything else is not a valid r or s.
fn nonzero_scalar(bytes: &[u8; 32]) -> Option<Scalar> {
    Scalar::from_be_bytes(bytes).filter(|k| !k.is_zero())
}

/// Whether x(point) mod n equals r (given in [1, n − 1]), without leaving
/// Jacobian coordinates: x = X/Z², and since x < p < 2n, x mod n = r means
/// x = r or x = r + n (possible only when r + n < p). The identity never matches.
fn x_reduces_to(point: &Jacobian, r: &[u8; 32]) -> bool {
    if point.is_identity() {
        return false;
    }
    let Some(r) = Fe::from_be_bytes(r) else {
        return false;
    };
    let zz = point.z.square();
    if r.mul(&zz) == point.x {
        return true;
    }
    let Some(n) = Fe::from_be_bytes(&ORDER) else {
        return false;
    };
    // Big-endian byte strings compare like the numbers they encode.
    r.to_be_bytes() < P_MINUS_ORDER && r.add(&n).mul(&zz) == point.x
}

#[cfg(test)]
mod tests;
