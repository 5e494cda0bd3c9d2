//! Several auth service instances behind one Envoy, with the `authflow_auth`
//! cluster as `envoy/compose-postgres.yaml` ships it for its two replicas: when
//! one replica is killed, sign-ins and the revocation feed go on through the
//! other at once. A killed container's address stops answering, so every new
//! connection to it waits out the connect timeout; before Envoy's probe takes
//! it out, such waits delayed the feed's next poll, and with it a ban, by
//! seconds.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use authflow_echo::EchoServer;
use serde_json::{json, Value};
use support::link::Link;
use support::stack::{filter_config, Stack};
use support::*;

const ISSUER: &str = "http://127.0.0.1:8081";

fn shipped_config() -> Value {
    let text = std::fs::read_to_string(repo_root().join("envoy/compose-postgres.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// The shipped multi-replica `authflow_auth` cluster, its endpoints on
/// 127.0.0.1:`ports`; everything else as shipped.
fn shipped_replica_cluster(ports: &[u16]) -> Value {
    let mut cluster = shipped_config()["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "authflow_auth")
        .unwrap()
        .clone();
    cluster["type"] = json!("STATIC");
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
        .collect();
    cluster
}

/// The shipped routes' action for the auth service's public API (with what
/// they do when a replica cannot be reached), under each of `prefixes`.
fn shipped_auth_routes(prefixes: &[&str]) -> Vec<Value> {
    let doc = shipped_config();
    let routes = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
    let action = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["match"]["prefix"] == "/.well-known/")
        .unwrap()["route"]
        .clone();
    assert_eq!(action["cluster"], "authflow_auth");
    prefixes
        .iter()
        .map(|p| json!({"match": {"prefix": p}, "route": action}))
        .collect()
}

/// Two real instances on one database behind Envoy with the shipped cluster
/// and routes, each reached through a [`Link`] the test can kill.
struct Replicas {
    stack: Stack,
    second: AuthService,
    links: [Link; 2],
}

fn replicas(service_env: &[(&str, &str)]) -> Replicas {
    let first = AuthService::start(ISSUER, service_env);
    let second = first.another_instance();
    let links = [Link::start(first.port), Link::start(second.port)];
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let backend_port = backend.addr.port();
    // The shipped feed setting: a long poll, or a poll every second.
    let mut filter = filter_config(ISSUER);
    filter["providers"][0]["revocations"]["poll_interval_ms"] = json!(1000);
    let envoy = Envoy::start_doc(2, |port, admin_port| {
        let routes = shipped_auth_routes(&["/v1/auth/", "/v1/admin/", "/.well-known/", "/auth/"]);
        let clusters = [("backend".to_owned(), backend_port)];
        let mut doc = envoy_config_with_routes(&filter, &clusters, &routes, port, admin_port);
        doc["static_resources"]["clusters"]
            .as_array_mut()
            .unwrap()
            .push(shipped_replica_cluster(&[links[0].port, links[1].port]));
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"));
    Replicas {
        stack: Stack::from_parts(first, envoy, backend),
        second,
        links,
    }
}

/// One of `authflow_auth`'s counters in Envoy.
fn auth_stat(envoy: &Envoy, name: &str) -> u64 {
    envoy.envoy_stat(&format!("cluster.authflow_auth.{name}"))
}

#[test]
fn a_killed_replica_holds_back_neither_requests_nor_bans() {
    let Replicas {
        stack,
        second,
        links,
    } = replicas(&[]);
    let grace = stack.sign_up("grace@example.com");
    let session = stack.sign_in("grace@example.com");
    let admin = stack.admin("admin@example.com");
    assert_eq!(stack.call("/api/hello", &session).status, 200);

    // The replica that holds the filter's long poll is killed.
    let mut holder = None;
    assert!(
        eventually(Duration::from_secs(40), || {
            holder = links.iter().position(|l| l.held_polls() > 0);
            holder.is_some()
        }),
        "the filter holds no long poll on either replica"
    );
    let holder = holder.unwrap();
    links[holder].kill();

    // Requests to the auth service at once, together (Envoy spreads them over
    // both replicas): one sent to the killed replica waits out the connect
    // timeout, then goes to the other.
    let answers: Vec<(u16, Duration)> = std::thread::scope(|s| {
        let sent: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let sent = Instant::now();
                    let r = stack.envoy.get("/.well-known/jwks.json", &[]);
                    (r.status, sent.elapsed())
                })
            })
            .collect();
        sent.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (status, took) in &answers {
        assert_eq!(*status, 200, "{answers:?}");
        assert!(
            *took < Duration::from_millis(1500),
            "a request to the auth service waited {took:?} on the killed replica: {answers:?}"
        );
    }
    assert!(
        auth_stat(&stack.envoy, "upstream_cx_connect_timeout") >= 1
            && auth_stat(&stack.envoy, "upstream_rq_retry_success") >= 1,
        "no request went to the killed replica: the test did not test it"
    );

    // A ban through the other replica reaches every worker within seconds,
    // not when the poll held on the killed one would have timed out (35 s).
    let other = if holder == 0 { &stack.auth } else { &second };
    let r = post(
        &other.url(&format!("/v1/admin/users/{grace}/ban")),
        &admin.headers(),
        &json!({}),
    );
    assert_eq!(r.status, 200, "ban: {r:?}");
    let banned = Instant::now();
    assert!(
        eventually(Duration::from_millis(2500), || {
            (0..6).all(|_| stack.call("/api/hello", &session).status == 401)
        }),
        "the ban was not enforced within 2.5 s of its 200 with one replica killed"
    );
    eprintln!("refused {:?} after the ban", banned.elapsed());
}

/// Nothing a client sends takes a replica out of the rotation. A body past
/// the service's limit used to make it answer and close while Envoy still
/// sent: Envoy counts that reset as a failed connection, so outlier
/// detection (taken out at the first, for 30 s) let any client take
/// replicas out. Each oversized sign-in must get its 413, and both replicas
/// be in the rotation within a few seconds (a health probe that timed out
/// on a busy machine takes one out until the next probe, half a second).
#[test]
fn oversized_bodies_take_no_replica_out_of_the_rotation() {
    use std::io::{Read, Write};
    // Every part held to the end: a part left out of the pattern (`..`) is
    // dropped at once, and with it that replica and both links.
    let Replicas {
        stack,
        second: _second,
        links: _links,
    } = replicas(&[]);
    for _ in 0..10 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", stack.envoy.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let len = 1 << 20;
        let head = format!(
            "POST /v1/auth/signin HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        );
        let _ = c.write_all(head.as_bytes());
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..(len / chunk.len()) {
            if c.write_all(&chunk).is_err() {
                break;
            }
        }
        let mut answer = [0u8; 1024];
        let n = c.read(&mut answer).unwrap_or(0);
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    }
    let mut flags = Vec::new();
    let healthy = eventually(Duration::from_secs(5), || {
        let clusters = get(
            &format!("http://127.0.0.1:{}/clusters", stack.envoy.admin_port),
            &[],
        );
        flags = clusters
            .body
            .lines()
            .filter(|l| l.starts_with("authflow_auth::") && l.contains("::health_flags::"))
            .map(str::to_owned)
            .collect();
        flags.len() == 2 && flags.iter().all(|l| l.ends_with("::healthy"))
    });
    assert!(healthy, "a replica left the rotation: {flags:?}");
}
