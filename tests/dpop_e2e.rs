//! DPoP (RFC 9449) through the real Envoy (two workers) with the built
//! filter and the real auth service: a client signs in with a proof, gets a
//! token bound to its key, and calls the echo backend with a fresh proof per
//! request — and every way of misusing that token is refused.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_contract::dpop::client::ProofKey;
use authflow_contract::dpop::{nonce, NonceKey};
use authflow_contract::fingerprint::DEVICE_HEADER;
use base64::Engine as _;
use serde_json::json;
use support::stack::*;
use support::*;

const ISSUER: &str = "http://authflow.dpop-e2e";

fn stack() -> Stack {
    Stack::start(
        StackOptions {
            issuer: ISSUER,
            service_env: &[],
            extra_clusters: &[],
        },
        |f| {
            f["providers"][0]["dpop"] = "allowed".into();
        },
    )
}

/// A signed-in device whose access token is bound to `key`.
fn dpop_sign_in(stack: &Stack, email: &str, key: &ProofKey) -> Session {
    let r = stack.envoy.post(
        "/v1/auth/signin",
        &device_headers(),
        &json!({"email": email, "password": PASSWORD}),
    );
    assert_eq!(r.status, 200, "signin: {r:?}");
    let challenge = r.json()["challenge_id"].as_str().unwrap().to_owned();
    let code = stack.auth.latest_mail(email, "sign-in code", "code");
    let proof = key.proof("POST", &format!("{ISSUER}/v1/auth/signin/verify"), None);
    let mut headers = device_headers().to_vec();
    headers.push(("dpop", &proof));
    let r = stack.envoy.post(
        "/v1/auth/signin/verify",
        &headers,
        &json!({"challenge_id": challenge, "code": code}),
    );
    assert_eq!(r.status, 200, "second factor with a proof: {r:?}");
    let j = r.json();
    assert_eq!(j["token_type"], "DPoP", "{j}");
    let text = |name: &str| j[name].as_str().unwrap().to_owned();
    let access = text("access_token");
    Session {
        bearer: format!("DPoP {access}"),
        access,
        refresh: text("refresh_token"),
        device: text("device_secret"),
    }
}

/// `method path` through Envoy from the session's device, with these proofs as `DPoP` headers.
fn call(stack: &Stack, method: &str, path: &str, s: &Session, proofs: &[&str]) -> Reply {
    call_at(stack, None, method, path, s, proofs)
}

/// [`call`], naming `host` as the authority when given.
fn call_at(
    stack: &Stack,
    host: Option<&str>,
    method: &str,
    path: &str,
    s: &Session,
    proofs: &[&str],
) -> Reply {
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(stack.envoy.url(path))
        .header("authorization", &s.bearer);
    if let Some(host) = host {
        req = req.header("host", host);
    }
    for (n, v) in [
        (DEVICE_HEADER, s.device.as_str()),
        ("user-agent", UA),
        ("accept-language", LANG),
    ] {
        req = req.header(n, v);
    }
    for p in proofs {
        req = req.header("dpop", *p);
    }
    let req = req.body(()).unwrap();
    reply(http().run(req).unwrap())
}

fn assert_refused(r: &Reply, error: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: {r:?}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(&format!("DPoP error=\"{error}\"")),
        "{what}: {challenge}"
    );
    assert!(
        challenge.contains("algs=\"ES256 EdDSA\""),
        "{what}: {challenge}"
    );
}

/// The service's own endpoints behind a route rule (`/v1/admin/*`), reached
/// through Envoy at an origin that is not the issuer's (the shipped local
/// setup: Envoy on :8080, the issuer the service's :8081). The filter checks
/// the proof against the origin the client used, the service checked it
/// against the issuer's only: no proof passed both, so an admin's bound
/// token worked at none of them. The service lists the proxy's origin in
/// `dpop.origins`.
#[test]
fn a_bound_token_works_at_the_services_admin_endpoints_through_envoy() {
    const PROXY_HOST: &str = "proxy.dpop-e2e";
    let stack = Stack::start(
        StackOptions {
            issuer: ISSUER,
            service_env: &[("AUTHFLOW_DPOP__ORIGINS", "http://proxy.dpop-e2e")],
            extra_clusters: &[],
        },
        |f| {
            f["providers"][0]["dpop"] = "allowed".into();
        },
    );
    let email = "root@example.com";
    stack.create_admin(email);
    let key = ProofKey::es256(&[0x43; 32]);
    let s = dpop_sign_in(&stack, email, &key);
    let users = |url: &str| {
        call_at(
            &stack,
            Some(PROXY_HOST),
            "GET",
            "/v1/admin/users",
            &s,
            &[&key.proof("GET", url, Some(&s.access))],
        )
    };
    // The issuer's URL through this origin: the filter refuses it.
    assert_refused(
        &users(&format!("{ISSUER}/v1/admin/users")),
        "invalid_dpop_proof",
        "a proof naming another origin than the one used",
    );
    // The origin the client used: the filter and the service take it.
    let r = users(&format!("http://{PROXY_HOST}/v1/admin/users"));
    assert_eq!(r.status, 200, "an admin's bound token through Envoy: {r:?}");
}

