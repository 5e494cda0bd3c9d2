//! Arithmetic mod n, the order of P-256's group, as ECDSA verification needs
//! it: parse r and s, reduce the digest, one inversion and two products. On
//! eight `u32` limbs like [`super::field`], so the filter links no big-number
//! crate for the few scalar operations a verification does.
//!
//! Variable-time throughout: only public data (signature, digest) comes here.
// Every index is a loop counter bounded by the fixed length of the limb arrays.
#![allow(clippy::indexing_slicing)]

use super::field::{add_limbs, limbs_from_be_bytes, sub_limbs};

/// A scalar in [0, n), least significant limb first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Scalar([u32; 8]);

/// n = FFFFFFFF 00000000 FFFFFFFF FFFFFFFF BCE6FAAD A7179E84 F3B9CAC2 FC632551.
const N: [u32; 8] = [
    0xfc63_2551,
    0xf3b9_cac2,
    0xa717_9e84,
    0xbce6_faad,
    0xffff_ffff,
    0xffff_ffff,
    0,
    0xffff_ffff,
];

/// −n⁻¹ mod 2³², the Montgomery reduction factor.
const N_NEG_INV: u32 = 0xee00_bc4f;

/// R² mod n with R = 2²⁵⁶: multiplying by it (Montgomery) enters Montgomery form.
const R2: [u32; 8] = [
    0xbe79_eea2,
    0x8324_4c95,
    0x49bd_6fa6,
    0x4699_799c,
    0x2b6b_ec59,
    0x2845_b239,
    0xf3d9_5620,
    0x66e1_2d94,
];

impl Scalar {
    /// Big-endian bytes; `None` unless the value is below n (canonical).
    pub fn from_be_bytes(bytes: &[u8; 32]) -> Option<Scalar> {
        let limbs = limbs_from_be_bytes(bytes);
        let (_, borrow) = sub_limbs(&limbs, &N);
        (borrow == 1).then_some(Scalar(limbs))
    }

    /// Any 256-bit big-endian value mod n. Since 2²⁵⁶ < 2n one subtraction suffices.
    pub fn reduce_be_bytes(bytes: &[u8; 32]) -> Scalar {
        let limbs = limbs_from_be_bytes(bytes);
        let (reduced, borrow) = sub_limbs(&limbs, &N);
        Scalar(if borrow == 1 { limbs } else { reduced })
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    /// Little-endian limbs, as the comb reads them.
    pub fn limbs(&self) -> [u32; 8] {
        self.0
    }

    /// self · other mod n.
    pub fn mul(&self, other: &Scalar) -> Scalar {
        // mont(a, b) = a·b/R, so mont(mont(a, R²), b) = a·b.
        Scalar(montgomery_mul(&montgomery_mul(&self.0, &R2), &other.0))
    }

    /// 1/self mod n by the binary extended Euclidean algorithm (Menezes et al.,
    /// Handbook of Applied Cryptography, 2.22 adapted to a prime modulus);
    /// `None` for zero, the only scalar without an inverse since n is prime.
    pub fn invert(&self) -> Option<Scalar> {
        if self.is_zero() {
            return None;
        }
        const ONE: [u32; 8] = [1, 0, 0, 0, 0, 0, 0, 0];
        // Invariants: u ≡ x1·a and v ≡ x2·a (mod n), gcd(u, v) = 1.
        let (mut u, mut v) = (self.0, N);
        let (mut x1, mut x2) = (ONE, [0u32; 8]);
        while u != ONE && v != ONE {
            while u[0] & 1 == 0 {
                u = shift_right(&u, 0);
                x1 = halve_mod_n(&x1);
            }
            while v[0] & 1 == 0 {
                v = shift_right(&v, 0);
                x2 = halve_mod_n(&x2);
            }
            let (difference, borrow) = sub_limbs(&u, &v);
            if borrow == 0 {
                u = difference;
                x1 = sub_mod_n(&x1, &x2);
            } else {
                v = sub_limbs(&v, &u).0;
                x2 = sub_mod_n(&x2, &x1);
            }
        }
        Some(Scalar(if u == ONE { x1 } else { x2 }))
    }
}

/// (top·2²⁵⁶ + a) / 2, for `top` 0 or 1.
fn shift_right(a: &[u32; 8], top: u32) -> [u32; 8] {
    let mut out = [0u32; 8];
    for i in 0..8 {
        let high = if i == 7 { top } else { a[i + 1] };
        out[i] = (a[i] >> 1) | (high << 31);
    }
    out
}

/// a/2 mod n for a < n: a is even, or a + n is (n is odd), and below 2n.
fn halve_mod_n(a: &[u32; 8]) -> [u32; 8] {
    if a[0] & 1 == 0 {
        shift_right(a, 0)
    } else {
        let (sum, carry) = add_limbs(a, &N);
        shift_right(&sum, carry)
    }
}

/// a − b mod n for a, b < n.
fn sub_mod_n(a: &[u32; 8], b: &[u32; 8]) -> [u32; 8] {
    let (difference, borrow) = sub_limbs(a, b);
    if borrow == 0 {
        difference
    } else {
        add_limbs(&difference, &N).0
    }
}

/// a·b/2²⁵⁶ mod n for a, b < n (coarsely integrated operand scanning). Each
/// step's sum fits a u64: (2³²−1)² + 2·(2³²−1) = 2⁶⁴ − 1.
fn montgomery_mul(a: &[u32; 8], b: &[u32; 8]) -> [u32; 8] {
    // t holds the running value, below 2n < 2²⁵⁷: eight limbs and a carry.
    let mut t = [0u32; 8];
    let mut t_high = 0u32;
    for &bi in b {
        let bi = u64::from(bi);
        let mut carry = 0u64;
        for j in 0..8 {
            let s = u64::from(t[j]) + u64::from(a[j]) * bi + carry;
            t[j] = s as u32;
            carry = s >> 32;
        }
        let s = u64::from(t_high) + carry;
        let (top, top_carry) = (s as u32, (s >> 32) as u32);
        // Add m·n with m chosen so the lowest limb becomes zero, then drop it.
        let m = u64::from(t[0].wrapping_mul(N_NEG_INV));
        let mut carry = (u64::from(t[0]) + m * u64::from(N[0])) >> 32;
        for j in 1..8 {
            let s = u64::from(t[j]) + m * u64::from(N[j]) + carry;
            t[j - 1] = s as u32;
            carry = s >> 32;
        }
        let s = u64::from(top) + carry;
        t[7] = s as u32;
        t_high = top_carry + (s >> 32) as u32;
    }
    let (reduced, borrow) = sub_limbs(&t, &N);
    if t_high != 0 || borrow == 0 {
        reduced
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::ff::PrimeField;
    use p256::elliptic_curve::ops::Reduce;
    use p256::FieldBytes;

    use super::super::field::tests::random_bytes;

    type Reference = p256::Scalar;

    fn ours(k: &Reference) -> Scalar {
        Scalar::from_be_bytes(&k.to_repr().into()).unwrap()
    }

    fn to_bytes(k: &Scalar) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, limb) in out.chunks_exact_mut(4).zip(k.0.iter().rev()) {
            chunk.copy_from_slice(&limb.to_be_bytes());
        }
        out
    }

