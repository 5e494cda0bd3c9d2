//! `--dpop`: where a DPoP request's time goes, piece by piece: the proof's
//! parse, the checks other than its signature, the two SHA-256, the
//! signature, the replay store's slot update, and the whole decision.

use std::hint::black_box;

use authflow_contract::dpop::client::ProofKey;
use authflow_contract::dpop::{self, htu, Expectations, NonceCheck};
use authflow_contract::jwk::{Algorithm, PublicKey};
use authflow_contract::KeySet;
use authflow_filter_core::dpop::ProofUse;
use authflow_filter_core::signature::{encode_arguments, SignatureChecker};
use authflow_filter_core::{replay, Engine, FilterConfig, ProviderId, Request};
use jwt_simple::prelude::*;

use super::{row, time};

const ISS: &str = "https://bench.authflow.test";
const URL: &str = "https://bench.authflow.test/bench";

fn request(token: &str, proof: &str) -> Request {
    Request::from_headers(
        vec![
            (":method".into(), "GET".into()),
            (":scheme".into(), "https".into()),
            (":path".into(), "/bench".into()),
            (":authority".into(), "bench.authflow.test".into()),
            ("authorization".into(), format!("DPoP {token}")),
            ("dpop".into(), proof.into()),
            ("user-agent".into(), "wrk".into()),
        ],
        None,
    )
}

/// Every key on its curve and every signature good: the checks around the signature alone.
struct AnySignature;

