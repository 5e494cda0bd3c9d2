//! End to end: protocol-level edges of requests through the real Envoy with
//! the built `authflow.wasm`: request trailers, written byte for byte over a
//! TCP socket, to a raw upstream that records every byte it receives
//! (trailers included, which the echo backend does not report).
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jwt_simple::prelude::*;
use serde_json::{json, Value};
use support::*;

const ISS: &str = "https://auth.proto.test";

fn token(key: &Ed25519KeyPair) -> String {
    let c = claims_for(user_with_roles(&["user"]), ISS, "alice", Some("jti-proto"));
    key.sign(c).unwrap()
}

fn filter_config(key: &Ed25519KeyPair) -> Value {
    json!({
        "providers": [{
            "name": "proto", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"inline": serde_json::from_str::<Value>(&jwks_of(&[key.public_key().to_jwk()])).unwrap()}
        }],
        "token_sources": {"authorization_bearer": true},
        "routes": [{"match": {"prefix": "/public"}, "policy": "public"}],
        "identity_headers": {"subject": "x-auth-user", "roles": "x-auth-roles", "scopes": "x-auth-scopes", "session": "x-auth-session"}
    })
}

/// An HTTP/1.1 upstream that records each request as received (chunked
/// bodies with their trailers) and answers `200`.
struct RawUpstream {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut out = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    while let Some(raw) = read_request(&mut r) {
                        log.lock().unwrap().push(raw);
                        let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                    }
                });
            }
        });
        RawUpstream { port, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

/// One request's bytes (lossy text), through its body and trailers.
fn read_request(r: &mut impl BufRead) -> Option<String> {
    let mut raw = String::new();
    let mut chunked = false;
    let mut length = 0usize;
    loop {
        let line = read_line(r)?;
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        raw.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    if chunked {
        loop {
            let size_line = read_line(r)?;
            raw.push_str(&size_line);
            let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let line = read_line(r)?;
                    raw.push_str(&line);
                    if line == "\r\n" {
                        return Some(raw);
                    }
                }
            }
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).ok()?;
            raw.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).ok()?;
    raw.push_str(&String::from_utf8_lossy(&body));
    Some(raw)
}

/// Envoy with the filter, trailers enabled on HTTP/1 both ways (as for a
/// gRPC-style or streaming upstream; over HTTP/2 they always pass).
fn start(filter: Value, upstream: &RawUpstream) -> Envoy {
    let clusters = vec![("backend".to_owned(), upstream.port)];
    Envoy::start_doc(1, |port, admin_port| {
        let mut doc = envoy_config(&filter, &clusters, port, admin_port);
        let manager = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
            [0]["typed_config"];
        manager["http_protocol_options"] = json!({"enable_trailers": true});
        doc["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {"enable_trailers": true}}
            }
        });
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `request` on a fresh connection; returns the status line.
fn send(port: u16, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_string();
    text.lines().next().unwrap_or_default().to_owned()
}

fn chunked_post(path: &str, headers: &str, trailers: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n0\r\n{trailers}\r\n"
    )
}

/// Identity headers are the filter's alone: a client that sends them as
/// request trailers must not get them to the upstream either (a backend
/// that folds trailers into its headers reads them as the identity).
#[test]
fn identity_headers_sent_as_trailers_do_not_reach_the_upstream() {
    let key = Ed25519KeyPair::generate().with_key_id("k");
    let upstream = RawUpstream::start();
    let envoy = start(filter_config(&key), &upstream);
    let forged =
        "x-auth-user: root\r\nx-auth-roles: admin\r\nx_auth_user: root\r\nx-other: kept\r\n";

    // Anonymous, on a public route.
    let status = send(envoy.port, &chunked_post("/public/x", "", forged));
    assert!(status.contains(" 200 "), "{status}");
    // Signed in as alice.
    let auth = format!("Authorization: Bearer {}\r\n", token(&key));
    let status = send(envoy.port, &chunked_post("/api/x", &auth, forged));
    assert!(status.contains(" 200 "), "{status}");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for raw in &seen {
        assert!(
            raw.contains("x-other: kept"),
            "the trailers went through: {raw}"
        );
        let lower = raw.to_ascii_lowercase();
        assert!(
            !lower.contains("root") && !lower.contains("admin"),
            "a forged identity reached the upstream in the trailers:\n{raw}"
        );
    }
    assert!(
        seen[1].contains("x-auth-user: alice"),
        "the real identity is there: {}",
        seen[1]
    );
}

