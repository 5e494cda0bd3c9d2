//! End to end, several providers in one filter: a partner's tokens never
//! pass as the main issuer's users or service accounts, and
//! `failure_mode: fail_open` is no way in while any provider holds keys.
//! The real Envoy with the built `authflow.wasm` and an echo backend.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_contract::AccessClaims;
use authflow_echo::EchoServer;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use support::*;

const MAIN: &str = "https://main.e2e.test";
const PARTNER: &str = "https://partner.e2e.test";
const PARTNER2: &str = "https://partner2.e2e.test";

fn token(key: &Ed25519KeyPair, issuer: &str, sub: &str, custom: AccessClaims) -> String {
    key.sign(claims_for(custom, issuer, sub, None)).unwrap()
}

fn roles(r: &[&str]) -> AccessClaims {
    user_with_roles(r)
}

/// `b64(header).b64(payload).AAAA`: signed by no one.
fn forged(issuer: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.AAAA",
        b64(r#"{"alg":"EdDSA"}"#),
        b64(&format!(r#"{{"iss":"{issuer}"}}"#))
    )
}

fn inline(key: &Ed25519KeyPair) -> Value {
    serde_json::from_str(&jwks_of(&[key.public_key().to_jwk()])).unwrap()
}

fn provider(name: &str, issuer: &str, jwks: Value) -> Value {
    json!({"name": name, "issuer": issuer, "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": jwks})
}

/// A provider whose key set never loads: its cluster is a port nothing listens on.
fn unreachable(name: &str, issuer: &str) -> Value {
    provider(
        name,
        issuer,
        json!({"remote": {"cluster": "nowhere", "path": "/jwks.json", "timeout_ms": 500}}),
    )
}

fn start(filter: Value, backend: &EchoServer) -> Envoy {
    Envoy::start(EnvoyOptions {
        filter,
        clusters: vec![
            ("backend".into(), backend.addr.port()),
            ("nowhere".into(), free_port()),
        ],
        concurrency: 1,
        routes: vec![],
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn a_partner_is_not_your_users_and_fail_open_opens_nothing_while_keys_are_held() {
    let main_key = Ed25519KeyPair::generate().with_key_id("main");
    let partner_key = Ed25519KeyPair::generate().with_key_id("partner");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = start(
        json!({
            "providers": [
                provider("main", MAIN, json!({"inline": inline(&main_key)})),
                provider("partner", PARTNER, json!({"inline": inline(&partner_key)})),
                unreachable("partner2", PARTNER2)
            ],
            "failure_mode": "fail_open",
            "key_wait_ms": 200,
            "routes": [
                {"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}, "providers": ["main"]},
                {"match": {"path_prefix": "/internal/billing"}, "policy": {"client_ids_any": ["billing"]}, "providers": ["main"]},
                {"match": {"path_prefix": "/partner"}, "policy": "authenticated", "providers": ["main", "partner", "partner2"]}
            ],
            "default_providers": ["main"]
        }),
        &backend,
    );
    // The forged token naming the provider without keys: not let through unverified.
    let r = envoy.get("/admin", &[("authorization", &bearer(&forged(PARTNER2)))]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("insufficient_scope")),
        "{r:?}"
    );
    assert_eq!(
        envoy
            .get("/admin", &[("authorization", &bearer(&forged(MAIN)))])
            .status,
        401
    );
    let r = envoy.get(
        "/partner/x",
        &[("authorization", &bearer(&forged(PARTNER2)))],
    );
    assert_eq!(
        r.status, 503,
        "a route that admits partner2 waits for its keys, then fails closed: {r:?}"
    );
    assert_eq!(envoy.stat("failed_open"), 0);

    // The partner's u-alice with `admin`, and its svc:billing, are not yours.
    let alice = roles(&["user", "admin"]);
    let ours = token(&main_key, MAIN, "u-alice", alice.clone());
    let theirs = token(&partner_key, PARTNER, "u-alice", alice);
    let r = envoy.get("/admin", &[("authorization", &bearer(&ours))]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (
            r.echoed("x-auth-user").as_deref(),
            r.echoed("x-auth-issuer").as_deref()
        ),
        (Some("u-alice"), Some(MAIN))
    );
    for path in ["/admin", "/elsewhere"] {
        assert_eq!(
            envoy
                .get(path, &[("authorization", &bearer(&theirs))])
                .status,
            403,
            "{path}"
        );
    }
    let billing = AccessClaims {
        sid: String::new(),
        client_id: Some("billing".into()),
        ..roles(&[])
    };
    let their_billing = token(&partner_key, PARTNER, "svc:billing", billing);
    assert_eq!(
        envoy
            .get(
                "/internal/billing",
                &[("authorization", &bearer(&their_billing))]
            )
            .status,
        403
    );
    // Where the partner is admitted, its u-alice reaches the backend as the partner's.
    let r = envoy.get(
        "/partner/x",
        &[("authorization", &bearer(&theirs)), ("x-auth-issuer", MAIN)],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (
            r.echoed("x-auth-user").as_deref(),
            r.echoed("x-auth-issuer").as_deref()
        ),
        (Some("u-alice"), Some(PARTNER))
    );
}

#[test]
fn fail_open_with_no_keys_anywhere_passes_only_routes_that_need_no_claim() {
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = start(
        json!({
            "providers": [unreachable("main", MAIN), unreachable("partner2", PARTNER2)],
            "failure_mode": "fail_open",
            "key_wait_ms": 200,
            "routes": [
                {"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}, "providers": ["main"]}
            ],
            "default_providers": ["main"]
        }),
        &backend,
    );
    let forged_main = bearer(&forged(MAIN));
    let r = envoy.get(
        "/api/x",
        &[("authorization", &forged_main), ("x-auth-user", "someone")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (r.echoed("x-auth-user"), r.echoed("x-auth-issuer")),
        (None, None),
        "unauthenticated: no identity"
    );
    assert!(envoy.stat("failed_open") >= 1);
    assert_eq!(
        envoy
            .get("/admin", &[("authorization", &forged_main)])
            .status,
        503,
        "a role cannot be read unverified"
    );
    assert_eq!(
        envoy
            .get("/api/x", &[("authorization", &bearer(&forged(PARTNER2)))])
            .status,
        403
    );
    assert_eq!(envoy.get("/api/x", &[]).status, 401);
}
