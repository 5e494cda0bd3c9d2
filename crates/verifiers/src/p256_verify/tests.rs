//! Every decision is compared with `p256::ecdsa::VerifyingKey::verify`, the reference.

use super::*;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
// The reference's scalars (these names shadow the module's own).
use p256::elliptic_curve::ff::PrimeField;
use p256::elliptic_curve::ops::Reduce;
use p256::{FieldBytes, Scalar};

/// Deterministic test randomness (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.next() as u8)
    }

    fn signing_key(&mut self) -> SigningKey {
        loop {
            if let Ok(k) = SigningKey::from_slice(&self.bytes::<32>()) {
                return k;
            }
        }
    }

    fn message(&mut self) -> Vec<u8> {
        let len = (self.next() % 200) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn prepared(key: &VerifyingKey) -> P256Key {
    P256Key::from_sec1_uncompressed(key.to_sec1_point(false).as_bytes()).unwrap()
}

fn reference(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    Signature::from_slice(signature).is_ok_and(|s| key.verify(message, &s).is_ok())
}

/// Both verifiers decide the same; returns that decision.
fn agree(ours: &P256Key, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    let expected = reference(key, message, signature);
    assert_eq!(
        ours.verify(message, signature),
        expected,
        "message {message:02x?}, signature {signature:02x?}"
    );
    let point = key.to_sec1_point(false);
    let (x, y) = point.as_bytes()[1..].split_at(32);
    assert_eq!(
        verify_once(
            x.try_into().unwrap(),
            y.try_into().unwrap(),
            message,
            signature
        ),
        expected,
        "verify_once: message {message:02x?}, signature {signature:02x?}"
    );
    expected
}

fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    let s: Signature = key.sign(message);
    s.to_bytes().into()
}

fn be(k: &Scalar) -> [u8; 32] {
    k.to_repr().into()
}

fn with_r_s(r: &[u8; 32], s: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(r);
    out[32..].copy_from_slice(s);
    out
}

#[test]
fn valid_signatures_and_bit_flips() {
    let mut rng = Rng(1);
    for key_index in 0..3 {
        let sk = rng.signing_key();
        let vk = *sk.verifying_key();
        let ours = prepared(&vk);
        for message_index in 0..3 {
            let message = rng.message();
            let signature = sign(&sk, &message);
            assert!(agree(&ours, &vk, &message, &signature));
            // Every bit of r and s once, a sample of them otherwise (debug builds are slow).
            let step = if key_index == 0 && message_index == 0 {
                1
            } else {
                29
            };
            for bit in (0..512).step_by(step) {
                let mut bad = signature;
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(!agree(&ours, &vk, &message, &bad));
            }
            for bit in (0..message.len() * 8).step_by(message.len().max(1)) {
                let mut bad = message.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(!agree(&ours, &vk, &bad, &signature));
            }
            let mut longer = message.clone();
            longer.push(0);
            assert!(!agree(&ours, &vk, &longer, &signature));
        }
    }
}

#[test]
fn high_s_is_accepted_like_the_reference() {
    let mut rng = Rng(2);
    for _ in 0..8 {
        let sk = rng.signing_key();
        let vk = *sk.verifying_key();
        let ours = prepared(&vk);
        let message = rng.message();
        let signature = sign(&sk, &message);
        let (r, s) = signature.split_at(32);
        let s = Scalar::from_repr(FieldBytes::from(<[u8; 32]>::try_from(s).unwrap())).unwrap();
        let flipped = with_r_s(r.try_into().unwrap(), &be(&-s));
        assert!(
            agree(&ours, &vk, &message, &flipped),
            "s → n − s is still valid"
        );
    }
}

#[test]
fn out_of_range_and_malformed_signatures() {
    let mut rng = Rng(3);
    let sk = rng.signing_key();
    let vk = *sk.verifying_key();
    let ours = prepared(&vk);
    let message = b"header.payload";
    let signature = sign(&sk, message);
    let (r, s): ([u8; 32], [u8; 32]) = (
        signature[..32].try_into().unwrap(),
        signature[32..].try_into().unwrap(),
    );
    let n_minus_1 = be(&-Scalar::ONE);
    let mut n_plus_1 = ORDER;
    n_plus_1[31] += 1;
    let specials = [
        [0u8; 32],
        ORDER,
        n_minus_1,
        n_plus_1,
        [0xff; 32],
        P_MINUS_ORDER,
        be(&Scalar::ONE),
    ];
    for special in specials {
        assert!(!agree(&ours, &vk, message, &with_r_s(&special, &s)));
        assert!(!agree(&ours, &vk, message, &with_r_s(&r, &special)));
        assert!(!agree(&ours, &vk, message, &with_r_s(&special, &special)));
    }
    // r + n and s + n: the same residues, but not canonical encodings.
    for (value, use_as_r) in [(r, true), (s, false)] {
        let Some(plus_n) = add_be(&value, &ORDER) else {
            continue;
        };
        let bad = if use_as_r {
            with_r_s(&plus_n, &s)
        } else {
            with_r_s(&r, &plus_n)
        };
        assert!(!agree(&ours, &vk, message, &bad));
    }
    for len in [0, 1, 32, 63, 65, 128] {
        let mut bytes = signature.to_vec();
        bytes.resize(len, 0);
        assert!(!agree(&ours, &vk, message, &bytes), "{len}-byte signature");
    }
}

