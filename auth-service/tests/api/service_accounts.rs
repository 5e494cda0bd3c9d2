//! Service accounts and the client-credentials grant (RFC 6749 §4.4):
//! admin create / rotate / disable, the token endpoint's answers (§5.1 /
//! §5.2), and what the issued token carries.

use authflow_contract::revocation::RevocationFeed;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

const TOKEN: &str = "/v1/oauth/token";

impl TestApp {
    pub(crate) async fn create_service_account(
        &self,
        admin: &Tokens,
        client_id: &str,
        scopes: &[&str],
    ) -> String {
        let r = self
            .authed(Method::POST, "/v1/admin/service-accounts", admin)
            .json(&json!({"client_id": client_id, "scopes": scopes}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["client_id"], client_id);
        body["client_secret"].as_str().unwrap().to_owned()
    }

    async fn client_token(
        &self,
        client_id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(self.url(TOKEN))
            .basic_auth(client_id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The access token of a client-credentials grant with `secret` (200 expected).
    async fn service_token(&self, client_id: &str, secret: &str) -> String {
        let r = self
            .client_token(client_id, secret, &[("grant_type", "client_credentials")])
            .await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The status `/v1/ext-authz` answers `token` with.
    async fn ext_authz_status(&self, token: &str) -> u16 {
        self.http
            .get(self.url("/v1/ext-authz"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A new secret for `client_id`, the query (`?revoke_tokens=true`) as given.
    async fn rotate_secret(&self, admin: &Tokens, client_id: &str, query: &str) -> String {
        let r = self
            .authed(
                Method::POST,
                &format!("/v1/admin/service-accounts/{client_id}/secret{query}"),
                admin,
            )
            .send()
            .await
            .unwrap();
        ok_text(r, "client_secret").await
    }
}

#[tokio::test]
async fn a_service_account_gets_a_scoped_token_without_session_or_device() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app
        .create_service_account(&admin, "billing", &["invoices:read", "invoices:write"])
        .await;

    let r = app
        .client_token(
            "billing",
            &secret,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "invoices:read"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "invoices:read");
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for this grant: {body}"
    );
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
    let r = app
        .http
        .get(app.url("/v1/ext-authz"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // client_secret_post, and no scope asked: all of the account's.
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "billing"),
        ("client_secret", secret.as_str()),
    ];
    let r = app
        .http
        .post(app.url(TOKEN))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["scope"],
        "invoices:read invoices:write"
    );
}

/// A secret stored by an earlier release as an argon2id hash keeps working;
/// a rotated one is stored as its SHA-256. Only the legacy form costs a
/// password hash: a made-up client id costs none.
#[tokio::test]
async fn secrets_stored_as_argon2_by_earlier_releases_still_work() {
    use authflow_auth_service::domain::password::Hasher;
    use authflow_auth_service::store::ServiceAccount;
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = "legacy-secret-9fQ2mZ7xW4kT1vB8nR3cY6hJ0pL5sD2g";
    let account = ServiceAccount {
        client_id: "legacy".into(),
        secret_hash: Hasher::new(1024, 1).unwrap().hash(secret).unwrap(),
        scope: "read".into(),
        disabled_at: None,
        created_at: 0,
        rotated_at: 0,
        public_jwk: None,
    };
    app.state
        .store
        .create_service_account(&account)
        .await
        .unwrap();
    let grant = [("grant_type", "client_credentials")];
    assert_eq!(
        app.client_token("legacy", secret, &grant).await.status(),
        200
    );
    assert_eq!(
        error_code(app.client_token("legacy", "wrong", &grant).await, 401).await,
        "invalid_client"
    );
    let r = app
        .authed(
            Method::POST,
            "/v1/admin/service-accounts/legacy/secret",
            &admin,
        )
        .send()
        .await
        .unwrap();
    let new = r.json::<Value>().await.unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(app
        .state
        .store
        .service_account("legacy")
        .await
        .unwrap()
        .unwrap()
        .secret_hash
        .starts_with("sha256$"));
    assert_eq!(
        app.client_token("legacy", secret, &grant).await.status(),
        401
    );
    assert_eq!(app.client_token("legacy", &new, &grant).await.status(), 200);
}

#[tokio::test]
async fn the_token_endpoint_answers_oauth_errors() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app
        .create_service_account(&admin, "reports", &["read"])
        .await;
    let grant = [("grant_type", "client_credentials")];

    for (id, s) in [
        ("reports", "wrong"),
        ("nobody", secret.as_str()),
        ("BAD id", "x"),
    ] {
        let r = app.client_token(id, s, &grant).await;
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"authflow\"");
        assert_eq!(error_code(r, 401).await, "invalid_client", "{id}");
    }
    let r = app
        .http
        .post(app.url(TOKEN))
        .form(&grant)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_client");
    let r = app
        .client_token(
            "reports",
            &secret,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "read write"),
            ],
        )
        .await;
    assert_eq!(error_code(r, 400).await, "invalid_scope");
    let r = app
        .client_token("reports", &secret, &[("grant_type", "password")])
        .await;
    assert_eq!(error_code(r, 400).await, "unsupported_grant_type");
    let r = app
        .http
        .post(app.url(TOKEN))
        .basic_auth("reports", Some(&secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_request");
    // Two authentication methods at once (RFC 6749 §2.3).
    let both = [
        ("grant_type", "client_credentials"),
        ("client_id", "reports"),
        ("client_secret", secret.as_str()),
    ];
    let r = app.client_token("reports", &secret, &both).await;
    assert_eq!(error_code(r, 400).await, "invalid_request");
    // An Authorization header that is not valid Basic is a failed client
    // authentication, not ignored beside the form's credentials.
    for authorization in ["Bearer abc", "Basic !!!", "Basic", "Digest x"] {
        let r = app
            .http
            .post(app.url(TOKEN))
            .header("authorization", authorization)
            .form(&both)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r, 401).await,
            "invalid_client",
            "{authorization}"
        );
    }
    // A parameter sent twice is refused as such (RFC 6749 §3.2), and an
    // empty `scope` is an invalid scope, not a token for nothing.
    let r = app
        .client_token(
            "reports",
            &secret,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "read"),
                ("scope", "read"),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("`scope` more than once"),
        "{body}"
    );
    for empty in ["", " "] {
        let r = app
            .client_token(
                "reports",
                &secret,
                &[("grant_type", "client_credentials"), ("scope", empty)],
            )
            .await;
        assert_eq!(error_code(r, 400).await, "invalid_scope", "{empty:?}");
    }
}

