//! Envoy's connections to the auth service, as `envoy/local.yaml` ships them,
//! with the real service: Envoy must be the side that drops an idle one. The
//! service closes a keep-alive connection that sends no request for 10 s
//! (its slow-client guard); a request Envoy sent on such a connection at that
//! moment would fail with 503, so Envoy's idle timeout must come first.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::stack::ShippedGateway;
use support::*;

/// The shipped local configuration's issuer: its filter configuration is used unchanged.
const ISSUER: &str = "http://127.0.0.1:8081";
/// A public route of the shipped configuration that goes to the auth service.
const AUTH_ROUTE: &str = "/.well-known/jwks.json";

/// One counter of Envoy's `authflow_auth` cluster.
fn auth_cluster_stat(envoy: &Envoy, name: &str) -> u64 {
    let full = format!("cluster.authflow_auth.{name}");
    let r = get(
        &format!(
            "http://127.0.0.1:{}/stats?filter=^{}$",
            envoy.admin_port,
            full.replace('.', "\\.")
        ),
        &[],
    );
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{full}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {full} in Envoy's stats: {}", r.body))
}

#[test]
fn envoy_drops_an_idle_connection_to_the_auth_service_before_the_service_does() {
    let gateway = ShippedGateway::start(ISSUER, &[]);
    let envoy = &gateway.envoy;

    let first = envoy.get(AUTH_ROUTE, &[]);
    assert_eq!(first.status, 200, "{}", first.body);
    // Past Envoy's idle timeout and past the service's: whichever side is
    // shorter has closed the connection by now.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        auth_cluster_stat(envoy, "upstream_cx_destroy_remote"),
        0,
        "the auth service closed a connection Envoy still held as reusable"
    );
    assert!(
        auth_cluster_stat(envoy, "upstream_cx_idle_timeout") >= 1,
        "Envoy closed no idle connection to the auth service"
    );
    let again = envoy.get(AUTH_ROUTE, &[]);
    assert_eq!(again.status, 200, "{}", again.body);
}

/// Sends `POST path` with a body of `len` spaces over a new connection (with
/// a `content-length`, or chunked when `chunked`), then reads the answer's
/// status line: `None` when the connection ended without an HTTP answer.
fn post_oversized(envoy: &Envoy, path: &str, len: usize, chunked: bool) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", envoy.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {len}")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    let _ = c.write_all(head.as_bytes());
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..len / chunk.len() {
        let sent = if chunked {
            c.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|()| c.write_all(&chunk))
                .and_then(|()| c.write_all(b"\r\n"))
        } else {
            c.write_all(&chunk)
        };
        if sent.is_err() {
            break;
        }
    }
    if chunked {
        let _ = c.write_all(b"0\r\n\r\n");
    }
    let mut status = String::new();
    BufReader::new(c).read_line(&mut status).ok()?;
    (!status.is_empty()).then(|| status.trim_end().to_owned())
}

/// A body past the service's limit gets its 413 through Envoy, not a 503:
/// the service answers before the body has all arrived, and a connection
/// closed with unread data is reset, which Envoy reports as an upstream
/// failure. Sizes from just past the limit to 8 MiB, with and without
/// a declared length.
#[test]
fn an_oversized_body_to_the_auth_service_gets_413_through_envoy() {
    let gateway = ShippedGateway::start(ISSUER, &[]);
    let envoy = &gateway.envoy;
    for &len in &[32 * 1024, 256 * 1024, 1 << 20, 8 << 20] {
        for chunked in [false, true] {
            for round in 0..3 {
                let status = post_oversized(envoy, "/v1/auth/signin", len, chunked);
                assert!(
                    status.as_deref().is_some_and(|s| s.contains(" 413 ")),
                    "{len} bytes (chunked: {chunked}, round {round}): {status:?}"
                );
            }
        }
    }
    // The service is still there for everybody else.
    let again = envoy.get(AUTH_ROUTE, &[]);
    assert_eq!(again.status, 200, "{}", again.body);
}
