//! The DER forms a host crypto library takes: a public key as
//! SubjectPublicKeyInfo (RFC 5280 §4.1.2.7; RFC 3279 RSA, RFC 5480 EC,
//! RFC 8410 Ed25519) and an ECDSA signature as `SEQUENCE { r, s }`
//! (RFC 3279 §2.2.3), where JWS carries the raw `r ‖ s` (RFC 7518 §3.4).

use crate::jwk::{PublicKey, RSA_EXPONENT};

/// rsaEncryption (1.2.840.113549.1.1.1) with its NULL parameters.
const RSA_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// id-ecPublicKey (1.2.840.10045.2.1) on prime256v1 (1.2.840.10045.3.1.7).
const P256_ALGORITHM: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];
/// id-Ed25519 (1.3.101.112), no parameters.
const ED25519_ALGORITHM: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;

/// The key's SubjectPublicKeyInfo.
pub fn subject_public_key_info(key: &PublicKey) -> Vec<u8> {
    let (algorithm, key_bits) = match key {
        PublicKey::EdDSA(x) => (ED25519_ALGORITHM, x.to_vec()),
        PublicKey::ES256 { x, y } => (P256_ALGORITHM, PublicKey::sec1_uncompressed(x, y).to_vec()),
        PublicKey::RS256 { n } => {
            let mut integers = integer(n);
            integers.extend(integer(&RSA_EXPONENT));
            (RSA_ALGORITHM, tlv(SEQUENCE, &integers))
        }
    };
    // A BIT STRING of whole bytes: a zero "unused bits" count first.
    let mut bits = vec![0u8];
    bits.extend(key_bits);
    let mut body = algorithm.to_vec();
    body.extend(tlv(BIT_STRING, &bits));
    tlv(SEQUENCE, &body)
}

/// JWS `r ‖ s` (32 bytes each) as DER; `None` for any other length.
pub fn ecdsa_p256_signature(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let (r, s) = raw.split_at(32);
    let mut body = integer(r);
    body.extend(integer(s));
    Some(tlv(SEQUENCE, &body))
}

/// An unsigned big-endian number as a DER INTEGER: minimal, positive.
fn integer(be: &[u8]) -> Vec<u8> {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    let digits = be.get(start..).unwrap_or_default();
    let mut body = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|top| top & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(digits);
    tlv(INTEGER, &body)
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(tag);
    let len = body.len();
    // Lengths here stay far below 64 KiB (an RSA-4096 key is 550 bytes).
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::*;

    #[test]
    fn key_infos_match_the_reference_encoder() {
        let ed = Ed25519KeyPair::generate().public_key();
        assert_eq!(
            subject_public_key_info(&PublicKey::EdDSA(ed.to_bytes().try_into().unwrap())),
            ed.to_der()
        );
        for _ in 0..8 {
            let es = ES256KeyPair::generate().public_key();
            let point = es.public_key().to_bytes_uncompressed();
            let key = PublicKey::ES256 {
                x: point[1..33].try_into().unwrap(),
                y: point[33..].try_into().unwrap(),
            };
            assert_eq!(subject_public_key_info(&key), es.to_der().unwrap());
        }
        // The encoding needs a modulus of the size, not a key: none is generated
        // (a 4096-bit key takes seconds, and tens of them in the wasm32 run).
        for bits in [2048, 3072, 4096] {
            let mut n = vec![0xc5u8; bits / 8];
            n[bits / 8 - 1] |= 1;
            let rs = RS256PublicKey::from_components(&n, &[1, 0, 1]).unwrap();
            let key = PublicKey::RS256 {
                n: rs.to_components().n,
            };
            assert_eq!(
                subject_public_key_info(&key),
                rs.to_der().unwrap(),
                "{bits} bits"
            );
        }
    }

    #[test]
    fn ecdsa_signatures_are_minimal_positive_integers() {
        let mut raw = [0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s with the top bit set: a zero byte in front
        let der = ecdsa_p256_signature(&raw).unwrap();
        let mut expected = vec![0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0x80];
        expected.extend([0u8; 31]);
        assert_eq!(der, expected);
        let zero = ecdsa_p256_signature(&[0u8; 64]).unwrap();
        assert_eq!(zero, [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
        assert!(ecdsa_p256_signature(&[1u8; 63]).is_none());
        assert!(ecdsa_p256_signature(&[1u8; 65]).is_none());
    }

    #[test]
    fn lengths_use_the_short_and_long_forms() {
        assert_eq!(tlv(0x04, &[7; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(tlv(0x04, &[7; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(0x04, &[7; 0x1234])[..4], [0x04, 0x82, 0x12, 0x34]);
    }
}
