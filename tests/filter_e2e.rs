//! End to end: the real Envoy with the built `authflow.wasm`, a JWKS server
//! and an echo backend on 127.0.0.1. Run by `make test` (which builds the
//! `.wasm` and installs Envoy first).
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use authflow_contract::AccessClaims;
use authflow_echo::EchoServer;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use support::*;

const ISS: &str = "https://auth.e2e.test";

struct Keys {
    ed: Ed25519KeyPair,
    es: ES256KeyPair,
    rs: RS256KeyPair,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            ed: Ed25519KeyPair::generate().with_key_id("ed-1"),
            es: ES256KeyPair::generate().with_key_id("es-1"),
            rs: RS256KeyPair::generate(2048).unwrap().with_key_id("rs-1"),
        }
    }
    fn jwks(&self) -> String {
        jwks_of(&[
            self.ed.public_key().to_jwk(),
            self.es.public_key().to_jwk(),
            self.rs.public_key().to_jwk(),
        ])
    }
}

fn claims_with(custom: AccessClaims) -> JWTClaims<AccessClaims> {
    claims_for(custom, ISS, "alice", Some("jti-e2e"))
}

fn user() -> AccessClaims {
    user_with_roles(&["user"])
}

fn filter_config(jwks_port_cluster: &str, extra: Value) -> Value {
    let mut c = json!({
        "providers": [{
            "name": "e2e", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA", "ES256", "RS256"],
            "required_claims": ["sub"],
            "jwks": {"remote": {"cluster": jwks_port_cluster, "path": "/jwks.json", "refresh_interval_secs": 1, "min_refetch_interval_secs": 1}}
        }],
        "token_sources": {"authorization_bearer": true, "cookies": ["access_token"]},
        "routes": [
            {"match": {"prefix": "/public"}, "policy": "public"},
            {"match": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/write"}, "policy": {"scopes_all": ["write"]}}
        ],
        "identity_headers": {"subject": "x-auth-user", "roles": "x-auth-roles", "scopes": "x-auth-scopes", "session": "x-auth-session"}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn start(filter: Value, jwks_port: u16, backend: &EchoServer) -> Envoy {
    Envoy::start(EnvoyOptions {
        filter,
        clusters: vec![("backend".into(), backend.addr.port()), ("jwks".into(), jwks_port)],
        concurrency: 2,
        // Answered by Envoy itself after the filter: for requests the echo backend could not parse.
        routes: vec![json!({"match": {"prefix": "/direct"}, "direct_response": {"status": 200, "body": {"inline_string": "direct"}}})],
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A GET written byte for byte (the HTTP client refuses header values that
/// are not UTF-8, and normalizes the path); returns the response status.
fn raw_get_status(port: u16, path: &str, headers: &[(&str, &[u8])]) -> u16 {
    raw_get(port, path, headers).0
}

/// The same, with the response body.
fn raw_get(port: u16, path: &str, headers: &[(&str, &[u8])]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
    for (n, v) in headers {
        req.extend_from_slice(n.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let line = head.lines().next().unwrap_or_default();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"));
    (status, body.to_owned())
}

/// Finding: the filter kept the credentials of a `forward_credentials` rule
/// (the auth service's API) on the path as it normalizes it, while Envoy
/// (not set to normalize) routed the path as sent: `//v1/admin/users` went
/// to the application's backend with the token and the device secret. A
/// request's credentials follow the rule only when its path needs no
/// normalizing.
#[test]
fn credentials_reach_only_the_route_envoy_takes_as_the_rule_reads() {
    let keys = Keys::new();
    let jwks = JwksServer::start(keys.jwks());
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let mut filter = filter_config("jwks", json!({}));
    filter["routes"] = json!([
        {"match": {"prefix": "/v1/admin/"}, "policy": {"roles_any": ["admin"]}, "forward_credentials": true}
    ]);
    let envoy = Envoy::start(EnvoyOptions {
        filter,
        clusters: vec![("backend".into(), backend.addr.port()), ("jwks".into(), jwks.port)],
        concurrency: 1,
        // The auth service's API, answered by Envoy itself: an echo is the application's backend.
        routes: vec![json!({"match": {"prefix": "/v1/admin/"}, "direct_response": {"status": 200, "body": {"inline_string": "auth service"}}})],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let admin = bearer(
        &keys
            .ed
            .sign(claims_with(user_with_roles(&["admin"])))
            .unwrap(),
    );
    let sent: [(&str, &[u8]); 2] = [
        ("authorization", admin.as_bytes()),
        ("x-authflow-device", b"device-secret"),
    ];
    let (status, body) = raw_get(envoy.port, "/v1/admin/users", &sent);
    assert_eq!((status, body.as_str()), (200, "auth service"));
    // Two slashes first: a network-path reference (`//host/path` to URL
    // parsers), refused whatever the rules.
    let (status, body) = raw_get(envoy.port, "//v1/admin/users", &sent);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_request"), "{body}");
    for path in [
        "/v1//admin/users",
        "/v1/%61dmin/users",
        "/x/../v1/admin/users",
        "/v1/./admin/users",
    ] {
        let (status, body) = raw_get(envoy.port, path, &sent);
        assert_eq!(status, 200, "{path}: {body}");
        let echo: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
        for name in ["authorization", "x-authflow-device"] {
            assert!(
                echo["headers"][name].is_null(),
                "{path}: the application got {name}"
            );
        }
    }
}

/// The status Envoy answers a WebSocket handshake with (the connection may
/// stay open after it: only the status line is read).
fn handshake_status(port: u16, path: &str, headers: &[(&str, &str)]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    let mut byte = [0u8; 1];
    while !resp.ends_with(b"\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        resp.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&resp).to_string();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
}

/// Finding: a WebSocket handshake is a `GET`, and the access cookie
/// authenticated it from any page; no CORS keeps another page (a sibling
/// site the `SameSite=Lax` cookie goes to) from reading and writing on the
/// socket. Through the real Envoy, with WebSocket upgrades enabled: another
/// origin's handshake gets no identity from the cookie, the application's
/// own page keeps it.
#[test]
fn a_websocket_handshake_from_another_origin_is_not_authenticated_by_the_cookie() {
    let keys = Keys::new();
    let jwks = JwksServer::start(keys.jwks());
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = start(filter_config("jwks", json!({})), jwks.port, &backend);
    let cookie = format!(
        "access_token={}",
        keys.ed.sign(claims_with(user())).unwrap()
    );
    for (site, origin, status) in [
        ("same-site", "https://evil.127.0.0.1.example", 401),
        ("cross-site", "https://evil.example", 401),
        ("same-origin", "http://127.0.0.1", 200),
    ] {
        let got = handshake_status(
            envoy.port,
            "/direct/socket",
            &[
                ("Cookie", &cookie),
                ("Origin", origin),
                ("Sec-Fetch-Site", site),
            ],
        );
        assert_eq!(got, status, "{site} {origin}");
    }
}

fn assert_invalid_token(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {r:?}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{what}: {challenge}"
    );
    assert_eq!(r.json()["error"], "invalid_token", "{what}");
}

#[test]
fn verifies_tokens_inside_envoy() {
    let keys = Keys::new();
    let jwks = JwksServer::start(keys.jwks());
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = start(filter_config("jwks", json!({})), jwks.port, &backend);

    // One valid token per algorithm → 200, identity forwarded.
    let tokens = [
        ("EdDSA", keys.ed.sign(claims_with(user())).unwrap()),
        ("ES256", keys.es.sign(claims_with(user())).unwrap()),
        ("RS256", keys.rs.sign(claims_with(user())).unwrap()),
    ];
    for (alg, t) in &tokens {
        let r = envoy.get("/api/data", &[("authorization", &bearer(t))]);
        assert_eq!(r.status, 200, "{alg}: {r:?}");
        assert_eq!(r.echoed("x-auth-user").as_deref(), Some("alice"), "{alg}");
        assert_eq!(r.echoed("x-auth-roles").as_deref(), Some("user"), "{alg}");
        assert_eq!(
            r.echoed("x-auth-session").as_deref(),
            Some("session-1"),
            "{alg}"
        );
    }
    let good = &tokens[0].1;

    // Forged identity headers never reach the backend.
    let r = envoy.get(
        "/public/page",
        &[("x-auth-user", "mallory"), ("x-auth-roles", "admin")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed("x-auth-user"), None);
    assert_eq!(r.echoed("x-auth-roles"), None);
    let r = envoy.get(
        "/api/data",
        &[
            ("authorization", &bearer(good)),
            ("x-auth-user", "mallory"),
            ("x-auth-user", "eve"),
        ],
    );
    assert_eq!(
        r.echoed("x-auth-user").as_deref(),
        Some("alice"),
        "every forged copy is gone (the echo joins copies)"
    );

    // Beside the identity headers and the token's removal, everything arrives
    // as sent, repeated headers in their order; a forged spelling does not.
    let sent = [
        ("authorization", bearer(good)),
        ("x-multi", "a".into()),
        ("x_auth_user", "eve".into()),
        ("x-multi", "b".into()),
        ("accept", "text/plain".into()),
        ("x-auth-scopes", "admin".into()),
    ];
    let r = envoy.get(
        "/api/data?q=1",
        &sent
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect::<Vec<_>>(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json();
    assert_eq!(
        (echo["method"].as_str(), echo["path"].as_str()),
        (Some("GET"), Some("/api/data?q=1"))
    );
    assert_eq!(r.echoed("x-multi").as_deref(), Some("a, b"));
    assert_eq!(r.echoed("accept").as_deref(), Some("text/plain"));
    assert!(
        r.echoed("host")
            .is_some_and(|h| h.starts_with("127.0.0.1:")),
        "{echo}"
    );
    assert_eq!(
        (
            r.echoed("x-auth-user").as_deref(),
            r.echoed("x-auth-scopes").as_deref()
        ),
        (Some("alice"), Some("read"))
    );
    assert_eq!(
        (r.echoed("authorization"), r.echoed("x_auth_user")),
        (None, None),
        "{echo}"
    );

    // Two Authorization headers (a second identity riding along): refused, not
    // verified on the first and forwarded with the second.
    let other = keys
        .ed
        .sign(claims_with(user()).with_subject("mallory"))
        .unwrap();
    let r = envoy.get(
        "/api/data",
        &[
            ("authorization", &bearer(good)),
            ("authorization", &bearer(&other)),
        ],
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], "invalid_request");
    // A token in the query beside it is a second method too (RFC 6750 §3.1):
    // a backend reading the query first would take it unverified.
    for query in ["access_token=forged", "a=1&access%5Ftoken=forged"] {
        let r = envoy.get(
            &format!("/api/data?{query}"),
            &[("authorization", &bearer(good))],
        );
        assert_eq!(r.status, 400, "{query}: {r:?}");
        assert_eq!(r.json()["error"], "invalid_request", "{query}");
    }

    // Another scheme first, the token in a second copy: whatever the filter
    // decides, the token never reaches the upstream.
    let r = envoy.get(
        "/api/data",
        &[
            ("authorization", "Basic dTpw"),
            ("authorization", &bearer(good)),
        ],
    );
    assert!(
        !r.echoed("authorization")
            .is_some_and(|a| a.contains(good.as_str())),
        "{r:?}"
    );
    // Nor on a public route (anonymous, the header removed as for any
    // malformed one), nor beside a cookie's token (refused): the joined
    // value (`Basic dTpw,Bearer …`) was passed on unread.
    let good_bearer = bearer(good);
    let joined = [
        ("authorization", "Basic dTpw"),
        ("authorization", good_bearer.as_str()),
    ];
    let r = envoy.get("/public/page", &joined);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("authorization"), None, "{r:?}");
    assert_eq!(r.echoed("x-auth-user"), None, "{r:?}");
    let cookie = format!("access_token={good}");
    let r = envoy.get("/api/data", &[joined[0], joined[1], ("cookie", &cookie)]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_request")),
        "{r:?}"
    );

    // A header value that is not UTF-8 (legal obs-text in HTTP/1.1) is just a
    // header: the request is decided as usual and the filter keeps serving.
    let odd: [(&str, &[u8]); 2] = [("x-odd", b"caf\xe9"), ("user-agent", b"\xff\xfe")];
    let good_bearer = bearer(good);
    let with_token = [odd.as_slice(), &[("authorization", good_bearer.as_bytes())]].concat();
    assert_eq!(raw_get_status(envoy.port, "/direct/x", &with_token), 200);
    assert_eq!(raw_get_status(envoy.port, "/direct/x", &odd), 401);
    assert_eq!(
        envoy
            .get("/api/data", &[("authorization", &bearer(good))])
            .status,
        200,
        "still serving"
    );

    // No token: a bare challenge.
    let r = envoy.get("/api/data", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    // Each way a token can be wrong.
    let mut expired = claims_with(user());
    expired.issued_at = Some(UnixTimeStamp::from_secs(now() - 1200));
    expired.expires_at = Some(UnixTimeStamp::from_secs(now() - 600));
    let mut future = claims_with(user());
    future.invalid_before = Some(UnixTimeStamp::from_secs(now() + 600));
    let mut wrong_iss = claims_with(user());
    wrong_iss.issuer = Some("https://evil.example".into());
    let mut wrong_aud = claims_with(user());
    wrong_aud.audiences = Some(Audiences::AsString("other".into()));
    let stranger = Ed25519KeyPair::generate().with_key_id("ed-1");
    let unknown_kid = Ed25519KeyPair::generate().with_key_id("nobody");
    let payload =
        b64(&json!({"iss": ISS, "sub": "alice", "aud": "api", "exp": now() + 600}).to_string());
    let cases = [
        ("expired", keys.ed.sign(expired).unwrap(), "token expired"),
        (
            "not yet valid",
            keys.ed.sign(future).unwrap(),
            "token not yet valid",
        ),
        (
            "wrong issuer",
            keys.ed.sign(wrong_iss).unwrap(),
            "token issuer not trusted",
        ),
        (
            "wrong audience",
            keys.ed.sign(wrong_aud).unwrap(),
            "token audience not accepted",
        ),
        (
            "bad signature",
            stranger.sign(claims_with(user())).unwrap(),
            "token signature is invalid",
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#)),
            "token signing algorithm not allowed",
        ),
        (
            "header key",
            format!(
                "{}.{payload}.c2ln",
                b64(r#"{"alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"AA"}}"#)
            ),
            "key material",
        ),
        (
            "unknown kid",
            unknown_kid.sign(claims_with(user())).unwrap(),
            "token signed with an unknown key",
        ),
        ("malformed", "abc.def".to_owned(), "token is malformed"),
        (
            "oversized",
            format!("{}.{}.{}", b64("{}"), "a".repeat(9000), "b"),
            "token too large",
        ),
    ];
    for (what, token, description) in &cases {
        let r = envoy.get("/api/data", &[("authorization", &bearer(token))]);
        assert_invalid_token(&r, what);
        assert!(
            r.header("www-authenticate").unwrap().contains(description),
            "{what}: {r:?}"
        );
        assert!(
            !r.body.contains(token.as_str()) || token.len() < 8,
            "{what}: the token is not echoed back"
        );
    }

    // Roles and scopes.
    let r = envoy.get("/admin/users", &[("authorization", &bearer(good))]);
    assert_eq!(r.status, 403);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"insufficient_scope\""));
    let r = envoy.get("/write/doc", &[("authorization", &bearer(good))]);
    assert_eq!(r.status, 403);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("scope=\"write\""));
    let admin = keys
        .es
        .sign(claims_with(AccessClaims {
            roles: vec!["admin".into()],
            scope: "read write".into(),
            ..user()
        }))
        .unwrap();
    assert_eq!(
        envoy
            .get("/admin/users", &[("authorization", &bearer(&admin))])
            .status,
        200
    );
    let r = envoy.get("/write/doc", &[("authorization", &bearer(&admin))]);
    assert_eq!(
        (r.status, r.echoed("x-auth-scopes").as_deref()),
        (200, Some("read write"))
    );

    // Public route: no token needed; a valid token still yields identity.
    assert_eq!(envoy.get("/public/page", &[]).status, 200);
    let r = envoy.get("/public/page", &[("authorization", &bearer(good))]);
    assert_eq!(r.echoed("x-auth-user").as_deref(), Some("alice"));

    // Cookie as token source.
    let r = envoy.get(
        "/api/data",
        &[("cookie", &format!("theme=dark; access_token={good}"))],
    );
    assert_eq!(
        (r.status, r.echoed("x-auth-user").as_deref()),
        (200, Some("alice"))
    );

    // Stats counters moved, and are exported to Prometheus too.
    assert!(
        envoy.stat("allowed") >= 8,
        "allowed: {}",
        envoy.stat("allowed")
    );
    assert!(envoy.stat("denied.expired") >= 1);
    assert!(envoy.stat("denied.missing_token") >= 1);
    assert!(envoy.stat("denied.insufficient_scope") >= 1);
    assert!(envoy.stat("jwks.fetch_ok") >= 1);
    assert!(envoy.stat("token_cache.hit") >= 1);
    assert_eq!(envoy.stat("jwks.keys_loaded"), 3);
    assert!(envoy.prometheus().contains("authflow_allowed"));
    // Tokens never reach the log.
    assert!(!envoy.log().contains(good.as_str()));
}

#[test]
fn key_rotation_and_jwks_outage() {
    let old = Ed25519KeyPair::generate().with_key_id("2026-01");
    let new = Ed25519KeyPair::generate().with_key_id("2026-02");
    let mut jwks = JwksServer::start(jwks_of(&[old.public_key().to_jwk()]));
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = start(filter_config("jwks", json!({})), jwks.port, &backend);

    let t_old = old.sign(claims_with(user())).unwrap();
    assert_eq!(
        envoy
            .get("/api", &[("authorization", &bearer(&t_old))])
            .status,
        200
    );

    // The issuer publishes a new key; a token with the new kid triggers an early
    // refetch and waits for it instead of failing.
    jwks.set(jwks_of(&[
        old.public_key().to_jwk(),
        new.public_key().to_jwk(),
    ]));
    let t_new = new.sign(claims_with(user())).unwrap();
    let r = envoy.get("/api", &[("authorization", &bearer(&t_new))]);
    assert_eq!(r.status, 200, "new key picked up without a restart: {r:?}");

    // A broken or oversized key set never replaces the last good one.
    jwks.set("{\"keys\": [ this is not json".into());
    assert!(
        eventually(Duration::from_secs(10), || envoy.stat("jwks.rejected") >= 1),
        "a bad JWKS is counted"
    );
    assert_eq!(
        envoy
            .get("/api", &[("authorization", &bearer(&t_new))])
            .status,
        200
    );
    jwks.set(format!(
        r#"{{"keys":[{}],"padding":"{}"}}"#,
        new.public_key().to_jwk(),
        "x".repeat(70_000)
    ));
    assert!(
        eventually(Duration::from_secs(10), || envoy.stat("jwks.rejected") >= 2),
        "an oversized JWKS is counted"
    );
    assert_eq!(
        envoy
            .get("/api", &[("authorization", &bearer(&t_old))])
            .status,
        200,
        "the old key is still there"
    );

    // The JWKS server goes away: the last good keys keep working.
    let hits_before = jwks.hits();
    jwks.stop();
    assert!(
        eventually(Duration::from_secs(10), || envoy.stat("jwks.fetch_failed")
            >= 1),
        "a failed fetch is counted"
    );
    assert!(hits_before >= 2);
    assert_eq!(
        envoy
            .get("/api", &[("authorization", &bearer(&t_new))])
            .status,
        200
    );
    assert_eq!(
        envoy
            .get("/api", &[("authorization", &bearer(&t_old))])
            .status,
        200
    );
}

/// The issuer withdraws its key: a `200` that is a key set replaces the keys
/// held even when nothing in it is usable (empty, or only a key type the
/// filter does not take), so the withdrawn key's tokens are refused — 401,
/// unknown key, not 503: keys were loaded. An answer that is no key set
/// (`410 Gone`, even with a key set as its body) is an outage: the last good
/// keys stay.
#[test]
fn withdrawn_keys_stop_verifying() {
    let key = Ed25519KeyPair::generate().with_key_id("2026-01");
    let other = Ed25519KeyPair::generate().with_key_id("2026-02");
    let good = jwks_of(&[key.public_key().to_jwk()]);
    let jwks = JwksServer::start(good.clone());
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = start(filter_config("jwks", json!({})), jwks.port, &backend);
    let t = key.sign(claims_with(user())).unwrap();
    let get = || envoy.get("/api", &[("authorization", &bearer(&t))]);
    assert_eq!(get().status, 200);

    let p384 = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-384","kid":"2026-01","x":"{0}","y":"{0}"}}]}}"#,
        "A".repeat(64)
    );
    let withdrawals = [
        (
            "a set with another key (control)",
            jwks_of(&[other.public_key().to_jwk()]),
        ),
        ("an empty set", r#"{"keys":[]}"#.to_owned()),
        ("a set with only a P-384 key", p384),
    ];
    for (what, body) in withdrawals {
        jwks.set(body);
        assert!(
            eventually(Duration::from_secs(10), || get().status == 401),
            "{what}: the withdrawn key's token is refused"
        );
        // Every worker, not only the one that fetched.
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..4 {
            let r = get();
            assert_invalid_token(&r, what);
            assert!(
                r.header("www-authenticate")
                    .unwrap()
                    .contains("unknown key"),
                "{what}: {r:?}"
            );
        }
        jwks.set(good.clone());
        assert!(
            eventually(Duration::from_secs(10), || get().status == 200),
            "{what}: the key published again is taken again"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(envoy.stat("denied.unknown_key") >= 12);
    assert!(
        envoy.stat("jwks.no_usable_key") >= 2,
        "key sets with no usable key are counted"
    );

    // No key set: the last good keys stay.
    let failed = envoy.stat("jwks.fetch_failed");
    jwks.set(r#"{"keys":[]}"#.to_owned());
    jwks.set_status(410);
    assert!(
        eventually(Duration::from_secs(10), || envoy.stat("jwks.fetch_failed")
            >= failed + 2),
        "a 410 is a failed fetch"
    );
    for _ in 0..4 {
        assert_eq!(get().status, 200, "410 Gone keeps the last good keys");
    }
}

#[test]
fn no_key_ever_loaded_fails_closed() {
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let closed_port = free_port();
    let envoy = start(
        filter_config("jwks", json!({"key_wait_ms": 500})),
        closed_port,
        &backend,
    );
    let kp = Ed25519KeyPair::generate().with_key_id("k");
    let t = kp.sign(claims_with(user())).unwrap();
    let r = envoy.get("/api", &[("authorization", &bearer(&t))]);
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    // A request with a body waits the same way: its body arriving must not
    // carry the unverified request upstream.
    let r = envoy.post(
        "/api",
        &[("authorization", &bearer(&t))],
        &json!({"transfer": 100}),
    );
    assert_eq!(
        r.status, 503,
        "a waiting request with a body is not forwarded: {r:?}"
    );
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    // Public routes still work while keys are missing.
    assert_eq!(envoy.get("/public/x", &[]).status, 200);
}

#[test]
fn invalid_configuration_is_refused_by_envoy() {
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let mut bad = filter_config("jwks", json!({}));
    bad["providers"][0]["algorithms"] = json!(["HS256"]);
    let err = match Envoy::start(EnvoyOptions {
        filter: bad,
        routes: vec![],
        clusters: vec![
            ("backend".into(), backend.addr.port()),
            ("jwks".into(), free_port()),
        ],
        concurrency: 1,
    }) {
        Ok(_) => panic!("Envoy accepted an invalid filter configuration"),
        Err(e) => e,
    };
    assert!(
        err.contains("providers[0]`.algorithms") && err.contains("HS256"),
        "the log names the field:\n{err}"
    );
}

#[test]
fn envoy_jwt_authn_conformance_vectors() {
    // Envoy's own jwt_authn test data (envoyproxy/envoy, Apache-2.0), transcribed as JSON: see its `source` field.
    let path = repo_root().join("tests/fixtures/envoy-jwt-authn-vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut all_keys = doc["jwks_rs256"]["keys"].as_array().unwrap().clone();
    all_keys.extend(
        doc["jwks_es256"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let filter = json!({
        "providers": [{
            "name": "envoy-vectors", "issuer": doc["provider"]["issuer"], "audiences": doc["provider"]["audiences"],
            "algorithms": ["RS256", "ES256"],
            "jwks": {"inline": {"keys": all_keys}}
        }],
        // These long-lived test tokens expire in 2033 and carry no iat.
        "max_token_lifetime_secs": 20 * 365 * 86400,
        "identity_headers": {"subject": "x-auth-user", "claims": {"nested.key-1": "x-nested"}}
    });
    let envoy = Envoy::start(EnvoyOptions {
        filter,
        routes: vec![],
        clusters: vec![("backend".into(), backend.addr.port())],
        concurrency: 1,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let r = envoy.get(
            "/",
            &[("authorization", &bearer(case["token"].as_str().unwrap()))],
        );
        assert_eq!(
            u64::from(r.status),
            case["expect_status"].as_u64().unwrap(),
            "{name}: {}",
            case["why"]
        );
        if name == "NestedGoodToken" {
            assert_eq!(r.echoed("x-nested").as_deref(), Some("value1"));
        }
    }
}
