//! Durability and clock-edge checks: revocations, reuse detection and
//! key rotation across a restart on the same database, maintenance pruning
//! against live tokens, and expiry exactly at the boundary.

use std::time::Duration;

use authflow_auth_service::clock::{forget_now, now};
use authflow_contract::KeySet;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// The `expires_at` the feed snapshot of `app` publishes in `list` for the
/// entry whose `member` is `value`.
async fn published_until(app: &TestApp, list: &str, member: &str, value: &str) -> Option<u64> {
    let (status, body) = app.feed(None).await;
    assert_eq!(status, 200);
    body.unwrap()[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[member] == value)
        .map(|e| e["expires_at"].as_u64().unwrap())
}

/// A second instance on `app`'s database (a restart), after everything the
/// maintenance task forgets was forgotten at once, its list synced.
async fn restarted_and_pruned(app: &TestApp) -> TestApp {
    let restarted = spawn_app_beside(app, |_| {}).await;
    let at = forget_now();
    let state = &restarted.state;
    state.store.prune(at).await.unwrap();
    state.feed.prune(state.store.as_ref(), at).await.unwrap();
    state.feed.sync(state.store.as_ref(), at).await.unwrap();
    restarted
}

/// A logout acknowledged (200) before a restart is still in force after it,
/// in the service's own checks and in the feed, for at least the token's
/// `exp` plus the retention; the maintenance task's pruning (run at once)
/// keeps it.
#[tokio::test]
async fn a_logout_survives_a_restart_and_the_maintenance_prune() {
    let app = spawn_app().await;
    app.verified_user("out@example.com").await;
    let t = app.signin("out@example.com", PASSWORD).await;
    let exp = claims(&t.access)["exp"].as_u64().unwrap();
    let r = app.logout(&t).await;
    assert_eq!(r.status(), 200);

    let restarted = restarted_and_pruned(&app).await;
    assert_eq!(
        ext_authz(&restarted, &t).await,
        401,
        "revived after restart"
    );
    let retention = restarted.state.config.revocation.retention.as_secs();
    let published = published_until(&restarted, "revoked_sessions", "sid", &t.session)
        .await
        .expect("the logout is in the restarted instance's feed");
    assert!(
        published >= exp + retention,
        "published {published} < exp {exp} + retention {retention}"
    );
    let r = refresh_with_device(&restarted, &t.refresh, Some(&t.device)).await;
    assert_eq!(invalid_grant(r).await, "the session has ended");
}

/// Reuse detection is judged from the database: a rotated-out token sent
/// again after a restart, past the grace, ends the session; exactly at the
/// grace's end (10 s) it is reuse, one second before it is not.
#[tokio::test]
async fn reuse_detection_holds_across_a_restart_and_at_the_grace_boundary() {
    let app = spawn_app().await;
    app.verified_user("reuse@example.com").await;
    let t = app.signin("reuse@example.com", PASSWORD).await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let next = body["refresh_token"].as_str().unwrap().to_owned();

    // Rotated 8 s before (within the 10 s grace, a second to spare for the
    // clock to tick between the update and the request): still "just rotated".
    let restarted = spawn_app_beside(&app, |_| {}).await;
    let rotated_ago = |secs: i64| {
        let hash = authflow_auth_service::domain::hash_secret(&t.refresh);
        let at = now() - secs;
        format!("UPDATE refresh_tokens SET used_at = {at} WHERE hash = '{hash}'")
    };
    run_sql(&app, &[&rotated_ago(8)]).await;
    let r = refresh_with_device(&restarted, &t.refresh, Some(&t.device)).await;
    assert_eq!(
        invalid_grant(r).await,
        authflow_auth_service::sessions::JUST_ROTATED
    );
    // At the grace's end (or a second past it): reuse.
    run_sql(&app, &[&rotated_ago(10)]).await;
    let r = refresh_with_device(&restarted, &t.refresh, Some(&t.device)).await;
    let why = invalid_grant(r).await;
    assert!(why.contains("reuse"), "{why}");
    // The winner's token is dead too, on a second restart.
    let again = spawn_app_beside(&app, |_| {}).await;
    let r = refresh_with_device(&again, &next, Some(&t.device)).await;
    assert_eq!(invalid_grant(r).await, "the session has ended");
    let access = Tokens {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: next,
        device: t.device.clone(),
        session: t.session.clone(),
    };
    assert_eq!(ext_authz(&again, &access).await, 401);
}

