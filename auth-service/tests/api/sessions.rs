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

/// Moves every rotation of session `session_id` `secs` into the past.
async fn age_session_rotations(app: &TestApp, session_id: &str, secs: i64) {
    let sql = format!(
        "UPDATE refresh_tokens SET used_at = used_at - {secs} WHERE session_id = '{session_id}' AND used_at IS NOT NULL"
    );
    run_sql(app, &[&sql]).await;
}

/// Refreshes `t` `n` times in a row, each with the token the last one gave.
async fn refresh_times(app: &TestApp, t: Tokens, n: usize) -> (Tokens, Vec<String>) {
    let mut t = t;
    let mut rotated_out = Vec::new();
    for i in 0..n {
        let r = refresh_with_device(app, &t.refresh, Some(&t.device)).await;
        assert_eq!(r.status(), 200, "refresh {i}");
        let next = tokens_of(r).await;
        rotated_out.push(std::mem::replace(&mut t, next).refresh);
    }
    (t, rotated_out)
}

/// One signed-in client (or whoever stole its refresh token and device
/// secret) refreshing in a tight loop. Before the fix every refresh stored
/// a new refresh-token row and kept every row it replaced for the
/// session's whole life (30 days by default), with no limit on how often:
/// one session grew the database without bound, a row per request (151
/// rows after 150 refreshes in under a second).
#[tokio::test]
async fn refreshing_in_a_loop_does_not_grow_the_database_without_bound() {
    let app = spawn_app().await;
    app.verified_user("looping@example.com").await;
    let mut t = app.signin("looping@example.com", PASSWORD).await;
    let first = t.refresh.clone();
    let mut throttled = None;
    for i in 0..150 {
        let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
        if r.status() == 429 {
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((3500..=3600).contains(&retry), "Retry-After {retry}");
            assert_eq!(error_code(r, 429).await, "too_many_attempts");
            throttled = Some(i);
            break;
        }
        assert_eq!(r.status(), 200);
        t = tokens_of(r).await;
    }
    assert_eq!(
        throttled,
        Some(120),
        "throttle.refresh_max_per_hour rotations, then 429"
    );
    let rows = rows_where(&app, "refresh_tokens", "session_id", &t.session).await;
    assert_eq!(rows, 121, "the first token and 120 rotations");

    // A throttled refresh rotated nothing: reuse of an old token is still
    // reuse, and the token in hand works again once the hour has room.
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert_eq!(r.status(), 429, "still throttled");
    age_session_rotations(&app, &t.session, 3600).await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert_eq!(r.status(), 200, "the token in hand was left unused");
    let r = refresh_with_device(&app, &first, Some(&t.device)).await;
    assert_eq!(
        invalid_grant(r).await,
        "refresh token reuse detected; the session is revoked"
    );
}

/// Past `ROTATED_REFRESH_TOKENS_KEPT` rotations a session's oldest
/// rotated-out tokens are deleted by the rotation that pushes them out: the
/// rows per session stay bounded however long it lives, while a recently
/// rotated-out token is still taken for reuse.
#[tokio::test]
async fn a_session_keeps_only_its_newest_rotated_out_tokens() {
    let kept = authflow_auth_service::store::ROTATED_REFRESH_TOKENS_KEPT as usize;
    let app = spawn_app_with(|c| c.throttle.refresh_max_per_hour = kept as u32).await;
    app.verified_user("longlived@example.com").await;
    let t = app.signin("longlived@example.com", PASSWORD).await;
    let session = t.session.clone();
    let (t, mut rotated_out) = refresh_times(&app, t, kept).await;
    assert_eq!(
        rows_where(&app, "refresh_tokens", "session_id", &session).await,
        kept as i64 + 1
    );
    // An hour later (as far as the limit can tell), 40 more.
    age_session_rotations(&app, &session, 3600).await;
    let (t, more) = refresh_times(&app, t, 40).await;
    rotated_out.extend(more);
    assert_eq!(
        rows_where(&app, "refresh_tokens", "session_id", &session).await,
        kept as i64 + 1,
        "the current token and the newest rotated-out ones"
    );

    // 40 of the older ones were pushed out (which ones, among rotations of
    // the same second, is not said), none of the newer.
    let mut forgotten = Vec::new();
    for (i, token) in rotated_out.iter().enumerate() {
        let hash = authflow_auth_service::domain::hash_secret(token);
        if app
            .state
            .store
            .refresh_token(&hash)
            .await
            .unwrap()
            .is_none()
        {
            forgotten.push(i);
        }
    }
    assert_eq!(forgotten.len(), 40, "{forgotten:?}");
    assert!(forgotten.iter().all(|&i| i < kept), "{forgotten:?}");
    // One still kept, past the grace: reuse, the session ends.
    let recent = &rotated_out[rotated_out.len() - 5];
    age_rotation(&app, recent, 60).await;
    let r = refresh_with_device(&app, recent, Some(&t.device)).await;
    assert_eq!(
        invalid_grant(r).await,
        "refresh token reuse detected; the session is revoked"
    );
    let s = app.state.store.session(&session).await.unwrap().unwrap();
    assert_eq!(s.revoke_reason.as_deref(), Some("refresh_token_reuse"));
}

