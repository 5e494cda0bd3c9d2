//! Arithmetic in GF(p), p = 2²⁵⁶ − 2²²⁴ + 2¹⁹² + 2⁹⁶ − 1, on eight `u32`
//! limbs with `u64` products: Wasm multiplies 32×32→64 natively, so this
//! avoids the software 64×64→128 multiplies of `u64`-limb code.
//!
//! Products are reduced with the NIST (Solinas) fast reduction, which needs
//! only word additions because of p's special form; values stay in plain (not
//! Montgomery) form, so bytes convert directly and comparisons are exact.
//! Every function is variable-time: only public data goes through here.
// Every index below is a loop counter bounded by the fixed length of the limb
// arrays it reads (8 limbs, 16 for a product): in range by construction, and
// the inner loops are the ES256 hot path.
#![allow(clippy::indexing_slicing)]

/// A field element, always fully reduced (< p), least significant limb first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fe([u32; 8]);

const P: [u32; 8] = [
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0,
    0,
    0,
    1,
    0xffff_ffff,
];

/// p − 2, the exponent that inverts by Fermat's little theorem.
const P_MINUS_2: [u32; 8] = [
    0xffff_fffd,
    0xffff_ffff,
    0xffff_ffff,
    0,
    0,
    0,
    1,
    0xffff_ffff,
];

impl Fe {
    pub const ZERO: Fe = Fe([0; 8]);
    pub const ONE: Fe = Fe([1, 0, 0, 0, 0, 0, 0, 0]);

    /// Big-endian bytes; `None` unless the value is below p (canonical).
    pub fn from_be_bytes(bytes: &[u8; 32]) -> Option<Fe> {
        let limbs = limbs_from_be_bytes(bytes);
        let (_, borrow) = sub_limbs(&limbs, &P);
        (borrow == 1).then_some(Fe(limbs))
    }

    pub fn to_be_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, limb) in out.chunks_exact_mut(4).zip(self.0.iter().rev()) {
            chunk.copy_from_slice(&limb.to_be_bytes());
        }
        out
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    pub fn add(&self, other: &Fe) -> Fe {
        let (sum, carry) = add_limbs(&self.0, &other.0);
        Fe(subtract_p_if_needed(sum, carry))
    }

    pub fn double(&self) -> Fe {
        self.add(self)
    }

    pub fn sub(&self, other: &Fe) -> Fe {
        let (diff, borrow) = sub_limbs(&self.0, &other.0);
        if borrow == 0 {
            Fe(diff)
        } else {
            // a − b + 2²⁵⁶ overshot by 2²⁵⁶ − p: adding p wraps back into range.
            Fe(add_limbs(&diff, &P).0)
        }
    }

    pub fn mul(&self, other: &Fe) -> Fe {
        Fe(reduce_wide(&mul_wide(&self.0, &other.0)))
    }

    pub fn square(&self) -> Fe {
        Fe(reduce_wide(&square_wide(&self.0)))
    }

    /// 1/self (0 maps to 0); only used when tables are built, so plain Fermat suffices.
    pub fn invert(&self) -> Fe {
        let mut acc = Fe::ONE;
        for bit in (0..256).rev() {
            acc = acc.square();
            if (P_MINUS_2[bit / 32] >> (bit % 32)) & 1 == 1 {
                acc = acc.mul(self);
            }
        }
        acc
    }
}

/// 32 big-endian bytes as little-endian u32 limbs (no reduction).
pub fn limbs_from_be_bytes(bytes: &[u8; 32]) -> [u32; 8] {
    let mut limbs = [0u32; 8];
    for (limb, chunk) in limbs.iter_mut().rev().zip(bytes.chunks_exact(4)) {
        *limb = chunk.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b));
    }
    limbs
}

/// a + b and the carry out; shared with the scalar field (`scalar.rs`).
pub(super) fn add_limbs(a: &[u32; 8], b: &[u32; 8]) -> ([u32; 8], u32) {
    let mut out = [0u32; 8];
    let mut carry = 0u64;
    for i in 0..8 {
        let t = u64::from(a[i]) + u64::from(b[i]) + carry;
        out[i] = t as u32;
        carry = t >> 32;
    }
    (out, carry as u32)
}

/// a − b mod 2²⁵⁶ and the borrow out (1 when a < b).
pub(super) fn sub_limbs(a: &[u32; 8], b: &[u32; 8]) -> ([u32; 8], u32) {
    let mut out = [0u32; 8];
    let mut borrow = 0u64;
    for i in 0..8 {
        let t = u64::from(a[i])
            .wrapping_sub(u64::from(b[i]))
            .wrapping_sub(borrow);
        out[i] = t as u32;
        borrow = t >> 63;
    }
    (out, borrow as u32)
}

