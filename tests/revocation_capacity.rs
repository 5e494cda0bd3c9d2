//! The filter holds 100k live revocation entries, shared by every worker VM,
//! and still answers correctly. Prints the memory it takes (noted in the README).
//! The feed here is served by the test (building 100k revocations through the
//! auth service's API would only make the test slow); its shape is the contract's.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use authflow_contract::revocation::{RevocationFeed, RevokedToken};
use authflow_contract::AccessClaims;
use authflow_echo::EchoServer;
use jwt_simple::prelude::*;
use serde_json::json;
use support::*;

const ISS: &str = "https://auth.capacity.test";
const ENTRIES: usize = 100_000;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Serves `feed` to any poll whose `since` differs from its cursor, `304` otherwise.
fn feed_server(feed: Arc<Mutex<RevocationFeed>>) -> u16 {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let f = feed.lock().unwrap().clone();
            let since = req.url().split("since=").nth(1).map(str::to_owned);
            if since.as_deref() == Some(f.cursor.as_str()) {
                let _ = req.respond(tiny_http::Response::empty(304));
            } else {
                let _ = req.respond(tiny_http::Response::from_string(serde_json::to_string(&f).unwrap()));
            }
        }
    });
    port
}

fn token(kp: &Ed25519KeyPair, jti: &str) -> String {
    let custom = AccessClaims { sid: format!("s-{jti}"), roles: vec![], scope: String::new(), dfp: None, client_id: None };
    let c = Claims::with_custom_claims(custom, Duration::from_mins(10).into()).with_issuer(ISS).with_subject("u").with_jwt_id(jti);
    kp.sign(c).unwrap()
}

#[test]
fn holds_100k_live_revocations() {
    let kp = Ed25519KeyPair::generate().with_key_id("k");
    let feed = Arc::new(Mutex::new(RevocationFeed { issuer: ISS.into(), cursor: "0".into(), snapshot: true, ..Default::default() }));
    let feed_port = feed_server(Arc::clone(&feed));
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let filter = json!({
        "providers": [{
            "name": "cap", "issuer": ISS, "algorithms": ["EdDSA"],
            "jwks": {"inline": {"keys": [serde_json::from_str::<serde_json::Value>(&kp.public_key().to_jwk()).unwrap()]}},
            "revocations": {"cluster": "feed", "path": "/v1/revocations", "poll_interval_ms": 200}
        }]
    });
    let envoy = Envoy::start(EnvoyOptions {
        filter,
        clusters: vec![("backend".into(), backend.addr.port()), ("feed".into(), feed_port)],
        concurrency: 2,
        routes: vec![],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(eventually(Duration::from_secs(10), || envoy.stat("revocations.fetch_ok") >= 1));
    let ok = token(&kp, "live-token");
    assert_eq!(envoy.get("/", &[("authorization", &format!("Bearer {ok}"))]).status, 200);
    let rss_empty = envoy.rss_kib();

    {
        let mut f = feed.lock().unwrap();
        f.cursor = "1".into();
        f.revoked_tokens =
            (0..ENTRIES).map(|i| RevokedToken { jti: format!("revoked-{i:06}"), expires_at: now() + 900 }).collect();
    }
    assert!(
        eventually(Duration::from_secs(30), || envoy.stat("revocations.entries") == ENTRIES as u64),
        "entries: {}",
        envoy.stat("revocations.entries")
    );
    // Let every worker VM adopt the shared list before asking both of them.
    std::thread::sleep(Duration::from_millis(500));
    for i in [0, 49_999, 99_999] {
        let revoked = token(&kp, &format!("revoked-{i:06}"));
        let r = envoy.get("/", &[("authorization", &format!("Bearer {revoked}"))]);
        assert_eq!(r.status, 401, "entry {i}");
        assert!(r.header("www-authenticate").unwrap().contains("token revoked"));
    }
    for _ in 0..4 {
        assert_eq!(envoy.get("/", &[("authorization", &format!("Bearer {ok}"))]).status, 200);
    }
    let rss_full = envoy.rss_kib();
    println!(
        "Envoy RSS (2 workers): {} MiB with an empty list, {} MiB with {ENTRIES} live entries (+{} MiB)",
        rss_empty / 1024,
        rss_full / 1024,
        rss_full.saturating_sub(rss_empty) / 1024
    );
}
