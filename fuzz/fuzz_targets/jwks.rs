//! Arbitrary bytes into JWKS parsing (`KeySet::parse_published`, as fetched
//! from an identity provider, and `KeySet::parse`, the same set required to
//! hold a usable key). Whatever parses must respect the bounds and yield keys
//! that are safe to use: each verifies without panicking, refuses a
//! signature nobody made, and only answers for its own algorithm.
#![no_main]

use authflow_contract::jwk::{Algorithm, MAX_JWKS_BYTES, MAX_KEYS};
use authflow_contract::jws::SignatureKey;
use authflow_contract::KeySet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let published = KeySet::parse_published(data);
    let strict = KeySet::parse(data);
    assert_eq!(strict.is_ok(), published.as_ref().is_ok_and(|s| !s.keys.is_empty()), "`parse` is `parse_published` with a usable key");
    let Ok(set) = published else { return };
    assert!(data.len() <= MAX_JWKS_BYTES);
    assert!(set.keys.len() <= MAX_KEYS);
    for entry in &set.keys {
        let same_kind = matches!(
            (&entry.signature, entry.algorithm()),
            (SignatureKey::EdDSA(_), Algorithm::EdDSA) | (SignatureKey::ES256(_), Algorithm::ES256) | (SignatureKey::RS256(_), Algorithm::RS256)
        );
        assert!(same_kind, "prepared key of another algorithm than its JWK");
        for sig_len in [0usize, 64, 256, 512] {
            assert!(!entry.signature.verify(b"eyJhbGciOiJub25lIn0.e30", &vec![0u8; sig_len]), "an all-zero signature verified");
        }
        if let Some(kid) = &entry.kid {
            assert!(set.has_kid(kid));
            assert!(set.entries(entry.algorithm(), Some(kid)).count() >= 1);
        }
    }
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        assert!(set.signature_candidates(alg, None).count() <= set.keys.len());
    }
});
