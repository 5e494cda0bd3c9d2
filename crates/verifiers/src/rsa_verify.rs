//! RS256 (RSASSA-PKCS1-v1_5 with SHA-256) verification tuned for Wasm.
//!
//! Wasm has a native 32×32→64 multiply but no 64×64→128 one: crates built on
//! `u64` digits with `u128` products (num-bigint-dig, which `rsa` uses) pay a
//! software multiply for every limb product. Here numbers are held in 28-bit
//! limbs, so a limb product fits in 56 bits and a whole column of products
//! adds up in a plain `u64` with no carry handling per product (see
//! [`LIMB_BITS`] for the bound). Montgomery multiplication is done column by
//! column (product scanning, with the reduction interleaved), squarings
//! compute each cross product once, and intermediate values stay below 2n so
//! that no conditional subtraction is needed until the end.
//!
//! Built with the `simd128` target feature, as the filter is (see
//! `.cargo/config.toml`), the column sums use Wasm SIMD (four 32×32→64
//! products per step); without it (native builds, and the host tests) they
//! are plain scalar loops. `make test` runs this crate's tests both ways.
//!
//! Variable-time, which is fine for public-key verification: nothing secret
//! is involved. Checked against jwt-simple's RS256 (the reference) in this
//! crate's tests and, for the modular exponentiation, against a plain
//! schoolbook implementation.
// Slices and indices below stay within `limbs` ≤ MAX_LIMBS and
// `modulus_bytes` ≤ MAX_MODULUS_BYTES, which `RsaKey::new` checks before
// anything else runs, or are loop counters over those lengths; the
// column loops are the RS256 hot path.
#![allow(clippy::indexing_slicing)]

use sha2::{Digest, Sha256};

/// Bits per limb.
///
/// Overflow bound for a column sum: limbs are < 2^28, so a product is
/// < 2^56. A column holds at most `MAX_LIMBS` = 147 products of a·b and as
/// many of m·n; the two kinds are summed in separate `u64` accumulators, each
/// ≤ 147·(2^28 − 1)² + carry-in < 2^63.2 + 2^37 < 2^64. The carry into the
/// next column is ≤ (both sums) / 2^28 + 2 < 294·2^28 + 2^9 + 2 < 2^37. (One
/// accumulator for both kinds would reach 294·2^56 > 2^64 at 4096 bits.)
/// The SIMD lanes each hold part of a column, so the same bound covers them.
const LIMB_BITS: u32 = 28;
const LIMB_MASK: u64 = (1 << LIMB_BITS) - 1;

const MIN_MODULUS_BYTES: usize = 256;
const MAX_MODULUS_BYTES: usize = 512;

/// Limbs for the largest modulus, with two bits to spare so that the
/// Montgomery radix R = 2^(28·limbs) exceeds 4n (see [`RsaKey::montgomery`]).
const MAX_LIMBS: usize = (8 * MAX_MODULUS_BYTES + 2).div_ceil(LIMB_BITS as usize);

/// A number in little-endian 28-bit limbs; only the first `RsaKey::limbs` are used.
type Limbs = [u32; MAX_LIMBS];

/// `DigestInfo` for SHA-256 (RFC 8017 §9.2, note 1): precedes the hash in the encoded message.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// A public key prepared once (per JWKS load): modulus limbs, −n⁻¹ mod 2²⁸, R² mod n.
#[derive(Clone)]
pub struct RsaKey {
    n: Box<Limbs>,
    r_squared: Box<Limbs>,
    n0_inv: u32,
    e: u32,
    limbs: usize,
    modulus_bytes: usize,
}

