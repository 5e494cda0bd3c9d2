//! Where a cold (uncached) and a warm (cached) request spend their time in the
//! filter's core, piece by piece. Build natively and for wasm32-wasip1; run the
//! latter under Node (V8, the runtime Envoy uses) with `run-node.mjs`.
//!
//! Every number is the median of several batches, in µs per operation.


use std::hint::black_box;
use std::time::Instant;

use authflow_filter_core::signature::SignatureChecker;
use authflow_filter_core::{verify, Engine, FilterConfig, ProviderId, Request};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;

mod dpop;
mod revocations;

const ISS: &str = "https://bench.authflow.test";

type Custom = serde_json::Map<String, serde_json::Value>;

fn token<K: Fn(JWTClaims<Custom>) -> String>(sign: K, n: usize) -> String {
    let mut custom = Custom::new();
    custom.insert("sid".into(), format!("s-{n}").into());
    custom.insert("roles".into(), serde_json::json!(["user"]));
    custom.insert("scope".into(), "read".into());
    let c = Claims::with_custom_claims(custom, Duration::from_hours(2))
    .with_issuer(ISS)
    .with_subject(format!("user-{n}"))
    .with_audience("bench")
    .with_jwt_id(format!("j-{n}"));
    sign(c)
}

/// Median over `batches` of the mean time per call, in µs.
fn time(batches: usize, per_batch: usize, mut f: impl FnMut(usize)) -> f64 {
    f(0);
    let mut v: Vec<f64> = (0..batches)
        .map(|b| {
            let t = Instant::now();
            for i in 0..per_batch {
                f(b * per_batch + i);
            }
            t.elapsed().as_secs_f64() * 1e6 / per_batch as f64
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn row(what: &str, us: f64) {
    println!("{what:<58} {us:>10.2} µs");
}

fn request(t: &str) -> Request {
    Request::from_headers(
        vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/bench".into()),
            (":authority".into(), "127.0.0.1".into()),
            ("authorization".into(), format!("Bearer {t}")),
            ("user-agent".into(), "wrk".into()),
        ],
        None,
    )
}

fn parts(t: &str) -> (&str, Vec<u8>) {
    let (signed, sig) = t.rsplit_once('.').unwrap_or((t, ""));
    (signed, URL_SAFE_NO_PAD.decode(sig).unwrap_or_default())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cold_only = std::env::args().any(|a| a == "--cold-only");
    let (batches, scale) = if quick { (3, 1) } else { (7, 4) };
    if std::env::args().any(|a| a == "--dpop") {
        dpop::profile(batches, scale);
        return;
    }
    if std::env::args().any(|a| a == "--revocations") {
        revocations::profile(batches, scale);
        return;
    }
    let ed = Ed25519KeyPair::generate().with_key_id("ed-1");
    let es = ES256KeyPair::generate().with_key_id("es-1");
    let rs = RS256KeyPair::generate(2048).expect("rsa").with_key_id("rs-1");
    let jwks = format!(r#"{{"keys":[{},{},{}]}}"#, ed.public_key().to_jwk(), es.public_key().to_jwk(), rs.public_key().to_jwk());
    let config = format!(
        r#"{{"providers":[{{"name":"bench","issuer":"{ISS}","audiences":["bench"],"algorithms":["EdDSA","ES256","RS256"],"jwks":{{"inline":{jwks}}}}}],"max_token_lifetime_secs":86400}}"#
    );
    let config_json = config;
    let config = FilterConfig::from_json(config_json.as_bytes()).expect("config");
    let keys = match &config.provider(ProviderId::FIRST).expect("one provider").jwks {
        authflow_filter_core::config::JwksSource::Inline(k) => k.clone(),
        _ => unreachable!(),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();

    let n = 8 * scale;
    let ed_t: Vec<String> = (0..n).map(|i| token(|c| ed.sign(c).expect("sign"), i)).collect();
    let es_t: Vec<String> = (0..n).map(|i| token(|c| es.sign(c).expect("sign"), i)).collect();
    let rs_t: Vec<String> = (0..n).map(|i| token(|c| rs.sign(c).expect("sign"), i)).collect();

    println!("target: {}", std::env::consts::ARCH);
    if !cold_only {
        // --- pieces shared by every algorithm
        row("screen (split, 2× base64 + JSON, issuer/alg/kid)", time(batches, 100 * scale, |i| {
            black_box(verify::screen(black_box(&ed_t[i % n]), &config, &mut Vec::new()).ok());
        }));

        // --- primitives, called directly
        let ed_pk = ed25519_compact::PublicKey::from_slice(&ed.public_key().to_bytes()).expect("ed pk");
        let es_pk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&es.public_key().public_key().to_bytes_uncompressed()).expect("es pk");
        let rs_c = rs.public_key().to_components();
        let rs_pk = rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(&rs_c.n), rsa::BigUint::from_bytes_be(&rs_c.e)).expect("rs pk");
        let rs_vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(rs_pk);
        let ed_p: Vec<_> = ed_t.iter().map(|t| parts(t)).collect();
        let es_p: Vec<_> = es_t.iter().map(|t| parts(t)).collect();
        let rs_p: Vec<_> = rs_t.iter().map(|t| parts(t)).collect();

        for (alg, toks, pp) in [("EdDSA", &ed_t, &ed_p), ("ES256", &es_t, &es_p), ("RS256", &rs_t, &rs_p)] {
            let per = match alg {
                "RS256" => 10 * scale,
                _ => 20 * scale,
            };
            let prim = time(batches, per, |i| {
                let (msg, sig) = &pp[i % n];
                let ok = match alg {
                    "EdDSA" => {
                        let s = ed25519_compact::Signature::from_slice(sig).expect("sig");
                        ed_pk.verify(msg.as_bytes(), &s).is_ok()
                    }
                    "ES256" => {
                        use p256::ecdsa::signature::Verifier;
                        let s = p256::ecdsa::Signature::from_slice(sig).expect("sig");
                        es_pk.verify(msg.as_bytes(), &s).is_ok()
                    }
                    _ => {
                        use rsa::signature::Verifier;
                        let s = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).expect("sig");
                        rs_vk.verify(msg.as_bytes(), &s).is_ok()
                    }
                };
                assert!(ok, "{alg} primitive verify failed");
            });
            row(&format!("{alg}: signature primitive only"), prim);
            // The filter's own verifiers: Node has no host `verify_signature`.
            let own_verifiers = SignatureChecker::own_only();
            let full = time(batches, per, |i| {
                let t = &toks[i % n];
                let mut payload = Vec::new();
                let s = verify::screen(t, &config, &mut payload).expect("screen");
                let v = verify::verify(t, &s, &keys, &own_verifiers, &config, now).expect("verify");
                black_box(v);
            });
            row(&format!("{alg}: screen + verify (the filter's cold path core)"), full);
            row(&format!("{alg}:   of which not the signature (noisy)"), (full - prim).max(0.0));
        }

        // --- candidates, each checked against the reference on valid and tampered inputs first
        let dalek_pk = ed25519_dalek::VerifyingKey::from_bytes(&ed.public_key().to_bytes().try_into().expect("32 bytes")).expect("dalek pk");
        let es_fast = authflow_contract::p256_verify::P256Key::from_sec1_uncompressed(&es.public_key().public_key().to_bytes_uncompressed()).expect("fast p256 key");
        let rs_fast = authflow_contract::rsa_verify::RsaKey::new(&rs_c.n, &rs_c.e).expect("fast rsa key");
        let dalek = |msg: &[u8], sig: &[u8]| {
            ed25519_dalek::Signature::from_slice(sig).map(|s| dalek_pk.verify_strict(msg, &s).is_ok()).unwrap_or(false)
        };
        let reference = |alg: &str, msg: &[u8], sig: &[u8]| -> bool {
            match alg {
                "EdDSA" => ed25519_compact::Signature::from_slice(sig).map(|s| ed_pk.verify(msg, &s).is_ok()).unwrap_or(false),
                "ES256" => {
                    use p256::ecdsa::signature::Verifier;
                    p256::ecdsa::Signature::from_slice(sig).map(|s| es_pk.verify(msg, &s).is_ok()).unwrap_or(false)
                }
                _ => {
                    use rsa::signature::Verifier;
                    rsa::pkcs1v15::Signature::try_from(sig).map(|s| rs_vk.verify(msg, &s).is_ok()).unwrap_or(false)
                }
            }
        };
        for (alg, pp) in [("EdDSA", &ed_p), ("ES256", &es_p), ("RS256", &rs_p)] {
            let candidate = |msg: &[u8], sig: &[u8]| match alg {
                "EdDSA" => dalek(msg, sig),
                "ES256" => es_fast.verify(msg, sig),
                _ => rs_fast.verify(msg, sig),
            };
            let mut checked = 0;
            for (i, (msg, sig)) in pp.iter().enumerate() {
                let mut bad_msg = msg.as_bytes().to_vec();
                let at = i % bad_msg.len();
                bad_msg[at] ^= 1;
                let mut bad_sig = sig.clone();
                let at = (i * 7) % bad_sig.len();
                bad_sig[at] ^= 0x40;
                let short = &sig[..sig.len() - 1];
                for (m, s) in [(msg.as_bytes(), sig.as_slice()), (&bad_msg[..], sig.as_slice()), (msg.as_bytes(), &bad_sig[..]), (msg.as_bytes(), short)] {
                    assert_eq!(candidate(m, s), reference(alg, m, s), "{alg}: candidate and reference disagree");
                    checked += 1;
                }
                assert!(candidate(msg.as_bytes(), sig), "{alg}: candidate refused a valid signature");
            }
            let per = if alg == "RS256" { 10 * scale } else { 20 * scale };
            let name = match alg {
                "EdDSA" => "ed25519-dalek 2 (32-bit backend on wasm32), verify_strict",
                "ES256" => "u32-limb P-256 with comb tables (authflow_verifiers::p256_verify)",
                _ => "28-bit-limb Montgomery (authflow_verifiers::rsa_verify)",
            };
            let t = time(batches, per, |i| {
                let (msg, sig) = &pp[i % n];
                assert!(candidate(msg.as_bytes(), sig));
            });
            row(&format!("{alg}: candidate {name}"), t);
            println!("{:<58} {checked:>10} cases agree with the reference", "");
        }

        // --- EdDSA with a per-key table of multiples (authflow_verifiers::ed25519_verify), against dalek's verify_strict
        let ed_bytes: [u8; 32] = ed.public_key().to_bytes().try_into().expect("32 bytes");
        row("EdDSA: per-key table, built once per key", time(batches, scale, |_| {
            black_box(authflow_contract::ed25519_verify::Ed25519Key::new(&ed_bytes));
        }));
        let ed_table = authflow_contract::ed25519_verify::Ed25519Key::new(&ed_bytes).expect("a point");
        for (msg, sig) in &ed_p {
            assert!(ed_table.verify(msg.as_bytes(), sig) && dalek(msg.as_bytes(), sig));
            let mut bad = sig.clone();
            bad[5] ^= 1;
            assert!(!ed_table.verify(msg.as_bytes(), &bad) && !dalek(msg.as_bytes(), &bad));
        }
        row("EdDSA: per-key table (authflow_verifiers::ed25519_verify)", time(batches, 20 * scale, |i| {
            let (msg, sig) = &ed_p[i % n];
            assert!(ed_table.verify(msg.as_bytes(), sig));
        }));
    }

    // --- a fresh token through Engine::evaluate: cache empty vs full (steady state
    // when every request brings a new token). EdDSA, so the signature is the cheapest part.
    let cold_n = if quick { 2_000 } else { 10_000 };
    let fresh: Vec<Request> = (0..cold_n + 400 * scale).map(|i| request(&token(|c| ed.sign(c).expect("sign"), 1_000_000 + i))).collect();
    let now_ms = now * 1000;
    let cache_sizes = if cold_only { vec![] } else { vec![("cache never full (1M)", 1_000_000usize), ("cache full (default 10k entries)", cold_n)] };
    for (what, cache_max) in cache_sizes {
        let cfg = FilterConfig::from_json(config_json.replace("\"max_token_lifetime_secs\":86400", &format!("\"max_token_lifetime_secs\":86400,\"cache_max_entries\":{cache_max}")).as_bytes()).expect("config");
        let mut engine = Engine::new(cfg, now_ms);
        for r in &fresh[..cold_n] {
            black_box(engine.evaluate(r, now_ms, false));
        }
        let mut next = cold_n;
        row(&format!("cold EdDSA: Engine::evaluate, fresh token, {what}"), time(batches, 40 * scale, |_| {
            let r = &fresh[next % fresh.len()];
            next += 1;
            black_box(engine.evaluate(r, now_ms, false));
        }));
    }

    // --- the same with every signature decided by a stand-in for the host's
    // `verify_signature` that answers at once: what a fresh token costs in
    // Wasm besides its signature (in Envoy the host's BoringSSL check runs
    // natively). The stand-in answers the one probe honestly (accept, then
    // refuse the flipped signature), as a host must, then accepts everything.
    // `--cold-only` runs this row alone (for `node --cpu-prof`).
    let answers = std::cell::Cell::new(0u32);
    let stand_in = SignatureChecker::with_host(Box::new(move |_| {
        let n = answers.get();
        answers.set(n + 1);
        Some(vec![0x08, u8::from(n != 1)])
    }));
    let mut engine = Engine::new(config.clone(), now_ms).with_signatures(stand_in);
    for r in &fresh[..cold_n] {
        black_box(engine.evaluate(r, now_ms, false));
    }
    let mut next = cold_n;
    let rounds = if cold_only { 200 * scale } else { 40 * scale };
    row("cold EdDSA: Engine::evaluate, fresh token, signature by a stand-in host", time(batches, rounds, |_| {
        let r = &fresh[next % fresh.len()];
        next += 1;
        black_box(engine.evaluate(r, now_ms, false));
    }));
    if cold_only {
        return;
    }

    // --- warm: Engine::evaluate on a cached token
    let mut engine = Engine::new(config.clone(), now * 1000);
    let reqs: Vec<Request> = ed_t.iter().map(|t| request(t)).collect();
    for r in &reqs {
        black_box(engine.evaluate(r, now * 1000, false));
    }
    row("warm: Engine::evaluate, cache hit (EdDSA)", time(batches, 500 * scale, |i| {
        black_box(engine.evaluate(&reqs[i % n], now * 1000, false));
    }));
    row("warm: Request::from_headers (5 headers)", time(batches, 500 * scale, |_| {
        black_box(Request::from_headers(
            vec![
                (":method".into(), "GET".into()),
                (":path".into(), "/bench".into()),
                (":authority".into(), "127.0.0.1".into()),
                ("authorization".into(), format!("Bearer {}", ed_t[0])),
                ("user-agent".into(), "wrk".into()),
            ],
            None,
        ));
    }));
}
