//! JWS signature checks for the filter's hot path (RFC 7515 §5.2): the bytes
//! `header.payload` against the decoded signature, per algorithm.
//!
//! Why not jwt-simple here: its pure-Rust backends use 64-bit limbs with
//! 128-bit products, which Wasm has to emulate in software. Inside Envoy's
//! V8 these are several times faster: [`crate::ed25519_verify`] (ed25519-dalek's
//! 32-bit arithmetic on wasm32 with a table of multiples per key),
//! [`crate::p256_verify`] (32-bit limbs and a precomputed table per key) and
//! [`crate::rsa_verify`]; the tables are built when the key is prepared. The
//! service signs with jwt-simple, and the tests below check every result
//! against jwt-simple's own verification (a test-only dependency: the filter
//! links none of it).

use crate::ed25519_verify::Ed25519Key;
use crate::jwk::{PublicKey, RSA_EXPONENT};
use crate::p256_verify::P256Key;
use crate::rsa_verify::RsaKey;

/// A public key prepared for fast verification of one algorithm.
#[derive(Clone)]
pub enum SignatureKey {
    EdDSA(Ed25519Key),
    ES256(P256Key),
    RS256(RsaKey),
}

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EdDSA(_) => "SignatureKey::EdDSA",
            Self::ES256(_) => "SignatureKey::ES256",
            Self::RS256(_) => "SignatureKey::RS256",
        })
    }
}

impl SignatureKey {
    /// Prepares a key parsed from a JWK; `None` if it cannot be (then the key is skipped).
    pub fn from_public(key: &PublicKey) -> Option<Self> {
        match key {
            // A small-order key is no key: a host verifier (BoringSSL) does
            // not check key order and would take forged signatures for it.
            PublicKey::EdDSA(x) => Ed25519Key::new(x)
                .filter(|k| !k.is_small_order())
                .map(Self::EdDSA),
            PublicKey::ES256 { x, y } => {
                P256Key::from_sec1_uncompressed(&PublicKey::sec1_uncompressed(x, y))
                    .map(Self::ES256)
            }
            PublicKey::RS256 { n } => RsaKey::new(n, &RSA_EXPONENT).map(Self::RS256),
        }
    }

    /// As [`SignatureKey::from_public`] for a key whose use is not known yet
    /// (a DPoP proof's): an Ed25519 key's table is built only once the key
    /// has been used often ([`crate::ed25519_verify::Ed25519Key::lazy`]).
    pub fn from_public_lazily(key: &PublicKey) -> Option<Self> {
        match key {
            // Small-order keys refused as in `from_public`.
            PublicKey::EdDSA(x) => Ed25519Key::lazy(x)
                .filter(|k| !k.is_small_order())
                .map(Self::EdDSA),
            _ => Self::from_public(key),
        }
    }

    /// Whether `signature` (raw, base64url-decoded) signs `signing_input`.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match self {
            // As ed25519-dalek's verify_strict: small-order keys and non-canonical signatures are refused.
            Self::EdDSA(k) => k.verify(signing_input, signature),
            Self::ES256(k) => k.verify(signing_input, signature),
            Self::RS256(k) => k.verify(signing_input, signature),
        }
    }
}