impl RsaKey {
    /// `n`, `e` big-endian bytes (as in a JWK). Odd modulus of 2048..=4096 bits, odd e in 3..2³².
    pub fn new(n_be: &[u8], e_be: &[u8]) -> Option<RsaKey> {
        let n_be = strip_leading_zeros(n_be);
        let e_be = strip_leading_zeros(e_be);
        let odd_modulus = n_be.last().is_some_and(|b| b & 1 == 1);
        if !(MIN_MODULUS_BYTES..=MAX_MODULUS_BYTES).contains(&n_be.len())
            || !odd_modulus
            || e_be.len() > 4
        {
            return None;
        }
        let e = e_be.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b));
        if e < 3 || e & 1 == 0 {
            return None;
        }
        let modulus_bytes = n_be.len();
        let limbs = (8 * modulus_bytes + 2).div_ceil(LIMB_BITS as usize);
        let mut n = Box::new([0u32; MAX_LIMBS]);
        from_be_bytes(n_be, &mut n[..limbs]);
        let n0_inv = neg_inverse_mod_limb(n[0]);
        let mut key = RsaKey {
            n,
            r_squared: Box::new([0; MAX_LIMBS]),
            n0_inv,
            e,
            limbs,
            modulus_bytes,
        };
        key.r_squared = Box::new(key.compute_r_squared());
        Some(key)
    }

    /// Whether `sig` is a valid RS256 signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let k = self.modulus_bytes;
        if sig.len() != k {
            return false;
        }
        let mut s = [0u32; MAX_LIMBS];
        from_be_bytes(sig, &mut s[..self.limbs]);
        if !less(&s[..self.limbs], &self.n[..self.limbs]) {
            return false;
        }
        let m = self.pow_e(&s);
        let mut em = [0u8; MAX_MODULUS_BYTES];
        to_be_bytes(&m[..self.limbs], &mut em[..k]);
        let mut expected = [0u8; MAX_MODULUS_BYTES];
        encode_sha256_pkcs1_v1_5(msg, &mut expected[..k]);
        em[..k] == expected[..k]
    }

    /// s^e mod n, fully reduced, for s < n.
    fn pow_e(&self, s: &Limbs) -> Limbs {
        let mut base = [0u32; MAX_LIMBS];
        self.mont_mul(s, &self.r_squared, &mut base);
        // Left-to-right square-and-multiply over e's bits below the top one.
        let mut x = base;
        let mut t = [0u32; MAX_LIMBS];
        let top = 31 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            self.mont_sqr(&x, &mut t);
            if (self.e >> bit) & 1 == 1 {
                self.mont_mul(&t, &base, &mut x);
            } else {
                x = t;
            }
        }
        let mut one = [0u32; MAX_LIMBS];
        one[0] = 1;
        let mut result = [0u32; MAX_LIMBS];
        // x·1·R⁻¹ ≤ n (for x < 2n): one subtraction at most.
        self.mont_mul(&x, &one, &mut result);
        let l = self.limbs;
        if !less(&result[..l], &self.n[..l]) {
            sub_in_place(&mut result[..l], &self.n[..l]);
        }
        result
    }

    /// a·b·R⁻¹ mod n, for a, b < 2n; the result is < 2n.
    fn mont_mul(&self, a: &Limbs, b: &Limbs, out: &mut Limbs) {
        let l = self.limbs;
        let (a, b) = (&a[..l], &b[..l]);
        self.montgomery(out, |range| {
            let (a, b) = (&a[range.clone()], &b[range]);
            dot_reversed(a, b)
        });
    }

    /// a²·R⁻¹ mod n, for a < 2n; the result is < 2n.
    fn mont_sqr(&self, a: &Limbs, out: &mut Limbs) {
        let a = &a[..self.limbs];
        self.montgomery(out, |range| square_column(&a[range]));
    }

    /// Product-scanning Montgomery multiplication: (x·y + m·n) / R where m is
    /// chosen limb by limb so that the low half vanishes. `column(j0..j1)`
    /// returns Σ x[j]·y[c − j] over j in j0..j1, for the column c = j0 + j1 − 1
    /// (the indices j and c − j both run over j0..j1).
    ///
    /// With x, y < 2n and R > 4n: (x·y + m·n) / R < (4n² + R·n) / R < 2n, so
    /// the result fits in the limbs and needs no subtraction.
    fn montgomery(&self, out: &mut Limbs, column: impl Fn(core::ops::Range<usize>) -> u64) {
        let l = self.limbs;
        let n = &self.n[..l];
        let mut m = [0u32; MAX_LIMBS];
        let mut carry: u64 = 0;
        // Low columns 0..l: each picks m[c] to clear the column's low 28 bits.
        for c in 0..l {
            let xy = carry + column(0..c + 1);
            let mn = dot_reversed(&m[..c], &n[1..c + 1]);
            let low = (xy & LIMB_MASK) + (mn & LIMB_MASK);
            let mc = (low as u32).wrapping_mul(self.n0_inv) & LIMB_MASK as u32;
            m[c] = mc;
            let low = low + u64::from(mc) * u64::from(n[0]);
            carry = (xy >> LIMB_BITS) + (mn >> LIMB_BITS) + (low >> LIMB_BITS);
        }
        // High columns l..2l−1 are the result's limbs; the last holds the final carry.
        let m = &m[..l];
        for c in l..2 * l - 1 {
            let j0 = c + 1 - l;
            let xy = carry + column(j0..l);
            let mn = dot_reversed(&m[j0..], &n[j0..]);
            let low = (xy & LIMB_MASK) + (mn & LIMB_MASK);
            out[c - l] = (low & LIMB_MASK) as u32;
            carry = (xy >> LIMB_BITS) + (mn >> LIMB_BITS) + (low >> LIMB_BITS);
        }
        // < 2^28 since the result is < 2n < R.
        out[l - 1] = carry as u32;
    }

    /// R² mod n, R = 2^(28·limbs): starting from 1, double and reduce 2·28·limbs times.
    fn compute_r_squared(&self) -> Limbs {
        let l = self.limbs;
        let n = &self.n[..l];
        let mut r = [0u32; MAX_LIMBS];
        r[0] = 1;
        // r < n < R/4, so 2r still fits in the limbs.
        for _ in 0..2 * LIMB_BITS as usize * l {
            shl1(&mut r[..l]);
            if !less(&r[..l], n) {
                sub_in_place(&mut r[..l], n);
            }
        }
        r
    }
}