impl dpop::ProofKeys for AnySignature {
    fn on_curve(&self, _: &PublicKey) -> bool {
        true
    }
    fn thumbprint(&self, key: &PublicKey) -> String {
        dpop::jwk_thumbprint(key)
    }
    fn verify(&self, _: &PublicKey, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

pub fn profile(batches: usize, scale: usize) {
    println!("target: {} (DPoP)", std::env::consts::ARCH);
    let issuer = Ed25519KeyPair::generate().with_key_id("ed-1");
    let jwks = format!(r#"{{"keys":[{}]}}"#, issuer.public_key().to_jwk());
    let config_json = format!(
        r#"{{"providers":[{{"name":"bench","issuer":"{ISS}","audiences":["bench"],"algorithms":["EdDSA"],"jwks":{{"inline":{jwks}}},"dpop":"allowed","dpop_max_age_secs":300}}],"max_token_lifetime_secs":86400}}"#
    );
    let config = FilterConfig::from_json(config_json.as_bytes()).expect("config");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();

    for (name, key) in [("ES256", ProofKey::es256(&[7; 32])), ("EdDSA", ProofKey::ed25519(&[9; 32]))] {
        let mut custom = serde_json::Map::new();
        custom.insert("sid".into(), "s-1".into());
        custom.insert("cnf".into(), serde_json::json!({"jkt": key.jkt()}));
        let claims = Claims::with_custom_claims(custom, Duration::from_hours(2)).with_issuer(ISS).with_subject("user-1").with_audience("bench");
        let token = issuer.sign(claims).expect("sign");
        let proofs: Vec<String> = (0..16).map(|_| key.proof("GET", URL, Some(&token))).collect();
        let n = proofs.len();
        println!("proof {} bytes, token {} bytes", proofs[0].len(), token.len());

        row(&format!("{name}: parse_proof"), time(batches, 100 * scale, |i| {
            black_box(dpop::parse_proof(black_box(&proofs[i % n])).expect("parse"));
        }));
        let parsed: Vec<_> = proofs.iter().map(|p| dpop::parse_proof(p).expect("parse")).collect();
        let jkt = key.jkt();
        // As the filter does: the token's hash kept from its verification.
        let token_hash = dpop::access_token_hash(&token);
        let algorithms = [Algorithm::ES256, Algorithm::EdDSA];
        let expect = Expectations {
            method: "GET",
            uri: URL,
            now,
            max_age_secs: 300,
            future_skew_secs: 5,
            algorithms: &algorithms,
            access_token_hash: Some(&token_hash),
            bound_jkt: Some(&jkt),
            nonce: NonceCheck::NotRequired,
        };
        row(&format!("{name}: check_with, all but the signature"), time(batches, 100 * scale, |i| {
            black_box(parsed[i % n].check_with(&expect, &AnySignature).expect("check"));
        }));
        let checker = SignatureChecker::own_only();
        row(&format!("{name}: parse_proof_with + check_with, keys kept (own verifiers)"), time(batches, 10 * scale, |i| {
            let p = dpop::parse_proof_with(black_box(&proofs[i % n]), &checker).expect("parse");
            black_box(p.check_with(&expect, &checker).expect("check"));
        }));
        row(&format!("{name}: parse_proof_with, key kept"), time(batches, 100 * scale, |i| {
            black_box(dpop::parse_proof_with(black_box(&proofs[i % n]), &checker).expect("parse"));
        }));
        row(&format!("{name}:   htu::normalize (done twice)"), time(batches, 200 * scale, |_| {
            black_box(htu::normalize(black_box(URL)));
        }));
        row(&format!("{name}:   access_token_hash (SHA-256 of the token)"), time(batches, 200 * scale, |_| {
            black_box(dpop::access_token_hash(black_box(&token)));
        }));
        let public = key.public();
        row(&format!("{name}:   jwk_thumbprint (SHA-256 of the JWK)"), time(batches, 200 * scale, |_| {
            black_box(dpop::jwk_thumbprint(black_box(&public)));
        }));
        row(&format!("{name}: contract verify_signature (key prepared per call)"), time(batches, 10 * scale, |i| {
            let p = &parsed[i % n];
            assert!(dpop::verify_signature(&p.key, p.signing_input(), p.signature()));
        }));
        match &public {
            PublicKey::EdDSA(x) => {
                row("EdDSA:   VerifyingKey::from_bytes (point decompression)", time(batches, 100 * scale, |_| {
                    black_box(ed25519_dalek::VerifyingKey::from_bytes(black_box(x)).expect("key"));
                }));
                let vk = ed25519_dalek::VerifyingKey::from_bytes(x).expect("key");
                row("EdDSA:   verify_strict, key prepared once", time(batches, 10 * scale, |i| {
                    let p = &parsed[i % n];
                    let s = ed25519_dalek::Signature::from_slice(p.signature()).expect("sig");
                    assert!(vk.verify_strict(p.signing_input(), &s).is_ok());
                }));
                row("EdDSA: candidate: basepoint table (once per VM)", time(3, 2, |_| {
                    black_box(table_candidate::basepoint_table());
                }));
                row("EdDSA: candidate: key table (once per key)", time(3, 2, |_| {
                    black_box(table_candidate::TableKey::new(x).expect("key"));
                }));
                let bt = table_candidate::basepoint_table();
                let tk = table_candidate::TableKey::new(x).expect("key");
                for p in &parsed {
                    let mut bad = p.signature().to_vec();
                    bad[40] ^= 1;
                    assert!(tk.verify_strict(&bt, p.signing_input(), p.signature()));
                    assert!(!tk.verify_strict(&bt, p.signing_input(), &bad));
                    bad[40] ^= 1;
                    bad[3] ^= 1;
                    assert!(!tk.verify_strict(&bt, p.signing_input(), &bad));
                }
                row("EdDSA: candidate: verify_strict with both tables", time(batches, 10 * scale, |i| {
                    let p = &parsed[i % n];
                    assert!(tk.verify_strict(&bt, p.signing_input(), p.signature()));
                }));
                // The two side by side, alternating batches (the machine's load drifts).
                let (mut plain, mut tabled) = (0.0, 0.0);
                for round in 0..20 * scale {
                    let t = std::time::Instant::now();
                    for i in 0..20 {
                        let p = &parsed[(round + i) % n];
                        let s = ed25519_dalek::Signature::from_slice(p.signature()).expect("sig");
                        assert!(vk.verify_strict(p.signing_input(), &s).is_ok());
                    }
                    plain += t.elapsed().as_secs_f64();
                    let t = std::time::Instant::now();
                    for i in 0..20 {
                        let p = &parsed[(round + i) % n];
                        assert!(tk.verify_strict(&bt, p.signing_input(), p.signature()));
                    }
                    tabled += t.elapsed().as_secs_f64();
                }
                println!("EdDSA: alternating: tables / verify_strict = {:.2}", tabled / plain);
            }
            PublicKey::ES256 { .. } => {
                row("ES256:   host call's arguments (SPKI, DER signature, protobuf)", time(batches, 200 * scale, |i| {
                    let p = &parsed[i % n];
                    let spki = authflow_contract::der::subject_public_key_info(&p.key);
                    let der = authflow_contract::der::ecdsa_p256_signature(p.signature()).expect("der");
                    black_box(encode_arguments("sha256", &spki, &der, p.signing_input()));
                }));
            }
            PublicKey::RS256 { .. } => {}
        }

        let mut engine = Engine::new(config.clone(), now * 1000);
        engine.set_keys(ProviderId::FIRST, KeySet::parse(jwks.as_bytes()).expect("jwks"));
        let reqs: Vec<Request> = proofs.iter().map(|p| request(&token, p)).collect();
        for r in &reqs {
            match engine.evaluate(r, now * 1000, false) {
                authflow_filter_core::engine::Outcome::Allow(_) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        row(&format!("{name}: Engine::evaluate, cached token + proof (own verifiers)"), time(batches, 10 * scale, |i| {
            black_box(engine.evaluate(&reqs[i % n], now * 1000, false));
        }));
    }

    // The replay store's slot: a proof filed in a slot of k ids.
    for held in [30usize, 470] {
        let first = ProofUse { id: [0; 8], iat: now, provider: ProviderId::FIRST, renew_nonce: false, public_route: false };
        let (_, bucket) = replay::slot_for(&first);
        let mut slot = replay::record(None, bucket, &first).expect("record");
        for i in 1..held as u64 {
            slot = replay::record(Some(&slot), bucket, &ProofUse { id: i.to_be_bytes(), ..first }).expect("record");
        }
        row(&format!("replay::record into a slot of {held} ids ({} bytes)", slot.len()), time(batches, 200 * scale, |i| {
            let p = ProofUse { id: (u64::MAX - i as u64).to_be_bytes(), ..first };
            black_box(replay::record(Some(black_box(&slot)), bucket, &p).expect("record"));
        }));
    }
}

/// Candidate: Ed25519 `verify_strict` with a radix-16 table per key (and one
/// for the basepoint): [s]B − [k]A as two fixed-base multiplications.
pub mod table_candidate {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsBasepointTable, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::BasepointTable;
    use sha2::{Digest, Sha512};

    pub struct TableKey {
        compressed: [u8; 32],
        table: Box<EdwardsBasepointTable>,
    }

    pub fn basepoint_table() -> Box<EdwardsBasepointTable> {
        Box::new(EdwardsBasepointTable::create(&curve25519_dalek::constants::ED25519_BASEPOINT_POINT))
    }

    impl TableKey {
        pub fn new(x: &[u8; 32]) -> Option<TableKey> {
            let point = CompressedEdwardsY(*x).decompress()?;
            if point.is_small_order() {
                return None;
            }
            Some(TableKey { compressed: *x, table: Box::new(EdwardsBasepointTable::create(&point)) })
        }

        pub fn verify_strict(&self, b: &EdwardsBasepointTable, msg: &[u8], sig: &[u8]) -> bool {
            let Ok(sig): Result<&[u8; 64], _> = sig.try_into() else { return false };
            let (r_bytes, s_bytes) = sig.split_at(32);
            let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes.try_into().unwrap_or([0; 32]))) else { return false };
            let r_c = CompressedEdwardsY(r_bytes.try_into().unwrap_or([0; 32]));
            let Some(r) = r_c.decompress() else { return false };
            if r.is_small_order() {
                return false;
            }
            let k = Scalar::from_hash(Sha512::new().chain_update(r_bytes).chain_update(self.compressed).chain_update(msg));
            let expected: EdwardsPoint = b.mul_base(&s) - self.table.mul_base(&k);
            expected.compress() == r_c
        }
    }
}