/// A thief holding a stolen refresh token and its device secret refreshed
/// first, then kept rotating at the session's limit until the owner's token
/// was pushed out of the history (`ROTATED_REFRESH_TOKENS_KEPT` rotations,
/// a little over two hours). When the owner came back with it, it was an
/// "unknown refresh token", refused without effect: no reuse was seen and
/// the thief's chain lived on to the session's end. The token still names
/// its session under the service's tag: reuse, the session ends.
#[tokio::test]
async fn a_token_pushed_out_of_the_history_is_still_taken_for_reuse() {
    let kept = authflow_auth_service::store::ROTATED_REFRESH_TOKENS_KEPT as usize;
    let app = spawn_app_with(|c| c.throttle.refresh_max_per_hour = kept as u32).await;
    app.verified_user("stolen@example.com").await;
    let owner = app.signin("stolen@example.com", PASSWORD).await;
    let r = refresh_with_device(&app, &owner.refresh, Some(&owner.device)).await;
    let thief = tokens_of(r).await;
    let (thief, _) = refresh_times(&app, thief, kept - 1).await;
    age_session_rotations(&app, &owner.session, 3600).await;
    // The owner's token, the oldest: the next rotation pushes it out.
    age_rotation(&app, &owner.refresh, 60).await;
    let (thief, _) = refresh_times(&app, thief, 1).await;
    let hash = authflow_auth_service::domain::hash_secret(&owner.refresh);
    let row = app.state.store.refresh_token(&hash).await.unwrap();
    assert!(row.is_none(), "pushed out of the history");

    // Without the device secret it is nothing, as any rotated-out token.
    let r = refresh_with_device(&app, &owner.refresh, Some("another-device")).await;
    assert_eq!(invalid_grant(r).await, "unknown refresh token");
    // From its device: reuse.
    let r = refresh_with_device(&app, &owner.refresh, Some(&owner.device)).await;
    assert_eq!(
        invalid_grant(r).await,
        "refresh token reuse detected; the session is revoked"
    );
    let s = app
        .state
        .store
        .session(&owner.session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.revoke_reason.as_deref(), Some("refresh_token_reuse"));
    let r = refresh_with_device(&app, &thief.refresh, Some(&thief.device)).await;
    assert_eq!(invalid_grant(r).await, "the session has ended");

    // A made-up token in the same form names no session.
    let (sid, _) = owner.refresh.split_once('~').unwrap();
    let forged = format!("{sid}~{}~{}", "A".repeat(43), "B".repeat(43));
    let r = refresh_with_device(&app, &forged, Some(&owner.device)).await;
    assert_eq!(invalid_grant(r).await, "unknown refresh token");
}