#[tokio::test]
async fn admin_creates_rotates_and_disables_and_the_feed_bans_the_service_subject() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    app.verified_user("kim@example.com").await;
    let user = app.signin("kim@example.com", PASSWORD).await;
    let r = app
        .authed(Method::POST, "/v1/admin/service-accounts", &user)
        .json(&json!({"client_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "insufficient_scope");
    for bad in ["", "Upper", "svc:x", &"a".repeat(65)] {
        let r = app
            .authed(Method::POST, "/v1/admin/service-accounts", &admin)
            .json(&json!({"client_id": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_request", "{bad}");
    }
    let old = app
        .create_service_account(&admin, "mailer", &["mail:send"])
        .await;
    let r = app
        .authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": "mailer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 409).await, "conflict");
    let stored = app
        .state
        .store
        .service_account("mailer")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.secret_hash.starts_with("sha256$") && !stored.secret_hash.contains(&old));

    // Rotate: the old secret stops working, the new one works.
    let r = app
        .authed(
            Method::POST,
            "/v1/admin/service-accounts/mailer/secret",
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new = r.json::<Value>().await.unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    let grant = [("grant_type", "client_credentials")];
    assert_eq!(app.client_token("mailer", &old, &grant).await.status(), 401);
    let token = app.service_token("mailer", &new).await;

    // Disable: no new tokens, and the feed bans `svc:mailer` so every filter drops the live ones.
    let (_, snap) = app.feed(None).await;
    let cursor = snap.unwrap()["cursor"].as_str().unwrap().to_owned();
    let r = app
        .authed(
            Method::POST,
            "/v1/admin/service-accounts/mailer/disable",
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.client_token("mailer", &new, &grant).await.status(), 401);
    let (_, delta) = app.feed(Some(&cursor)).await;
    let feed: RevocationFeed = serde_json::from_value(delta.unwrap()).unwrap();
    assert_eq!(feed.banned_subjects.len(), 1);
    assert_eq!(feed.banned_subjects[0].sub, "svc:mailer");
    assert_eq!(app.ext_authz_status(&token).await, 401);
    let r = app
        .authed(
            Method::POST,
            "/v1/admin/service-accounts/mailer/secret",
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = app
        .authed(
            Method::POST,
            "/v1/admin/service-accounts/mailer/disable",
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
}

/// A service account is no user: its token opens none of the endpoints that
/// act on a user's sessions, devices or second factors (it has no session,
/// so "log out" would report success while ending nothing).
#[tokio::test]
async fn a_service_token_does_not_pass_as_a_user() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app
        .create_service_account(&admin, "billing", &["read"])
        .await;
    let token = app.service_token("billing", &secret).await;
    let calls = [
        ("/v1/auth/logout", json!({})),
        ("/v1/auth/logout-all", json!({})),
        ("/v1/auth/totp/enroll", json!({"password": "x"})),
        ("/v1/auth/totp/confirm", json!({"code": "123456"})),
        ("/v1/auth/totp/remove", json!({"password": "x"})),
        ("/v1/admin/service-accounts", json!({"client_id": "other"})),
    ];
    for (path, body) in calls {
        let r = app
            .http
            .post(app.url(path))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("insufficient_scope")),
            "{path}: {body}"
        );
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("service account"),
            "{path}: {body}"
        );
    }
    // The token is still good where a service token belongs.
    assert_eq!(app.ext_authz_status(&token).await, 200);
}

// ---- private_key_jwt (RFC 7523 §2.2) ----

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::{
    Claims, Duration, ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair, Ed25519KeyPair,
    EdDSAKeyPairLike, UnixTimeStamp,
};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn es256_jwk(kp: &ES256KeyPair) -> Value {
    let point = kp.public_key().public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])})
}

fn ed25519_jwk(kp: &Ed25519KeyPair) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(kp.public_key().to_bytes())})
}

/// An assertion's claims, as a client would make them; tests spoil one at a time.
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    /// `aud` as a string (the issuer, as draft-ietf-oauth-rfc7523bis asks)...
    aud: String,
    /// ... or, when not empty, as an array of these.
    aud_array: Vec<String>,
    exp_in: Option<u64>,
    jti: Option<String>,
}