#[test]
fn dpop_bound_tokens_through_envoy() {
    let stack = stack();
    let email = "dpop@example.com";
    stack.sign_up(email);
    let key = ProofKey::es256(&[0x42; 32]);
    let s = dpop_sign_in(&stack, email, &key);
    let url = |path: &str| stack.envoy.url(path);

    // The bound token works with its key, once per proof, cached or not; the
    // backend gets the identity, neither the token nor the proof.
    for _ in 0..3 {
        let proof = key.proof("GET", &url("/v1/items"), Some(&s.access));
        let r = call(&stack, "GET", "/v1/items?page=2", &s, &[&proof]);
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.echoed("x-auth-user").is_some(), "{r:?}");
        assert_eq!(r.echoed("authorization"), None);
        assert_eq!(r.echoed("dpop"), None);
    }

    // A replayed proof: refused on every later try, whichever of the two workers gets it.
    let proof = key.proof("GET", &url("/v1/items"), Some(&s.access));
    assert_eq!(call(&stack, "GET", "/v1/items", &s, &[&proof]).status, 200);
    for i in 0..8 {
        assert_refused(
            &call(&stack, "GET", "/v1/items", &s, &[&proof]),
            "invalid_dpop_proof",
            &format!("replay {i}"),
        );
    }
    assert!(stack.envoy.stat("denied.dpop_replayed") >= 8);
    // On a public route a replayed proof is no one's: forwarded without the identity.
    let proof = key.proof("GET", &url("/public/page"), Some(&s.access));
    let first = call(&stack, "GET", "/public/page", &s, &[&proof]);
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.echoed("x-auth-user").is_some(), "{first:?}");
    for i in 0..4 {
        let again = call(&stack, "GET", "/public/page", &s, &[&proof]);
        assert_eq!(again.status, 200, "public replay {i}: {again:?}");
        assert_eq!(again.echoed("x-auth-user"), None, "public replay {i}");
    }

    // A stolen token used with the thief's own key.
    let thief = ProofKey::ed25519(&[7; 32]);
    assert_ne!(thief.jkt(), key.jkt());
    let r = call(
        &stack,
        "GET",
        "/v1/items",
        &s,
        &[&thief.proof("GET", &url("/v1/items"), Some(&s.access))],
    );
    assert_refused(&r, "invalid_dpop_proof", "thief's key");
    assert!(stack.envoy.stat("denied.dpop_key_mismatch") >= 1);

    // A proof for another method, another URL, too old, or for another token; or with `htu`
    // written twice (another URL first): refused whichever one a reader would take.
    let claims = ProofKey::claims("GET", &url("/v1/items"), Some(&s.access)).to_string();
    let htu_twice = key.sign_text(
        &key.header().to_string(),
        &claims.replacen(
            '{',
            &format!("{{\"htu\":\"{}\",", url("/v1/admin/users")),
            1,
        ),
    );
    let cases = [
        (
            "other method",
            key.proof("POST", &url("/v1/items"), Some(&s.access)),
        ),
        (
            "other URL",
            key.proof("GET", &url("/v1/admin/users"), Some(&s.access)),
        ),
        (
            "other host",
            key.proof("GET", "http://elsewhere.example/v1/items", Some(&s.access)),
        ),
        (
            "stale iat",
            key.proof_with("GET", &url("/v1/items"), Some(&s.access), |c| {
                c["iat"] = (now() - 600).into()
            }),
        ),
        (
            "wrong ath",
            key.proof("GET", &url("/v1/items"), Some("another token")),
        ),
        ("no proof at all", String::new()),
        ("htu named twice", htu_twice),
    ];
    for (what, proof) in &cases {
        let proofs: Vec<&str> = if proof.is_empty() {
            vec![]
        } else {
            vec![proof]
        };
        assert_refused(
            &call(&stack, "GET", "/v1/items", &s, &proofs),
            "invalid_dpop_proof",
            what,
        );
    }
    // A proof for a POST does not carry the DELETE its query names.
    let r = call(
        &stack,
        "POST",
        "/v1/items?_method=DELETE",
        &s,
        &[&key.proof("POST", &url("/v1/items"), Some(&s.access))],
    );
    assert_refused(&r, "invalid_dpop_proof", "a method named in the query");
    for stat in [
        "dpop_method_mismatch",
        "dpop_uri_mismatch",
        "dpop_stale",
        "dpop_ath_mismatch",
        "dpop_malformed",
    ] {
        assert!(stack.envoy.stat(&format!("denied.{stat}")) >= 1, "{stat}");
    }

    // Two proofs on one request: RFC 9449 §4.3 step 1, `invalid_dpop_proof`.
    let (a, b) = (
        key.proof("GET", &url("/v1/items"), Some(&s.access)),
        key.proof("GET", &url("/v1/items"), Some(&s.access)),
    );
    assert_refused(
        &call(&stack, "GET", "/v1/items", &s, &[&a, &b]),
        "invalid_dpop_proof",
        "two proofs",
    );

    // The bound token presented as a bearer token (a downgrade).
    let bearer = Session {
        bearer: format!("Bearer {}", s.access),
        ..s.clone()
    };
    let r = call(&stack, "GET", "/v1/items", &bearer, &[]);
    assert_refused(&r, "invalid_token", "bearer downgrade");
    assert!(stack.envoy.stat("denied.dpop_bearer_downgrade") >= 1);

    // An EdDSA key works the same way; a plain bearer sign-in still works where DPoP is allowed.
    let ed = ProofKey::ed25519(&[9; 32]);
    let s2 = dpop_sign_in(&stack, email, &ed);
    let r = call(
        &stack,
        "GET",
        "/v1/items",
        &s2,
        &[&ed.proof("GET", &url("/v1/items"), Some(&s2.access))],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let plain = stack.sign_in(email);
    assert_eq!(stack.call("/v1/items", &plain).status, 200);
}