/// A refresh just before the session's end gave an access token that lived
/// a whole access lifetime past it (up to a day, as configured): the
/// session's end is the last moment any of its tokens is valid.
#[tokio::test]
async fn no_access_token_outlives_its_session() {
    let app = spawn_app().await;
    app.verified_user("ending@example.com").await;
    let t = app.signin("ending@example.com", PASSWORD).await;
    let ends = authflow_auth_service::clock::now() + 5;
    run_sql(
        &app,
        &[&format!(
            "UPDATE sessions SET expires_at = {ends} WHERE id = '{}'",
            t.session
        )],
    )
    .await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let exp = claims(body["access_token"].as_str().unwrap())["exp"]
        .as_i64()
        .unwrap();
    assert!(exp <= ends, "exp {exp} past the session's end {ends}");
    assert!(body["expires_in"].as_u64().unwrap() <= 5, "{body}");
}

/// A deployment with short-lived access tokens (`tokens.access_ttl_secs` is
/// accepted from 1 s) whose client refreshes, as clients do, each time its
/// access token expires: every 20 s, 180 rotations an hour. With the
/// default `throttle.refresh_max_per_hour` (120, whatever the access-token
/// lifetime) the 121st refresh of the hour answered 429 and the client was
/// left without a valid access token for the rest of the hour (a browser
/// sent to sign-in): an ordinary client of an upgraded deployment locked out
/// by the limit meant for loops. The default now leaves room for two
/// refreshes per access-token lifetime (up to the limit's cap).
#[tokio::test]
async fn the_default_refresh_limit_leaves_room_for_a_client_refreshing_at_each_expiry() {
    // The limit a configuration naming only the access-token lifetime gets.
    let configured = authflow_auth_service::config::Config::load_from(
        None,
        &[(
            "AUTHFLOW_TOKENS__ACCESS_TTL_SECS".to_owned(),
            "20".to_owned(),
        )],
    )
    .unwrap();
    let app = spawn_app_with(|c| {
        c.tokens.access_ttl = configured.tokens.access_ttl;
        c.throttle.refresh_max_per_hour = configured.throttle.refresh_max_per_hour;
    })
    .await;
    app.verified_user("shortlived@example.com").await;
    let mut t = app.signin("shortlived@example.com", PASSWORD).await;
    let session = t.session.clone();
    // An hour and a bit of refreshing at each expiry: after each refresh,
    // the rotations so far move 20 s into the past.
    for i in 0..200 {
        let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
        assert_eq!(
            r.status(),
            200,
            "refresh {i} of a client refreshing every 20 s"
        );
        t = tokens_of(r).await;
        age_session_rotations(&app, &session, 20).await;
    }
}

/// Whoever holds a refresh token but not its device can send it from their
/// own device in a loop. Each refusal wrote an audit row, stored durably and
/// kept for months: a row per request, for anyone with one token, and the
/// write made the answer slower than the one for an unknown token it is
/// meant to look like. Now one row a minute per client address and account.
#[tokio::test]
async fn refreshes_from_another_device_cannot_flood_the_audit_log() {
    let app = spawn_app().await;
    let user = app.verified_user("flooded@example.com").await;
    let t = app.signin("flooded@example.com", PASSWORD).await;
    for _ in 0..50 {
        let r = refresh_with_device(&app, &t.refresh, Some("not-the-device")).await;
        assert_eq!(invalid_grant(r).await, "unknown refresh token");
    }
    let log = app.state.store.audit_log(Some(&user), 1000).await.unwrap();
    let rows = log
        .iter()
        .filter(|e| e.event == "refresh" && e.outcome == "wrong_device")
        .count();
    assert_eq!(rows, 1, "{rows} rows for 50 refusals");
}

