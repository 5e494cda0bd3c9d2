//! End to end through the real Envoy: two listeners, each with its own
//! filter configuration on the one Wasm VM (`vm_id`), trusting one issuer
//! through one revocation feed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authflow_echo::EchoServer;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use support::*;

const ISS: &str = "https://two.test";

fn filter(max_entries: u64) -> Value {
    json!({
        "providers": [{
            "name": "main", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "jwks", "path": "/jwks.json"}},
            "revocations": {"cluster": "feed", "path": "/v1/revocations", "poll_interval_ms": 500, "wait_secs": 0}
        }],
        "revocation": {"max_staleness_secs": 3, "max_entries": max_entries}
    })
}

/// Finding: a configuration whose own bound (`revocation.max_entries`)
/// refuses the feed held the fetch lease for good (its holder renews on
/// every retry), so the other listener's configuration never polled and its
/// list went stale: every token request there answered 503.
#[test]
fn a_listener_whose_feed_polls_fail_does_not_starve_the_other() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let jwks = JwksServer::start(jwks_of(&[key.public_key().to_jwk()]));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let feed = JwksServer::start(
        json!({"issuer": ISS, "cursor": "1", "snapshot": true, "revoked_tokens": [
            {"jti": "r1", "expires_at": now + 900}, {"jti": "r2", "expires_at": now + 900}]})
        .to_string(),
    );
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let clusters = vec![
        ("backend".to_string(), backend.addr.port()),
        ("jwks".to_string(), jwks.port),
        ("feed".to_string(), feed.port),
    ];
    let second_port = free_port();
    let envoy = Envoy::start_doc(1, |port, admin| {
        let mut doc = envoy_config(&filter(1000), &clusters, port, admin);
        let mut small = envoy_config(&filter(1), &clusters, second_port, admin)["static_resources"]
            ["listeners"][0]
            .clone();
        small["name"] = json!("small");
        doc["static_resources"]["listeners"]
            .as_array_mut()
            .unwrap()
            .push(small);
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let mut c = claims_for(user_with_roles(&["user"]), ISS, "alice", Some("ok"));
    c.audiences = Some(Audiences::AsString("api".into()));
    let t = key.sign(c).unwrap();
    let auth = format!("Bearer {t}");
    std::thread::sleep(Duration::from_secs(8));
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(envoy.get("/api", &[("authorization", &auth)]).status);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a valid token on the large listener: {statuses:?}; {} feed polls",
        feed.hits()
    );
}
