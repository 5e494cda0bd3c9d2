// Tests may unwrap: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// Deterministic test bytes: SHA-512 of a label and a counter.
fn bytes32(label: &str, i: u64) -> [u8; 32] {
    let d = Sha512::new()
        .chain_update(label)
        .chain_update(i.to_le_bytes())
        .finalize();
    d[..32].try_into().unwrap()
}

/// The reference: ed25519-dalek's `verify_strict`.
fn reference(key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    ed25519_dalek::Signature::from_slice(signature)
        .is_ok_and(|s| key.verify_strict(message, &s).is_ok())
}

/// Genuine signatures verify; a flipped bit anywhere in the signature, and in
/// the message, is refused — each exactly as `verify_strict` decides, with
/// the key's table and without it (`verify_once`).
#[test]
fn agrees_with_verify_strict_on_genuine_and_tampered_signatures() {
    for i in 0..12 {
        let signer = SigningKey::from_bytes(&bytes32("key", i));
        let public = signer.verifying_key().to_bytes();
        let key = Ed25519Key::new(&public).expect("a point");
        for len in [0usize, 1, 31, 64, 200] {
            let message: Vec<u8> = (0..len)
                .map(|b| (b as u8).wrapping_mul(31).wrapping_add(i as u8))
                .collect();
            let signature = signer.sign(&message).to_bytes();
            assert!(
                key.verify(&message, &signature),
                "key {i}, message of {len} bytes"
            );
            assert!(verify_once(&public, &message, &signature));
            assert!(reference(&public, &message, &signature));
            for bit in (0..512).step_by(13) {
                let mut bad = signature;
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    key.verify(&message, &bad),
                    reference(&public, &message, &bad),
                    "key {i}, bit {bit}"
                );
                assert!(!verify_once(&public, &message, &bad), "key {i}, bit {bit}");
                assert!(!key.verify(&message, &bad), "key {i}, bit {bit}");
            }
            if !message.is_empty() {
                let mut other = message.clone();
                other[0] ^= 1;
                assert!(!key.verify(&other, &signature));
            }
        }
    }
}

/// A signature under one key does not verify under another.
#[test]
fn another_keys_signature_is_refused() {
    let a = SigningKey::from_bytes(&bytes32("a", 0));
    let b = Ed25519Key::new(
        &SigningKey::from_bytes(&bytes32("b", 0))
            .verifying_key()
            .to_bytes(),
    )
    .unwrap();
    assert!(!b.verify(b"hello", &a.sign(b"hello").to_bytes()));
}

/// `s` must be below the group order ℓ: `s + ℓ` (the same point, a second
/// valid-looking signature) is refused, as RFC 8032 §5.1.7 and `verify_strict` do.
#[test]
fn non_canonical_s_is_refused() {
    const ELL: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let signer = SigningKey::from_bytes(&bytes32("s", 1));
    let public = signer.verifying_key().to_bytes();
    let key = Ed25519Key::new(&public).unwrap();
    let mut signature = signer.sign(b"message").to_bytes();
    let mut carry = 0u16;
    for (byte, add) in signature[32..].iter_mut().zip(ELL) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "s + ℓ fits in 32 bytes");
    assert!(!key.verify(b"message", &signature));
    assert!(!verify_once(&public, b"message", &signature));
    assert!(!reference(&public, b"message", &signature));
}

/// A small-order key would accept forged signatures: it is kept (it is a
/// point) but verifies nothing. `R` of small order is refused too.
#[test]
fn small_order_keys_and_small_order_r_are_refused() {
    // The canonical encodings of the eight points of order 1, 2, 4 and 8.
    let small_order = small_order_encodings();
    assert_eq!(small_order.len(), 8);
    for encoded in &small_order {
        let key = Ed25519Key::new(encoded).expect("a point");
        // With a small-order key and R = the identity, s = 0 satisfies [s]B = R + [k]A
        // for every k that is a multiple of the key's order: a forgery `verify` would
        // accept without the check.
        let mut forged = [0u8; 64];
        forged[0] = 1; // R = identity (y = 1)
        for message in [&b""[..], b"a", b"forged"] {
            assert!(!key.verify(message, &forged));
            assert!(!verify_once(encoded, message, &forged));
            assert!(!reference(encoded, message, &forged));
        }
    }
    let signer = SigningKey::from_bytes(&bytes32("r", 2));
    let key = Ed25519Key::new(&signer.verifying_key().to_bytes()).unwrap();
    for r in &small_order {
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(r);
        assert!(!key.verify(b"m", &signature));
    }
}

/// The eight small-order points (curve25519-dalek's `EIGHT_TORSION`), canonically encoded.
fn small_order_encodings() -> Vec<[u8; 32]> {
    curve25519_dalek::constants::EIGHT_TORSION
        .iter()
        .map(|p| p.compress().to_bytes())
        .collect()
}

/// Bytes that are not a point are refused when the key is prepared, exactly
/// where ed25519-dalek refuses them.
#[test]
fn key_encodings_are_judged_as_ed25519_dalek_does() {
    let mut points = 0;
    for i in 0..64 {
        let b = bytes32("encoding", i);
        assert_eq!(
            Ed25519Key::new(&b).is_some(),
            VerifyingKey::from_bytes(&b).is_ok(),
            "{b:?}"
        );
        assert_eq!(is_point(&b), VerifyingKey::from_bytes(&b).is_ok(), "{b:?}");
        points += usize::from(Ed25519Key::new(&b).is_some());
    }
    assert!(
        points > 0 && points < 64,
        "both outcomes seen ({points} points)"
    );
}

/// Truncated, empty and overlong signatures are refused.
#[test]
fn signatures_of_the_wrong_length_are_refused() {
    let signer = SigningKey::from_bytes(&bytes32("len", 3));
    let key = Ed25519Key::new(&signer.verifying_key().to_bytes()).unwrap();
    let signature = signer.sign(b"m").to_bytes();
    assert!(key.verify(b"m", &signature));
    assert!(!key.verify(b"m", &signature[..63]));
    assert!(!key.verify(b"m", &[]));
    let mut long = signature.to_vec();
    long.push(0);
    assert!(!key.verify(b"m", &long));
}

/// A lazy key (a DPoP proof's) checks without a table until it has been used
/// `TABLE_AFTER_CHECKS` times, then builds it; its decisions never change.
#[test]
fn a_lazy_key_gets_its_table_once_used_often_and_decides_the_same() {
    let signer = SigningKey::from_bytes(&bytes32("lazy", 4));
    let public = signer.verifying_key().to_bytes();
    let lazy = Ed25519Key::lazy(&public).unwrap();
    assert!(
        Ed25519Key::new(&public).unwrap().has_table(),
        "a JWKS key has its table at once"
    );
    let good = signer.sign(b"proof").to_bytes();
    let mut bad = good;
    bad[40] ^= 2;
    for i in 1..=TABLE_AFTER_CHECKS + 3 {
        assert_eq!(lazy.has_table(), i > TABLE_AFTER_CHECKS, "before check {i}");
        // Refused signatures count as uses too: the cost was paid either way.
        let (signature, valid) = if i % 2 == 0 {
            (&good, true)
        } else {
            (&bad, false)
        };
        assert_eq!(lazy.verify(b"proof", signature), valid, "check {i}");
    }
    assert!(lazy.has_table());
    // A small-order key never builds one.
    let weak = Ed25519Key::lazy(&small_order_encodings()[1]).unwrap();
    for _ in 0..TABLE_AFTER_CHECKS + 1 {
        assert!(!weak.verify(b"proof", &good));
    }
    assert!(!weak.has_table());
}
