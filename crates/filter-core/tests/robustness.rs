//! Whatever arrives, the decision never panics and always ends in a clear
//! answer: mutated tokens, random headers, random configuration bytes.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use authflow_contract::{AccessClaims, KeySet};
use authflow_filter_core::engine::{Engine, Outcome};
use authflow_filter_core::{FilterConfig, ProviderId, Request};
use jwt_simple::prelude::*;

/// A small deterministic generator: the same inputs on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const CONFIG: &str = r#"{
    "providers": [{"name": "p", "issuer": "https://i", "audiences": ["api"], "algorithms": ["EdDSA", "ES256", "RS256"],
                   "jwks": {"remote": {"cluster": "c", "path": "/j"}}, "revocations": {"cluster": "c", "path": "/r"}}],
    "token_sources": {"cookies": ["at"], "headers": ["x-token"]},
    "device_binding": {"mode": "enforce", "attributes": ["user-agent", "client-ip-prefix"]},
    "identity_headers": {"subject": "x-user", "claims": {"a.b.c": "x-abc", "roles": "x-r"}},
    "routes": [{"match": {"prefix": "/p"}, "policy": "public"}, {"match": {"prefix": "/s"}, "policy": {"scopes_all": ["w"]}}]
}"#;

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut bytes = input.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let i = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[i] = rng.next() as u8,
            1 => {
                bytes.remove(i);
            }
            2 => bytes.insert(i, b".-_=/+ \n\0"[rng.below(9)]),
            3 => bytes.truncate(i),
            _ => {
                let chunk = bytes[i..].to_vec();
                bytes.extend_from_slice(&chunk);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn mutated_requests_never_panic() {
    let kp = Ed25519KeyPair::generate().with_key_id("k");
    let config = FilterConfig::from_json(CONFIG.as_bytes()).unwrap();
    let mut engine = Engine::new(config, 1_000);
    engine.set_keys(
        ProviderId::FIRST,
        KeySet::parse(format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk()).as_bytes()).unwrap(),
    );
    let claims = Claims::with_custom_claims(
        AccessClaims {
            sid: "s".into(),
            roles: vec!["r".into()],
            scope: "w".into(),
            dfp: Some("x".into()),
            client_id: None,
            cnf: None,
        },
        Duration::from_mins(5),
    )
    .with_issuer("https://i")
    .with_subject("u");
    let token = kp.sign(claims).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let names = [
        "authorization",
        "cookie",
        "x-token",
        "user-agent",
        ":path",
        ":authority",
        "x-authflow-device",
    ];
    let (mut allowed, mut denied) = (0, 0);
    for i in 0..20_000 {
        let t = mutate(&mut rng, &token);
        let mut headers = vec![
            (":method".to_string(), "GET".to_string()),
            (
                ":path".to_string(),
                ["/", "/p/x", "/s", "/%00?#"][i % 4].to_string(),
            ),
        ];
        match i % 3 {
            0 => headers.push(("authorization".into(), format!("Bearer {t}"))),
            1 => headers.push(("cookie".into(), format!("at={t}; other=1"))),
            _ => headers.push((
                names[rng.below(names.len())].into(),
                mutate(&mut rng, &format!("Bearer {token}")),
            )),
        }
        let req = Request::from_headers(headers, Some(mutate(&mut rng, "203.0.113.5:80")));
        match engine.evaluate(&req, 1_000 + (i as u64), i % 2 == 0) {
            Outcome::Allow(_) => allowed += 1,
            Outcome::Deny(d) => {
                denied += 1;
                assert!(matches!(d.response.status, 400 | 401 | 403 | 503));
                assert!(
                    !d.response.body.contains(&t) || t.len() < 4,
                    "a token is never echoed"
                );
            }
            Outcome::AwaitKeys { .. } | Outcome::AwaitRevocations { .. } => {}
        }
    }
    assert!(
        denied > 10_000 && allowed > 0,
        "allowed {allowed}, denied {denied}"
    );
}

#[test]
fn mutated_configurations_never_panic() {
    let mut rng = Rng(42);
    let mut accepted = 0;
    for _ in 0..5_000 {
        if FilterConfig::from_json(mutate(&mut rng, CONFIG).as_bytes()).is_ok() {
            accepted += 1;
        }
    }
    assert!(accepted < 5_000);
}

#[test]
fn hostile_jwks_documents_never_panic() {
    let kp = ES256KeyPair::generate().with_key_id("k");
    let jwks = format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk());
    let mut rng = Rng(7);
    for _ in 0..5_000 {
        let _ = KeySet::parse(mutate(&mut rng, &jwks).as_bytes());
    }
}
