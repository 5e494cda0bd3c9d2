//! Service-to-service calls through the real Envoy with the built filter, the
//! real auth service (SQLite) and the echo backend: a service account gets a
//! token with the client-credentials grant, reaches the routes for its client
//! id and no others, is no user, needs no device, cannot be impersonated by a
//! forged identity header, and dies through the feed when disabled.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::{
    Claims, ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair, UnixTimeStamp,
};
use serde_json::{json, Value};
use support::stack::*;
use support::*;

/// The stack, plus routes for two service accounts and one for users only.
/// Service tokens have no session: `sid` is not a required claim here. User
/// tokens must carry a device fingerprint.
const ISSUER: &str = "http://authflow.service-e2e";

fn stack() -> Stack {
    Stack::start(
        StackOptions {
            issuer: ISSUER,
            service_env: &[],
            extra_clusters: &[],
        },
        |f| {
            f["providers"][0]["required_claims"] = json!(["sub", "jti"]);
            f["device_binding"]["tokens_without_fingerprint"] = json!("deny");
            let routes = f["routes"].as_array_mut().unwrap();
            routes.push(json!({"match": {"path_prefix": "/internal/billing"}, "policy": {"client_ids_any": ["billing"]}}));
            routes.push(json!({"match": {"path_prefix": "/internal/payroll"}, "policy": {"client_ids_any": ["payroll"]}}));
            routes.push(json!({"match": {"path_prefix": "/me"}, "policy": "user"}));
        },
    )
}

/// A service account created with the service's CLI; its client secret.
fn create_account(st: &Stack, client_id: &str) -> String {
    let out = st.auth.cli(&[
        "service-account",
        "create",
        "--client-id",
        client_id,
        "--scope",
        "invoices:read",
    ]);
    serde_json::from_str::<Value>(&out).unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `POST /v1/oauth/token` (form-encoded) at the auth service.
fn token_request(st: &Stack, form: &[(&str, &str)]) -> Reply {
    reply(
        http()
            .post(&st.auth.url("/v1/oauth/token"))
            .send_form(form.iter().copied())
            .unwrap(),
    )
}

/// The client-credentials grant with the secret in the form (`client_secret_post`).
fn token_by_secret(st: &Stack, client_id: &str, secret: &str) -> String {
    let r = token_request(
        st,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ],
    );
    assert_eq!(r.status, 200, "token: {r:?}");
    r.json()["access_token"].as_str().unwrap().to_owned()
}

/// A key-only service account (`private_key_jwt`, no secret), created with
/// the CLI from the public JWK of `key`.
fn create_key_account(st: &Stack, client_id: &str, key: &ES256KeyPair) -> Value {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
    let file = st
        .auth
        .data_dir
        .with_extension(format!("{client_id}.jwk.json"));
    std::fs::write(&file, jwk.to_string()).unwrap();
    let out = st.auth.cli(&[
        "service-account",
        "create",
        "--client-id",
        client_id,
        "--scope",
        "payroll:run",
        "--jwk-file",
        file.to_str().unwrap(),
        "--no-secret",
    ]);
    let _ = std::fs::remove_file(&file);
    serde_json::from_str(&out).unwrap()
}

/// The client-credentials grant with a signed assertion (RFC 7523 §2.2):
/// `iss` = `sub` = the client id, `aud` = the issuer (a single string), one minute, a fresh `jti`.
fn token_by_assertion(st: &Stack, issuer: &str, client_id: &str, key: &ES256KeyPair) -> Reply {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = Claims::create(jwt_simple::prelude::Duration::from_secs(60))
        .with_issuer(client_id)
        .with_subject(client_id)
        .with_audience(issuer)
        .with_jwt_id(format!("{client_id}-{now}-{}", std::process::id()));
    claims.expires_at = Some(UnixTimeStamp::from_secs(now + 60));
    let assertion = key.sign(claims).unwrap();
    token_request(
        st,
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ],
    )
}

/// What a service sends: its token and nothing of a device.
fn service_call(st: &Stack, path: &str, token: &str, extra: &[(&str, &str)]) -> Reply {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("authorization", bearer.as_str())];
    headers.extend_from_slice(extra);
    st.envoy.get(path, &headers)
}

fn challenge(r: &Reply) -> String {
    r.header("www-authenticate").unwrap_or_default().to_owned()
}