/// Verifies with a key seen once (a DPoP proof's own key): no per-key table,
/// which would cost more to build than the one check it serves.
pub fn verify_once(key: &PublicKey, signing_input: &[u8], signature: &[u8]) -> bool {
    match key {
        PublicKey::EdDSA(x) => crate::ed25519_verify::verify_once(x, signing_input, signature),
        PublicKey::ES256 { x, y } => {
            crate::p256_verify::verify_once(x, y, signing_input, signature)
        }
        PublicKey::RS256 { .. } => {
            SignatureKey::from_public(key).is_some_and(|k| k.verify(signing_input, signature))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jwt_simple::prelude::*;

    fn split(token: &str) -> (&[u8], Vec<u8>) {
        let dot = token.rfind('.').unwrap();
        (
            &token.as_bytes()[..dot],
            URL_SAFE_NO_PAD.decode(&token[dot + 1..]).unwrap(),
        )
    }

    /// Valid tokens verify; every single-bit flip of the signed bytes or the
    /// signature is refused — exactly as jwt-simple (the reference) decides.
    fn agrees_with_reference(
        reference: impl Fn(&str) -> bool,
        public: PublicKey,
        tokens: &[String],
    ) {
        let fast = SignatureKey::from_public(&public).expect("prepared");
        for t in tokens {
            let (input, sig) = split(t);
            assert!(fast.verify(input, &sig));
            assert!(reference(t));
            for bit in [0usize, 7, 100, sig.len() * 8 - 1] {
                let mut bad = sig.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(!fast.verify(input, &bad), "flipped signature bit {bit}");
                let forged = format!(
                    "{}.{}",
                    std::str::from_utf8(input).unwrap(),
                    URL_SAFE_NO_PAD.encode(&bad)
                );
                assert!(!reference(&forged));
            }
            let mut other = input.to_vec();
            let last = other.len() - 1;
            other[last] ^= 1;
            assert!(!fast.verify(&other, &sig), "changed payload");
            assert!(
                !fast.verify(input, &sig[..sig.len() - 1]),
                "short signature"
            );
            assert!(!fast.verify(input, &[]), "empty signature");
        }
    }

    fn lenient() -> VerificationOptions {
        VerificationOptions {
            time_tolerance: Some(Duration::from_days(3650)),
            ..Default::default()
        }
    }

    fn claims(i: u32) -> JWTClaims<NoCustomClaims> {
        Claims::create(Duration::from_mins(5))
            .with_subject(format!("user-{i}"))
            .with_jwt_id(format!("j{i}"))
    }

    /// Finding: a DPoP proof's Ed25519 key, prepared lazily, skipped the
    /// small-order refusal the key set's keys get. A small-order key is no
    /// key either way: a host verifier does not check key order.
    #[test]
    fn a_small_order_key_is_refused_lazily_too() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let key = PublicKey::EdDSA(identity);
        assert!(SignatureKey::from_public(&key).is_none());
        assert!(SignatureKey::from_public_lazily(&key).is_none());
    }

    #[test]
    fn eddsa_matches_reference() {
        for _ in 0..4 {
            let kp = Ed25519KeyPair::generate();
            let tokens: Vec<String> = (0..8).map(|i| kp.sign(claims(i)).unwrap()).collect();
            agrees_with_reference(
                |t| {
                    kp.public_key()
                        .verify_token::<NoCustomClaims>(t, Some(lenient()))
                        .is_ok()
                },
                PublicKey::EdDSA(kp.public_key().to_bytes().try_into().unwrap()),
                &tokens,
            );
        }
    }

    #[test]
    fn es256_matches_reference() {
        for _ in 0..4 {
            let kp = ES256KeyPair::generate();
            let tokens: Vec<String> = (0..8).map(|i| kp.sign(claims(i)).unwrap()).collect();
            let point = kp.public_key().public_key().to_bytes_uncompressed();
            let public = PublicKey::ES256 {
                x: point[1..33].try_into().unwrap(),
                y: point[33..].try_into().unwrap(),
            };
            agrees_with_reference(
                |t| {
                    kp.public_key()
                        .verify_token::<NoCustomClaims>(t, Some(lenient()))
                        .is_ok()
                },
                public,
                &tokens,
            );
        }
    }

    #[test]
    fn rs256_matches_reference() {
        for bits in [2048, 3072] {
            let kp = RS256KeyPair::generate(bits).unwrap();
            let tokens: Vec<String> = (0..4).map(|i| kp.sign(claims(i)).unwrap()).collect();
            agrees_with_reference(
                |t| {
                    kp.public_key()
                        .verify_token::<NoCustomClaims>(t, Some(lenient()))
                        .is_ok()
                },
                PublicKey::RS256 {
                    n: kp.public_key().to_components().n,
                },
                &tokens,
            );
        }
    }

    #[test]
    fn keys_of_one_algorithm_never_verify_another() {
        let ed = Ed25519KeyPair::generate();
        let other = Ed25519KeyPair::generate();
        let t = ed.sign(claims(1)).unwrap();
        let (input, sig) = split(&t);
        let other = PublicKey::EdDSA(other.public_key().to_bytes().try_into().unwrap());
        assert!(!SignatureKey::from_public(&other)
            .unwrap()
            .verify(input, &sig));
        let point = ES256KeyPair::generate()
            .public_key()
            .public_key()
            .to_bytes_uncompressed();
        let es = PublicKey::ES256 {
            x: point[1..33].try_into().unwrap(),
            y: point[33..].try_into().unwrap(),
        };
        let es = SignatureKey::from_public(&es).unwrap();
        assert!(!es.verify(input, &sig));
    }
}
