//! Who checks signatures inside the real Envoy: its `verify_signature`
//! foreign function (BoringSSL) where the host proves able, the filter's own
//! verifiers elsewhere. The `authflow.signature.{host,wasm}.<alg>` counters
//! say which path decided each signature; valid tokens must pass and
//! tampered ones must be refused on either path.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_echo::EchoServer;
use jwt_simple::prelude::*;
use serde_json::json;
use support::*;

const ISS: &str = "https://auth.signature.test";
const TOKENS: usize = 6;

/// Signs the `i`th test token with one algorithm's key.
type Signer<'a> = Box<dyn Fn(usize) -> String + 'a>;

fn claims(i: usize) -> JWTClaims<NoCustomClaims> {
    Claims::create(Duration::from_mins(10))
        .with_issuer(ISS)
        .with_subject(format!("user-{i}"))
        .with_audience("api")
        .with_jwt_id(format!("jti-{i}"))
}

/// The token with one signature bit flipped (in the middle, so base64url stays canonical).
fn tampered(token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let dot = token.rfind('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(&token[dot + 1..]).unwrap();
    let mid = sig.len() / 2;
    sig[mid] ^= 0x10;
    format!("{}.{}", &token[..dot], URL_SAFE_NO_PAD.encode(sig))
}

#[test]
fn signatures_are_checked_by_the_host_where_it_can_and_in_wasm_otherwise() {
    let ed = Ed25519KeyPair::generate().with_key_id("ed");
    let es = ES256KeyPair::generate().with_key_id("es");
    let rs = RS256KeyPair::generate(2048).unwrap().with_key_id("rs");
    let keys: Vec<serde_json::Value> = [
        ed.public_key().to_jwk(),
        es.public_key().to_jwk(),
        rs.public_key().to_jwk(),
    ]
    .iter()
    .map(|k| serde_json::from_str(k).unwrap())
    .collect();
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let filter = json!({
        "providers": [{"name": "sig", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA", "ES256", "RS256"], "jwks": {"inline": {"keys": keys}}}],
        "identity_headers": {"subject": "x-auth-user"}
    });
    // One worker: one VM, so the per-VM probe happens exactly once per algorithm.
    let envoy = Envoy::start(EnvoyOptions {
        filter,
        routes: vec![],
        clusters: vec![("backend".into(), backend.addr.port())],
        concurrency: 1,
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let sign: [(&str, Signer); 3] = [
        ("eddsa", Box::new(|i| ed.sign(claims(i)).unwrap())),
        ("es256", Box::new(|i| es.sign(claims(i)).unwrap())),
        ("rs256", Box::new(|i| rs.sign(claims(i)).unwrap())),
    ];
    for (alg, sign) in &sign {
        for i in 0..TOKENS {
            // Each token is new to the cache, so each is verified.
            let token = sign(i);
            let r = envoy.get("/api", &[("authorization", &format!("Bearer {token}"))]);
            assert_eq!(r.status, 200, "{alg} token {i}: {r:?}");
            assert_eq!(
                r.echoed("x-auth-user").as_deref(),
                Some(format!("user-{i}").as_str())
            );
            let r = envoy.get(
                "/api",
                &[(
                    "authorization",
                    &format!("Bearer {}", tampered(&sign(i + 100))),
                )],
            );
            assert_eq!(r.status, 401, "{alg} tampered token {i}: {r:?}");
        }
        let host = envoy.stat(&format!("signature.host.{alg}"));
        let wasm = envoy.stat(&format!("signature.wasm.{alg}"));
        assert_eq!(
            host + wasm,
            2 * TOKENS as u64,
            "{alg}: every signature counted once (host {host}, wasm {wasm})"
        );
        eprintln!("{alg}: host {host}, wasm {wasm}");
        if *alg != "eddsa" {
            // RSA and ECDSA keys are BoringSSL's: after the first valid token
            // (checked in Wasm and used to probe the host), the host decides,
            // refusals included.
            assert_eq!(wasm, 1, "{alg}: only the probing token in Wasm");
            assert_eq!(host, 2 * TOKENS as u64 - 1);
        }
    }
}