#[test]
fn service_accounts_reach_their_routes_and_users_do_not() {
    let st = stack();
    let secret = create_account(&st, "billing");
    let billing = token_by_secret(&st, "billing", &secret);

    let r = service_call(&st, "/internal/billing/invoices", &billing, &[]);
    assert_eq!(r.status, 200, "its own route, without any device: {r:?}");
    assert_eq!(r.echoed("x-auth-client-id").as_deref(), Some("billing"));
    assert_eq!(r.echoed("x-auth-user").as_deref(), Some("svc:billing"));
    assert_eq!(
        service_call(&st, "/api/x", &billing, &[]).status,
        200,
        "any authenticated route, device binding or not"
    );

    for path in ["/internal/payroll/run", "/me", "/v1/admin/users"] {
        let r = service_call(&st, path, &billing, &[]);
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert!(
            challenge(&r).contains("error=\"insufficient_scope\""),
            "{path}: {r:?}"
        );
    }

    // A key-only account proves itself with a signed assertion.
    let key = ES256KeyPair::generate();
    let created = create_key_account(&st, "payroll", &key);
    assert!(created.get("client_secret").is_none(), "{created}");
    let r = token_by_assertion(&st, ISSUER, "payroll", &key);
    assert_eq!(r.status, 200, "private_key_jwt: {r:?}");
    let payroll = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = service_call(&st, "/internal/payroll/run", &payroll, &[]);
    assert_eq!(
        (r.status, r.echoed("x-auth-client-id").as_deref()),
        (200, Some("payroll")),
        "{r:?}"
    );
    assert_eq!(
        service_call(&st, "/internal/billing/invoices", &payroll, &[]).status,
        403
    );
    let r = token_by_assertion(&st, ISSUER, "payroll", &ES256KeyPair::generate());
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("invalid_client")),
        "another key: {r:?}"
    );

    st.sign_up("alice@service-e2e.test");
    let alice = st.sign_in("alice@service-e2e.test");
    assert_eq!(st.call("/me/devices", &alice).status, 200);
    let r = st.call("/internal/billing/invoices", &alice);
    assert_eq!(r.status, 403, "a user is no service account: {r:?}");
    assert!(
        challenge(&r).contains("not open to the calling client"),
        "{r:?}"
    );
    // A user token still needs its device where binding is enforced.
    assert_eq!(service_call(&st, "/api/x", &alice.access, &[]).status, 401);
}

#[test]
fn a_forged_client_id_header_never_reaches_the_backend() {
    let st = stack();
    let secret = create_account(&st, "billing");
    let billing = token_by_secret(&st, "billing", &secret);
    st.sign_up("mallory@service-e2e.test");
    let mallory = st.sign_in("mallory@service-e2e.test");
    let forged = [
        ("x-auth-client-id", "payroll"),
        ("x_auth_client_id", "payroll"),
        ("x-auth_client-id", "payroll"),
    ];
    let spellings = |r: &Reply| -> Vec<String> {
        let headers = r.json()["headers"].as_object().cloned().unwrap_or_default();
        headers
            .keys()
            .filter(|k| k.replace('_', "-") == "x-auth-client-id")
            .map(|k| format!("{k}={}", headers[k]))
            .collect()
    };

    let mut headers = mallory.headers();
    headers.extend_from_slice(&forged);
    let r = st.envoy.get("/api/x", &headers);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        spellings(&r),
        Vec::<String>::new(),
        "a user names no client: {r:?}"
    );
    let r = st.envoy.get("/public/page", &forged);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(spellings(&r), Vec::<String>::new(), "anonymous: {r:?}");
    let r = service_call(&st, "/internal/billing/x", &billing, &forged);
    assert_eq!(
        spellings(&r),
        vec!["x-auth-client-id=\"billing\"".to_owned()],
        "only the token's own: {r:?}"
    );
    // The forged header opens no door either.
    assert_eq!(
        service_call(&st, "/internal/payroll/x", &billing, &forged).status,
        403
    );
}

#[test]
fn a_disabled_service_account_is_refused_within_the_feed_delay() {
    let st = stack();
    let secret = create_account(&st, "billing");
    let billing = token_by_secret(&st, "billing", &secret);
    assert_eq!(
        service_call(&st, "/internal/billing/x", &billing, &[]).status,
        200
    );

    // The admin endpoint, through Envoy (the CLI writes from another process:
    // the running service publishes that at its next maintenance round).
    let admin = st.admin("root@service-e2e.test");
    let r = st.envoy.post(
        "/v1/admin/service-accounts/billing/disable",
        &admin.headers(),
        &json!({}),
    );
    assert_eq!(r.status, 200, "disable: {r:?}");
    // The feed is polled every 200 ms; every worker refuses it well within 3 s.
    let refused = eventually(Duration::from_secs(3), || {
        (0..6).all(|_| service_call(&st, "/internal/billing/x", &billing, &[]).status == 401)
    });
    assert!(refused, "the disabled account's token still passes");
    let r = service_call(&st, "/internal/billing/x", &billing, &[]);
    assert!(challenge(&r).contains("account disabled"), "{r:?}");
    let r = token_request(
        &st,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "billing"),
            ("client_secret", &secret),
        ],
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );
}