/// a + b if it fits in 256 bits.
fn add_be(a: &[u8; 32], b: &[u8; 32]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in (0..32).rev() {
        let t = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = t as u8;
        carry = t >> 8;
    }
    (carry == 0).then_some(out)
}

#[test]
fn signatures_from_another_key_are_refused() {
    let mut rng = Rng(4);
    for _ in 0..8 {
        let (signer, other) = (rng.signing_key(), rng.signing_key());
        let vk = *other.verifying_key();
        let message = rng.message();
        assert!(!agree(
            &prepared(&vk),
            &vk,
            &message,
            &sign(&signer, &message)
        ));
    }
}

/// With the private key d known, r = −e/d makes u₁·G + u₂·Q = w·(e + r·d)·G
/// the identity, whatever s is: both verifiers must refuse.
#[test]
fn signatures_summing_to_the_identity_are_refused() {
    let mut rng = Rng(5);
    for _ in 0..4 {
        let d_bytes = rng.bytes::<32>();
        let Ok(sk) = SigningKey::from_slice(&d_bytes) else {
            continue;
        };
        let d = Scalar::from_repr(FieldBytes::from(d_bytes)).unwrap();
        let vk = *sk.verifying_key();
        let message = rng.message();
        let digest: [u8; 32] = Sha256::digest(&message).into();
        let e = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(digest));
        let r = -(e * d.invert_vartime().unwrap());
        let s = Scalar::from_repr(FieldBytes::from(rng.bytes::<32>())).unwrap_or(Scalar::ONE);
        assert!(!agree(
            &prepared(&vk),
            &vk,
            &message,
            &with_r_s(&be(&r), &be(&s))
        ));
    }
}

#[test]
fn many_random_keys_and_messages() {
    let mut rng = Rng(6);
    for _ in 0..40 {
        let sk = rng.signing_key();
        let vk = *sk.verifying_key();
        let ours = prepared(&vk);
        let message = rng.message();
        let signature = sign(&sk, &message);
        assert!(agree(&ours, &vk, &message, &signature));
        assert!(!agree(&ours, &vk, &message, &rng.bytes::<64>()));
    }
}

#[test]
fn x_comparison_covers_r_plus_n() {
    // Synthetic Jacobian points (the check does not need them on the curve):
    // x = r + n must match r when r + n < p, and x = r + n − p must not.
    let z = Fe::from_be_bytes(&[0x35; 32]).unwrap();
    let zz = z.square();
    let n = Fe::from_be_bytes(&ORDER).unwrap();
    let at = |x: Fe| Jacobian {
        x: x.mul(&zz),
        y: Fe::ONE,
        z,
    };
    let mut small = [0u8; 32];
    small[31] = 5;
    let r = Fe::from_be_bytes(&small).unwrap();
    assert!(x_reduces_to(&at(r), &small));
    assert!(x_reduces_to(&at(r.add(&n)), &small));
    assert!(!x_reduces_to(&at(r.add(&Fe::ONE)), &small));
    let large = be(&-Scalar::ONE);
    let r = Fe::from_be_bytes(&large).unwrap();
    assert!(x_reduces_to(&at(r), &large));
    assert!(
        !x_reduces_to(&at(r.add(&n)), &large),
        "r + n ≥ p: x would be r + n − p"
    );
    let limit = P_MINUS_ORDER;
    let r = Fe::from_be_bytes(&limit).unwrap();
    assert!(!x_reduces_to(&at(r.add(&n)), &limit), "r + n = p ≡ 0");
    assert!(!x_reduces_to(&Jacobian::IDENTITY, &small));
}

#[test]
fn key_preparation_validates_the_point() {
    let mut rng = Rng(7);
    let vk = *rng.signing_key().verifying_key();
    let sec1 = vk.to_sec1_point(false);
    let bytes = sec1.as_bytes();
    assert!(P256Key::from_sec1_uncompressed(bytes).is_some());
    let mut off_curve = bytes.to_vec();
    off_curve[64] ^= 1;
    assert!(P256Key::from_sec1_uncompressed(&off_curve).is_none());
    let mut wrong_tag = bytes.to_vec();
    wrong_tag[0] = 0x02;
    assert!(P256Key::from_sec1_uncompressed(&wrong_tag).is_none());
    assert!(
        P256Key::from_sec1_uncompressed(vk.to_sec1_point(true).as_bytes()).is_none(),
        "compressed"
    );
    assert!(P256Key::from_sec1_uncompressed(&[0]).is_none(), "identity");
    assert!(P256Key::from_sec1_uncompressed(&[]).is_none());
    assert!(P256Key::from_sec1_uncompressed(&[0x04; 65]).is_none());
    let mut non_canonical = bytes.to_vec();
    non_canonical[1..33].fill(0xff);
    assert!(P256Key::from_sec1_uncompressed(&non_canonical).is_none());
}
