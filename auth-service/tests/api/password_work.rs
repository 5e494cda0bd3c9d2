//! The cost of password hashing is bounded: at most
//! `limits.password_hash_concurrency` argon2id hashes run at once, a request
//! that finds no free slot in time is answered 503 `temporarily_unavailable`
//! with `Retry-After`, made-up client ids cost no hash at all, and sign-ups
//! are counted per client address before their password is hashed.

use std::time::Duration;

use authflow_auth_service::config::Config;
use authflow_auth_service::store::PageRequest;
use serde_json::{json, Value};

use crate::common::*;

/// One slot, a short wait, and hashes slow enough that parallel requests overlap.
fn one_slot(c: &mut Config) {
    c.limits.password_hash_concurrency = 1;
    c.limits.password_hash_wait = Duration::from_millis(20);
    c.passwords.hash_memory_kib = 16 * 1024;
    c.passwords.hash_iterations = 2;
    c.server.xff_num_trusted_hops = 1;
}

/// (status, `error`, `Retry-After`) of a JSON answer.
async fn outcome(r: reqwest::Response) -> (u16, String, Option<String>) {
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
        retry_after,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_password_work_beyond_the_limit_is_refused_with_503() {
    let app = spawn_app_with(one_slot).await;
    // Sign-ins of unknown addresses (each checked against the dummy hash), from
    // as many client addresses, so that no throttle is involved.
    let requests: Vec<_> = (0..16)
        .map(|i| {
            let (http, url) = (app.http.clone(), app.url("/v1/auth/signin"));
            async move {
                let r = http
                    .post(url)
                    .header("x-forwarded-for", format!("203.0.113.{i}"))
                    .json(&json!({"email": format!("nobody{i}@example.com"), "password": PASSWORD}))
                    .send()
                    .await
                    .unwrap();
                outcome(r).await
            }
        })
        .collect();
    let answers = join_all(requests).await;
    let (mut refused, mut checked) = (0, 0);
    for (status, error, retry_after) in &answers {
        match (status, error.as_str()) {
            (503, "temporarily_unavailable") => {
                assert_eq!(retry_after.as_deref(), Some("1"));
                refused += 1;
            }
            (401, "invalid_credentials") => checked += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(refused >= 1, "no request was refused: {answers:?}");
    assert!(checked >= 1, "no request got a slot: {answers:?}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("authflow_password_work_busy_total {refused}\n")),
        "{metrics}"
    );
    // Every slot came back: the service works as before.
    assert_eq!(app.state.password_work.available(), 1);
    app.verified_user("after@example.com").await;
    app.signin("after@example.com", PASSWORD).await;
}

/// Client secrets are checked by their SHA-256: a flood of made-up client
/// ids (or wrong secrets) takes no hashing slot, so with one slot and no wait
/// every answer is still the plain 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_client_credentials_cost_no_password_hash() {
    let app = spawn_app_with(|c| {
        one_slot(c);
        c.limits.password_hash_wait = Duration::ZERO;
    })
    .await;
    let requests: Vec<_> = (0..32)
        .map(|i| {
            let (http, url) = (app.http.clone(), app.url("/v1/oauth/token"));
            async move {
                let r = http
                    .post(url)
                    .basic_auth(format!("nosuch{i}"), Some("secret"))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                    .unwrap();
                outcome(r).await
            }
        })
        .collect();
    for (status, error, _) in join_all(requests).await {
        assert_eq!((status, error.as_str()), (401, "invalid_client"));
    }
    assert!(app
        .get("/metrics")
        .await
        .text()
        .await
        .unwrap()
        .contains("authflow_password_work_busy_total 0\n"));
}

async fn signup_from(
    app: &TestApp,
    client: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    app.http
        .post(app.url("/v1/auth/signup"))
        .header("x-forwarded-for", client)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Sign-ups are counted per client address before the password is hashed:
/// past `throttle.ip_max_signups` the address gets 429 with `Retry-After`,
/// and no account, no mail and no hash; other addresses are not affected.
#[tokio::test]
async fn sign_ups_from_one_address_are_throttled() {
    let app = spawn_app_with(|c| c.server.xff_num_trusted_hops = 1).await;
    let limit = app.state.config.throttle.ip_max_signups;
    assert_eq!(limit, 10, "the default");
    // Refused before counting: a weak password costs no hash and is no sign-up.
    for i in 0..15 {
        let r = signup_from(&app, "192.0.2.50", &format!("weak{i}@example.com"), "short").await;
        assert_eq!(error_code(r, 400).await, "weak_password");
    }
    for i in 0..limit {
        let r = signup_from(
            &app,
            "192.0.2.50",
            &format!("many{i}@example.com"),
            PASSWORD,
        )
        .await;
        assert_eq!(r.status(), 201, "sign-up {i}");
    }
    for i in 0..3 {
        let email = format!("toomany{i}@example.com");
        let (status, error, retry_after) =
            outcome(signup_from(&app, "192.0.2.50", &email, PASSWORD).await).await;
        assert_eq!((status, error.as_str()), (429, "too_many_attempts"));
        let retry_after: u64 = retry_after.unwrap().parse().unwrap();
        assert!(
            (1..=app.state.config.throttle.lockout_base.as_secs()).contains(&retry_after),
            "{retry_after}"
        );
        assert!(app
            .state
            .store
            .user_by_email(&email)
            .await
            .unwrap()
            .is_none());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.outbox("toomany0@example.com", 0).await.is_empty());
    assert!(app
        .get("/metrics")
        .await
        .text()
        .await
        .unwrap()
        .contains("authflow_signup_throttled_total 3\n"));
    // One row for the address while it is limited (a loop past the limit
    // would write one per request); the metric counts every refusal.
    let log = app.state.store.audit_log(None, 1000).await.unwrap();
    let rows: Vec<_> = log
        .iter()
        .filter(|e| e.event == "signup" && e.outcome == "throttled")
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].email.as_deref(), Some("toomany0@example.com"));
    // Another address signs up; and sign-ups do not lock the address's sign-ins.
    assert_eq!(
        signup_from(&app, "192.0.2.51", "other@example.com", PASSWORD)
            .await
            .status(),
        201
    );
    let r = app
        .http
        .post(app.url("/v1/auth/signin"))
        .header("x-forwarded-for", "192.0.2.50")
        .json(&json!({"email": "many0@example.com", "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Spellings of one address (composed or decomposed accents, fullwidth
/// letters, a Unicode or an ASCII domain) are one account everywhere:
/// sign-up, sign-in, password reset and the admin lookup.
#[tokio::test]
async fn unicode_spellings_of_an_address_are_one_account() {
    let app = spawn_app().await;
    let stored = "jos\u{e9}@xn--bcher-kva.example";
    let user_id = app.verified_user("jos\u{e9}@b\u{fc}cher.example").await;
    let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    assert_eq!(user.email, stored);

    // A second sign-up with another spelling is the taken address: no new account, a notice to the owner.
    let r = app
        .post(
            "/v1/auth/signup",
            json!({"email": "JOSE\u{301}@BU\u{308}CHER.example", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let notice = app.last_mail(stored, 2).await;
    assert_eq!(notice["subject"], "Sign-up attempt");
    assert_eq!(
        app.state
            .store
            .list_users(&PageRequest::first(1000))
            .await
            .unwrap()
            .len(),
        1
    );

    // Sign-in with a decomposed accent, fullwidth letters and the ASCII domain.
    let (_, method) = app
        .challenge("\u{ff4a}ose\u{301}@xn--bcher-kva.\u{ff45}xample", PASSWORD)
        .await;
    assert_eq!(method, "email");

    // Password reset with yet another spelling reaches the account.
    let r = app
        .post(
            "/v1/auth/password/forgot",
            json!({"email": "jose\u{301}@B\u{dc}cher.example"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let mut reset = None;
    for _ in 0..100 {
        reset = app
            .outbox(stored, 0)
            .await
            .into_iter()
            .find(|m| m["subject"] == "Reset your password");
        if reset.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reset.is_some(), "no reset mail for {stored}");

    // The admin lookup normalises the same way.
    let admin = app.admin("root@example.com").await;
    let r = app
        .authed(reqwest::Method::GET, "/v1/admin/users", &admin)
        .query(&[("email", "JOSE\u{301}@b\u{fc}cher.EXAMPLE")])
        .send()
        .await
        .unwrap();
    let found: Value = r.json().await.unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["user_id"], user_id.as_str());
    let r = app
        .authed(reqwest::Method::GET, "/v1/admin/users", &admin)
        .query(&[("email", "not an address")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
}

/// A request refused for want of a hashing slot (503) leaves no trace: it is
/// no failed sign-in, so a flood that keeps the slots busy cannot lock a
/// user out; the one that got a slot was counted (and taken back: the
/// password was right). Afterwards the user signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_answer_at_sign_in_is_not_a_failed_attempt() {
    let app = spawn_app_with(one_slot).await;
    let email = "alice@example.com";
    app.verified_user(email).await;
    let requests: Vec<_> = (0..12)
        .map(|_| {
            let (http, url) = (app.http.clone(), app.url("/v1/auth/signin"));
            async move {
                let r = http
                    .post(url)
                    .header("x-forwarded-for", "192.0.2.70")
                    .json(&json!({"email": email, "password": PASSWORD}))
                    .send()
                    .await
                    .unwrap();
                outcome(r).await
            }
        })
        .collect();
    let answers = join_all(requests).await;
    assert!(
        answers.iter().any(|(s, _, _)| *s == 503),
        "no request was refused: {answers:?}"
    );
    assert!(
        answers.iter().all(|(s, _, _)| [200, 503].contains(s)),
        "the right password was refused otherwise: {answers:?}"
    );
    // Nothing stayed counted: the account and the address are as fresh as before.
    for _ in 0..3 {
        let r = app
            .http
            .post(app.url("/v1/auth/signin"))
            .header("x-forwarded-for", "192.0.2.70");
        let r = r
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// Sign-ups refused for want of a hashing slot are not counted against the
/// client address's sign-up limit either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_answer_at_sign_up_is_not_a_counted_sign_up() {
    let app = spawn_app_with(one_slot).await;
    let limit = app.state.config.throttle.ip_max_signups;
    let requests: Vec<_> = (0..16)
        .map(|i| {
            let (http, url) = (app.http.clone(), app.url("/v1/auth/signup"));
            async move {
                let body = json!({"email": format!("burst{i}@example.com"), "password": PASSWORD});
                outcome(
                    http.post(url)
                        .header("x-forwarded-for", "192.0.2.71")
                        .json(&body)
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            }
        })
        .collect();
    let answers = join_all(requests).await;
    assert!(
        answers.iter().any(|(s, _, _)| *s == 503),
        "no request was refused: {answers:?}"
    );
    let mut created = answers.iter().filter(|(s, _, _)| *s == 201).count() as u32;
    assert!(
        answers.iter().all(|(s, _, _)| [201, 503].contains(s)),
        "{answers:?}"
    );
    // One at a time now: exactly the rest of the limit is accepted.
    for i in 0.. {
        let r = signup_from(
            &app,
            "192.0.2.71",
            &format!("later{i}@example.com"),
            PASSWORD,
        )
        .await;
        if r.status() == 429 {
            break;
        }
        assert_eq!(r.status(), 201);
        created += 1;
    }
    assert_eq!(created, limit, "sign-ups accepted from one address");
}

/// A secret stored by an earlier release as argon2id: wrong secrets are
/// counted per client address before any hash (429 past
/// `throttle.ip_max_failures`). Not per client id: the id is public, and
/// wrong secrets from many addresses must not keep the account from its own
/// right secret. The first right secret re-stores it as SHA-256, so it costs
/// no hash afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_client_secrets_are_throttled_and_upgraded() {
    use authflow_auth_service::domain::password::Hasher;
    use authflow_auth_service::store::ServiceAccount;
    let app = spawn_app_with(|c| {
        c.server.xff_num_trusted_hops = 1;
        c.throttle.ip_max_failures = 10;
        c.throttle.account_max_failures = 5;
    })
    .await;
    let secret = "legacy-secret-9fQ2mZ7xW4kT1vB8nR3cY6hJ0pL5sD2g";
    let legacy = Hasher::new(1024, 1).unwrap().hash(secret).unwrap();
    for id in ["legacy", "legacy2"] {
        let account = ServiceAccount {
            client_id: id.into(),
            secret_hash: legacy.clone(),
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
    }
    let token = |id: &'static str, secret: &'static str, client: String| {
        let r = app
            .http
            .post(app.url("/v1/oauth/token"))
            .header("x-forwarded-for", client)
            .basic_auth(id, Some(secret));
        async move {
            outcome(
                r.form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // One address: 429 once its failures reach the limit, whichever client id it names.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let id = if i % 2 == 0 { "nosuch" } else { "legacy2" };
        statuses.push(token(id, "wrong", "192.0.2.80".into()).await.0);
    }
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 2], "{statuses:?}");
    // Many addresses, one legacy client id, more wrong secrets than a
    // password's account limit: the owner's right secret still works.
    for i in 0..8 {
        assert_eq!(
            token("legacy2", "wrong", format!("198.51.100.{i}")).await.0,
            401
        );
    }
    assert_eq!(
        token("legacy2", secret, "203.0.113.1".into()).await.0,
        200,
        "the owner is not locked out"
    );
    assert!(app
        .state
        .store
        .service_account("legacy2")
        .await
        .unwrap()
        .unwrap()
        .secret_hash
        .starts_with("sha256$"));

    // The right secret of the other account: accepted, and re-stored as SHA-256.
    assert_eq!(token("legacy", secret, "203.0.113.2".into()).await.0, 200);
    let stored = app
        .state
        .store
        .service_account("legacy")
        .await
        .unwrap()
        .unwrap()
        .secret_hash;
    assert_eq!(
        stored,
        authflow_auth_service::service_accounts::stored_secret(secret)
    );
    assert_eq!(token("legacy", secret, "203.0.113.2".into()).await.0, 200);
    assert_eq!(token("legacy", "wrong", "203.0.113.2".into()).await.0, 401);
}

/// The re-storing of a legacy secret replaces only the hash it verified: a
/// rotation in between wins.
#[tokio::test]
async fn a_legacy_secret_is_not_restored_over_a_rotation() {
    use authflow_auth_service::store::ServiceAccount;
    let app = spawn_app().await;
    let account = ServiceAccount {
        client_id: "cas".into(),
        secret_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        scope: "read".into(),
        disabled_at: None,
        created_at: 0,
        rotated_at: 0,
        public_jwk: None,
    };
    let store = app.state.store.as_ref();
    store.create_service_account(&account).await.unwrap();
    assert!(store
        .set_service_secret("cas", "sha256$rotated", 1, None)
        .await
        .unwrap());
    assert!(!store
        .upgrade_service_secret("cas", &account.secret_hash, "sha256$upgraded")
        .await
        .unwrap());
    assert_eq!(
        store
            .service_account("cas")
            .await
            .unwrap()
            .unwrap()
            .secret_hash,
        "sha256$rotated"
    );
    assert!(store
        .upgrade_service_secret("cas", "sha256$rotated", "sha256$upgraded")
        .await
        .unwrap());
    assert_eq!(
        store
            .service_account("cas")
            .await
            .unwrap()
            .unwrap()
            .secret_hash,
        "sha256$upgraded"
    );
}