impl<'a> Assertion<'a> {
    fn new(app: &TestApp, client_id: &'a str) -> Self {
        let aud = app.state.config.tokens.issuer.clone();
        Assertion {
            iss: client_id,
            sub: client_id,
            aud,
            aud_array: Vec::new(),
            exp_in: Some(60),
            jti: Some(authflow_auth_service::domain::random_id()),
        }
    }

    fn claims(&self) -> jwt_simple::prelude::JWTClaims<jwt_simple::prelude::NoCustomClaims> {
        let c = Claims::create(Duration::from_secs(60))
            .with_issuer(self.iss)
            .with_subject(self.sub);
        let mut c = if self.aud_array.is_empty() {
            c.with_audience(&self.aud)
        } else {
            c.with_audiences(
                self.aud_array
                    .iter()
                    .cloned()
                    .collect::<std::collections::HashSet<_>>(),
            )
        };
        c.expires_at = self
            .exp_in
            .map(|s| UnixTimeStamp::from_secs(now() as u64 + s));
        c.jwt_id = self.jti.clone();
        c
    }

    fn es256(&self, kp: &ES256KeyPair) -> String {
        kp.sign(self.claims()).unwrap()
    }

    fn ed25519(&self, kp: &Ed25519KeyPair) -> String {
        kp.sign(self.claims()).unwrap()
    }
}

use authflow_auth_service::clock::now;

impl TestApp {
    async fn assertion_token(&self, assertion: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ];
        form.extend_from_slice(extra);
        self.http
            .post(self.url(TOKEN))
            .form(&form)
            .send()
            .await
            .unwrap()
    }
}

/// The one answer to every failed client authentication: it says nothing of why.
async fn refused_client(r: reqwest::Response, why: &str) {
    assert_eq!(r.status(), 401, "{why}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "invalid_client", "error_description": "client authentication failed"}),
        "{why}"
    );
}

#[tokio::test]
async fn private_key_jwt_gets_a_token_and_each_assertion_counts_once_on_every_instance() {
    let app = spawn_app().await;
    let other = spawn_app_beside(&app, |_| {}).await;
    let admin = app.admin("root@example.com").await;
    let kp = ES256KeyPair::generate();
    let r = app.authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": "billing", "scopes": ["invoices:read"], "jwk": es256_jwk(&kp), "secret": false}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert!(
        body.get("client_secret").is_none(),
        "a key-only account gets no secret: {body}"
    );

    let assertion = Assertion::new(&app, "billing").es256(&kp);
    let r = app
        .assertion_token(&assertion, &[("client_id", "billing")])
        .await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims(&token)["sub"], "svc:billing");
    assert_eq!(claims(&token)["client_id"], "billing");

    // Replayed: here, and on another instance of the same database.
    refused_client(app.assertion_token(&assertion, &[]).await, "replayed").await;
    refused_client(
        other.assertion_token(&assertion, &[]).await,
        "replayed on another instance",
    )
    .await;
    let fresh = Assertion::new(&app, "billing").es256(&kp);
    assert_eq!(
        other.assertion_token(&fresh, &[]).await.status(),
        200,
        "a new jti works anywhere"
    );

    // Only the issuer, as a string (draft-ietf-oauth-rfc7523bis): not the
    // token endpoint's URL, which RFC 7523 §3 allowed.
    let token_endpoint = format!("{}{TOKEN}", app.state.config.tokens.issuer);
    let a = Assertion {
        aud: token_endpoint,
        ..Assertion::new(&app, "billing")
    };
    refused_client(
        app.assertion_token(&a.es256(&kp), &[]).await,
        "the token endpoint as audience",
    )
    .await;
    // A key-only account has no secret to guess.
    refused_client(
        app.client_token("billing", "", &[("grant_type", "client_credentials")])
            .await,
        "empty secret",
    )
    .await;
}

/// RFC 9449 §8: a client told `use_dpop_nonce` (or whose proof was refused)
/// sends the same request again with a new proof. The refused attempt must
/// not have spent its assertion: the retry is its first use.
#[tokio::test]
async fn an_assertion_is_spent_only_by_a_request_that_gets_a_token() {
    let app = spawn_app_with(|c| c.dpop.require_nonce = true).await;
    let admin = app.admin("root@example.com").await;
    let kp = Ed25519KeyPair::generate();
    let r = app.authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": "billing", "scopes": ["invoices:read"], "jwk": ed25519_jwk(&kp), "secret": false}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let key = crate::dpop::DpopKey::es256();
    let assertion = Assertion::new(&app, "billing").ed25519(&kp);
    let send = |proof: String| {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        app.http
            .post(app.url(TOKEN))
            .header("dpop", proof)
            .form(&form)
            .send()
    };

    let r = send(key.proof("POST", &app.htu(TOKEN), None, None))
        .await
        .unwrap();
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(error_code(r, 400).await, "use_dpop_nonce");
    let r = send(key.proof("GET", &app.htu(TOKEN), None, Some(&nonce)))
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 400).await,
        "invalid_dpop_proof",
        "a proof for another method"
    );

    let r = send(key.proof("POST", &app.htu(TOKEN), None, Some(&nonce)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the same assertion, now with the nonce");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    // Spent by the answer that gave a token: once only.
    refused_client(
        send(key.proof("POST", &app.htu(TOKEN), None, Some(&nonce)))
            .await
            .unwrap(),
        "replayed after a token",
    )
    .await;
    // A spent assertion learns nothing of its account: not that it is still
    // live with the same key (a refused proof's answer would tell), nor which
    // scopes it may ask for.
    refused_client(
        send(key.proof("GET", &app.htu(TOKEN), None, Some(&nonce)))
            .await
            .unwrap(),
        "replayed with a bad proof",
    )
    .await;
    refused_client(
        send(key.proof("POST", &app.htu(TOKEN), None, None))
            .await
            .unwrap(),
        "replayed without the nonce",
    )
    .await;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion.as_str()),
        ("scope", "payroll:write"),
    ];
    let r = app
        .http
        .post(app.url(TOKEN))
        .header(
            "dpop",
            key.proof("POST", &app.htu(TOKEN), None, Some(&nonce)),
        )
        .form(&form)
        .send()
        .await
        .unwrap();
    refused_client(r, "replayed, asking for a scope it is not granted").await;
    let fresh = Assertion::new(&app, "billing").ed25519(&kp);
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", fresh.as_str()),
        ("scope", "payroll:write"),
    ];
    let r = app
        .http
        .post(app.url(TOKEN))
        .header(
            "dpop",
            key.proof("POST", &app.htu(TOKEN), None, Some(&nonce)),
        )
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 400).await,
        "invalid_scope",
        "the same request with an unused assertion"
    );
}