/// Σ x[i]·y[len − 1 − i]: one column of a product, x ascending against y descending.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn dot_reversed(x: &[u32], y: &[u32]) -> u64 {
    x.iter()
        .zip(y.iter().rev())
        .fold(0u64, |sum, (&p, &q)| sum + u64::from(p) * u64::from(q))
}

/// Σ x[i]·y[len − 1 − i] with Wasm SIMD: four products per step, two 64-bit lanes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn dot_reversed(x: &[u32], y: &[u32]) -> u64 {
    use core::arch::wasm32::*;
    let len = x.len().min(y.len());
    let (x, y) = (&x[..len], &y[y.len() - len..]);
    let xs = x.chunks_exact(4);
    let ys = y.rchunks_exact(4);
    let tail = xs
        .remainder()
        .iter()
        .zip(ys.remainder().iter().rev())
        .fold(0u64, |s, (&p, &q)| s + u64::from(p) * u64::from(q));
    let mut acc = u64x2_splat(0);
    for (p, q) in xs.zip(ys) {
        // SAFETY: each chunk is exactly four u32 (16 bytes); v128 loads need no alignment.
        let (p, q) = unsafe { (v128_load(p.as_ptr().cast()), v128_load(q.as_ptr().cast())) };
        let q = i32x4_shuffle::<3, 2, 1, 0>(q, q);
        acc = u64x2_add(acc, u64x2_extmul_low_u32x4(p, q));
        acc = u64x2_add(acc, u64x2_extmul_high_u32x4(p, q));
    }
    tail + u64x2_extract_lane::<0>(acc) + u64x2_extract_lane::<1>(acc)
}

/// Σ a[i]·a[len − 1 − i]: one column of a square, each cross product computed once and doubled.
#[inline(always)]
fn square_column(a: &[u32]) -> u64 {
    let half = a.len() / 2;
    let (low, high) = a.split_at(half);
    let (middle, high) = high.split_at(high.len() - half);
    let diagonal = middle.first().map_or(0, |&d| u64::from(d) * u64::from(d));
    2 * dot_reversed(low, high) + diagonal
}

/// −n0⁻¹ mod 2²⁸ for odd n0, by Newton iteration (each step doubles the correct low bits).
fn neg_inverse_mod_limb(n0: u32) -> u32 {
    let mut inv: u32 = 1;
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
    }
    inv.wrapping_neg() & LIMB_MASK as u32
}