    fn values() -> Vec<Reference> {
        let mut out = vec![
            Reference::ZERO,
            Reference::ONE,
            Reference::ONE.double(),
            -Reference::ONE,
            -Reference::ONE.double(),
        ];
        let mut seed = 5u64;
        while out.len() < 70 {
            if let Some(k) =
                Option::<Reference>::from(Reference::from_repr(random_bytes(&mut seed).into()))
            {
                out.push(k);
            }
        }
        out
    }

    #[test]
    fn constants_are_those_of_p256() {
        let n_minus_1 = -Reference::ONE;
        let mut n = ours(&n_minus_1).0;
        n[0] += 1;
        assert_eq!(n, N);
        assert_eq!(
            N[0].wrapping_mul(N_NEG_INV),
            u32::MAX,
            "n·(−n⁻¹) ≡ −1 mod 2³²"
        );
        // R² mod n: 2²⁵⁶ mod n squared, in the reference's arithmetic.
        let r = Reference::reduce(&FieldBytes::from([0xff; 32])) + Reference::ONE;
        assert_eq!(to_bytes(&Scalar(R2)), <[u8; 32]>::from((r * r).to_repr()));
    }

    #[test]
    fn parsing_accepts_exactly_the_canonical_scalars() {
        let n_bytes: [u8; 32] = {
            let mut n = [0u8; 32];
            for (chunk, limb) in n.chunks_exact_mut(4).zip(N.iter().rev()) {
                chunk.copy_from_slice(&limb.to_be_bytes());
            }
            n
        };
        assert!(Scalar::from_be_bytes(&n_bytes).is_none());
        assert!(Scalar::from_be_bytes(&[0xff; 32]).is_none());
        let mut seed = 3u64;
        for _ in 0..200 {
            let bytes = random_bytes(&mut seed);
            let reference = Option::<Reference>::from(Reference::from_repr(bytes.into()));
            assert_eq!(
                Scalar::from_be_bytes(&bytes).map(|k| to_bytes(&k)),
                reference.map(|k| <[u8; 32]>::from(k.to_repr()))
            );
        }
    }

    #[test]
    fn reduction_matches_the_reference() {
        let mut seed = 9u64;
        let mut inputs = vec![[0xff; 32], [0; 32]];
        inputs.extend((0..200).map(|_| random_bytes(&mut seed)));
        for bytes in inputs {
            let expected = Reference::reduce(&FieldBytes::from(bytes));
            assert_eq!(
                to_bytes(&Scalar::reduce_be_bytes(&bytes)),
                <[u8; 32]>::from(expected.to_repr())
            );
        }
    }

    #[test]
    fn products_and_inverses_match_the_reference() {
        let values = values();
        for a in &values {
            let expected = Option::<Reference>::from(a.invert_vartime());
            assert_eq!(ours(a).invert(), expected.as_ref().map(ours));
            for b in &values {
                assert_eq!(ours(a).mul(&ours(b)), ours(&(a * b)));
            }
        }
    }
}