/// A rotation stamped far ahead of this instance's clock: the instance that
/// rotated had its clock stepped forward (a bad time source, a VM resumed
/// with a wrong clock), or a thief who holds the refresh token and device
/// secret refreshed there first (its `Date` header tells it apart). Only an
/// instance ahead by less than the margin instances are allowed to differ
/// by makes a rotation "just rotated" before it happens: one stamped an
/// hour ahead must not hide the owner's reuse for that hour, leaving the
/// session to whoever rotated.
#[tokio::test]
async fn a_rotation_stamped_far_ahead_does_not_hide_reuse() {
    let app = spawn_app().await;
    app.verified_user("ahead@example.com").await;
    let t = app.signin("ahead@example.com", PASSWORD).await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert_eq!(r.status(), 200);
    let hash = authflow_auth_service::domain::hash_secret(&t.refresh);
    let ahead = now() + 3600;
    run_sql(
        &app,
        &[&format!(
            "UPDATE refresh_tokens SET used_at = {ahead} WHERE hash = '{hash}'"
        )],
    )
    .await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    let why = invalid_grant(r).await;
    assert!(why.contains("reuse"), "{why}");
    assert!(app
        .state
        .store
        .session(&t.session)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
}

/// A key rotated just before a restart (still in its publish lead): the
/// restarted instance publishes both, keeps verifying the old key's tokens
/// once its private half is deleted, and signs with the new key from its
/// activation.
#[tokio::test]
async fn a_rotation_in_its_lead_survives_a_restart() {
    let app = spawn_app_with(|c| c.keys.publish_lead = Duration::from_secs(2)).await;
    let admin = app.admin("rot@example.com").await;
    let old_kid = header(&admin.access)["kid"].as_str().unwrap().to_owned();
    let r = app
        .authed(Method::POST, "/v1/admin/keys/rotate", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new_kid = r.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let restarted = spawn_app_beside(&app, |c| c.keys.publish_lead = Duration::from_secs(2)).await;
    let jwks = KeySet::parse(
        &restarted
            .get("/.well-known/jwks.json")
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(jwks.has_kid(&old_kid) && jwks.has_kid(&new_kid));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let n = restarted
        .state
        .keys
        .forget_retired_private_keys(restarted.state.store.as_ref(), forget_now())
        .await
        .unwrap();
    assert_eq!(n, 1, "the old key's private half is deleted");
    assert_eq!(ext_authz(&restarted, &admin).await, 200);
    let t = restarted.signin("rot@example.com", PASSWORD).await;
    assert_eq!(header(&t.access)["kid"], new_kid.as_str());
}

/// A mailed sign-in code and a reset link are refused exactly at their
/// `expires_at` and taken one second before.
#[tokio::test]
async fn codes_and_links_expire_exactly_at_their_boundary() {
    let app = spawn_app().await;
    app.verified_user("edge@example.com").await;
    let (challenge, _) = app.challenge("edge@example.com", PASSWORD).await;
    let code = app.last_mail("edge@example.com", 2).await["code"].clone();
    let at = now();
    run_sql(
        &app,
        &[&format!(
            "UPDATE challenges SET expires_at = {at} WHERE id = '{challenge}'"
        )],
    )
    .await;
    let r = app
        .post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": challenge, "code": code}),
        )
        .await;
    assert!(
        r.status().is_client_error(),
        "a code at its expires_at: {}",
        r.status()
    );

    let r = app
        .post(
            "/v1/auth/password/forgot",
            json!({"email": "edge@example.com"}),
        )
        .await;
    assert!(r.status().is_success());
    let mails = app.outbox("edge@example.com", 3).await;
    let token = mails.last().unwrap()["token"].as_str().unwrap().to_owned();
    let hash = authflow_auth_service::domain::hash_secret(&token);
    // The link set to expire at `at`, then used.
    let reset_expiring_at = |at: i64| {
        let (app, token, hash) = (&app, &token, &hash);
        async move {
            let sql = format!("UPDATE one_time_tokens SET expires_at = {at} WHERE hash = '{hash}'");
            run_sql(app, &[&sql]).await;
            app.post(
                "/v1/auth/password/reset",
                json!({"token": token, "password": "another long passphrase 42"}),
            )
            .await
            .status()
        }
    };
    assert_eq!(
        reset_expiring_at(now()).await,
        400,
        "a link at its expires_at"
    );
    assert_eq!(
        reset_expiring_at(now() + 5).await,
        200,
        "a link before its expires_at"
    );
}

/// A ban acknowledged before a restart kills the tokens of the ban's own
/// second after it; the restarted instance's feed keeps it until the last
/// recorded token's `exp` + retention.
#[tokio::test]
async fn a_ban_survives_a_restart_and_covers_the_last_recorded_token() {
    let app = spawn_app().await;
    let admin = app.admin("admin-ban@example.com").await;
    let user = app.verified_user("banned@example.com").await;
    let t = app.signin("banned@example.com", PASSWORD).await;
    let exp = claims(&t.access)["exp"].as_u64().unwrap();
    let r = app.ban(&admin, &user).await;
    assert_eq!(r.status(), 200);
    let restarted = restarted_and_pruned(&app).await;
    assert_eq!(ext_authz(&restarted, &t).await, 401);
    let until = published_until(&restarted, "banned_subjects", "sub", &user)
        .await
        .expect("the ban is in the restarted feed");
    let retention = restarted.state.config.revocation.retention.as_secs();
    assert!(until >= exp + retention, "{until} < {exp} + {retention}");
}

/// A token revoked alone (by `jti`) before a restart stays refused after it
/// and after the maintenance prune, and the feed keeps it until `exp` + retention.
#[tokio::test]
async fn a_jti_revocation_survives_a_restart_and_the_prune() {
    let app = spawn_app().await;
    let admin = app.admin("admin-jti@example.com").await;
    app.verified_user("jti@example.com").await;
    let t = app.signin("jti@example.com", PASSWORD).await;
    let c = claims(&t.access);
    let (jti, exp) = (
        c["jti"].as_str().unwrap().to_owned(),
        c["exp"].as_u64().unwrap(),
    );
    let r = app
        .authed(Method::POST, "/v1/admin/tokens/revoke", &admin)
        .json(&json!({"jti": jti}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let restarted = restarted_and_pruned(&app).await;
    assert_eq!(ext_authz(&restarted, &t).await, 401);
    let until = published_until(&restarted, "revoked_tokens", "jti", &jti)
        .await
        .expect("the jti is in the restarted feed");
    let retention = restarted.state.config.revocation.retention.as_secs();
    assert!(until >= exp + retention, "{until} < {exp} + {retention}");
}