/// EM = 00 01 FF..FF 00 ‖ DigestInfo(SHA-256) ‖ SHA-256(msg), filling `em` (RFC 8017 §9.2).
fn encode_sha256_pkcs1_v1_5(msg: &[u8], em: &mut [u8]) {
    let hash = Sha256::digest(msg);
    let (head, tail) = em.split_at_mut(em.len() - SHA256_DIGEST_INFO.len() - hash.len());
    let (info, digest) = tail.split_at_mut(SHA256_DIGEST_INFO.len());
    info.copy_from_slice(&SHA256_DIGEST_INFO);
    digest.copy_from_slice(&hash);
    head.fill(0xff);
    head[0] = 0x00;
    head[1] = 0x01;
    if let Some(separator) = head.last_mut() {
        *separator = 0x00;
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

/// Big-endian bytes → 28-bit little-endian limbs; bits beyond `out` are dropped (callers size it).
fn from_be_bytes(be: &[u8], out: &mut [u32]) {
    let mut bytes = be.iter().rev();
    let (mut acc, mut acc_bits) = (0u64, 0u32);
    for limb in out.iter_mut() {
        while acc_bits < LIMB_BITS {
            match bytes.next() {
                Some(&b) => acc |= u64::from(b) << acc_bits,
                None => break,
            }
            acc_bits += 8;
        }
        *limb = (acc & LIMB_MASK) as u32;
        acc >>= LIMB_BITS;
        acc_bits = acc_bits.saturating_sub(LIMB_BITS);
    }
}

/// 28-bit little-endian limbs → big-endian bytes filling `out` (higher bits dropped).
fn to_be_bytes(limbs: &[u32], out: &mut [u8]) {
    let mut limbs = limbs.iter();
    let (mut acc, mut acc_bits) = (0u64, 0u32);
    for byte in out.iter_mut().rev() {
        if acc_bits < 8 {
            if let Some(&limb) = limbs.next() {
                acc |= u64::from(limb) << acc_bits;
            }
            acc_bits += LIMB_BITS;
        }
        *byte = acc as u8;
        acc >>= 8;
        acc_bits -= 8;
    }
}

/// a < b, for normalized limbs of equal length.
fn less(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a −= b, for normalized limbs with a ≥ b.
fn sub_in_place(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u32;
    for (x, y) in a.iter_mut().zip(b) {
        let d = x.wrapping_sub(*y).wrapping_sub(borrow);
        borrow = d >> 31;
        *x = d & LIMB_MASK as u32;
    }
}

/// a *= 2, for normalized limbs with room for the top bit.
fn shl1(a: &mut [u32]) {
    let mut carry = 0u32;
    for x in a.iter_mut() {
        let d = (*x << 1) | carry;
        carry = d >> LIMB_BITS;
        *x = d & LIMB_MASK as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jwt_simple::prelude::*;
    use num_bigint_dig::{BigUint, ModInverse};

    /// A small deterministic generator (xorshift64*), enough for test inputs.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }

        /// An odd number of exactly `len` bytes (not necessarily an RSA modulus).
        fn odd_modulus(&mut self, len: usize) -> Vec<u8> {
            let mut n = self.bytes(len);
            n[0] |= 0x80 >> (self.next() % 8);
            n[len - 1] |= 1;
            n
        }
    }

    fn be_padded(x: &BigUint, len: usize) -> Vec<u8> {
        let b = x.to_bytes_be();
        let mut out = vec![0u8; len - b.len()];
        out.extend_from_slice(&b);
        out
    }

    /// s^e mod n through the key's own exponentiation, as big-endian bytes.
    fn pow_e(key: &RsaKey, s: &[u8]) -> Vec<u8> {
        let mut limbs = [0u32; MAX_LIMBS];
        from_be_bytes(s, &mut limbs[..key.limbs]);
        let m = key.pow_e(&limbs);
        let mut out = vec![0u8; key.modulus_bytes];
        to_be_bytes(&m[..key.limbs], &mut out);
        out
    }

    #[test]
    fn limb_conversion_round_trips() {
        let mut rng = Rng(7);
        for len in [256, 257, 300, 511, 512] {
            let bytes = rng.bytes(len);
            let mut limbs = [0u32; MAX_LIMBS];
            let l = (8 * len + 2).div_ceil(LIMB_BITS as usize);
            from_be_bytes(&bytes, &mut limbs[..l]);
            assert!(limbs[..l].iter().all(|x| u64::from(*x) <= LIMB_MASK));
            let mut back = vec![0u8; len];
            to_be_bytes(&limbs[..l], &mut back);
            assert_eq!(back, bytes);
        }
    }

    #[test]
    fn modular_exponentiation_matches_bigint() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for len in [256, 257, 300, 384, 385, 447, 511, 512] {
            let n_be = rng.odd_modulus(len);
            let n = BigUint::from_bytes_be(&n_be);
            let random_e = (rng.next() as u32) | 0x8000_0001;
            for e in [3u32, 65537, random_e] {
                let key = RsaKey::new(&n_be, &e.to_be_bytes()).unwrap();
                let one = BigUint::from(1u32);
                let mut bases = vec![
                    BigUint::from(0u32),
                    one.clone(),
                    BigUint::from(2u32),
                    &n - &one,
                    &n - BigUint::from(2u32),
                ];
                bases.extend((0..4).map(|_| BigUint::from_bytes_be(&rng.bytes(len)) % &n));
                for base in bases {
                    let expected = be_padded(&base.modpow(&BigUint::from(e), &n), len);
                    assert_eq!(
                        pow_e(&key, &be_padded(&base, len)),
                        expected,
                        "{len} bytes, e = {e}, base {base}"
                    );
                }
            }
        }
    }

    /// The overflow bound of `LIMB_BITS` holds even for limbs all at their
    /// maximum with the largest modulus (overflow panics in test builds).
    #[test]
    fn column_sums_do_not_overflow_for_maximal_limbs() {
        let key = RsaKey::new(&[0xff; MAX_MODULUS_BYTES], &[1, 0, 1]).unwrap();
        assert_eq!(key.limbs, MAX_LIMBS);
        let max = [LIMB_MASK as u32; MAX_LIMBS];
        let mut out = [0u32; MAX_LIMBS];
        key.mont_mul(&max, &max, &mut out);
        key.mont_sqr(&max, &mut out);
    }

    /// Signing input and raw signature of a fresh RS256 token.
    fn signed(kp: &RS256KeyPair, i: u64) -> (Vec<u8>, Vec<u8>) {
        let claims = Claims::create(Duration::from_mins(5)).with_subject(format!("user-{i}"));
        let token = kp.sign(claims).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        (
            input.as_bytes().to_vec(),
            URL_SAFE_NO_PAD.decode(sig).unwrap(),
        )
    }

    /// Valid signatures verify; flipped bits, other representatives of the
    /// signature's residue, values ≥ n and wrong lengths are refused.
    fn check_signature(key: &RsaKey, n: &BigUint, msg: &[u8], sig: &[u8], rng: &mut Rng) {
        assert!(key.verify(msg, sig), "{}-byte signature refused", sig.len());
        for _ in 0..8 {
            let mut bad = sig.to_vec();
            bad[rng.next() as usize % sig.len()] ^= 1 << (rng.next() % 8);
            assert!(!key.verify(msg, &bad));
            let mut bad = msg.to_vec();
            bad[rng.next() as usize % msg.len()] ^= 1 << (rng.next() % 8);
            assert!(!key.verify(&bad, sig));
        }
        let plus_n = BigUint::from_bytes_be(sig) + n;
        if plus_n.bits() <= 8 * sig.len() {
            assert!(!key.verify(msg, &be_padded(&plus_n, sig.len())));
        }
        assert!(!key.verify(msg, &be_padded(n, sig.len())));
        assert!(!key.verify(msg, &vec![0xff; sig.len()]));
        let mut longer = vec![0u8];
        longer.extend_from_slice(sig);
        assert!(!key.verify(msg, &longer));
        assert!(!key.verify(msg, &sig[1..]));
        assert!(!key.verify(msg, &[]));
    }

    #[test]
    fn jwt_simple_rs256_signatures_verify() {
        let mut rng = Rng(42);
        let kp = RS256KeyPair::generate(2048).unwrap();
        let c = kp.public_key().to_components();
        let key = RsaKey::new(&c.n, &c.e).unwrap();
        for i in 0..4 {
            let (msg, sig) = signed(&kp, i);
            check_signature(&key, &BigUint::from_bytes_be(&c.n), &msg, &sig, &mut rng);
        }
    }

    const SMALL_PRIMES: [u32; 10] = [3, 5, 7, 11, 13, 17, 19, 23, 29, 31];

    /// A modulus of `bits` to `bits + 4` bits with a known factorization (powers of
    /// small primes), so that signing is cheap: RSA key generation is far too
    /// slow for unoptimized test builds at 4096 bits. Verification does not
    /// depend on how n factors; signing works for messages coprime to n.
    fn synthetic_key(rng: &mut Rng, bits: usize) -> (BigUint, BigUint) {
        let e = BigUint::from(65537u32);
        let (mut n, mut phi) = (BigUint::from(1u32), BigUint::from(1u32));
        while n.bits() < bits {
            let p = SMALL_PRIMES[rng.next() as usize % SMALL_PRIMES.len()];
            phi *= if (&n % p) == BigUint::from(0u32) {
                BigUint::from(p)
            } else {
                BigUint::from(p - 1)
            };
            n *= p;
        }
        let d = (&e).mod_inverse(&phi).and_then(|d| d.to_biguint()).unwrap();
        (n, d)
    }

    /// EM for RS256 written out independently of the code under test (RFC 8017 §9.2).
    fn encoded_message(msg: &[u8], len: usize) -> BigUint {
        let mut em = vec![0x00, 0x01];
        em.resize(len - 19 - 32 - 1, 0xff);
        em.push(0x00);
        em.extend_from_slice(&[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ]);
        em.extend_from_slice(&Sha256::digest(msg));
        BigUint::from_bytes_be(&em)
    }

    #[test]
    fn signatures_of_every_size_verify() {
        let mut rng = Rng(5);
        for bits in [2048, 2048, 2100, 3072, 3072, 3500, 4088, 4091] {
            let (n, d) = synthetic_key(&mut rng, bits);
            let len = n.bits().div_ceil(8);
            let key = RsaKey::new(&n.to_bytes_be(), &[1, 0, 1]).unwrap();
            let (msg, em) = loop {
                let msg = rng.bytes(40);
                let em = encoded_message(&msg, len);
                if SMALL_PRIMES.iter().all(|p| &em % *p != BigUint::from(0u32)) {
                    break (msg, em);
                }
            };
            let sig = be_padded(&em.modpow(&d, &n), len);
            check_signature(&key, &n, &msg, &sig, &mut rng);
        }
    }

    #[test]
    fn unusable_keys_are_refused() {
        let mut rng = Rng(3);
        let n = rng.odd_modulus(256);
        let e = [1, 0, 1];
        assert!(RsaKey::new(&n, &e).is_some());
        let mut with_zeros = vec![0, 0];
        with_zeros.extend_from_slice(&n);
        assert!(RsaKey::new(&with_zeros, &[0, 0, 1, 0, 1]).is_some());
        let mut even = n.clone();
        even[255] &= 0xfe;
        assert!(RsaKey::new(&even, &e).is_none());
        assert!(RsaKey::new(&n[1..], &e).is_none(), "2040 bits is too small");
        assert!(
            RsaKey::new(&rng.odd_modulus(513), &e).is_none(),
            "4104 bits is too large"
        );
        assert!(RsaKey::new(&[], &e).is_none());
        for bad_e in [&[][..], &[1], &[0, 0, 0, 1], &[1, 0, 0], &[1, 0, 0, 0, 1]] {
            assert!(RsaKey::new(&n, bad_e).is_none(), "e = {bad_e:?}");
        }
    }

    #[test]
    fn malformed_signatures_do_not_panic() {
        let mut rng = Rng(11);
        let key = RsaKey::new(&rng.odd_modulus(300), &[1, 0, 1]).unwrap();
        for len in [0, 1, 255, 299, 300, 301, 600] {
            assert!(!key.verify(b"x", &rng.bytes(len)));
        }
    }
}