/// Maps `carry`·2²⁵⁶ + `value`, known to be below 2p, into [0, p).
fn subtract_p_if_needed(value: [u32; 8], carry: u32) -> [u32; 8] {
    // p's top limb is all ones, so a smaller top limb means value < p: the
    // subtraction is skipped except with probability about 2⁻³².
    if carry == 0 && value[7] != u32::MAX {
        return value;
    }
    let (reduced, borrow) = sub_limbs(&value, &P);
    if carry != 0 || borrow == 0 {
        reduced
    } else {
        value
    }
}

/// Schoolbook 256×256→512-bit product, row by row. Each step's sum fits a
/// u64: (2³²−1)² + 2·(2³²−1) = 2⁶⁴ − 1. (A fully unrolled column-wise
/// version measured slower under V8: too many live values to keep in registers.)
fn mul_wide(a: &[u32; 8], b: &[u32; 8]) -> [u32; 16] {
    let mut out = [0u32; 16];
    for i in 0..8 {
        let ai = u64::from(a[i]);
        let mut carry = 0u64;
        for j in 0..8 {
            let t = ai * u64::from(b[j]) + u64::from(out[i + j]) + carry;
            out[i + j] = t as u32;
            carry = t >> 32;
        }
        out[i + 8] = carry as u32;
    }
    out
}

/// a²: the 28 cross products once, doubled, plus the 8 squares (36 multiplies, not 64).
fn square_wide(a: &[u32; 8]) -> [u32; 16] {
    let mut out = [0u32; 16];
    for i in 0..7 {
        let ai = u64::from(a[i]);
        let mut carry = 0u64;
        for j in i + 1..8 {
            let t = ai * u64::from(a[j]) + u64::from(out[i + j]) + carry;
            out[i + j] = t as u32;
            carry = t >> 32;
        }
        out[i + 8] = carry as u32;
    }
    let mut shifted_out = 0u32;
    for limb in out.iter_mut() {
        let next = *limb >> 31;
        *limb = (*limb << 1) | shifted_out;
        shifted_out = next;
    }
    let mut carry = 0u64;
    for i in 0..8 {
        let sq = u64::from(a[i]) * u64::from(a[i]);
        let lo = u64::from(out[2 * i]) + (sq & 0xffff_ffff) + carry;
        out[2 * i] = lo as u32;
        let hi = u64::from(out[2 * i + 1]) + (sq >> 32) + (lo >> 32);
        out[2 * i + 1] = hi as u32;
        carry = hi >> 32;
    }
    out
}

/// NIST fast reduction (FIPS 186-4 D.2.3): with c the 16 words of the
/// product, the result is s1 + 2s2 + 2s3 + s4 + s5 − s6 − s7 − s8 − s9, each
/// sᵢ a fixed arrangement of the words. Summed here column by column.
/// Inlined so the 16 product words need not round-trip through memory.
#[inline(always)]
fn reduce_wide(c: &[u32; 16]) -> [u32; 8] {
    let w = |i: usize| i64::from(c[i]);
    let columns = [
        w(0) + w(8) + w(9) - w(11) - w(12) - w(13) - w(14),
        w(1) + w(9) + w(10) - w(12) - w(13) - w(14) - w(15),
        w(2) + w(10) + w(11) - w(13) - w(14) - w(15),
        w(3) + 2 * (w(11) + w(12)) + w(13) - w(15) - w(8) - w(9),
        w(4) + 2 * (w(12) + w(13)) + w(14) - w(9) - w(10),
        w(5) + 2 * (w(13) + w(14)) + w(15) - w(10) - w(11),
        w(6) + 3 * w(14) + 2 * w(15) + w(13) - w(8) - w(9),
        w(7) + 3 * w(15) + w(8) - w(10) - w(11) - w(12) - w(13),
    ];
    // Each column is within ±8·2³², so the overflow past 2²⁵⁶ is small;
    // folding it in leaves at most ±1, and folding that leaves none (see `fold`).
    let (limbs, overflow) = propagate(columns);
    let (limbs, overflow) = fold(limbs, overflow);
    let limbs = if overflow == 0 {
        limbs
    } else {
        fold(limbs, overflow).0
    };
    subtract_p_if_needed(limbs, 0)
}

