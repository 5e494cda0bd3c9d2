//! Session lifecycle edge cases: what a refresh that fails half-way leaves behind.

use serde_json::Value;

use crate::common::*;

/// A refresh that fails after the rotation was decided (here: the new
/// access token cannot be recorded; likewise a crash between the two
/// writes) must leave the old refresh token usable. Before the fix the
/// rotation had already committed: the client, which never received the new
/// refresh token, was stranded — its retry answered "just rotated" for 10 s
/// and after that was taken for reuse, revoking the session (and raising a
/// false token-theft alarm in the audit log and metrics).
#[tokio::test]
async fn a_refresh_that_fails_half_way_leaves_the_old_refresh_token_usable() {
    let app = spawn_app().await;
    app.verified_user("halfway@example.com").await;
    let t = app.signin("halfway@example.com", PASSWORD).await;

    break_inserts(&app, "access_tokens").await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert!(
        r.status().is_server_error(),
        "the refresh fails: {}",
        r.status()
    );
    heal_inserts(&app, "access_tokens").await;

    // The client retries with the only refresh token it has.
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        status, 200,
        "the retry after a failed refresh is refused: {body}"
    );
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert!(session.revoked_at.is_none());
}

/// Once the grace is over, the stranded client's retry (before the fix)
/// counted as reuse and ended the session.
#[tokio::test]
async fn a_failed_refresh_is_not_later_taken_for_reuse() {
    let app = spawn_app().await;
    app.verified_user("stranded@example.com").await;
    let t = app.signin("stranded@example.com", PASSWORD).await;

    break_inserts(&app, "access_tokens").await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    heal_inserts(&app, "access_tokens").await;

    // If the failed refresh left a rotation behind, make it look old.
    let hash = authflow_auth_service::domain::hash_secret(&t.refresh);
    let rotated = app
        .state
        .store
        .refresh_token(&hash)
        .await
        .unwrap()
        .unwrap()
        .used_at
        .is_some();
    if rotated {
        age_rotation(&app, &t.refresh, 60).await;
    }
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let session = app.state.store.session(&t.session).await.unwrap().unwrap();
    assert_eq!(
        session.revoke_reason, None,
        "a failed refresh turned into token-reuse detection"
    );
}

/// A logout (here: the session's revocation, written by another connection
/// and committed while the refresh waits for the write lock) that lands
/// between the refresh's read of the session and its rotation: the rotation
/// sees it and refuses, rather than answering 200 with tokens of a session
/// that has ended.
#[tokio::test]
async fn a_refresh_racing_a_logout_is_refused() {
    let app = spawn_app().await;
    app.verified_user("racing@example.com").await;
    let t = app.signin("racing@example.com", PASSWORD).await;
    let revoke = format!(
        "UPDATE sessions SET revoked_at = {}, revoke_reason = 'logout' WHERE id = '{}'",
        authflow_auth_service::clock::now(),
        t.session
    );
    // The revocation is written but not committed: the refresh reads the
    // session as live, then waits for the lock (SQLite's file lock, or the
    // session row's lock on Postgres).
    let held = hold_transaction(&app, &[&revoke], &[&revoke]).await;
    let commit = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        held.commit().await;
    });
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    commit.await.unwrap();
    assert_eq!(invalid_grant(r).await, "the session has ended");
}

/// A sign-in whose access token cannot be recorded (a failing disk, a lost
/// connection) leaves no session behind: before the fix the session and its
/// refresh token had committed first, a live session nobody held, listed
/// among the user's sessions until it expired.
#[tokio::test]
async fn a_sign_in_that_fails_half_way_leaves_no_session() {
    let app = spawn_app().await;
    app.verified_user("orphan@example.com").await;
    let user = app
        .state
        .store
        .user_by_email("orphan@example.com")
        .await
        .unwrap()
        .unwrap();
    let before = app.outbox("orphan@example.com", 0).await.len();
    let (challenge, _) = app.challenge("orphan@example.com", PASSWORD).await;
    let mail = app.last_mail("orphan@example.com", before + 1).await;

    break_inserts(&app, "access_tokens").await;
    let r = app
        .post(
            "/v1/auth/signin/verify",
            serde_json::json!({"challenge_id": challenge, "code": mail["code"]}),
        )
        .await;
    assert!(r.status().is_server_error(), "{}", r.status());
    heal_inserts(&app, "access_tokens").await;

    let now = authflow_auth_service::clock::now();
    let live = app
        .state
        .store
        .live_sessions_of(&user.id, now, 100)
        .await
        .unwrap();
    assert!(live.is_empty(), "an orphan session: {live:?}");
}