/// The same for what the decision judged in the headers: a method, path or
/// host override (a rule on `DELETE` beaten by `X-HTTP-Method-Override:
/// DELETE` sent after the body) and credentials beside the one verified.
#[test]
fn overrides_and_credentials_sent_as_trailers_do_not_reach_the_upstream() {
    let key = Ed25519KeyPair::generate().with_key_id("k");
    let upstream = RawUpstream::start();
    let mut filter = filter_config(&key);
    filter["routes"] = json!([
        {"match": {"prefix": "/api/items", "methods": ["DELETE"]}, "policy": {"roles_any": ["admin"]}},
        {"match": {"prefix": "/public"}, "policy": "public"}
    ]);
    let envoy = start(filter, &upstream);
    let sneaked = "X-HTTP-Method-Override: DELETE\r\nx_http_method: DELETE\r\n\
                   X-Original-URL: /admin/users\r\nX-Forwarded-Host: admin.example\r\n\
                   Forwarded: host=admin.example\r\nAuthorization: Bearer sneaked\r\n\
                   Cookie: at=sneaked\r\nDPoP: sneaked\r\nx-authflow-device: sneaked\r\n\
                   x-other: kept\r\n";
    let auth = format!("Authorization: Bearer {}\r\n", token(&key));
    let status = send(envoy.port, &chunked_post("/api/items/1", &auth, sneaked));
    assert!(status.contains(" 200 "), "{status}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let raw = seen[0].to_ascii_lowercase();
    assert!(
        raw.contains("x-other: kept"),
        "the trailers went through: {raw}"
    );
    for gone in ["delete", "/admin", "admin.example", "sneaked"] {
        assert!(
            !raw.contains(gone),
            "`{gone}` reached the upstream in the trailers:\n{raw}"
        );
    }
}

/// Two HTTP/1 `Host` lines are not refused by Envoy (RFC 9112 §3.2 says
/// 400): it joins them into one `admin.example,pub.example` and forwards
/// that. Nor is a port that is not digits, which Go's `ServeMux` drops. A
/// backend reading either as `admin.example` must not serve it under a
/// weaker rule than the `admin.example` host rule.
#[test]
fn an_authority_a_backend_reads_as_a_protected_host_is_refused() {
    let key = Ed25519KeyPair::generate().with_key_id("k");
    let upstream = RawUpstream::start();
    let mut filter = filter_config(&key);
    filter["routes"] = json!([
        {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
        {"match": {"prefix": "/public"}, "policy": "public"}
    ]);
    let envoy = start(filter, &upstream);
    let get = |hosts: &str| {
        send(
            envoy.port,
            &format!("GET /public/x HTTP/1.1\r\n{hosts}Connection: close\r\n\r\n"),
        )
    };
    for hosts in [
        "Host: pub.example\r\nHost: admin.example\r\n",
        "Host: admin.example\r\nHost: pub.example\r\n",
        "Host: admin.example:abc\r\n",
    ] {
        let status = get(hosts);
        assert!(status.contains(" 400 "), "{hosts:?}: {status}");
    }
    assert!(get("Host: pub.example\r\n").contains(" 200 "));
    assert!(get("Host: admin.example\r\n").contains(" 401 "));
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "only the plain public request: {seen:?}");
}

/// One HTTP/2 request (prior knowledge) with these header fields, each its
/// own field (`cookie` twice is two fields, RFC 9113 §8.2.3); returns the
/// answer's status and its header and trailer fields.
fn h2_send(
    port: u16,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, Vec<(String, String)>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1{path}"));
        for (n, v) in fields {
            request = request.header(*n, *v);
        }
        let (response, _) = client
            .send_request(request.body(()).unwrap(), true)
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .unwrap()
            .unwrap();
        let status = response.status().as_u16();
        let mut seen: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let mut body = response.into_body();
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), body.data()).await
        {
        }
        if let Ok(Ok(Some(t))) = tokio::time::timeout(Duration::from_secs(5), body.trailers()).await
        {
            seen.extend(
                t.iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned())),
            );
        }
        (status, seen)
    })
}

/// HTTP/2 lets a client split `cookie` into several fields (RFC 9113
/// §8.2.3), and a gRPC client needs its refusal as a gRPC status: a token
/// cookie in a second field is read and kept from the upstream, the token
/// cookie twice with two values is refused, a second device cookie goes no
/// further, a `host` field beside `:authority` is not what the host rule
/// judges, and a gRPC request without a usable token gets
/// `grpc-status: 16` (UNAUTHENTICATED), not a page.
#[test]
fn cookies_split_over_http2_fields_and_grpc_refusals() {
    let key = Ed25519KeyPair::generate().with_key_id("k");
    let upstream = RawUpstream::start();
    let mut filter = filter_config(&key);
    filter["token_sources"] = json!({"authorization_bearer": true, "cookies": ["at"]});
    filter["routes"] = json!([
        {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}},
        {"match": {"prefix": "/public"}, "policy": "public"}
    ]);
    let envoy = start(filter, &upstream);
    let at = format!("at={}", token(&key));
    let forwarded = |fields: &[(&str, &str)], path: &str| {
        let before = upstream.requests().len();
        let (status, _) = h2_send(envoy.port, "GET", path, fields);
        assert_eq!(status, 200, "{fields:?}");
        upstream.requests()[before].to_ascii_lowercase()
    };

    let seen = forwarded(&[("cookie", "x=1"), ("cookie", &at)], "/api/x");
    assert!(
        seen.contains("x-auth-user: alice") && seen.contains("cookie: x=1\r\n"),
        "{seen}"
    );
    let seen = forwarded(
        &[
            ("cookie", &at),
            ("cookie", "__Host-authflow-device=forged; x=2"),
        ],
        "/api/x",
    );
    assert!(
        !seen.contains("forged") && seen.contains("cookie: x=2\r\n"),
        "{seen}"
    );
    let seen = forwarded(&[("host", "admin.example")], "/public/x");
    assert!(!seen.contains("admin.example"), "{seen}");

    let before = upstream.requests().len();
    let (status, _) = h2_send(
        envoy.port,
        "GET",
        "/api/x",
        &[("cookie", &at), ("cookie", "at=d.e.f")],
    );
    assert_eq!(status, 400);
    for auth in ["", "Bearer a.b.c"] {
        let mut fields = vec![("content-type", "application/grpc"), ("te", "trailers")];
        if !auth.is_empty() {
            fields.push(("authorization", auth));
        }
        let (status, answer) = h2_send(envoy.port, "POST", "/api/x", &fields);
        let grpc_status = answer.iter().find(|(n, _)| n == "grpc-status");
        assert_eq!(
            (status, grpc_status.map(|(_, v)| v.as_str())),
            (200, Some("16")),
            "{answer:?}"
        );
    }
    assert_eq!(
        upstream.requests().len(),
        before,
        "a refused request went upstream"
    );
}