#[tokio::test]
async fn bad_assertions_are_one_invalid_client() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app
        .create_service_account(&admin, "billing", &["read"])
        .await;
    app.create_service_account(&admin, "payroll", &["read"])
        .await;
    let kp = Ed25519KeyPair::generate();
    let r = app
        .authed(
            Method::PUT,
            "/v1/admin/service-accounts/billing/key",
            &admin,
        )
        .json(&json!({"jwk": ed25519_jwk(&kp)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.assertion_token(&Assertion::new(&app, "billing").ed25519(&kp), &[])
            .await
            .status(),
        200,
        "EdDSA"
    );
    assert_eq!(
        app.client_token("billing", &secret, &[("grant_type", "client_credentials")])
            .await
            .status(),
        200,
        "and still its secret"
    );

    let base = || Assertion::new(&app, "billing");
    let issuer = app.state.config.tokens.issuer.clone();
    let token_endpoint = format!("{issuer}{TOKEN}");
    let cases = [
        (
            "another audience",
            Assertion {
                aud: "https://elsewhere.example/token".into(),
                ..base()
            }
            .ed25519(&kp),
        ),
        (
            "the token endpoint as audience",
            Assertion {
                aud: token_endpoint.clone(),
                ..base()
            }
            .ed25519(&kp),
        ),
        (
            "the issuer in an array",
            Assertion {
                aud_array: vec![issuer.clone()],
                ..base()
            }
            .ed25519(&kp),
        ),
        (
            "the issuer and the token endpoint",
            Assertion {
                aud_array: vec![issuer.clone(), token_endpoint],
                ..base()
            }
            .ed25519(&kp),
        ),
        (
            "the issuer and another audience",
            Assertion {
                aud_array: vec![issuer.clone(), "https://elsewhere.example".into()],
                ..base()
            }
            .ed25519(&kp),
        ),
        (
            "no exp",
            Assertion {
                exp_in: None,
                ..base()
            }
            .ed25519(&kp),
        ),
        (
            "exp an hour ahead",
            Assertion {
                exp_in: Some(3600),
                ..base()
            }
            .ed25519(&kp),
        ),
        (
            "no jti",
            Assertion {
                jti: None,
                ..base()
            }
            .ed25519(&kp),
        ),
        (
            "iss is not sub",
            Assertion {
                iss: "payroll",
                ..base()
            }
            .ed25519(&kp),
        ),
        (
            "signed with another key",
            base().ed25519(&Ed25519KeyPair::generate()),
        ),
        (
            "a client without a key",
            Assertion::new(&app, "payroll").ed25519(&kp),
        ),
        (
            "an unknown client",
            Assertion::new(&app, "nobody").ed25519(&kp),
        ),
        ("not a JWT", "abc.def".to_owned()),
    ];
    for (why, assertion) in cases {
        refused_client(app.assertion_token(&assertion, &[]).await, why).await;
    }
    let a = base().ed25519(&kp);
    refused_client(
        app.assertion_token(&a, &[("client_id", "payroll")]).await,
        "the form names another client",
    )
    .await;

    // Malformed requests are invalid_request.
    let r = app
        .http
        .post(app.url(TOKEN))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:other"),
            ("client_assertion", &a),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_request");
    let r = app
        .http
        .post(app.url(TOKEN))
        .basic_auth("billing", Some(&secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &a),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_request", "two methods");

    // Removed key: its assertions stop at once; disabled account: likewise.
    let r = app
        .authed(
            Method::DELETE,
            "/v1/admin/service-accounts/billing/key",
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    refused_client(
        app.assertion_token(&base().ed25519(&kp), &[]).await,
        "key removed",
    )
    .await;
    app.authed(
        Method::PUT,
        "/v1/admin/service-accounts/billing/key",
        &admin,
    )
    .json(&json!({"jwk": ed25519_jwk(&kp)}))
    .send()
    .await
    .unwrap();
    app.authed(
        Method::POST,
        "/v1/admin/service-accounts/billing/disable",
        &admin,
    )
    .send()
    .await
    .unwrap();
    refused_client(
        app.assertion_token(&base().ed25519(&kp), &[]).await,
        "disabled",
    )
    .await;
}

/// A used `jti` is remembered for as long as any instance could still take
/// its assertion as unexpired: past `exp` by the clock skew allowed to
/// clients, plus the margin allowed between the clocks of instances sharing
/// the database. Time is the service's own (`now` of the checks and of the
/// maintenance task's prune), set here to the edge seconds.
#[tokio::test]
async fn a_used_jti_outlives_every_instance_that_could_still_accept_its_assertion() {
    use authflow_auth_service::client_assertion::{self, ClientKey};
    let app = spawn_app().await;
    let kp = ES256KeyPair::generate();
    let key = ClientKey::from_jwk(&es256_jwk(&kp)).unwrap();
    let issuer = app.state.config.tokens.issuer.clone();
    let assertion = Assertion::new(&app, "billing").es256(&kp);
    let exp = claims(&assertion)["exp"].as_i64().unwrap();
    let verify = |at: i64| client_assertion::verify(&assertion, "billing", &key, &issuer, at);
    // The last second at which an instance, by its own clock, accepts it.
    let last = exp + client_assertion::CLOCK_SKEW_SECS as i64;
    let accepted = verify(last).expect("accepted in the last second of the skew");
    assert!(verify(last + 1).is_none(), "expired after it");
    let store = &app.state.store;
    assert!(store
        .take_client_assertion("billing", &accepted.jti, accepted.expires_at)
        .await
        .unwrap());
    // Pruned by this instance in that second, or by one whose clock is ahead
    // by less than the margin while another still accepts it: kept.
    let margin = client_assertion::INSTANCE_CLOCK_MARGIN_SECS as i64;
    for pruned_at in [last, last + margin - 1] {
        store.prune(pruned_at).await.unwrap();
        assert!(
            !store
                .take_client_assertion("billing", &accepted.jti, accepted.expires_at)
                .await
                .unwrap(),
            "a replay after a prune at {}",
            pruned_at - last
        );
    }
    // Once no instance can accept it any more, the row goes.
    store.prune(last + margin).await.unwrap();
    assert!(
        store
            .take_client_assertion("billing", &accepted.jti, accepted.expires_at)
            .await
            .unwrap(),
        "pruned at last"
    );
}

#[tokio::test]
async fn only_public_es256_and_eddsa_keys_can_be_registered() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let kp = ES256KeyPair::generate();
    let mut private = es256_jwk(&kp);
    private["d"] = json!(URL_SAFE_NO_PAD.encode(kp.to_bytes()));
    for (why, jwk) in [
        ("private", private),
        ("symmetric", json!({"kty": "oct", "k": "c2VjcmV0"})),
        ("not a key", json!("x")),
    ] {
        let r = app
            .authed(Method::POST, "/v1/admin/service-accounts", &admin)
            .json(&json!({"client_id": "a", "jwk": jwk, "secret": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_request", "{why}");
    }
    let r = app
        .authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": "a", "secret": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 400).await,
        "invalid_request",
        "neither secret nor key"
    );
    let r = app
        .authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": "a", "jwk": es256_jwk(&kp), "secret": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = app
        .authed(Method::DELETE, "/v1/admin/service-accounts/a/key", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 400).await,
        "invalid_request",
        "removing the only credential"
    );
    let r = app
        .authed(Method::PUT, "/v1/admin/service-accounts/nobody/key", &admin)
        .json(&json!({"jwk": es256_jwk(&kp)}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
}

/// A client configured from the discovery document (RFC 8414) finds the
/// token endpoint that serves its grant and the ways it may authenticate.
#[tokio::test]
async fn discovery_names_the_client_credentials_endpoint_and_its_client_authentication() {
    let app = spawn_app().await;
    let meta: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    let issuer = meta["issuer"].as_str().unwrap();
    assert_eq!(meta["token_endpoint"], format!("{issuer}{TOKEN}"));
    assert_eq!(meta["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    assert_eq!(
        meta["token_endpoint_auth_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );

    // The advertised endpoint is the one that issues the token.
    let admin = app.admin("root@example.com").await;
    let secret = app
        .create_service_account(&admin, "reports", &["reports:read"])
        .await;
    let path = meta["token_endpoint"]
        .as_str()
        .unwrap()
        .strip_prefix(issuer)
        .unwrap();
    let r = app
        .http
        .post(app.url(path))
        .basic_auth("reports", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Every claim the service puts in a token, a service account's or a
    // user's, is one the document lists (`client_id` was missing).
    let service = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = app.signin("root@example.com", PASSWORD).await;
    let listed: Vec<&str> = meta["claims_supported"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for token in [service.as_str(), user.access.as_str()] {
        for claim in claims(token).as_object().unwrap().keys() {
            assert!(
                listed.contains(&claim.as_str()),
                "`{claim}` is issued but not in claims_supported {listed:?}"
            );
        }
    }
}

/// The signing algorithms the document names are those tokens are signed
/// with: after `keys.signing_alg` changes, the key made under the old one
/// signs on until a rotation (and its tokens verify until they expire). A
/// verifier allowing only the advertised algorithms refused every token.
#[tokio::test]
async fn discovery_names_the_algorithm_tokens_are_signed_with() {
    let first = spawn_app().await;
    let app = spawn_app_beside(&first, |c| {
        c.keys.signing_alg = authflow_contract::Algorithm::ES256
    })
    .await;
    let admin = app.admin("root@example.com").await;
    let meta: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    let alg = header(&admin.access)["alg"].clone();
    let advertised = meta["access_token_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(
        advertised.contains(&alg),
        "tokens are signed with {alg}, the document names {advertised:?}"
    );
    // Verifiers built for OpenID (go-oidc) take their allowed algorithms from this one.
    assert_eq!(
        meta["id_token_signing_alg_values_supported"],
        meta["access_token_signing_alg_values_supported"]
    );
}

/// No authorization endpoint: the document names no response type (`token`
/// is the implicit grant's, answered at an authorization endpoint), which a
/// client would take for a front-channel flow that is not there.
#[tokio::test]
async fn discovery_names_no_response_type_without_an_authorization_endpoint() {
    let app = spawn_app().await;
    let meta: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert!(meta.get("authorization_endpoint").is_none());
    assert_eq!(meta["response_types_supported"], json!([]));
}

/// No client enumeration by timing: an unknown client, or one without a key,
/// costs the same signature check as a known client's forged assertion.
/// Generous bound, as in `timing.rs`: this catches a refusal that skips the
/// signature check (an unknown client answered before any crypto).
#[tokio::test]
async fn unknown_clients_take_as_long_as_forged_assertions() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let kp = ES256KeyPair::generate();
    let r = app.authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": "billing", "scopes": ["read"], "jwk": es256_jwk(&kp), "secret": false}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    app.create_service_account(&admin, "payroll", &["read"])
        .await;
    let forger = ES256KeyPair::generate();
    async fn time(app: &TestApp, assertion: String) -> std::time::Duration {
        let start = std::time::Instant::now();
        refused_client(app.assertion_token(&assertion, &[]).await, "timed").await;
        start.elapsed()
    }
    let median = |mut v: Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    time(&app, Assertion::new(&app, "billing").es256(&forger)).await;
    let (mut forged, mut unknown, mut keyless) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..7 {
        forged.push(time(&app, Assertion::new(&app, "billing").es256(&forger)).await);
        unknown.push(
            time(
                &app,
                Assertion::new(&app, &format!("ghost{i}")).es256(&forger),
            )
            .await,
        );
        keyless.push(time(&app, Assertion::new(&app, "payroll").es256(&forger)).await);
    }
    let (f, u, k) = (median(forged), median(unknown), median(keyless));
    eprintln!("median forged {f:?}, unknown client {u:?}, client without a key {k:?}");
    for (what, t) in [("unknown client", u), ("client without a key", k)] {
        let ratio = t.as_secs_f64() / f.as_secs_f64();
        assert!(
            (0.33..3.0).contains(&ratio),
            "median {what} {t:?} vs forged assertion {f:?}"
        );
    }
}

/// A disable kills every token its account was issued, also one issued after
/// the disable read its clock (a slow disable racing a token request), and a
/// token request that authenticated just before the disable gets no usable token.
#[tokio::test]
async fn a_disable_kills_every_token_its_account_was_issued() {
    use authflow_auth_service::{sessions, tokens};
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app.create_service_account(&admin, "racer", &["r"]).await;
    let token = app.service_token("racer", &secret).await;
    let iat = claims(&token)["iat"].as_i64().unwrap();

    // The disable read its clock well before that token was issued, and commits only now.
    let stale = iat - 5;
    let subject = authflow_contract::claims::service_subject("racer");
    assert!(app
        .state
        .store
        .disable_service_account("racer", &subject, stale, stale + 900)
        .await
        .unwrap());
    sessions::feed_changed(&app.state).await;
    let r = app
        .http
        .get(app.url("/v1/ext-authz"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a token issued before the disable committed still passes"
    );

    // Authenticated before the disable, issued after it: no token comes out that passes.
    let at = authflow_auth_service::clock::now();
    let account = authflow_auth_service::store::ServiceAccount {
        disabled_at: None,
        ..app
            .state
            .store
            .service_account("racer")
            .await
            .unwrap()
            .unwrap()
    };
    if let Ok(late) = tokens::issue_for_service(&app.state, &account, "r", None, at).await {
        assert!(
            tokens::verify(&app.state, &late.token, at).is_err(),
            "a disabled account got a token that passes"
        );
    }
}

/// A refused client authentication is audited under the client it named,
/// as a granted token is (`svc:<client_id>`): an attack on one account's
/// secret shows in that account's audit trail, even right after a refusal
/// naming a made-up client from the same address (rows are held back per
/// address, and per account for an account that exists).
#[tokio::test]
async fn a_refused_client_is_audited_under_the_client_it_named() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    app.create_service_account(&admin, "reports", &["read"])
        .await;
    let grant = [("grant_type", "client_credentials")];
    let r = app.client_token("made-up", "wrong", &grant).await;
    assert_eq!(error_code(r, 401).await, "invalid_client");
    let r = app.client_token("reports", "wrong", &grant).await;
    assert_eq!(error_code(r, 401).await, "invalid_client");
    let r = app
        .http
        .post(app.url(TOKEN))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "reports"),
            ("client_secret", "wrong too"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_client");
    let log = app
        .state
        .store
        .audit_log(Some("svc:reports"), 100)
        .await
        .unwrap();
    let refused = log
        .iter()
        .filter(|e| e.event == "client_credentials" && e.outcome == "invalid_client")
        .count();
    assert_eq!(
        refused, 1,
        "the second within the minute is held back: {log:?}"
    );
}

/// A request whose DPoP proof is a replay gets no token: its assertion must
/// stay unspent (as for any refused proof, RFC 9449 §8), so the client's
/// retry with a fresh proof is the assertion's first use.
#[tokio::test]
async fn a_replayed_dpop_proof_does_not_spend_the_assertion() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let kp = Ed25519KeyPair::generate();
    let r = app.authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": "billing", "scopes": ["read"], "jwk": ed25519_jwk(&kp), "secret": false}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let key = crate::dpop::DpopKey::es256();
    let send = |assertion: String, proof: String| {
        let form = [
            ("grant_type", "client_credentials".to_owned()),
            ("client_assertion_type", JWT_BEARER.to_owned()),
            ("client_assertion", assertion),
        ];
        app.http
            .post(app.url(TOKEN))
            .header("dpop", proof)
            .form(&form)
            .send()
    };
    let proof = key.proof("POST", &app.htu(TOKEN), None, None);
    let first = Assertion::new(&app, "billing").ed25519(&kp);
    assert_eq!(send(first, proof.clone()).await.unwrap().status(), 200);

    // The same proof again, with a new assertion: the proof is refused...
    let assertion = Assertion::new(&app, "billing").ed25519(&kp);
    let r = send(assertion.clone(), proof).await.unwrap();
    assert_eq!(
        error_code(r, 400).await,
        "invalid_dpop_proof",
        "a replayed proof"
    );
    // ... and the assertion was not used up by a request that got no token.
    let r = send(assertion, key.proof("POST", &app.htu(TOKEN), None, None))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the same assertion with a fresh proof: {}",
        r.text().await.unwrap()
    );
}

/// An oversized body at the token endpoint is a 413 `payload_too_large`,
/// as at every other endpoint: not a 400 telling the client to send a
/// form-encoded body, which it did.
#[tokio::test]
async fn an_oversized_token_request_is_payload_too_large() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let secret = app
        .create_service_account(&admin, "reports", &["read"])
        .await;
    let pad = "x".repeat(app.state.config.server.body_limit_bytes + 1);
    let r = app
        .client_token(
            "reports",
            &secret,
            &[("grant_type", "client_credentials"), ("pad", &pad)],
        )
        .await;
    assert_eq!(error_code(r, 413).await, "payload_too_large");
    // Within the limit, an unknown parameter is ignored (RFC 6749 §3.2).
    let r = app
        .client_token(
            "reports",
            &secret,
            &[("grant_type", "client_credentials"), ("pad", "x")],
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// A leaked secret was rotated, but the tokens minted with it kept working
/// for their whole lifetime (up to a day, as configured): the only way to
/// kill them was to disable the account for good. A change of credentials
/// with `revoke_tokens` bans every token the account holds, through the
/// feed, and the account lives on under its new secret.
#[tokio::test]
async fn rotating_a_leaked_secret_can_kill_the_tokens_it_minted() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let first = app.create_service_account(&admin, "leaky", &["read"]).await;
    let routine = app.service_token("leaky", &first).await;
    let second = app.rotate_secret(&admin, "leaky", "").await;
    assert_eq!(
        app.ext_authz_status(&routine).await,
        200,
        "a routine rotation kills nothing"
    );
    let leaked = app.service_token("leaky", &second).await;
    let third = app
        .rotate_secret(&admin, "leaky", "?revoke_tokens=true")
        .await;
    assert_eq!(
        app.ext_authz_status(&leaked).await,
        401,
        "the leaked secret's token dies"
    );
    assert_eq!(
        app.ext_authz_status(&routine).await,
        401,
        "and every older one"
    );
    // The account lives on: a token of the new secret passes, in the
    // rotation's own second too (its `iat` is past the ban's).
    let fresh = app.service_token("leaky", &third).await;
    assert_eq!(app.ext_authz_status(&fresh).await, 200);
    let at = authflow_auth_service::clock::now();
    authflow_auth_service::service_accounts::rotate_secret(&app.state, "leaky", true, at)
        .await
        .unwrap();
    let account = app
        .state
        .store
        .service_account("leaky")
        .await
        .unwrap()
        .unwrap();
    let issued =
        authflow_auth_service::tokens::issue_for_service(&app.state, &account, "read", None, at)
            .await
            .unwrap();
    let iat = claims(&issued.token)["iat"].as_i64().unwrap();
    assert!(
        app.state
            .feed
            .is_revoked(None, "", Some("svc:leaky"), iat, at)
            == Ok(false),
        "a token of the new secret, issued in the rotation's second, is banned"
    );
    let r = app
        .authed(
            Method::POST,
            "/v1/admin/service-accounts/leaky/secret?revoke_tokens=maybe",
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_request");
}

/// A token request whose secret was checked just before a rotation
/// committed, and recorded just after, got a token minted with the old
/// secret: the rotation did not stop it. The token is recorded only under
/// the credentials it was checked against (their `rotated_at`, which moves
/// on with every change, two in one second too).
#[tokio::test]
async fn a_request_checked_before_a_rotation_gets_no_token_after_it() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    app.create_service_account(&admin, "racer", &["r"]).await;
    let store = app.state.store.as_ref();
    let checked = store.service_account("racer").await.unwrap().unwrap();
    let at = checked.rotated_at;
    assert!(store
        .set_service_secret("racer", "sha256$one", at, None)
        .await
        .unwrap());
    let once = store.service_account("racer").await.unwrap().unwrap();
    assert!(once.rotated_at > at, "a change in the same second moves on");
    let now = authflow_auth_service::clock::now();
    let r = authflow_auth_service::tokens::issue_for_service(&app.state, &checked, "r", None, now)
        .await;
    assert!(r.is_err(), "a token under the credentials replaced");
    assert!(
        authflow_auth_service::tokens::issue_for_service(&app.state, &once, "r", None, now)
            .await
            .is_ok()
    );
}

/// A refused client authentication was one audit row each, for anyone:
/// no credentials needed, no limit counted (only wrong secrets of real
/// accounts are). A loop wrote rows without end, holding the database's
/// writer and burying the account's real events. Now one row a minute per
/// client address, the next one saying how many were held back.
#[tokio::test]
async fn refused_client_authentications_cannot_flood_the_audit_log() {
    let app = spawn_app_with(|c| c.server.xff_num_trusted_hops = 1).await;
    let admin = app.admin("root@example.com").await;
    app.create_service_account(&admin, "billing", &["read"])
        .await;
    let refused = |from: &str| {
        app.http
            .post(app.url(TOKEN))
            .header("x-forwarded-for", from.to_owned())
            .header("authorization", "Bearer not-basic")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "billing"),
            ])
            .send()
    };
    for _ in 0..30 {
        assert_eq!(refused("192.0.2.7").await.unwrap().status(), 401);
    }
    assert_eq!(refused("192.0.2.8").await.unwrap().status(), 401);
    // An IPv6 client holds its whole /64: a new address per request is still one client.
    for i in 1..=30 {
        let from = format!("2001:db8:7:7::{i:x}");
        assert_eq!(refused(&from).await.unwrap().status(), 401);
    }
    let log = app.state.store.audit_log(None, 1000).await.unwrap();
    let from_the_prefix = log
        .iter()
        .filter(|e| e.event == "client_credentials")
        .filter(|e| {
            e.ip.as_deref()
                .is_some_and(|ip| ip.starts_with("2001:db8:7:7:"))
        })
        .count();
    assert_eq!(from_the_prefix, 1, "{log:?}");
    let rows = |ip: &str| {
        log.iter()
            .filter(|e| e.event == "client_credentials" && e.ip.as_deref() == Some(ip))
            .count()
    };
    assert_eq!(rows("192.0.2.7"), 1, "{log:?}");
    assert_eq!(rows("192.0.2.8"), 1, "another address has its own row");
}

#[tokio::test]
async fn a_token_request_with_two_differing_authorization_headers_is_refused() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let reports = app
        .create_service_account(&admin, "reports", &["read"])
        .await;
    let other = app
        .create_service_account(&admin, "other", &["write"])
        .await;
    let basic = |id: &str, secret: &str| {
        use base64::Engine as _;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        reqwest::header::HeaderValue::from_str(&format!("Basic {pair}")).unwrap()
    };
    let with_two_authorizations = |first, second| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append("authorization", first);
        headers.append("authorization", second);
        app.http
            .post(app.url(TOKEN))
            .headers(headers)
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    // A proxy or log reading the other copy would see another client than the one served.
    for second in [
        basic("other", &other),
        basic("reports", "wrong"),
        reqwest::header::HeaderValue::from_static("Bearer abc"),
    ] {
        let r = with_two_authorizations(basic("reports", &reports), second.clone())
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_request", "{second:?}");
    }
    // The same credentials twice are one.
    let r = with_two_authorizations(basic("reports", &reports), basic("reports", &reports))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_account_is_refused_what_its_tokens_could_not_carry_or_its_admin_routes_reach() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    // A scope list past what a header carries: every filter would refuse its tokens.
    let long = ["a".repeat(3000), "b".repeat(3000)];
    // Dot segments: every client and proxy removes them from the path, so
    // the account's admin routes (disable, rotate) could not be reached.
    let bad = [
        json!({"client_id": "big", "scopes": long}),
        json!({"client_id": "."}),
        json!({"client_id": ".."}),
    ];
    for body in bad {
        let r = app
            .authed(Method::POST, "/v1/admin/service-accounts", &admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_request", "{body}");
    }
    app.create_service_account(&admin, "a.b", &["read"]).await;
}

#[tokio::test]
async fn a_malformed_client_id_reaches_the_audit_trail_as_no_subject() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let forged = "x\n1900000000 admin_ban done";
    let r = app
        .authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": forged}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_request");
    for (method, path) in [
        (Method::POST, "/v1/admin/service-accounts/a%0Ab/secret"),
        (Method::POST, "/v1/admin/service-accounts/a%0Ab/disable"),
        (Method::DELETE, "/v1/admin/service-accounts/a%0Ab/key"),
    ] {
        let r = app.authed(method, path, &admin).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    let rows: Vec<_> = log.iter().filter(|e| e.event.contains("service")).collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in rows {
        assert_eq!(row.user_id, None, "{row:?}");
    }
}
