//! The filter holds a million live revocation entries (the default
//! `max_entries`), shared by every worker VM, and still answers correctly;
//! a small delta on top reaches every worker. Prints the memory it takes
//! (noted in the README). The feed here is served by the test (building a
//! million revocations through the auth service's API would only make the
//! test slow); it speaks both of the contract's encodings and answers in the
//! compact one only when the filter asks for it, as the service does.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use authflow_contract::revocation::{
    set::encode, RevocationFeed, RevokedToken, SetKey, COMPACT_FEED_TYPE,
};
use authflow_contract::AccessClaims;
use authflow_echo::EchoServer;
use jwt_simple::prelude::*;
use serde_json::json;
use support::*;

const ISS: &str = "https://auth.capacity.test";
/// With the delta of ten on top: a million, the default `max_entries`.
const ENTRIES: usize = 999_990;

/// One feed answer, with its compact encoding made once (a million digests
/// take a while in a debug build).
#[derive(Clone)]
struct Answer {
    feed: Arc<RevocationFeed>,
    compact: Arc<Vec<u8>>,
}

impl Answer {
    fn new(feed: RevocationFeed) -> Self {
        let compact = Arc::new(encode(&feed, SetKey::derive(ISS, "epoch")).bytes().to_vec());
        Answer {
            feed: Arc::new(feed),
            compact,
        }
    }
}

/// What the feed serves: the newest snapshot, and a delta from the snapshot's cursor.
struct Served {
    snapshot: Answer,
    delta: Option<Answer>,
}

/// Answers a poll from the newest cursor with `304`, from the snapshot's
/// cursor with the delta (if any), otherwise with the snapshot; in the
/// compact encoding when `Accept` lists it. Counts compact answers.
fn feed_server(served: Arc<Mutex<Served>>, compact_answers: Arc<Mutex<usize>>) -> u16 {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let s = served.lock().unwrap();
            let since = req
                .url()
                .split("since=")
                .nth(1)
                .map(|c| c.split('&').next().unwrap_or_default().to_owned());
            let newest = s.delta.as_ref().unwrap_or(&s.snapshot);
            let answer = match since.as_deref() {
                Some(c) if c == newest.feed.cursor => None,
                Some(c) if c == s.snapshot.feed.cursor => s.delta.clone(),
                _ => Some(s.snapshot.clone()),
            };
            drop(s);
            let Some(answer) = answer else {
                let _ = req.respond(tiny_http::Response::empty(304));
                continue;
            };
            let compact = req
                .headers()
                .iter()
                .any(|h| h.field.equiv("accept") && h.value.as_str().contains(COMPACT_FEED_TYPE));
            if compact {
                *compact_answers.lock().unwrap() += 1;
                let header =
                    tiny_http::Header::from_bytes("content-type", COMPACT_FEED_TYPE).unwrap();
                let _ = req.respond(
                    tiny_http::Response::from_data(answer.compact.as_slice()).with_header(header),
                );
            } else {
                let _ = req.respond(tiny_http::Response::from_string(
                    serde_json::to_string(&*answer.feed).unwrap(),
                ));
            }
        }
    });
    port
}

fn token(kp: &Ed25519KeyPair, jti: &str) -> String {
    let custom = AccessClaims {
        sid: format!("s-{jti}"),
        roles: vec![],
        scope: String::new(),
        dfp: None,
        client_id: None,
        cnf: None,
    };
    let c = Claims::with_custom_claims(custom, Duration::from_mins(10).into())
        .with_issuer(ISS)
        .with_subject("u")
        .with_audience("api")
        .with_jwt_id(jti);
    kp.sign(c).unwrap()
}

fn revoked(range: std::ops::Range<usize>) -> Vec<RevokedToken> {
    range
        .map(|i| RevokedToken {
            jti: format!("revoked-{i:07}"),
            expires_at: now() + 900,
        })
        .collect()
}

