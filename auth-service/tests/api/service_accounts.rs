//! Service accounts and the client-credentials grant (RFC 6749 §4.4):
//! admin create / rotate / disable, the token endpoint's answers (§5.1 /
//! §5.2), and what the issued token carries.

use authflow_contract::revocation::RevocationFeed;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

const TOKEN: &str = "/v1/oauth/token";

impl TestApp {
    async fn create_service_account(&self, admin: &Tokens, client_id: &str, scopes: &[&str]) -> String {
        let r = self.authed(Method::POST, "/v1/admin/service-accounts", admin).json(&json!({"client_id": client_id, "scopes": scopes})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["client_id"], client_id);
        body["client_secret"].as_str().unwrap().to_owned()
    }

    async fn client_token(&self, client_id: &str, secret: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http.post(self.url(TOKEN)).basic_auth(client_id, Some(secret)).form(form).send().await.unwrap()
    }
}

#[tokio::test]
async fn a_service_account_gets_a_scoped_token_without_session_or_device() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app.create_service_account(&admin, "billing", &["invoices:read", "invoices:write"]).await;

    let r = app.client_token("billing", &secret, &[("grant_type", "client_credentials"), ("scope", "invoices:read")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "invoices:read");
    assert!(body.get("refresh_token").is_none(), "no refresh token for this grant: {body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(header(token)["typ"], "at+jwt");
    let c = claims(token);
    assert_eq!(c["sub"], "svc:billing");
    assert_eq!(c["client_id"], "billing");
    assert_eq!(c["scope"], "invoices:read");
    for absent in ["dfp", "sid"] {
        assert!(c.get(absent).is_none(), "{absent} in {c}");
    }
    assert_eq!(c["roles"], json!([]));
    // It verifies like any access token, without a device secret.
    let r = app.http.get(app.url("/v1/ext-authz")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // client_secret_post, and no scope asked: all of the account's.
    let form = [("grant_type", "client_credentials"), ("client_id", "billing"), ("client_secret", secret.as_str())];
    let r = app.http.post(app.url(TOKEN)).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["scope"], "invoices:read invoices:write");
}

#[tokio::test]
async fn the_token_endpoint_answers_oauth_errors() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app.create_service_account(&admin, "reports", &["read"]).await;
    let grant = [("grant_type", "client_credentials")];

    for (id, s) in [("reports", "wrong"), ("nobody", secret.as_str()), ("BAD id", "x")] {
        let r = app.client_token(id, s, &grant).await;
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"authflow\"");
        assert_eq!(error_code(r, 401).await, "invalid_client", "{id}");
    }
    let r = app.http.post(app.url(TOKEN)).form(&grant).send().await.unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_client");
    let r = app.client_token("reports", &secret, &[("grant_type", "client_credentials"), ("scope", "read write")]).await;
    assert_eq!(error_code(r, 400).await, "invalid_scope");
    let r = app.client_token("reports", &secret, &[("grant_type", "password")]).await;
    assert_eq!(error_code(r, 400).await, "unsupported_grant_type");
    let r = app.http.post(app.url(TOKEN)).basic_auth("reports", Some(&secret)).json(&json!({"grant_type": "client_credentials"})).send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_request");
    // Two authentication methods at once (RFC 6749 §2.3).
    let both = [("grant_type", "client_credentials"), ("client_id", "reports"), ("client_secret", secret.as_str())];
    let r = app.client_token("reports", &secret, &both).await;
    assert_eq!(error_code(r, 400).await, "invalid_request");
}

#[tokio::test]
async fn admin_creates_rotates_and_disables_and_the_feed_bans_the_service_subject() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    app.verified_user("kim@example.com").await;
    let user = app.signin("kim@example.com", PASSWORD).await;
    let r = app.authed(Method::POST, "/v1/admin/service-accounts", &user).json(&json!({"client_id": "x"})).send().await.unwrap();
    assert_eq!(error_code(r, 403).await, "insufficient_scope");
    for bad in ["", "Upper", "svc:x", &"a".repeat(65)] {
        let r = app.authed(Method::POST, "/v1/admin/service-accounts", &admin).json(&json!({"client_id": bad})).send().await.unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_request", "{bad}");
    }
    let old = app.create_service_account(&admin, "mailer", &["mail:send"]).await;
    let r = app.authed(Method::POST, "/v1/admin/service-accounts", &admin).json(&json!({"client_id": "mailer"})).send().await.unwrap();
    assert_eq!(error_code(r, 409).await, "conflict");
    let stored = app.state.store.service_account("mailer").await.unwrap().unwrap();
    assert!(stored.secret_hash.starts_with("$argon2id$") && !stored.secret_hash.contains(&old));

    // Rotate: the old secret stops working, the new one works.
    let r = app.authed(Method::POST, "/v1/admin/service-accounts/mailer/secret", &admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let new = r.json::<Value>().await.unwrap()["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let grant = [("grant_type", "client_credentials")];
    assert_eq!(app.client_token("mailer", &old, &grant).await.status(), 401);
    let r = app.client_token("mailer", &new, &grant).await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();

    // Disable: no new tokens, and the feed bans `svc:mailer` so every filter drops the live ones.
    let (_, snap) = app.feed(None).await;
    let cursor = snap.unwrap()["cursor"].as_str().unwrap().to_owned();
    let r = app.authed(Method::POST, "/v1/admin/service-accounts/mailer/disable", &admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.client_token("mailer", &new, &grant).await.status(), 401);
    let (_, delta) = app.feed(Some(&cursor)).await;
    let feed: RevocationFeed = serde_json::from_value(delta.unwrap()).unwrap();
    assert_eq!(feed.banned_subjects.len(), 1);
    assert_eq!(feed.banned_subjects[0].sub, "svc:mailer");
    let r = app.http.get(app.url("/v1/ext-authz")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app.authed(Method::POST, "/v1/admin/service-accounts/mailer/secret", &admin).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = app.authed(Method::POST, "/v1/admin/service-accounts/mailer/disable", &admin).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
}

/// A service account is no user: its token opens none of the endpoints that
/// act on a user's sessions, devices or second factors (it has no session,
/// so "log out" would report success while ending nothing).
#[tokio::test]
async fn a_service_token_does_not_pass_as_a_user() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app.create_service_account(&admin, "billing", &["read"]).await;
    let r = app.client_token("billing", &secret, &[("grant_type", "client_credentials")]).await;
    let token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let calls = [
        ("/v1/auth/logout", json!({})),
        ("/v1/auth/logout-all", json!({})),
        ("/v1/auth/totp/enroll", json!({"password": "x"})),
        ("/v1/auth/totp/confirm", json!({"code": "123456"})),
        ("/v1/auth/totp/remove", json!({"password": "x"})),
        ("/v1/admin/service-accounts", json!({"client_id": "other"})),
    ];
    for (path, body) in calls {
        let r = app.http.post(app.url(path)).bearer_auth(&token).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!((status, body["error"].as_str()), (403, Some("insufficient_scope")), "{path}: {body}");
        assert!(body["error_description"].as_str().unwrap().contains("service account"), "{path}: {body}");
    }
    // The token is still good where a service token belongs.
    let r = app.http.get(app.url("/v1/ext-authz")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
