//! Service-to-service calls through the real Envoy with the built filter, the
//! real auth service (SQLite) and the echo backend: a service account gets a
//! token with the client-credentials grant, reaches the routes for its client
//! id and no others, is no user, needs no device, cannot be impersonated by a
//! forged identity header, and dies through the feed when disabled.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::stack::*;
use support::*;

/// The stack, plus routes for two service accounts and one for users only.
/// Service tokens have no session: `sid` is not a required claim here. User
/// tokens must carry a device fingerprint.
fn stack() -> Stack {
    Stack::start(StackOptions { issuer: "http://authflow.service-e2e", service_env: &[], extra_clusters: &[] }, |f| {
        f["providers"][0]["required_claims"] = json!(["sub", "jti"]);
        f["device_binding"]["tokens_without_fingerprint"] = json!("deny");
        let routes = f["routes"].as_array_mut().unwrap();
        routes.push(json!({"match": {"path_prefix": "/internal/billing"}, "policy": {"client_ids_any": ["billing"]}}));
        routes.push(json!({"match": {"path_prefix": "/internal/payroll"}, "policy": {"client_ids_any": ["payroll"]}}));
        routes.push(json!({"match": {"path_prefix": "/me"}, "policy": "user"}));
    })
}

/// A service account created with the service's CLI; its client secret.
fn create_account(st: &Stack, client_id: &str) -> String {
    let out = st.auth.cli(&["service-account", "create", "--client-id", client_id, "--scope", "invoices:read"]);
    serde_json::from_str::<Value>(&out).unwrap()["client_secret"].as_str().unwrap().to_owned()
}

/// `POST /v1/oauth/token` (form-encoded) at the auth service.
fn token_request(st: &Stack, form: &[(&str, &str)]) -> Reply {
    reply(http().post(&st.auth.url("/v1/oauth/token")).send_form(form.iter().copied()).unwrap())
}

/// The client-credentials grant with the secret in the form (`client_secret_post`).
fn token_by_secret(st: &Stack, client_id: &str, secret: &str) -> String {
    let r = token_request(st, &[("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret)]);
    assert_eq!(r.status, 200, "token: {r:?}");
    r.json()["access_token"].as_str().unwrap().to_owned()
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
    assert_eq!(service_call(&st, "/api/x", &billing, &[]).status, 200, "any authenticated route, device binding or not");

    for path in ["/internal/payroll/run", "/me", "/v1/admin/users"] {
        let r = service_call(&st, path, &billing, &[]);
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert!(challenge(&r).contains("error=\"insufficient_scope\""), "{path}: {r:?}");
    }

    st.sign_up("alice@service-e2e.test");
    let alice = st.sign_in("alice@service-e2e.test");
    assert_eq!(st.call("/me/devices", &alice).status, 200);
    let r = st.call("/internal/billing/invoices", &alice);
    assert_eq!(r.status, 403, "a user is no service account: {r:?}");
    assert!(challenge(&r).contains("not open to the calling client"), "{r:?}");
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
    let forged = [("x-auth-client-id", "payroll"), ("x_auth_client_id", "payroll"), ("x-auth_client-id", "payroll")];
    let spellings = |r: &Reply| -> Vec<String> {
        let headers = r.json()["headers"].as_object().cloned().unwrap_or_default();
        headers.keys().filter(|k| k.replace('_', "-") == "x-auth-client-id").map(|k| format!("{k}={}", headers[k])).collect()
    };

    let mut headers = mallory.headers();
    headers.extend_from_slice(&forged);
    let r = st.envoy.get("/api/x", &headers);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(spellings(&r), Vec::<String>::new(), "a user names no client: {r:?}");
    let r = st.envoy.get("/public/page", &forged);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(spellings(&r), Vec::<String>::new(), "anonymous: {r:?}");
    let r = service_call(&st, "/internal/billing/x", &billing, &forged);
    assert_eq!(spellings(&r), vec!["x-auth-client-id=\"billing\"".to_owned()], "only the token's own: {r:?}");
    // The forged header opens no door either.
    assert_eq!(service_call(&st, "/internal/payroll/x", &billing, &forged).status, 403);
}

#[test]
fn a_disabled_service_account_is_refused_within_the_feed_delay() {
    let st = stack();
    let secret = create_account(&st, "billing");
    let billing = token_by_secret(&st, "billing", &secret);
    assert_eq!(service_call(&st, "/internal/billing/x", &billing, &[]).status, 200);

    // The admin endpoint, through Envoy (the CLI writes from another process:
    // the running service publishes that at its next maintenance round).
    let admin = st.admin("root@service-e2e.test");
    let r = st.envoy.post("/v1/admin/service-accounts/billing/disable", &admin.headers(), &json!({}));
    assert_eq!(r.status, 200, "disable: {r:?}");
    // The feed is polled every 200 ms; every worker refuses it well within 3 s.
    let refused = eventually(Duration::from_secs(3), || {
        (0..6).all(|_| service_call(&st, "/internal/billing/x", &billing, &[]).status == 401)
    });
    assert!(refused, "the disabled account's token still passes");
    let r = service_call(&st, "/internal/billing/x", &billing, &[]);
    assert!(challenge(&r).contains("account disabled"), "{r:?}");
    let r = token_request(&st, &[("grant_type", "client_credentials"), ("client_id", "billing"), ("client_secret", &secret)]);
    assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("invalid_client")));
}