#[test]
fn holds_a_million_live_revocations_and_takes_deltas_on_top() {
    let kp = Ed25519KeyPair::generate().with_key_id("k");
    let empty = RevocationFeed {
        issuer: ISS.into(),
        cursor: "epoch.0".into(),
        snapshot: true,
        ..Default::default()
    };
    let served = Arc::new(Mutex::new(Served {
        snapshot: Answer::new(empty),
        delta: None,
    }));
    let compact_answers = Arc::new(Mutex::new(0));
    let feed_port = feed_server(Arc::clone(&served), Arc::clone(&compact_answers));
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let filter = json!({
        "providers": [{
            "name": "cap", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"inline": {"keys": [serde_json::from_str::<serde_json::Value>(&kp.public_key().to_jwk()).unwrap()]}},
            "revocations": {"cluster": "feed", "path": "/v1/revocations", "poll_interval_ms": 200, "wait_secs": 0}
        }]
    });
    let envoy = Envoy::start(EnvoyOptions {
        filter,
        clusters: vec![
            ("backend".into(), backend.addr.port()),
            ("feed".into(), feed_port),
        ],
        concurrency: 2,
        routes: vec![],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(eventually(Duration::from_secs(10), || envoy
        .stat("revocations.fetch_ok")
        >= 1));
    let ok = token(&kp, "live-token");
    assert_eq!(
        envoy
            .get("/", &[("authorization", &format!("Bearer {ok}"))])
            .status,
        200
    );
    let rss_empty = envoy.rss_kib();

    // A million entries (less the ten of the delta): over the JSON bound, so only the compact feed carries them.
    let snapshot = RevocationFeed {
        issuer: ISS.into(),
        cursor: "epoch.1".into(),
        snapshot: true,
        revoked_tokens: revoked(0..ENTRIES),
        ..Default::default()
    };
    assert!(
        serde_json::to_vec(&snapshot).unwrap().len()
            > authflow_contract::revocation::MAX_FEED_BYTES
    );
    let snapshot = Answer::new(snapshot);
    served.lock().unwrap().snapshot = snapshot;
    assert!(
        eventually(Duration::from_secs(60), || envoy
            .stat("revocations.entries")
            == ENTRIES as u64),
        "entries: {}, rejected {}, failed {}",
        envoy.stat("revocations.entries"),
        envoy.stat("revocations.rejected"),
        envoy.stat("revocations.fetch_failed")
    );
    assert!(
        *compact_answers.lock().unwrap() >= 1,
        "the filter asked for the compact feed"
    );
    // Let every worker VM adopt the shared list before asking both of them.
    std::thread::sleep(Duration::from_millis(1500));
    for i in [0, 499_999, ENTRIES - 1] {
        let r = envoy.get(
            "/",
            &[(
                "authorization",
                &format!("Bearer {}", token(&kp, &format!("revoked-{i:07}"))),
            )],
        );
        assert_eq!(r.status, 401, "entry {i}");
        assert!(r
            .header("www-authenticate")
            .unwrap()
            .contains("token revoked"));
    }
    for _ in 0..4 {
        assert_eq!(
            envoy
                .get("/", &[("authorization", &format!("Bearer {ok}"))])
                .status,
            200
        );
    }
    let rss_full = envoy.rss_kib();

    // Ten more: a delta on top, on every worker, up to the default bound.
    let delta = RevocationFeed {
        issuer: ISS.into(),
        cursor: "epoch.2".into(),
        snapshot: false,
        revoked_tokens: revoked(ENTRIES..ENTRIES + 10),
        ..Default::default()
    };
    let fresh = token(&kp, &format!("revoked-{:07}", ENTRIES + 9));
    assert_eq!(
        envoy
            .get("/", &[("authorization", &format!("Bearer {fresh}"))])
            .status,
        200,
        "not revoked yet"
    );
    served.lock().unwrap().delta = Some(Answer::new(delta));
    assert!(
        eventually(Duration::from_secs(10), || envoy
            .stat("revocations.entries")
            == ENTRIES as u64 + 10),
        "entries: {}, ok {}, rejected {}, failed {}\n{}",
        envoy.stat("revocations.entries"),
        envoy.stat("revocations.fetch_ok"),
        envoy.stat("revocations.rejected"),
        envoy.stat("revocations.fetch_failed"),
        envoy
            .log()
            .lines()
            .filter(|l| l.contains("authflow"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..4 {
        assert_eq!(
            envoy
                .get("/", &[("authorization", &format!("Bearer {fresh}"))])
                .status,
            401,
            "the delta reached every worker"
        );
        let r = envoy.get(
            "/",
            &[(
                "authorization",
                &format!("Bearer {}", token(&kp, "revoked-0000007")),
            )],
        );
        assert_eq!(r.status, 401, "the million are still there");
        assert_eq!(
            envoy
                .get("/", &[("authorization", &format!("Bearer {ok}"))])
                .status,
            200
        );
    }
    println!(
        "Envoy RSS (2 workers): {} MiB with an empty list, {} MiB with {ENTRIES} live entries (+{} MiB)",
        rss_empty / 1024,
        rss_full / 1024,
        rss_full.saturating_sub(rss_empty) / 1024
    );
}