/// The variable the nonce test passes its key in (host → Wasm VM, `host_env_keys`).
const NONCE_KEY_ENV: &str = "AUTHFLOW_E2E_DPOP_NONCE_KEY";
const NONCE_KEY: [u8; 32] = [0x5a; 32];

fn nonce_stack(key_env: Option<&str>) -> Stack {
    Stack::start(
        StackOptions {
            issuer: ISSUER,
            service_env: &[],
            extra_clusters: &[],
        },
        |f| {
            f["providers"][0]["dpop"] = "allowed".into();
            f["providers"][0]["dpop_nonce"] = "required".into();
            if let Some(name) = key_env {
                f["dpop_nonce_key_env"] = name.into();
            }
        },
    )
}

/// A fresh proof for `GET /v1/items` with `nonce`.
fn nonce_proof(stack: &Stack, key: &ProofKey, s: &Session, nonce: &str) -> String {
    key.proof_with("GET", &stack.envoy.url("/v1/items"), Some(&s.access), |c| {
        c["nonce"] = nonce.into()
    })
}

/// A `use_dpop_nonce` refusal; the fresh nonce it offers.
fn nonce_refusal(r: &Reply, what: &str) -> String {
    assert_refused(r, "use_dpop_nonce", what);
    r.header("dpop-nonce")
        .unwrap_or_else(|| panic!("{what}: no DPoP-Nonce in {r:?}"))
        .to_owned()
}

#[test]
fn dpop_nonces_from_a_configured_key_through_envoy() {
    // Every replica would be given this key the same way.
    std::env::set_var(
        NONCE_KEY_ENV,
        base64::engine::general_purpose::STANDARD.encode(NONCE_KEY),
    );
    let stack = nonce_stack(Some(NONCE_KEY_ENV));
    let email = "nonce@example.com";
    stack.sign_up(email);
    let key = ProofKey::ed25519(&[11; 32]);
    let s = dpop_sign_in(&stack, email, &key);
    let shared_key = NonceKey::new(&NONCE_KEY).unwrap();

    // No nonce: 401 use_dpop_nonce with a nonce of the configured key; the retry with it passes.
    let r = call(
        &stack,
        "GET",
        "/v1/items",
        &s,
        &[&key.proof("GET", &stack.envoy.url("/v1/items"), Some(&s.access))],
    );
    let fresh = nonce_refusal(&r, "no nonce");
    assert!(
        nonce::check(&shared_key, &fresh, now(), 30),
        "issued with the key from the environment"
    );
    assert_eq!(
        call(
            &stack,
            "GET",
            "/v1/items",
            &s,
            &[&nonce_proof(&stack, &key, &s, &fresh)]
        )
        .status,
        200
    );

    // A nonce another replica issued with the same key passes too.
    let other_replica = nonce::issue(&shared_key, now());
    assert_eq!(
        call(
            &stack,
            "GET",
            "/v1/items",
            &s,
            &[&nonce_proof(&stack, &key, &s, &other_replica)]
        )
        .status,
        200
    );

    // Another key's nonce, an expired one, a forged one: refused, each with a fresh nonce.
    let mut forged = fresh.clone().into_bytes();
    forged[50] = if forged[50] == b'A' { b'B' } else { b'A' };
    for (what, bad) in [
        (
            "another key",
            nonce::issue(&NonceKey::new(&[1; 32]).unwrap(), now()),
        ),
        ("expired", nonce::issue(&shared_key, now() - 600)),
        ("forged", String::from_utf8(forged).unwrap()),
    ] {
        let r = call(
            &stack,
            "GET",
            "/v1/items",
            &s,
            &[&nonce_proof(&stack, &key, &s, &bad)],
        );
        let offered = nonce_refusal(&r, what);
        assert!(nonce::check(&shared_key, &offered, now(), 30), "{what}");
    }
    assert!(stack.envoy.stat("denied.dpop_nonce_missing") >= 1);
    assert!(stack.envoy.stat("denied.dpop_nonce_invalid") >= 3);
}