/// Every sign-in started a session living `tokens.refresh_ttl_secs` (30
/// days), with no limit per user: an account signing in in a loop piled up
/// live sessions, and ending them all at once (logout-all, a password
/// reset) wrote a revocation event for each in one transaction, enough to
/// push every filter off the feed's deltas. A sign-in past
/// `sessions.max_per_user` ends the user's least recently used sessions
/// (their access tokens go to the feed like any ended session's); the
/// newest keep working.
#[tokio::test]
async fn a_sign_in_past_the_session_cap_ends_the_oldest_sessions() {
    let app = spawn_app_with(|c| c.sessions.max_per_user = 3).await;
    let email = "many-devices@example.com";
    let user = app.verified_user(email).await;
    let mut signed_in = Vec::new();
    for _ in 0..5 {
        signed_in.push(app.signin(email, PASSWORD).await);
        a_minute_passes(&app, &user).await;
    }
    let (ended, live) = signed_in.split_at(2);
    for t in ended {
        let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
        assert_eq!(invalid_grant(r).await, "the session has ended");
    }
    let revoked = revoked_sessions_in_the_feed(&app).await;
    for t in ended {
        assert!(revoked.contains(&t.session), "{revoked:?}");
    }
    let newest = live.last().unwrap();
    let r = refresh_with_device(&app, &newest.refresh, Some(&newest.device)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(logout_all(&app, &tokens_of(r).await).await, 3);
}

/// The cap ends the sessions used least recently, not the first signed in:
/// a device that keeps refreshing stays signed in while newer sign-ins
/// left idle go.
#[tokio::test]
async fn a_session_in_use_outlives_newer_ones_left_idle() {
    let app = spawn_app_with(|c| c.sessions.max_per_user = 2).await;
    let email = "phone-and-scripts@example.com";
    let user = app.verified_user(email).await;
    let phone = app.signin(email, PASSWORD).await;
    a_minute_passes(&app, &user).await;
    let idle = app.signin(email, PASSWORD).await;
    a_minute_passes(&app, &user).await;
    let r = refresh_with_device(&app, &phone.refresh, Some(&phone.device)).await;
    assert_eq!(r.status(), 200);
    let phone = tokens_of(r).await;
    a_minute_passes(&app, &user).await;
    let newest = app.signin(email, PASSWORD).await;

    let r = refresh_with_device(&app, &idle.refresh, Some(&idle.device)).await;
    assert_eq!(invalid_grant(r).await, "the session has ended");
    for t in [&phone, &newest] {
        let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
        assert_eq!(r.status(), 200);
    }
}

/// Moves the times of `user_id`'s sessions a minute into the past: what
/// follows happens a minute later (sessions started or used within one
/// second are not told apart by age).
async fn a_minute_passes(app: &TestApp, user_id: &str) {
    let sql = format!(
        "UPDATE sessions SET created_at = created_at - 60, last_seen_at = last_seen_at - 60 WHERE user_id = '{user_id}'"
    );
    run_sql(app, &[&sql]).await;
}

/// The session ids the revocation feed's snapshot lists.
async fn revoked_sessions_in_the_feed(app: &TestApp) -> Vec<String> {
    let (_, snapshot) = app.feed(None).await;
    snapshot.unwrap()["revoked_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap().to_owned())
        .collect()
}

/// `POST /v1/auth/logout-all` with `t`: how many sessions it ended.
async fn logout_all(app: &TestApp, t: &Tokens) -> u64 {
    let r = app
        .authed(reqwest::Method::POST, "/v1/auth/logout-all", t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["revoked_sessions"]
        .as_u64()
        .unwrap()
}

/// Reuse of a refresh token ends its session: the audit row says which.
/// It named only the account, so with several devices signed in the trail
/// did not tell which session (which device, which address) the stolen
/// token was of; a sign-in's own row did not name its session either.
#[tokio::test]
async fn the_reuse_row_names_the_session_it_ended() {
    let app = spawn_app().await;
    let user = app.verified_user("reused@example.com").await;
    let _other = app.signin("reused@example.com", PASSWORD).await;
    let t = app.signin("reused@example.com", PASSWORD).await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert_eq!(r.status(), 200);
    age_rotation(&app, &t.refresh, 60).await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert_eq!(
        invalid_grant(r).await,
        "refresh token reuse detected; the session is revoked"
    );
    let log = app.state.store.audit_log(Some(&user), 1000).await.unwrap();
    let row = log
        .iter()
        .find(|e| e.outcome == "reuse_detected_session_revoked")
        .unwrap();
    assert!(
        row.detail
            .as_deref()
            .unwrap_or_default()
            .contains(&t.session),
        "{row:?}"
    );
    let signed_in = log
        .iter()
        .find(|e| e.event == "signin_verify" && e.outcome == "success")
        .unwrap();
    assert!(
        signed_in
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains(&t.session),
        "{signed_in:?}"
    );
}
