//! What a backend's answer may set in the browser: its own cookies, never
//! the ones the filter and the auth service own (the access and refresh
//! tokens, the device secret, the sign-in cookies). The real Envoy with
//! the built module, a raw upstream answering with chosen `Set-Cookie` lines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use jwt_simple::prelude::*;
use serde_json::{json, Value};
use support::*;

const ISS: &str = "https://auth.cookies.test";

/// The cookies the filter and the auth service own, as the service sets them.
const OWNED: [&str; 5] = [
    "__Host-authflow-access",
    authflow_contract::fingerprint::DEVICE_COOKIE,
    authflow_contract::browser::CHALLENGE_COOKIE,
    authflow_contract::browser::CSRF_COOKIE,
    authflow_contract::browser::REFRESH_COOKIE,
];

/// An HTTP/1.1 upstream that reads each request head and answers `200`
/// with `set_cookies` as its `Set-Cookie` lines.
fn raw_upstream(set_cookies: Vec<String>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let set_cookies = set_cookies.clone();
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            let mut answer =
                                String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
                            for c in &set_cookies {
                                answer.push_str(&format!("set-cookie: {c}\r\n"));
                            }
                            answer.push_str("\r\nok");
                            let _ = out.write_all(answer.as_bytes());
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    port
}

fn start(upstream: u16, key: &Ed25519KeyPair) -> Envoy {
    let filter = json!({
        "providers": [{
            "name": "main", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"inline": serde_json::from_str::<Value>(&jwks_of(&[key.public_key().to_jwk()])).unwrap()}
        }],
        "token_sources": {"authorization_bearer": true, "cookies": ["__Host-authflow-access"]},
        "browser": {"refresh_path": "/auth/refresh"},
        "routes": [
            {"match": {"prefix": "/auth/"}, "policy": "public", "forward_credentials": true},
            {"match": {"prefix": "/public/"}, "policy": "public"}
        ]
    });
    let clusters = vec![("backend".to_owned(), upstream)];
    Envoy::start_doc(1, |port, admin_port| {
        envoy_config(&filter, &clusters, port, admin_port)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The names of the cookies the answer to `GET path` sets.
fn cookies_set(envoy: &Envoy, path: &str, token: Option<&str>) -> Vec<String> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", envoy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| {
            let pair = value.trim().split(';').next().unwrap_or_default();
            pair.split('=').next().unwrap_or_default().trim().to_owned()
        })
        .collect()
}

#[test]
fn an_upstream_answer_cannot_set_or_clear_the_cookies_the_auth_service_owns() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let mut lines = vec!["theme=dark; Path=/".to_owned()];
    lines.extend(
        OWNED.map(|name| {
            format!("{name}=planted-by-upstream; Path=/; Secure; HttpOnly; SameSite=Lax")
        }),
    );
    // Other spellings a reader may take for one of them, and a nameless
    // cookie whose text is one of the names (a browser sends it back alone).
    lines.push("__HOST-authflow-device=x; Path=/".to_owned());
    lines.push("__Host-authflow-access".to_owned());
    let envoy = start(raw_upstream(lines), &key);
    let alice = key
        .sign(claims_for(
            user_with_roles(&["user"]),
            ISS,
            "alice",
            Some("jti-alice"),
        ))
        .unwrap();
    // The auth service's own routes set them (sign-in, refresh, logout).
    let on_auth = cookies_set(&envoy, "/auth/signin", None);
    for name in OWNED {
        assert!(
            on_auth.iter().any(|n| n == name),
            "{name} on /auth/: {on_auth:?}"
        );
    }
    // Any other backend's answer: its own cookie passes, none of those.
    for (path, token) in [
        ("/api/profile", Some(alice.as_str())),
        ("/public/page", None),
        ("/public/page", Some(alice.as_str())),
        // A path that reaches the service's prefix only once normalized is
        // not the service's route as sent.
        ("/public/../auth/signin", None),
    ] {
        let seen = cookies_set(&envoy, path, token);
        assert_eq!(
            seen,
            vec!["theme".to_owned()],
            "{path} (token: {}): only the backend's own cookie",
            token.is_some()
        );
    }
    assert!(
        envoy.log().contains("set a credential cookie"),
        "{}",
        envoy.log()
    );
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}

/// Many `Set-Cookie` lines (Envoy's limit is 100 headers), ours among
/// them: the rest pass, in order.
#[test]
fn many_cookies_in_one_answer_keep_their_order() {
    let key = Ed25519KeyPair::generate().with_key_id("k1");
    let mut lines: Vec<String> = (0..90).map(|i| format!("c{i}=v; Path=/")).collect();
    lines.insert(45, format!("{}=planted; Path=/", OWNED[1]));
    let envoy = start(raw_upstream(lines), &key);
    let seen = cookies_set(&envoy, "/public/page", None);
    let expected: Vec<String> = (0..90).map(|i| format!("c{i}")).collect();
    assert_eq!(seen, expected);
}