#[test]
fn a_nonce_past_half_its_window_is_renewed_on_success() {
    // RFC 9449 §8.2: a fresh nonce on a successful response spares the client the 401 it would pay when its nonce expires.
    std::env::set_var(
        NONCE_KEY_ENV,
        base64::engine::general_purpose::STANDARD.encode(NONCE_KEY),
    );
    let stack = nonce_stack(Some(NONCE_KEY_ENV));
    let shared_key = NonceKey::new(&NONCE_KEY).unwrap();
    for email in ["renew@example.com", "renew-bearer@example.com"] {
        stack.sign_up(email);
    }
    let key = ProofKey::es256(&[0x31; 32]);
    let s = dpop_sign_in(&stack, "renew@example.com", &key);

    // A nonce issued just now: accepted, and no new one (nothing to renew).
    let young = nonce::issue(&shared_key, now());
    let r = call(
        &stack,
        "GET",
        "/v1/items",
        &s,
        &[&nonce_proof(&stack, &key, &s, &young)],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("dpop-nonce"),
        None,
        "a young nonce is not renewed: {r:?}"
    );

    // One past half its 120 s window: accepted, and the response brings a fresh one…
    let old = nonce::issue(&shared_key, now() - 75);
    let r = call(
        &stack,
        "GET",
        "/v1/items",
        &s,
        &[&nonce_proof(&stack, &key, &s, &old)],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let renewed = r
        .header("dpop-nonce")
        .unwrap_or_else(|| panic!("no DPoP-Nonce on success: {r:?}"))
        .to_owned();
    assert_ne!(renewed, old);
    assert!(
        nonce::check(&shared_key, &renewed, now(), 10),
        "a nonce issued now with the shared key"
    );
    // …that the next proof uses.
    assert_eq!(
        call(
            &stack,
            "GET",
            "/v1/items",
            &s,
            &[&nonce_proof(&stack, &key, &s, &renewed)]
        )
        .status,
        200
    );

    // A bearer request passes without any DPoP-Nonce.
    let bearer = stack.sign_in("renew-bearer@example.com");
    let r = stack.envoy.get("/v1/items", &bearer.headers());
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("dpop-nonce"), None, "{r:?}");
}

#[test]
fn dpop_nonces_with_a_per_process_key_hold_across_workers() {
    let stack = nonce_stack(None);
    let email = "nonce2@example.com";
    stack.sign_up(email);
    let key = ProofKey::es256(&[0x24; 32]);
    let s = dpop_sign_in(&stack, email, &key);
    let r = call(
        &stack,
        "GET",
        "/v1/items",
        &s,
        &[&key.proof("GET", &stack.envoy.url("/v1/items"), Some(&s.access))],
    );
    let fresh = nonce_refusal(&r, "no nonce");
    // Each call is a new connection, spread over the two workers: each accepts the nonce either issued.
    for i in 0..12 {
        let r = call(
            &stack,
            "GET",
            "/v1/items",
            &s,
            &[&nonce_proof(&stack, &key, &s, &fresh)],
        );
        assert_eq!(r.status, 200, "call {i}: {r:?}");
    }
    assert!(
        stack.envoy.log().contains("one per replica"),
        "the operator is told replicas differ"
    );
}

#[test]
fn a_nonce_key_variable_the_vm_lacks_is_refused_at_load() {
    let mut filter = filter_config(ISSUER);
    filter["providers"][0]["dpop"] = "allowed".into();
    filter["providers"][0]["dpop_nonce"] = "required".into();
    filter["dpop_nonce_key_env"] = "AUTHFLOW_E2E_NO_SUCH_VARIABLE".into();
    let clusters = vec![
        ("backend".to_owned(), free_port()),
        ("authflow_auth".to_owned(), free_port()),
    ];
    let err = match Envoy::start(EnvoyOptions {
        filter,
        routes: vec![],
        clusters,
        concurrency: 1,
    }) {
        Ok(_) => panic!("Envoy served without a nonce key"),
        Err(e) => e,
    };
    assert!(
        err.contains("AUTHFLOW_E2E_NO_SUCH_VARIABLE") && err.contains("host_env_keys"),
        "the log says what to fix:\n{err}"
    );
}