/// Carries signed column sums into 32-bit limbs; returns the limbs and the
/// signed multiple of 2²⁵⁶ left over.
fn propagate(columns: [i64; 8]) -> ([u32; 8], i64) {
    let mut limbs = [0u32; 8];
    let mut carry = 0i64;
    for (limb, column) in limbs.iter_mut().zip(columns) {
        let t = column + carry;
        *limb = t as u32;
        carry = t >> 32;
    }
    (limbs, carry)
}

/// Replaces k·2²⁵⁶ by k·(2²²⁴ − 2¹⁹² − 2⁹⁶ + 1), its value mod p. For |k| ≤ 2³¹
/// the limbs plus that term lie within (−2²⁵⁵, 2²⁵⁶ + 2²⁵⁵), so at most ±1
/// remains. Folding that ±1 cannot overflow again: it left the limbs below
/// 2²⁵⁵ (k = 1) or above it (k = −1), and the term is below 2²²⁴.
fn fold(limbs: [u32; 8], k: i64) -> ([u32; 8], i64) {
    let mut columns = limbs.map(i64::from);
    columns[0] += k;
    columns[3] -= k;
    columns[6] -= k;
    columns[7] += k;
    propagate(columns)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use p256::elliptic_curve::bigint::{NonZero, U256};

    fn modulus() -> NonZero<U256> {
        NonZero::<U256>::new_unwrap(U256::from_be_hex(
            "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
        ))
    }

    fn fe(value: U256) -> Fe {
        Fe::from_be_bytes(&value.to_be_bytes().into()).unwrap()
    }

    fn to_uint(a: Fe) -> U256 {
        U256::from_be_slice(&a.to_be_bytes())
    }

    /// 32 pseudo-random bytes (shared with the scalar tests), biased towards
    /// the edges where carries and the final subtraction matter.
    pub(in crate::p256_verify) fn random_bytes(seed: &mut u64) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for b in bytes.iter_mut() {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (*seed >> 56) as u8;
        }
        match *seed % 5 {
            0 => bytes[..8].fill(0xff),
            1 => bytes[..4].fill(0),
            _ => {}
        }
        bytes
    }

    fn random_fe(seed: &mut u64) -> Fe {
        loop {
            let bytes = random_bytes(seed);
            if let Some(fe) = Fe::from_be_bytes(&bytes) {
                return fe;
            }
        }
    }

    fn edge_values() -> Vec<Fe> {
        let p = modulus();
        let mut values = vec![Fe::ZERO, Fe::ONE, Fe::from_be_bytes(&[0x7f; 32]).unwrap()];
        values.extend((1u64..4).map(|k| fe(p.wrapping_sub(&U256::from_u64(k)))));
        // 2²⁵⁶ mod p and its neighbours: the values the reduction folds in.
        values.push(fe(U256::from_be_hex(
            "00000000fffffffeffffffffffffffffffffffff000000000000000000000001",
        )));
        values
    }

    /// The reference: crypto-bigint's modular arithmetic.
    fn ref_mul(a: Fe, b: Fe) -> U256 {
        to_uint(a).mul_mod_vartime(&to_uint(b), &modulus())
    }

    #[test]
    fn rejects_non_canonical_bytes() {
        assert!(Fe::from_be_bytes(&modulus().to_be_bytes().into()).is_none());
        assert!(Fe::from_be_bytes(&[0xff; 32]).is_none());
        let below = modulus().wrapping_sub(&U256::ONE);
        assert_eq!(to_uint(fe(below)), below);
    }

    #[test]
    fn arithmetic_matches_bigint_reference() {
        let p = modulus();
        let mut seed = 7u64;
        let mut values = edge_values();
        values.extend((0..60).map(|_| random_fe(&mut seed)));
        for &a in &values {
            assert_eq!(to_uint(a.square()), ref_mul(a, a));
            for &b in &values {
                assert_eq!(to_uint(a.add(&b)), to_uint(a).add_mod(&to_uint(b), &p));
                assert_eq!(to_uint(a.sub(&b)), to_uint(a).sub_mod(&to_uint(b), &p));
                assert_eq!(to_uint(a.mul(&b)), ref_mul(a, b));
            }
        }
    }

    #[test]
    fn invert_is_the_inverse() {
        let mut seed = 11u64;
        for a in edge_values()
            .into_iter()
            .chain((0..20).map(|_| random_fe(&mut seed)))
        {
            if a.is_zero() {
                assert!(a.invert().is_zero());
            } else {
                assert_eq!(a.mul(&a.invert()), Fe::ONE);
            }
        }
    }
}
