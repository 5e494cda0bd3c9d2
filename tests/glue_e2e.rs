//! End to end through the real Envoy: how the filter's background side (key
//! fetches, state shared between worker VMs, paused requests) holds up when
//! several filter configurations share a VM, and against hostile tokens.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use authflow_echo::EchoServer;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use support::*;

fn token(key: &Ed25519KeyPair, issuer: &str) -> String {
    let c = claims_for(
        user_with_roles(&["user"]),
        issuer,
        "alice",
        Some("jti-glue"),
    );
    key.sign(c).unwrap()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// One provider fetching its keys from `cluster`, with `jwks` settings merged in.
fn filter_config(name: &str, issuer: &str, cluster: &str, jwks: Value, extra: Value) -> Value {
    let mut remote = json!({"cluster": cluster, "path": "/jwks.json"});
    for (k, v) in jwks.as_object().unwrap() {
        remote[k] = v.clone();
    }
    let mut c = json!({
        "providers": [{
            "name": name, "issuer": issuer, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": remote}
        }]
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// Two filter configurations on one Envoy: the same `vm_id` (as every shipped
/// config has), the same provider name, different issuers and key sets, each
/// on its own listener. Whatever one fetches and shares must never become the
/// other's keys: issuer B's key must not sign for issuer A, nor A's for B.
#[test]
fn two_filter_configs_with_one_provider_name_keep_their_own_keys() {
    const ISS_A: &str = "https://a.glue.test";
    const ISS_B: &str = "https://b.glue.test";
    // The same kid on both sides: a key set adopted from the other filter
    // would be used for the token instead of being refetched.
    let key_a = Ed25519KeyPair::generate().with_key_id("k1");
    let key_b = Ed25519KeyPair::generate().with_key_id("k1");
    let jwks_a = JwksServer::start(jwks_of(&[key_a.public_key().to_jwk()]));
    let jwks_b = JwksServer::start(jwks_of(&[key_b.public_key().to_jwk()]));
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let refresh = json!({"refresh_interval_secs": 1});
    let filter_a = filter_config("main", ISS_A, "jwks_a", refresh.clone(), json!({}));
    let filter_b = filter_config("main", ISS_B, "jwks_b", refresh, json!({}));
    let port_b = free_port();
    let clusters = vec![
        ("backend".into(), backend.addr.port()),
        ("jwks_a".into(), jwks_a.port),
        ("jwks_b".into(), jwks_b.port),
    ];
    let envoy = Envoy::start_doc(2, |port, admin_port| {
        let mut doc = envoy_config(&filter_a, &clusters, port, admin_port);
        let mut second = doc["static_resources"]["listeners"][0].clone();
        second["name"] = json!("second");
        second["address"]["socket_address"]["port_value"] = json!(port_b);
        let wasm = &mut second["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
            ["typed_config"]["config"];
        wasm["configuration"]["value"] = json!(filter_b.to_string());
        doc["static_resources"]["listeners"]
            .as_array_mut()
            .unwrap()
            .push(second);
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let url_b = |path: &str| format!("http://127.0.0.1:{port_b}{path}");

    let own_a = token(&key_a, ISS_A);
    let own_b = token(&key_b, ISS_B);
    assert!(
        eventually(Duration::from_secs(10), || envoy
            .get("/api", &[("authorization", &bearer(&own_a))])
            .status
            == 200
            && get(&url_b("/api"), &[("authorization", &bearer(&own_b))])
                .status
                == 200),
        "each listener accepts its own issuer's tokens"
    );
    // Several refresh rounds: every VM has published and adopted by now.
    std::thread::sleep(Duration::from_millis(3_500));
    for _ in 0..6 {
        let forged_a = token(&key_b, ISS_A);
        let forged_b = token(&key_a, ISS_B);
        let r = envoy.get("/api", &[("authorization", &bearer(&forged_a))]);
        assert_eq!(
            r.status, 401,
            "issuer A's listener accepted a token signed with B's key: {r:?}"
        );
        let r = get(&url_b("/api"), &[("authorization", &bearer(&forged_b))]);
        assert_eq!(
            r.status, 401,
            "issuer B's listener accepted a token signed with A's key: {r:?}"
        );
        assert_eq!(
            envoy
                .get("/api", &[("authorization", &bearer(&own_a))])
                .status,
            200,
            "A still accepts its own"
        );
        assert_eq!(
            get(&url_b("/api"), &[("authorization", &bearer(&own_b))]).status,
            200,
            "B still accepts its own"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn single_listener(filter: Value, jwks_port: u16, backend: &EchoServer) -> Envoy {
    Envoy::start(EnvoyOptions {
        filter,
        clusters: vec![
            ("backend".into(), backend.addr.port()),
            ("jwks".into(), jwks_port),
        ],
        concurrency: 1,
        routes: vec![],
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// An agent that gives up long before `key_wait_ms`: a request still paused
/// for keys shows up as a client timeout, not as a slow pass.
fn impatient() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(4)))
        .build()
        .into()
}

/// Random `kid`s cannot hold requests: once the one early refetch the rate
/// limit allows has been spent, a token with an unknown `kid` is answered at
/// once (401 unknown key) instead of waiting `key_wait_ms` for a fetch that
/// is not going to happen — here 20 s against a client that waits 4 s.
#[test]
fn unknown_kids_after_the_early_refetch_are_answered_at_once() {
    const ISS: &str = "https://kid.glue.test";
    let key = Ed25519KeyPair::generate().with_key_id("real");
    let jwks = JwksServer::start(jwks_of(&[key.public_key().to_jwk()]));
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let filter = filter_config(
        "kid",
        ISS,
        "jwks",
        json!({"refresh_interval_secs": 300, "min_refetch_interval_secs": 600}),
        json!({"key_wait_ms": 20_000}),
    );
    let envoy = single_listener(filter, jwks.port, &backend);
    let own = token(&key, ISS);
    assert!(eventually(Duration::from_secs(10), || envoy
        .get("/api", &[("authorization", &bearer(&own))])
        .status
        == 200));

    // The first unknown kid spends the early refetch (and waits for it: it is in flight).
    let first = token(&Ed25519KeyPair::generate().with_key_id("random-0"), ISS);
    let r = envoy.get("/api", &[("authorization", &bearer(&first))]);
    assert_eq!(r.status, 401, "{r:?}");
    let hits = jwks.hits();

    // A burst of random kids, all at once: none may wait for keys.
    let url = envoy.url("/api");
    let burst: Vec<_> = (1..=24)
        .map(|i| {
            let t = token(
                &Ed25519KeyPair::generate().with_key_id(&format!("random-{i}")),
                ISS,
            );
            let url = url.clone();
            std::thread::spawn(move || {
                impatient()
                    .get(&url)
                    .header("authorization", &bearer(&t))
                    .call()
                    .map(|mut r| {
                        let challenge = r
                            .headers()
                            .get("www-authenticate")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        (
                            r.status().as_u16(),
                            challenge,
                            r.body_mut().read_to_string().unwrap_or_default(),
                        )
                    })
            })
        })
        .collect();
    for (i, handle) in burst.into_iter().enumerate() {
        let (status, challenge, body) = handle
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("random kid {i}: not answered in time: {e}"));
        assert_eq!(status, 401, "random kid {i}: {body}");
        assert!(
            challenge.contains("error=\"invalid_token\"") && challenge.contains("unknown key"),
            "random kid {i}: {challenge}"
        );
    }
    assert_eq!(
        jwks.hits(),
        hits,
        "no extra fetch: the early refetch is rate limited"
    );
    assert_eq!(
        envoy
            .get("/api", &[("authorization", &bearer(&own))])
            .status,
        200,
        "known keys still work"
    );
}

/// A `STRICT_DNS` cluster (as in the compose and Kubernetes configs) is not
/// resolved yet when the first key fetch goes out at startup, and Envoy
/// refuses that callout. Startup stays quiet and the counters honest: the
/// callout is retried shortly, and a not-yet-ready cluster is not a failed fetch.
#[test]
fn a_dns_cluster_still_resolving_at_startup_is_not_a_failed_fetch() {
    const ISS: &str = "https://dns.glue.test";
    let key = Ed25519KeyPair::generate().with_key_id("k");
    let jwks = JwksServer::start(jwks_of(&[key.public_key().to_jwk()]));
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    // Resolution takes a second: Envoy refuses callouts to the cluster until then.
    let dns = SlowDns::start(Duration::from_millis(1_000));
    let filter = filter_config(
        "dns",
        ISS,
        "jwks",
        json!({"refresh_interval_secs": 300}),
        json!({}),
    );
    let clusters = vec![
        ("backend".into(), backend.addr.port()),
        ("jwks".into(), jwks.port),
    ];
    let envoy = Envoy::start_doc(2, |port, admin_port| {
        let mut doc = envoy_config(&filter, &clusters, port, admin_port);
        let jwks_cluster = doc["static_resources"]["clusters"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["name"] == "jwks")
            .unwrap();
        jwks_cluster["type"] = json!("STRICT_DNS");
        jwks_cluster["dns_lookup_family"] = json!("V4_ONLY");
        jwks_cluster["typed_dns_resolver_config"] = json!({
            "name": "envoy.network.dns_resolver.cares",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
                "resolvers": [{"socket_address": {"address": "127.0.0.1", "port_value": dns.port}}],
                "dns_resolver_options": {"no_default_search_domain": true}
            }
        });
        jwks_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] =
            json!("jwks.glue.test");
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let own = token(&key, ISS);
    assert!(
        eventually(Duration::from_secs(10), || envoy
            .get("/api", &[("authorization", &bearer(&own))])
            .status
            == 200),
        "keys load through the DNS cluster: {}",
        envoy.log()
    );
    let log = envoy.log();
    assert!(
        !log.contains("cannot call cluster"),
        "no warning for a cluster that was only not ready yet:\n{log}"
    );
    assert_eq!(
        envoy.stat("jwks.fetch_failed"),
        0,
        "no failed fetch counted"
    );
    assert!(envoy.stat("jwks.fetch_ok") >= 1);
    assert!(
        envoy.stat("jwks.dispatch_deferred") >= 1,
        "the refused startup callouts are counted as deferred"
    );
}

/// An Envoy of `concurrency` workers with one provider (`name`, `issuer`):
/// keys from `jwks`, its revocation list from `feed` polled every
/// `poll_interval_ms` (no long poll), requests to `backend`; `extra` merged
/// into the filter's configuration.
fn with_feed(
    (name, issuer): (&str, &str),
    (jwks, feed, backend): (&JwksServer, &JwksServer, &EchoServer),
    extra: Value,
    poll_interval_ms: u64,
    concurrency: u32,
) -> Envoy {
    let mut filter = filter_config(name, issuer, "jwks", json!({}), extra);
    filter["providers"][0]["revocations"] = json!({"cluster": "feed", "path": "/v1/revocations",
        "poll_interval_ms": poll_interval_ms, "wait_secs": 0});
    Envoy::start(EnvoyOptions {
        filter,
        clusters: vec![
            ("backend".into(), backend.addr.port()),
            ("jwks".into(), jwks.port),
            ("feed".into(), feed.port),
        ],
        concurrency,
        routes: vec![],
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A worker that just started knows no revocation yet. Here the feed answers
/// with something that is no feed: a token must not pass on the empty list
/// (it waits for the list, then the staleness policy refuses it, 503), and
/// once a real list comes it is judged by it.
#[test]
fn no_token_passes_before_the_first_revocation_list() {
    const ISS: &str = "https://feed.glue.test";
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let jwks = JwksServer::start(jwks_of(&[key.public_key().to_jwk()]));
    let feed = JwksServer::start("this is not a revocation feed".into());
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = with_feed(
        ("feed", ISS),
        (&jwks, &feed, &backend),
        json!({"key_wait_ms": 3_000}),
        200,
        2,
    );
    let own = token(&key, ISS);
    assert!(
        eventually(Duration::from_secs(10), || feed.hits() > 0),
        "the feed is polled"
    );
    for _ in 0..4 {
        let r = envoy.get("/api", &[("authorization", &bearer(&own))]);
        assert_eq!(
            r.status, 503,
            "a token judged by a list that never came: {r:?}"
        );
        assert!(r.header("retry-after").is_some(), "{r:?}");
    }
    assert!(
        envoy.stat("revocations.first_list_waits") > 0,
        "the requests waited for the list first"
    );

    // The real list: the subject is banned.
    let banned = json!({"issuer": ISS, "cursor": "1", "snapshot": true,
        "banned_subjects": [{"sub": "alice", "not_before": now() + 60, "expires_at": now() + 900}]});
    feed.set(banned.to_string());
    assert!(
        eventually(Duration::from_secs(10), || envoy
            .get("/api", &[("authorization", &bearer(&own))])
            .status
            == 401),
        "once the list lands the token is judged by it (banned: 401)"
    );
}

/// A feed that answers the first poll (no cursor: it asks for a snapshot)
/// with a delta: a delta only says what changed since a cursor, it is no
/// list on its own. It is refused, no token passes on it (the list never
/// came: 503), and once a snapshot comes the token is judged by that.
#[test]
fn a_delta_never_becomes_the_whole_list() {
    const ISS: &str = "https://delta.glue.test";
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let jwks = JwksServer::start(jwks_of(&[key.public_key().to_jwk()]));
    let delta = json!({"issuer": ISS, "cursor": "e.2", "snapshot": false,
        "banned_subjects": [{"sub": "bob", "not_before": now() + 60, "expires_at": now() + 900}]});
    let feed = JwksServer::start(delta.to_string());
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = with_feed(
        ("delta", ISS),
        (&jwks, &feed, &backend),
        json!({"key_wait_ms": 1_000}),
        200,
        2,
    );
    let own = token(&key, ISS);
    assert!(
        eventually(Duration::from_secs(10), || envoy
            .stat("revocations.rejected")
            >= 2),
        "the delta is refused"
    );
    for _ in 0..4 {
        let r = envoy.get("/api", &[("authorization", &bearer(&own))]);
        assert_eq!(r.status, 503, "no list came, only a delta: {r:?}");
    }
    assert_eq!(envoy.stat("revocations.fetch_ok"), 0);

    let banned = json!({"issuer": ISS, "cursor": "e.3", "snapshot": true,
        "banned_subjects": [{"sub": "alice", "not_before": now() + 60, "expires_at": now() + 900}]});
    feed.set(banned.to_string());
    assert!(
        eventually(Duration::from_secs(10), || envoy
            .get("/api", &[("authorization", &bearer(&own))])
            .status
            == 401),
        "the snapshot is the list (alice banned: 401)"
    );
}

/// At startup the keys may come first and the revocation list after: a
/// request that waited for the keys goes on waiting for the list (within
/// `key_wait_ms`), rather than being judged stale the moment the keys land.
#[test]
fn a_request_that_waited_for_keys_waits_for_the_list_too() {
    const ISS: &str = "https://slow.glue.test";
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let jwks = JwksServer::start_slow(
        jwks_of(&[key.public_key().to_jwk()]),
        Duration::from_millis(1_000),
    );
    let empty = json!({"issuer": ISS, "cursor": "1", "snapshot": true});
    let feed = JwksServer::start_slow(empty.to_string(), Duration::from_millis(2_000));
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = with_feed(
        ("slow", ISS),
        (&jwks, &feed, &backend),
        json!({"key_wait_ms": 8_000}),
        500,
        1,
    );
    // Sent before the keys came (they take a second): it waits for them, then for the list.
    let r = envoy.get("/api", &[("authorization", &bearer(&token(&key, ISS)))]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        envoy.stat("key_waits") > 0 && envoy.stat("revocations.first_list_waits") == 0,
        "it paused for the keys first"
    );
}

/// A request with a body whose token makes it wait for keys (none loaded
/// yet at startup, or an unknown `kid` granted the early refetch) must not
/// reach the backend: when its body arrives while it is paused, the filter
/// must keep it paused, not let Envoy continue the stream. Here the JWKS
/// server is slow, so the key fetch is in flight while the body comes; the
/// token is forged (signed by a key the issuer never published) and carries
/// a client-made `x-auth-user: admin`.
#[test]
fn a_paused_request_is_not_let_through_by_its_body() {
    const ISS: &str = "https://body.glue.test";
    let real = Ed25519KeyPair::generate().with_key_id("real");
    let jwks = JwksServer::start_slow(
        jwks_of(&[real.public_key().to_jwk()]),
        Duration::from_secs(4),
    );
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let filter = json!({
        "providers": [{
            "name": "body", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "jwks", "path": "/jwks.json", "min_refetch_interval_secs": 1}}
        }],
        "key_wait_ms": 10_000
    });
    let envoy = Envoy::start(EnvoyOptions {
        filter,
        clusters: vec![
            ("backend".into(), backend.addr.port()),
            ("jwks".into(), jwks.port),
        ],
        concurrency: 1,
        routes: vec![],
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let claims = || {
        claims_for(
            user_with_roles(&["admin"]),
            ISS,
            "mallory",
            Some("jti-body"),
        )
    };
    // 1. Startup: the first key fetch is still out (the JWKS server takes 4 s).
    let forged = Ed25519KeyPair::generate()
        .with_key_id("real")
        .sign(claims())
        .unwrap();
    let r = envoy.post(
        "/api/admin/delete-everything",
        &[
            ("authorization", &format!("Bearer {forged}")),
            ("x-auth-user", "admin"),
        ],
        &json!({"please": "delete"}),
    );
    assert_ne!(
        r.status, 200,
        "a forged token's POST reached the backend while the filter waited for keys: {r:?}"
    );

    // 2. Steady state: keys loaded, a token naming an unknown kid is granted
    // the early refetch and waits for it; its body comes meanwhile.
    let own = real.sign(claims()).unwrap();
    assert!(eventually(Duration::from_secs(15), || envoy
        .get("/api", &[("authorization", &format!("Bearer {own}"))])
        .status
        == 200));
    std::thread::sleep(Duration::from_millis(1_500));
    let unknown = Ed25519KeyPair::generate()
        .with_key_id("unknown")
        .sign(claims())
        .unwrap();
    let r = envoy.post(
        "/api/admin/delete-everything",
        &[
            ("authorization", &format!("Bearer {unknown}")),
            ("x-auth-user", "admin"),
        ],
        &json!({"please": "delete"}),
    );
    assert_ne!(
        r.status, 200,
        "a forged token's POST reached the backend while it waited for the early refetch: {r:?}"
    );
}

/// Sends `n` requests with these tokens on a connection each, all at once
/// (the first ones pause, waiting for keys), and waits for every answer.
fn crowd(envoy: &Envoy, tokens: impl Iterator<Item = String>) {
    crowd_statuses(envoy, tokens);
}

/// [`crowd`], with each answer's status.
fn crowd_statuses(envoy: &Envoy, tokens: impl Iterator<Item = String>) -> Vec<u16> {
    use std::io::{Read, Write};
    let conns: Vec<std::net::TcpStream> = tokens
        .map(|t| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", envoy.port)).unwrap();
            let request = format!(
                "GET /api HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\n\r\n",
                bearer(&t)
            );
            c.write_all(request.as_bytes()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c
        })
        .collect();
    conns
        .into_iter()
        .map(|mut c| {
            let mut head = [0u8; 12];
            let _ = c.read_exact(&mut head);
            std::str::from_utf8(&head[9..12])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// The worker still serves: its VM did not die (Envoy then refuses every
/// request of the worker with a bare 503, `fail_open: false`, for good).
fn assert_vm_serves(envoy: &Envoy, token: &str) {
    let serves = eventually(Duration::from_secs(5), || {
        envoy
            .get("/api", &[("authorization", &bearer(token))])
            .status
            == 200
    });
    let log = envoy.log();
    assert!(
        serves && !log.contains("Maximum call stack"),
        "the VM died: {log}"
    );
}

/// Requests paused for keys are settled together when the fetch they wait
/// for ends. Envoy runs the local replies a VM call asked for after the call
/// returns; each enters the VM again (its response headers) and runs the
/// replies queued after it inside that entry, so they nest: a few hundred
/// exhaust V8's stack and the VM dies. Here, at startup, a crowd of forged
/// tokens (a `kid` the issuer never published) waits for the first keys and
/// is refused when they come: the VM must live on.
#[test]
fn many_paused_requests_refused_at_once_leave_the_vm_serving() {
    let start = SlowStart::new(json!({"key_wait_ms": 20_000}));
    let forged = token(
        &Ed25519KeyPair::generate().with_key_id("never"),
        SlowStart::ISS,
    );
    // Sent while the first key fetch is out (the JWKS server takes 3 s).
    crowd(&start.envoy, std::iter::repeat_n(forged, 1_024));
    assert_vm_serves(&start.envoy, &token(&start.key, SlowStart::ISS));
}

/// An Envoy whose first key fetch takes 3 s, with `extra` filter settings
/// (how long requests wait for it, the failure mode).
struct SlowStart {
    envoy: Envoy,
    key: Ed25519KeyPair,
    _jwks: JwksServer,
    _backend: EchoServer,
}

impl SlowStart {
    const ISS: &str = "https://slow-start.glue.test";

    fn new(extra: Value) -> Self {
        let key = Ed25519KeyPair::generate().with_key_id("k1");
        let jwks = JwksServer::start_slow(
            jwks_of(&[key.public_key().to_jwk()]),
            Duration::from_secs(3),
        );
        let backend = EchoServer::start("127.0.0.1:0").unwrap();
        let filter = filter_config("slow-start", Self::ISS, "jwks", json!({}), extra);
        let envoy = single_listener(filter, jwks.port, &backend);
        SlowStart {
            envoy,
            key,
            _jwks: jwks,
            _backend: backend,
        }
    }

    /// A token with the key's `kid`, signed with another key.
    fn junk(&self) -> String {
        token(&Ed25519KeyPair::generate().with_key_id("k1"), Self::ISS)
    }
}

/// Finding: with `failure_mode: fail_open`, a request that found the paused
/// list full while the first key fetch was out (every start) was answered
/// as if the auth system were down: let through, its token unchecked. A
/// crowd of junk tokens sent at start got the 129th and later through. A
/// full list is a flood, not an auth system down: those get 503.
#[test]
fn a_crowd_at_start_does_not_fail_open() {
    let start = SlowStart::new(json!({"key_wait_ms": 20_000, "failure_mode": "fail_open"}));
    let (envoy, junk) = (&start.envoy, start.junk());
    let statuses = crowd_statuses(envoy, std::iter::repeat_n(junk, 300));
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(passed, 0, "junk tokens let through: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(envoy.stat("key_waits_overflow") > 0, "the list was full");
}

/// Finding: with `failure_mode: fail_open`, requests whose `key_wait_ms`
/// ran out while the first key fetch was still out (an auth system slow
/// but alive at start) were failed open, their junk tokens unchecked. The
/// fetch being out is no auth system down: 503.
#[test]
fn a_wait_that_runs_out_while_the_first_fetch_is_out_does_not_fail_open() {
    let start = SlowStart::new(json!({"key_wait_ms": 1_000, "failure_mode": "fail_open"}));
    let (envoy, junk) = (&start.envoy, start.junk());
    let statuses = crowd_statuses(envoy, std::iter::repeat_n(junk.clone(), 20));
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    // Once the keys have come, the junk is refused as such and the real token passes.
    let own = token(&start.key, SlowStart::ISS);
    assert!(eventually(Duration::from_secs(10), || envoy
        .get("/api", &[("authorization", &bearer(&own))])
        .status
        == 200));
    assert_eq!(
        envoy
            .get("/api", &[("authorization", &bearer(&junk))])
            .status,
        401
    );
}

/// The same in steady state, by anyone with no credentials: a forged token
/// with an unknown `kid` is granted the early refetch, and every forged
/// request arriving while that fetch is out waits for it too; when it ends
/// without their keys they are all refused at once.
#[test]
fn forged_kids_waiting_on_one_refetch_do_not_kill_the_vm() {
    const ISS: &str = "https://refetch.glue.test";
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let jwks = JwksServer::start_slow(
        jwks_of(&[key.public_key().to_jwk()]),
        Duration::from_secs(2),
    );
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let filter = filter_config(
        "refetch",
        ISS,
        "jwks",
        json!({"min_refetch_interval_secs": 1}),
        json!({"key_wait_ms": 10_000}),
    );
    let envoy = single_listener(filter, jwks.port, &backend);
    let own = token(&key, ISS);
    assert!(eventually(Duration::from_secs(10), || envoy
        .get("/api", &[("authorization", &bearer(&own))])
        .status
        == 200));
    std::thread::sleep(Duration::from_millis(1_500));
    crowd(
        &envoy,
        (0..1_024).map(|i| {
            token(
                &Ed25519KeyPair::generate().with_key_id(&format!("x{i}")),
                ISS,
            )
        }),
    );
    assert_vm_serves(&envoy, &own);
    assert!(
        envoy.stat("key_waits") >= 100,
        "they waited for the refetch"
    );
}

/// An upstream that holds every request open: an answer begun (a chunked
/// event stream, one event) and never ended, for as long as the test runs.
fn holding_upstream(conns: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // A thread each, so that connections are taken as fast as Envoy
        // opens them (the listen backlog is short).
        for conn in listener.incoming().take(conns) {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n6\r\ntick\n\n\r\n";
                if c.write_all(head).is_ok() {
                    // Until Envoy lets go of it.
                    let _ = c.read(&mut buf);
                }
            });
        }
    });
    port
}

/// Open streams whose token no longer passes are reset together at a sweep,
/// with no bound on how many. Local replies to paused requests nest when
/// Envoy runs them after the VM call (a few hundred exhaust V8's stack:
/// [`many_paused_requests_refused_at_once_leave_the_vm_serving`]); resets,
/// each entering the VM again as its stream is deleted, must not. Here a
/// few hundred streams of one key end at once when the issuer withdraws it:
/// every one ends, and the VM lives on.
#[test]
fn many_open_streams_ended_at_once_leave_the_vm_serving() {
    use std::io::{Read, Write};
    const ISS: &str = "https://streams.glue.test";
    const STREAMS: usize = 400;
    const BATCH: usize = 50;
    let withdrawn = Ed25519KeyPair::generate().with_key_id("k1");
    let kept = Ed25519KeyPair::generate().with_key_id("k2");
    let jwks = JwksServer::start(jwks_of(&[
        withdrawn.public_key().to_jwk(),
        kept.public_key().to_jwk(),
    ]));
    let echo = EchoServer::start("127.0.0.1:0").unwrap();
    let upstream = holding_upstream(STREAMS + 16);
    let filter = filter_config(
        "streams",
        ISS,
        "jwks",
        json!({"min_refetch_interval_secs": 1}),
        json!({}),
    );
    let envoy = Envoy::start(EnvoyOptions {
        filter,
        clusters: vec![
            ("backend".into(), upstream),
            ("jwks".into(), jwks.port),
            ("echo".into(), echo.addr.port()),
        ],
        concurrency: 1,
        routes: routes_to("echo", &["/echo"]),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let survivor = token(&kept, ISS);
    let serves = |t: &str| envoy.get("/echo", &[("authorization", &bearer(t))]).status == 200;
    assert!(eventually(Duration::from_secs(10), || serves(&survivor)));

    let doomed = bearer(&token(&withdrawn, ISS));
    // Opened a batch at a time, each flowing before the next: a thousand
    // connections at once overran the upstream's listen backlog on a busy
    // machine (Envoy's connect timing out: 503).
    let mut streams: Vec<std::net::TcpStream> = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS / BATCH {
        let mut batch: Vec<std::net::TcpStream> = (0..BATCH)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", envoy.port)).unwrap();
                let request =
                    format!("GET /events HTTP/1.1\r\nhost: x\r\nauthorization: {doomed}\r\n\r\n");
                c.write_all(request.as_bytes()).unwrap();
                c
            })
            .collect();
        for c in &mut batch {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 512];
            let n = c.read(&mut buf).unwrap();
            assert!(
                buf[..n].starts_with(b"HTTP/1.1 200"),
                "the stream flows: {}",
                String::from_utf8_lossy(&buf[..n]),
            );
        }
        streams.append(&mut batch);
    }
    // Old enough to be judged again; then the key leaves the issuer's set,
    // and a token of a new key brings the fetch that tells the filter.
    std::thread::sleep(Duration::from_millis(1_500));
    let successor = Ed25519KeyPair::generate().with_key_id("k3");
    jwks.set(jwks_of(&[
        kept.public_key().to_jwk(),
        successor.public_key().to_jwk(),
    ]));
    assert!(eventually(Duration::from_secs(10), || serves(&token(
        &successor, ISS
    ))));
    assert!(
        eventually(Duration::from_secs(10), || envoy.stat("streams_ended")
            >= STREAMS as u64),
        "every stream of the withdrawn key ends ({} did)",
        envoy.stat("streams_ended")
    );
    let serves_after = eventually(Duration::from_secs(5), || serves(&survivor));
    let log = envoy.log();
    assert!(
        serves_after && !log.contains("Maximum call stack"),
        "the VM died: {log}"
    );
}
