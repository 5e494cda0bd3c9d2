//! Admin endpoints, the revocation feed, keys and discovery.

use std::collections::HashSet;
use std::time::Duration;

use authflow_auth_service::clock::now;
use authflow_auth_service::domain::password::Hasher;
use authflow_auth_service::store::{AuditEntry, StoreError, User};
use authflow_contract::revocation::RevocationFeed;
use authflow_contract::KeySet;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn admin_requires_the_admin_role() {
    let app = spawn_app().await;
    let user_id = app.verified_user("kim@example.com").await;
    let user = app.signin("kim@example.com", PASSWORD).await;
    let r = app
        .http
        .get(app.url("/v1/admin/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");
    let r = app.ban(&user, &user_id).await;
    assert_eq!(error_code(r, 403).await, "insufficient_scope");
    let admin = app.admin("root@example.com").await;
    let r = app
        .authed(Method::POST, "/v1/admin/users/nope/ban", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = app
        .authed(Method::GET, "/v1/admin/users?email=KIM@example.com", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let found: Value = r.json().await.unwrap();
    assert_eq!(found[0]["user_id"], user_id.as_str());
    assert_eq!(found[0]["roles"], json!(["user"]));
    let r = app
        .authed(Method::GET, "/v1/admin/users", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn ban_unban_revoke_and_sessions() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let user_id = app.verified_user("leo@example.com").await;
    let t = app.signin("leo@example.com", PASSWORD).await;
    let (_, snap) = app.feed(None).await;
    let cursor = snap.unwrap()["cursor"].as_str().unwrap().to_owned();

    let r = app
        .authed(
            Method::GET,
            &format!("/v1/admin/users/{user_id}/sessions"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    let sessions: Value = r.json().await.unwrap();
    assert_eq!(sessions[0]["session_id"], t.session.as_str());
    assert_eq!(sessions[0]["active"], true);

    // Revoke one token by jti: it shows in the feed until the token's own
    // expiry plus the retention margin (600 s by default: the largest skew a filter may use).
    let jti = claims(&t.access)["jti"].as_str().unwrap().to_owned();
    let r = app
        .authed(Method::POST, "/v1/admin/tokens/revoke", &admin)
        .json(&json!({"jti": jti}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .authed(Method::POST, "/v1/admin/tokens/revoke", &admin)
        .json(&json!({"jti": "unknown"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let (status, delta) = app.feed(Some(&cursor)).await;
    assert_eq!(status, 200);
    let delta = delta.unwrap();
    assert_eq!(delta["revoked_tokens"][0]["jti"], jti.as_str());
    assert_eq!(
        delta["revoked_tokens"][0]["expires_at"],
        claims(&t.access)["exp"].as_u64().unwrap() + 600
    );
    let r = app
        .authed(Method::GET, "/v1/ext-authz", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let cursor = delta["cursor"].as_str().unwrap().to_owned();

    // Ban: sign-in refused only after the right password; feed entry; sessions ended.
    let r = app.ban(&admin, &user_id).await;
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            "/v1/auth/signin",
            json!({"email": "leo@example.com", "password": "wrong password!!"}),
        )
        .await;
    assert_eq!(error_code(r, 401).await, "invalid_credentials");
    let r = app
        .post(
            "/v1/auth/signin",
            json!({"email": "leo@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(error_code(r, 403).await, "account_disabled");
    let (_, delta) = app.feed(Some(&cursor)).await;
    let feed: RevocationFeed = serde_json::from_value(delta.unwrap()).unwrap();
    assert!(!feed.snapshot);
    assert_eq!(feed.banned_subjects.len(), 1);
    let ban = &feed.banned_subjects[0];
    assert_eq!(ban.sub, user_id);
    // not_before is one past the ban's second (its own second's tokens die too); the
    // entry lives as long as the last token it kills (issued in that second), plus the margin.
    assert_eq!(
        ban.expires_at - ban.not_before,
        900 + 600 - 1,
        "the last token issued up to the ban, plus the margin"
    );
    assert!(feed.revoked_sessions.iter().any(|s| s.sid == t.session));
    let r = app
        .http
        .post(app.url("/v1/auth/refresh"))
        .header("x-authflow-device", &t.device)
        .json(&json!({"refresh_token": t.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_grant(r).await, "the session has ended");
    let r = app
        .authed(
            Method::GET,
            &format!("/v1/admin/users/{user_id}/sessions"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    let sessions: Value = r.json().await.unwrap();
    assert_eq!(sessions[0]["active"], false);
    assert_eq!(sessions[0]["revoke_reason"], "banned");

    // Unban: sign-in works again; the new token is not killed by the old ban.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = app
        .authed(
            Method::DELETE,
            &format!("/v1/admin/users/{user_id}/ban"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t2 = app.signin("leo@example.com", PASSWORD).await;
    let r = app
        .authed(Method::GET, "/v1/ext-authz", &t2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let log = app.audit_of(&user_id).await;
    for event in ["admin_ban", "admin_unban", "admin_revoke_token"] {
        assert!(log.iter().any(|e| e.event == event), "{event} audited");
    }
}

#[tokio::test]
async fn revocation_feed_deltas_304_snapshots_and_expiry() {
    let app = spawn_app_with(|c| {
        c.tokens.access_ttl = Duration::from_secs(2);
        c.maintenance.interval = Duration::from_secs(1);
        // Below the configurable minimum, to keep the test short.
        c.revocation.retention = Duration::from_secs(2);
    })
    .await;
    app.verified_user("mia@example.com").await;
    let t = app.signin("mia@example.com", PASSWORD).await;

    let (status, snap) = app.feed(None).await;
    assert_eq!(status, 200);
    let snap: RevocationFeed = serde_json::from_value(snap.unwrap()).unwrap();
    assert!(snap.snapshot);
    assert_eq!(snap.issuer, "http://127.0.0.1:8081");
    assert_eq!(snap.entry_count(), 0);
    let c0 = snap.cursor.clone();
    assert_eq!(app.feed(Some(&c0)).await.0, 304);

    let r = app.logout(&t).await;
    assert_eq!(r.status(), 200);
    let (status, delta) = app.feed(Some(&c0)).await;
    assert_eq!(status, 200);
    let delta: RevocationFeed = serde_json::from_value(delta.unwrap()).unwrap();
    assert!(!delta.snapshot);
    assert_eq!(delta.revoked_sessions.len(), 1);
    assert_eq!(delta.revoked_sessions[0].sid, t.session);
    let c1 = delta.cursor.clone();
    assert_ne!(c1, c0);
    assert_eq!(app.feed(Some(&c1)).await.0, 304);

    // Unknown cursors (another database, garbage, the future) get a snapshot.
    for unknown in [
        "deadbeef.1",
        "garbage",
        &format!("{}.999", c1.split('.').next().unwrap()),
    ] {
        let (status, body) = app.feed(Some(unknown)).await;
        assert_eq!(status, 200);
        let feed: RevocationFeed = serde_json::from_value(body.unwrap()).unwrap();
        assert!(feed.snapshot, "{unknown}");
        assert_eq!(feed.revoked_sessions.len(), 1);
    }

    // Entries live until the tokens they kill would have expired (2 s) plus
    // the retention margin (2 s), then they leave the snapshot, get pruned,
    // and the old cursor is too old.
    let exp = claims(&t.access)["exp"].as_i64().unwrap();
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = app.feed(None).await;
    let feed: RevocationFeed = serde_json::from_value(body.unwrap()).unwrap();
    assert_eq!(
        feed.revoked_sessions.len(),
        1,
        "still published past the token's exp"
    );
    let mut pruned = false;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, body) = app.feed(Some(&c0)).await;
        let feed: RevocationFeed = serde_json::from_value(body.unwrap()).unwrap();
        if feed.snapshot && feed.entry_count() == 0 {
            pruned = true;
            break;
        }
    }
    assert!(
        pruned,
        "the expired entry was pruned and the pre-prune cursor answered with a snapshot"
    );
    let (_, body) = app.feed(None).await;
    let feed: RevocationFeed = serde_json::from_value(body.unwrap()).unwrap();
    assert_eq!(feed.entry_count(), 0);
    // The newest cursor is still current.
    assert_eq!(app.feed(Some(&feed.cursor)).await.0, 304);
}

#[tokio::test]
async fn key_rotation_is_published_before_it_signs() {
    let app = spawn_app_with(|c| c.keys.publish_lead = Duration::from_secs(2)).await;
    let admin = app.admin("root@example.com").await;
    let r = app.get("/.well-known/jwks.json").await;
    // Kept by a cache no longer than half the lead (see cache_headers.rs).
    assert_eq!(r.headers()["cache-control"], "public, max-age=1");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let before = KeySet::parse(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(before.keys.len(), 1);
    let old_kid = header(&admin.access)["kid"].as_str().unwrap().to_owned();
    let r = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let r = app
        .authed(Method::POST, "/v1/admin/keys/rotate", &admin)
        .send()
        .await
        .unwrap();
    let new_kid = ok_text(r, "kid").await;
    let r = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the JWKS changed");
    let after = KeySet::parse(&r.bytes().await.unwrap()).unwrap();
    assert!(after.has_kid(&old_kid) && after.has_kid(&new_kid));

    // Published now, signing only after the lead time; the old key stays published.
    let t = app.signin("root@example.com", PASSWORD).await;
    assert_eq!(header(&t.access)["kid"], old_kid.as_str());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let t = app.signin("root@example.com", PASSWORD).await;
    assert_eq!(header(&t.access)["kid"], new_kid.as_str());
    let r = app.get("/.well-known/jwks.json").await;
    let jwks = KeySet::parse(&r.bytes().await.unwrap()).unwrap();
    assert!(jwks.has_kid(&old_kid), "kept until its last token expired");
    // Tokens of both keys verify at the service.
    let r = app
        .authed(Method::GET, "/v1/admin/keys", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        2
    );
    let r = app
        .authed(Method::GET, "/v1/admin/keys", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn es256_signing_option() {
    let app = spawn_app_with(|c| c.keys.signing_alg = authflow_contract::Algorithm::ES256).await;
    app.verified_user("ned@example.com").await;
    let t = app.signin("ned@example.com", PASSWORD).await;
    assert_eq!(header(&t.access)["alg"], "ES256");
    let jwks = KeySet::parse(
        &app.get("/.well-known/jwks.json")
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(jwks
        .entries(
            authflow_contract::Algorithm::ES256,
            header(&t.access)["kid"].as_str()
        )
        .next()
        .is_some());
    let r = app
        .authed(Method::GET, "/v1/ext-authz", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn discovery_health_metrics_openapi() {
    let app = spawn_app().await;
    let oidc: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(oidc["issuer"], "http://127.0.0.1:8081");
    assert_eq!(
        oidc["jwks_uri"],
        "http://127.0.0.1:8081/.well-known/jwks.json"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.feed(None).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("# TYPE authflow_feed_snapshots_total counter"));
    assert!(metrics.contains("authflow_feed_snapshots_total 1"));
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for path in [
        "/v1/auth/signup",
        "/v1/auth/signin/verify",
        "/v1/revocations",
        "/v1/admin/users/{user_id}/ban",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
}

#[tokio::test]
async fn dev_outbox_is_off_when_disabled() {
    let app = spawn_app_with(|c| c.server.dev_endpoints = false).await;
    let r = app.get("/v1/dev/outbox?to=a@example.com").await;
    assert_eq!(error_code(r, 404).await, "not_found");
    // The outbox files are still written.
    let r = app
        .post(
            "/v1/auth/signup",
            json!({"email": "o@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let files = std::fs::read_dir(app.dir.path().join("outbox"))
        .unwrap()
        .count();
    assert_eq!(files, 1);
}

/// A taken email is a conflict the caller can tell apart (sign-up answers it
/// like a new address, the CLI names it), and the first account is untouched.
#[tokio::test]
async fn a_second_account_with_a_taken_email_is_a_conflict() {
    let app = spawn_app().await;
    let first = app.verified_user("taken@example.com").await;
    let mut second = app
        .state
        .store
        .user_by_email("taken@example.com")
        .await
        .unwrap()
        .unwrap();
    second.id = authflow_auth_service::domain::random_id();
    second.roles = vec!["user".into(), "admin".into()];
    let e = app.state.store.create_user(&second).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    let stored = app
        .state
        .store
        .user_by_email("taken@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id, first);
    assert_eq!(stored.roles, vec!["user"]);
}

/// A verified user created directly in the store (as the CLI does): no
/// sign-up mail, so many of them stay within the per-client mail budget.
async fn stored_user(app: &TestApp, email: &str) -> String {
    use authflow_auth_service::domain::password::Hasher;
    use authflow_auth_service::store::User;
    let hash = Hasher::new(1024, 1).unwrap().hash(PASSWORD).unwrap();
    let user = User {
        email_verified: true,
        ..User::new(email, hash, vec!["user".into()], now())
    };
    app.state.store.create_user(&user).await.unwrap();
    user.id
}

/// A sign-in that read its user just before a ban and starts the session
/// after the ban gets no working token: no session is created for a user
/// banned at that moment (had it been created first, the ban would end it).
#[tokio::test]
async fn a_session_started_from_a_user_read_before_the_ban_gives_no_valid_token() {
    use authflow_auth_service::extract::Client;
    use authflow_auth_service::{sessions, tokens};
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let user_id = stored_user(&app, "stale@example.com").await;
    let stale = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    assert!(stale.banned_at.is_none());
    let r = app.ban(&admin, &user_id).await;
    assert_eq!(r.status(), 200);

    // The test client's own attributes, so that only the ban can refuse the token below.
    let headers = [("user-agent", UA), ("accept-language", LANG)]
        .into_iter()
        .map(|(n, v)| (n.parse().unwrap(), v.parse().unwrap()))
        .collect();
    let client = Client {
        ip: "127.0.0.1".into(),
        peer: None,
        trusted_hops: 0,
        user_agent: UA.into(),
        headers,
    };
    let at = now();
    match sessions::start(&app.state, &stale, &client, None, at).await {
        Err(e) => assert!(
            matches!(e, authflow_auth_service::error::ApiError::AccountDisabled),
            "{e:?}"
        ),
        Ok(t) => {
            assert!(
                tokens::verify(&app.state, &t.access.token, at).is_err(),
                "a token for a banned user verifies"
            );
            let r = app
                .http
                .get(app.url("/v1/ext-authz"))
                .bearer_auth(&t.access.token)
                .header("x-authflow-device", &t.device_secret)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                401,
                "ext_authz lets a banned user's new token through"
            );
        }
    }
}

/// Sign-ins racing bans, round after round: whatever the interleaving,
/// every token a sign-in got is refused once the ban has answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_from_a_sign_in_racing_a_ban_outlives_the_ban() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let mut got = 0;
    for round in 0..20_u64 {
        let email = format!("race{round}@example.com");
        let user_id = stored_user(&app, &email).await;
        let (challenge, _) = app.challenge(&email, PASSWORD).await;
        let code = app.last_mail(&email, 1).await["code"].clone();
        let verify = app.post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": challenge, "code": code}),
        );
        let ban = async {
            // Sweep the ban across the sign-in's steps.
            tokio::time::sleep(Duration::from_millis(round % 7)).await;
            app.ban(&admin, &user_id).await
        };
        let (signed_in, banned) = tokio::join!(verify, ban);
        assert_eq!(banned.status(), 200);
        match signed_in.status().as_u16() {
            200 => {
                got += 1;
                let t = tokens_of(signed_in).await;
                let r = app
                    .authed(Method::GET, "/v1/ext-authz", &t)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    r.status(),
                    401,
                    "round {round}: a token issued around the ban still passes"
                );
                let r = app
                    .http
                    .post(app.url("/v1/auth/refresh"))
                    .header("x-authflow-device", &t.device)
                    .json(&json!({"refresh_token": t.refresh}))
                    .send()
                    .await
                    .unwrap();
                assert_ne!(
                    r.status(),
                    200,
                    "round {round}: the refresh token still works"
                );
            }
            403 => {}
            other => panic!("round {round}: sign-in answered {other}"),
        }
    }
    eprintln!("{got} of 20 sign-ins got tokens before their ban");
}

/// A ban kills tokens issued in its own second too: `iat` has whole seconds,
/// so a token of that second may have been issued after the ban.
#[tokio::test]
async fn a_ban_kills_tokens_issued_in_its_own_second() {
    use authflow_auth_service::{sessions, tokens};
    let app = spawn_app().await;
    let user_id = stored_user(&app, "second@example.com").await;
    let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    let at = now();
    // Tied to no session the ban could end: only the ban's subject entry can stop it.
    let access = tokens::issue(&app.state, &user, "no-such-session", None, None, at)
        .await
        .unwrap();
    assert!(tokens::verify(&app.state, &access.token, at).is_ok());
    assert!(app
        .state
        .store
        .ban_user(&user.id, at, at + 900)
        .await
        .unwrap());
    sessions::feed_changed(&app.state).await;
    assert_eq!(
        tokens::verify(&app.state, &access.token, at).err(),
        Some(tokens::Refusal::Invalid("token has been revoked"))
    );
    // What the filters get says the same: the entry's not_before is past the token's iat.
    let (_, snapshot) = app.feed(None).await;
    let feed: RevocationFeed = serde_json::from_value(snapshot.unwrap()).unwrap();
    assert!(
        feed.banned_subjects
            .iter()
            .any(|b| b.sub == user_id && b.not_before > u64::try_from(at).unwrap()),
        "{:?}",
        feed.banned_subjects
    );
}

/// Follows `Link: <…>; rel="next"` from `first`: every page's rows, and the limit each page asked for.
async fn all_pages(app: &TestApp, admin: &Tokens, first: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next.take() {
        assert!(pages.len() < 20, "the listing never ends");
        let r = app.authed(Method::GET, &path, admin).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        next = r.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            let (target, rel) = l.split_once(">; ").unwrap();
            assert_eq!(rel, "rel=\"next\"");
            target.strip_prefix('<').unwrap().to_owned()
        });
        pages.push(r.json::<Vec<Value>>().await.unwrap());
    }
    pages
}

#[tokio::test]
async fn user_and_session_listings_come_in_bounded_pages() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    // Seven users made in the same second as the admin: the order within a second is the id's.
    let hasher = Hasher::new(1024, 1).unwrap();
    let at = now();
    for i in 0..7 {
        let user = User::new(
            &format!("u{i}@example.com"),
            hasher.hash(PASSWORD).unwrap(),
            vec!["user".into()],
            at,
        );
        app.state.store.create_user(&user).await.unwrap();
    }
    let pages = all_pages(&app, &admin, "/v1/admin/users?limit=3").await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 2],
        "8 users in pages of 3, no empty page after the last"
    );
    let listed: Vec<(i64, String)> = pages
        .iter()
        .flatten()
        .map(|u| {
            (
                u["created_at"].as_i64().unwrap(),
                u["user_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(listed, sorted, "oldest first, each user once");

    // A user signed up (in a later second) while an admin pages through shows up, once.
    let r = app
        .authed(Method::GET, "/v1/admin/users?limit=4", &admin)
        .send()
        .await
        .unwrap();
    let next = r.headers()["link"].to_str().unwrap().to_owned();
    let first: Vec<Value> = r.json().await.unwrap();
    while now() <= at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = app.verified_user("late@example.com").await;
    let rest = all_pages(
        &app,
        &admin,
        next.trim_start_matches('<').split_once('>').unwrap().0,
    )
    .await;
    let ids: Vec<&str> = first
        .iter()
        .chain(rest.iter().flatten())
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 9);
    assert_eq!(ids.iter().filter(|id| **id == late).count(), 1);
    // Without a limit: 100 a page.
    let r = app
        .authed(Method::GET, "/v1/admin/users", &admin)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 9);

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "after=abc",
        "after=1.x%20y",
        "after=-5.ab",
        "limit=2&after=1.a.b",
    ] {
        let r = app
            .authed(Method::GET, &format!("/v1/admin/users?{bad}"), &admin)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_request", "{bad}");
    }

    // Sessions: newest first, in pages.
    let user_id = app.verified_user("leo@example.com").await;
    for _ in 0..3 {
        app.signin("leo@example.com", PASSWORD).await;
    }
    let pages = all_pages(
        &app,
        &admin,
        &format!("/v1/admin/users/{user_id}/sessions?limit=2"),
    )
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    let created: Vec<i64> = pages
        .iter()
        .flatten()
        .map(|s| s["created_at"].as_i64().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
    let ids: HashSet<&str> = pages
        .iter()
        .flatten()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let r = app
        .authed(
            Method::GET,
            &format!("/v1/admin/users/{user_id}/sessions?limit=5000"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_request");
}

/// The `rel="next"` target of a listing's answer, if any.
fn next_page(r: &reqwest::Response) -> Option<String> {
    let link = r.headers().get("link")?.to_str().unwrap();
    Some(
        link.trim_start_matches('<')
            .split_once('>')
            .unwrap()
            .0
            .to_owned(),
    )
}

/// Finding (a gap): `GET /v1/admin/audit` answered only the newest `limit`
/// rows (100 by default, silently at most 1000, none for `limit=0`), with no
/// way further back: an admin looking into an incident could not read any
/// older row through the API. It now pages like the other listings: newest
/// first, `Link: <…>; rel="next"` while rows follow, a user's rows too.
#[tokio::test]
async fn the_audit_log_pages_back_to_its_oldest_row() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let at = now();
    let write = |outcome: &str, user_id: Option<&str>| AuditEntry {
        at,
        event: "signin".into(),
        outcome: outcome.into(),
        user_id: user_id.map(Into::into),
        ..AuditEntry::default()
    };
    for i in 0..7 {
        let user = (i % 2 == 0).then_some("u-paged");
        let entry = write(&format!("row{i}"), user);
        app.state.store.audit(&entry).await.unwrap();
    }
    let stored: Vec<Value> = app
        .state
        .store
        .audit_log(None, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let n = stored.len();
    assert!(n > 7, "{stored:?}");

    // Every row, newest first, each once, in pages of 3 and no empty page after the last.
    let pages = all_pages(&app, &admin, "/v1/admin/audit?limit=3").await;
    let sizes: Vec<usize> = (0..n).step_by(3).map(|s| (n - s).min(3)).collect();
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), sizes);
    assert_eq!(pages.concat(), stored);

    // A row written between two page reads is newer than the first page:
    // the pages after it neither repeat a row nor skip one.
    let r = app
        .authed(Method::GET, "/v1/admin/audit?limit=3", &admin)
        .send()
        .await
        .unwrap();
    let next = next_page(&r).unwrap();
    let first: Vec<Value> = r.json().await.unwrap();
    app.state.store.audit(&write("late", None)).await.unwrap();
    let rest = all_pages(&app, &admin, &next).await;
    let read: Vec<Value> = first.into_iter().chain(rest.concat()).collect();
    assert_eq!(read, stored);
    let r = app
        .authed(Method::GET, "/v1/admin/audit?limit=1", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Vec<Value>>().await.unwrap()[0]["outcome"], "late");

    // One user's rows page too, the filter kept in every `next` link, also
    // an id that needs escaping there.
    let pages = all_pages(&app, &admin, "/v1/admin/audit?user_id=u-paged&limit=2").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
    let outcomes: Vec<&str> = pages
        .iter()
        .flatten()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["row6", "row4", "row2", "row0"]);
    for i in 0..3 {
        let entry = write(&format!("odd{i}"), Some("a b&c=d#e>"));
        app.state.store.audit(&entry).await.unwrap();
    }
    let pages = all_pages(
        &app,
        &admin,
        "/v1/admin/audit?user_id=a+b%26c%3Dd%23e%3E&limit=2",
    )
    .await;
    let outcomes: Vec<Vec<&str>> = pages
        .iter()
        .map(|p| p.iter().map(|e| e["outcome"].as_str().unwrap()).collect())
        .collect();
    assert_eq!(outcomes, [vec!["odd2", "odd1"], vec!["odd0"]]);

    // Without a limit: 100 a page; 1000 is allowed.
    for path in ["/v1/admin/audit", "/v1/admin/audit?limit=1000"] {
        let r = app.authed(Method::GET, path, &admin).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers().get("link").is_none(), "{path}");
        assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), n + 4, "{path}");
    }

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "after=",
        "after=abc",
        "after=-5",
        "after=%2B5",
        "after=5.0",
        "after=1.ab",
        "after=%205",
        "after=99999999999999999999",
        "user_id=u-paged&limit=2&after=x",
    ] {
        let r = app
            .authed(Method::GET, &format!("/v1/admin/audit?{bad}"), &admin)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_request", "{bad}");
    }
}

/// A revocation outlives the tokens it kills, also ones issued under a
/// longer token lifetime than the one configured when it is written (an
/// operator lowered it, or instances run with different settings): were it
/// forgotten at now + the new lifetime, the token would verify again.
#[tokio::test]
async fn a_revocation_outlives_tokens_issued_under_a_longer_lifetime() {
    let app = spawn_app_with(|c| c.tokens.access_ttl = Duration::from_secs(3600)).await;
    let admin = app.admin("root@example.com").await;
    let user_id = app.verified_user("long@example.com").await;
    let long = app.signin("long@example.com", PASSWORD).await;
    let other = app.signin("long@example.com", PASSWORD).await;
    let exp = |t: &Tokens| claims(&t.access)["exp"].as_i64().unwrap();
    assert!(exp(&long) >= now() + 3500);
    // The lifetime lowered to 5 minutes: the session logged out, then the user banned.
    let short = spawn_app_beside(&app, |c| c.tokens.access_ttl = Duration::from_secs(300)).await;
    let r = short.logout(&long).await;
    assert_eq!(r.status(), 200);
    let r = short.ban(&admin, &user_id).await;
    assert_eq!(r.status(), 200);
    let (_, feed) = short.feed(None).await;
    let feed: RevocationFeed = serde_json::from_value(feed.unwrap()).unwrap();
    let sid = |t: &Tokens| claims(&t.access)["sid"].as_str().unwrap().to_owned();
    for t in [&long, &other] {
        let entry = feed
            .revoked_sessions
            .iter()
            .find(|s| s.sid == sid(t))
            .expect("the session's entry");
        assert!(
            entry.expires_at as i64 >= exp(t),
            "session entry forgotten at {} before its token expires at {}",
            entry.expires_at,
            exp(t)
        );
    }
    let ban = feed
        .banned_subjects
        .iter()
        .find(|b| b.sub == user_id)
        .expect("the ban");
    assert!(ban.expires_at as i64 >= exp(&other));
}

/// Finding: `authflow-auth keys rotate` writes to the database; on SQLite the
/// running service took the new key in only at its maintenance tick (up to an
/// hour as configured), kept signing with the key the database had retired,
/// and then published that key's end from its retirement — tokens it signed
/// meanwhile lost their key while still valid, and the new key signed the
/// moment it appeared, its publication lead lost. The service now follows
/// the keys (and the feed) another process writes within about a second.
#[tokio::test]
async fn a_key_rotated_by_another_process_is_published_within_seconds() {
    let app = spawn_app_with(|c| c.maintenance.interval = Duration::from_secs(3600)).await;
    let config = &app.state.config;
    // The maintenance task's first round runs at start: past it, the next is an hour away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What the CLI does: its own key ring on the same database.
    let cli = authflow_auth_service::keys::KeyRing::load(
        app.state.store.as_ref(),
        config.keys.signing_alg,
        i64::try_from(config.tokens.access_ttl.as_secs()).unwrap(),
        now(),
    )
    .await
    .unwrap();
    let kid = cli
        .rotate(app.state.store.as_ref(), config.keys.signing_alg, now(), 60)
        .await
        .unwrap();
    let mut published = false;
    for _ in 0..30 {
        let r = app.get("/.well-known/jwks.json").await;
        let jwks: Value = r.json().await.unwrap();
        if jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str())
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        published,
        "the key {kid} the CLI published is served within 3 s"
    );
}

/// Every key the service publishes must be one a verifier keeps: the
/// contract's JWKS reader (the filter's) keeps at most `MAX_KEYS` keys, in
/// document order, and skips the rest. Rotations in quick succession (an
/// admin's script retrying, or a stolen admin token) must not publish a
/// signing key past that limit, or every token it signs is refused by every
/// filter until the older keys expire from the JWKS.
#[tokio::test]
async fn rapid_rotations_never_publish_a_key_the_filter_skips() {
    let app = spawn_app_with(|c| c.keys.publish_lead = Duration::from_secs(1)).await;
    let admin = app.admin("root@example.com").await;
    let mut rotated = 0;
    for _ in 0..authflow_contract::jwk::MAX_KEYS + 4 {
        let r = app
            .authed(Method::POST, "/v1/admin/keys/rotate", &admin)
            .send()
            .await
            .unwrap();
        if r.status() == 409 {
            continue;
        }
        assert_eq!(r.status(), 200);
        rotated += 1;
        let kid = r.json::<Value>().await.unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = app.get("/.well-known/jwks.json").await;
        let jwks = KeySet::parse(&r.bytes().await.unwrap()).unwrap();
        assert!(
            jwks.has_kid(&kid),
            "rotation {rotated}: the new signing key {kid} is skipped by the filter's JWKS reader ({} kept, {} skipped)",
            jwks.keys.len(),
            jwks.skipped
        );
    }
    assert!(rotated > 0);
    // Once the newest key signs, its tokens are among the keys a filter keeps.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = app.signin("root@example.com", PASSWORD).await;
    let kid = header(&t.access)["kid"].as_str().unwrap().to_owned();
    let r = app.get("/.well-known/jwks.json").await;
    let jwks = KeySet::parse(&r.bytes().await.unwrap()).unwrap();
    assert!(
        jwks.has_kid(&kid),
        "tokens signed by {kid} fail at the filter"
    );
}

/// A signed-in user (or a service account) knocking on the admin API is
/// refused and leaves a trace in the audit log: who, from where, what.
#[tokio::test]
async fn a_refused_admin_call_is_audited() {
    let app = spawn_app().await;
    let victim = app.verified_user("vic@example.com").await;
    let mallory = app.verified_user("mallory@example.com").await;
    let t = app.signin("mallory@example.com", PASSWORD).await;
    let r = app.ban(&t, &victim).await;
    assert_eq!(error_code(r, 403).await, "insufficient_scope");
    let log = app.audit_of(&mallory).await;
    let denied = log
        .iter()
        .find(|e| e.event == "admin_denied")
        .unwrap_or_else(|| panic!("no audit row for the refused admin call: {log:?}"));
    assert_eq!(denied.outcome, format!("POST /v1/admin/users/{victim}/ban"));
    assert!(denied.ip.as_deref().is_some_and(|ip| !ip.is_empty()));
}

/// A handler that panics is answered 500 by the panic guard, and that 500
/// is counted like any other: in the requests and the server errors.
#[tokio::test]
async fn a_caught_panic_is_counted_as_a_server_error() {
    use std::sync::atomic::Ordering;
    use tower::ServiceExt;

    let app = spawn_app().await;
    let routes = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            if true {
                panic!("boom");
            }
        }),
    );
    let service = authflow_auth_service::routes::with_shared_layers(
        routes,
        std::sync::Arc::clone(&app.state),
    );
    let metrics = &app.state.metrics;
    let (requests, errors) = (
        metrics.http_requests.load(Ordering::Relaxed),
        metrics.http_server_errors.load(Ordering::Relaxed),
    );
    let r = service
        .oneshot(
            axum::http::Request::get("/boom")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        metrics.http_server_errors.load(Ordering::Relaxed),
        errors + 1,
        "the panic's 500 is not in authflow_http_server_errors_total"
    );
    assert_eq!(metrics.http_requests.load(Ordering::Relaxed), requests + 1);
}

/// The audit says what an admin acted on, not only that it acted: the
/// revoked token's `jti` (a user has many tokens) and the new key's `kid`.
#[tokio::test]
async fn admin_audit_rows_name_the_token_and_the_key() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let user_id = app.verified_user("ned@example.com").await;
    let t = app.signin("ned@example.com", PASSWORD).await;
    let jti = claims(&t.access)["jti"].as_str().unwrap().to_owned();
    let r = app
        .authed(Method::POST, "/v1/admin/tokens/revoke", &admin)
        .json(&json!({"jti": jti}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .authed(Method::POST, "/v1/admin/keys/rotate", &admin)
        .send()
        .await
        .unwrap();
    let kid = r.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    let revoked = log
        .iter()
        .find(|e| e.event == "admin_revoke_token")
        .unwrap();
    assert_eq!(revoked.user_id.as_deref(), Some(user_id.as_str()));
    assert!(revoked.outcome.contains(&jti), "{revoked:?}");
    let rotated = log.iter().find(|e| e.event == "admin_rotate_keys").unwrap();
    assert_eq!(
        rotated.detail.as_deref(),
        Some(format!("done: new key {kid}").as_str()),
        "{rotated:?}"
    );
}

/// An admin action is audited before it runs: when its audit row cannot be
/// written (a full disk, a lost connection), the action does not happen.
/// Before, the row was written after the action and a failure only logged:
/// a ban (or a crash right after it) could leave no trace of who banned.
#[tokio::test]
async fn an_admin_action_without_its_audit_row_does_not_happen() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let user_id = app.verified_user("kept@example.com").await;
    break_inserts(&app, "audit_log").await;
    let r = app
        .authed(
            Method::POST,
            &format!("/v1/admin/users/{user_id}/ban"),
            &admin,
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let r = app
        .authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": "unaudited", "scopes": ["read"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    heal_inserts(&app, "audit_log").await;

    let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    assert!(user.banned_at.is_none(), "banned without an audit row");
    let account = app.state.store.service_account("unaudited").await.unwrap();
    assert!(account.is_none(), "created without an audit row");
}

/// An admin action's row names the admin's session as well as the admin:
/// with the admin signed in on several devices (or one of its sessions
/// stolen), `by <sub>` alone did not tell which session acted, nor which
/// one to end.
#[tokio::test]
async fn an_admin_actions_row_names_the_admins_session() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let user_id = app.verified_user("banned@example.com").await;
    let r = app.ban(&admin, &user_id).await;
    assert_eq!(r.status(), 200);
    let log = app.audit_of(&user_id).await;
    let ban = log.iter().find(|e| e.event == "admin_ban").unwrap();
    assert!(ban.outcome.contains(&admin.session), "{ban:?}");
}

/// Each admin action's row says what became of it: `done`, or the error
/// it was refused with.
#[tokio::test]
async fn an_admin_actions_row_records_its_result() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let user_id = app.verified_user("banned@example.com").await;
    let r = app
        .authed(
            Method::POST,
            &format!("/v1/admin/users/{user_id}/ban"),
            &admin,
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for expected in [201, 409] {
        let r = app
            .authed(Method::POST, "/v1/admin/service-accounts", &admin)
            .json(&json!({"client_id": "taken", "scopes": ["read"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
    }

    let log = app.state.store.audit_log(None, 100).await.unwrap();
    let ban = log.iter().find(|e| e.event == "admin_ban").unwrap();
    assert_eq!(ban.detail.as_deref(), Some("done"), "{ban:?}");
    let created: Vec<_> = log
        .iter()
        .filter(|e| e.event == "admin_create_service_account")
        .map(|e| e.detail.as_deref())
        .collect();
    assert_eq!(
        created,
        [Some("failed: conflict"), Some("done")],
        "newest first"
    );
}

/// An admin's token presented from another device (copied off the admin's
/// machine) is refused, and the attempt is audited under the admin.
#[tokio::test]
async fn an_admin_token_from_another_device_is_refused_and_audited() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let admin_id = claims(&admin.access)["sub"].as_str().unwrap().to_owned();
    let stolen = Tokens {
        access: admin.access.clone(),
        refresh: String::new(),
        device: "a device secret the thief made up".into(),
        session: admin.session.clone(),
    };
    let r = app
        .authed(Method::GET, "/v1/admin/users", &stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_token");
    assert_admin_denied(&app, &admin_id, "GET /v1/admin/users").await;
}

/// `user_id`'s audit trail holds a refused admin call `outcome`.
async fn assert_admin_denied(app: &TestApp, user_id: &str, outcome: &str) {
    let log = app.audit_of(user_id).await;
    assert!(
        log.iter()
            .any(|e| e.event == "admin_denied" && e.outcome == outcome),
        "no audit row for the refused call {outcome}: {log:?}"
    );
}

/// An admin whose role was taken away (in the database, by an operator) is
/// refused with the token still saying `admin`, and the attempt is audited
/// like every other refused admin call. It answered 401 unaudited: the one
/// caller most worth a trace (an ex-admin still trying) left none.
#[tokio::test]
async fn a_demoted_admin_is_refused_and_audited() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let admin_id = claims(&admin.access)["sub"].as_str().unwrap().to_owned();
    app.state
        .store
        .set_roles(&admin_id, &["user".to_owned()])
        .await
        .unwrap();
    assert_eq!(claims(&admin.access)["roles"], json!(["user", "admin"]));
    let r = app
        .authed(Method::GET, "/v1/admin/users", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_token");
    assert_admin_denied(&app, &admin_id, "GET /v1/admin/users").await;
}

/// A token signed by `key` with `claims`, as the service signs (`typ: at+jwt`).
fn sign_access_token(
    key: &jwt_simple::prelude::Ed25519KeyPair,
    claims: authflow_contract::claims::AccessClaims,
    app: &TestApp,
    sub: &str,
) -> String {
    use jwt_simple::prelude::{Claims, EdDSAKeyPairLike, HeaderOptions};
    let tokens = &app.state.config.tokens;
    let claims = Claims::with_custom_claims(claims, jwt_simple::prelude::Duration::from_secs(300))
        .with_issuer(&tokens.issuer)
        .with_audiences(tokens.audiences.iter().cloned().collect::<HashSet<_>>())
        .with_subject(sub)
        .with_jwt_id(authflow_auth_service::domain::random_id());
    let options = HeaderOptions {
        signature_type: Some(authflow_contract::claims::ACCESS_TOKEN_TYPE.to_owned()),
        ..HeaderOptions::default()
    };
    key.sign_with_options(claims, &options).unwrap()
}

/// Finding: the service verified its own tokens with every key it ever
/// stored, while the JWKS drops a retired key once its last token expired.
/// After a rotation made because a key leaked, a token forged with it went
/// on passing the admin API and ext_authz here, long after every filter
/// refused it. The service verifies with the keys it publishes, no others.
#[tokio::test]
async fn a_key_gone_from_the_jwks_verifies_nothing_here() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let sub = claims(&admin.access)["sub"].as_str().unwrap().to_owned();
    let leaked_kid = header(&admin.access)["kid"].as_str().unwrap().to_owned();
    let stored = app.state.store.signing_keys().await.unwrap();
    let leaked = stored.iter().find(|k| k.kid == leaked_kid).unwrap();
    let leaked = jwt_simple::prelude::Ed25519KeyPair::from_bytes(&leaked.private_key)
        .unwrap()
        .with_key_id(&leaked_kid);

    // Rotated long enough ago that the leaked key's last token has expired
    // and the key has left the JWKS (retirement + access_ttl + 60 s).
    let config = &app.state.config;
    let window = i64::try_from(config.tokens.access_ttl.as_secs()).unwrap() + 60;
    app.state
        .keys
        .rotate(
            app.state.store.as_ref(),
            config.keys.signing_alg,
            now() - window - 10,
            0,
        )
        .await
        .unwrap();
    let jwks = KeySet::parse(
        &app.get("/.well-known/jwks.json")
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(!jwks.has_kid(&leaked_kid), "the leaked key is unpublished");

    let forged = sign_access_token(
        &leaked,
        authflow_contract::claims::AccessClaims {
            roles: vec!["user".into(), "admin".into()],
            ..Default::default()
        },
        &app,
        &sub,
    );
    let forged = Tokens {
        access: forged,
        ..admin
    };
    let r = app
        .authed(Method::GET, "/v1/admin/users", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_token");
    let r = app
        .authed(Method::GET, "/v1/ext-authz", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "ext_authz refuses it too");
}

/// Finding: an admin could ban themselves (a slip in a script or a shared
/// console): their sessions ended and, the last admin, nobody was left to
/// lift it but the command line. Refused with 409; another admin can.
#[tokio::test]
async fn an_admin_cannot_ban_themselves() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let sub = claims(&admin.access)["sub"].as_str().unwrap().to_owned();
    let r = app.ban(&admin, &sub).await;
    assert_eq!(error_code(r, 409).await, "conflict");
    let r = app
        .authed(Method::GET, "/v1/admin/users", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "still signed in and an admin");
}

/// Finding: the service's own checks trusted its revocation list however
/// long its syncs had been failing. On PostgreSQL an instance that could no
/// longer read the feed answered ext_authz 200 (and served the admin API)
/// for a user banned on another instance until the token expired, while
/// every filter fails closed once its list is older than its bound. Past
/// `revocation.max_staleness_secs` without a sync that worked, the service
/// answers 503 with `Retry-After` (try another instance), and trusts its list
/// again once a sync works.
#[tokio::test]
async fn an_instance_that_cannot_sync_its_feed_stops_vouching_for_tokens() {
    let app = spawn_app_with(|c| c.revocation.max_staleness = Duration::from_secs(1)).await;
    let admin = app.admin("root@example.com").await;
    let ext_authz = || async {
        app.authed(Method::GET, "/v1/ext-authz", &admin)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(ext_authz().await.status(), 200);

    // Every sync fails from now on (the database the feed is read from is gone).
    run_sql(&app, &["ALTER TABLE revocation_events RENAME TO held_away"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = ext_authz().await;
    assert!(r.headers().contains_key("retry-after"), "{r:?}");
    assert_eq!(error_code(r, 503).await, "temporarily_unavailable");
    let r = app
        .authed(Method::GET, "/v1/admin/users", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 503).await, "temporarily_unavailable");

    // A sync works again: the list vouches again.
    run_sql(&app, &["ALTER TABLE held_away RENAME TO revocation_events"]).await;
    let mut status = 0;
    for _ in 0..40 {
        status = ext_authz().await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "trusted again once a sync worked");
}
