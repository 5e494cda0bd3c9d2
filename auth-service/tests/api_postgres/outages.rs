//! The database failing under a running instance: what the instance
//! acknowledged stays in force in its own answers.

use crate::common::*;

/// From the next revocation's own transaction on, the feed's head cannot be
/// read (a trigger renames the table it is read from): the revocation
/// commits, and every sync after it fails, as with a connection lost or a
/// failover right after the commit.
async fn hide_the_feed_head_from_the_next_revocation(app: &TestApp) {
    run_sql(
        app,
        &[
            "CREATE FUNCTION test_hide_meta() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN ALTER TABLE IF EXISTS meta RENAME TO meta_hidden; RETURN NULL; END $$",
            "CREATE TRIGGER test_hide_meta AFTER INSERT ON revocation_events \
             FOR EACH STATEMENT EXECUTE FUNCTION test_hide_meta()",
        ],
    )
    .await;
}

/// Undoes [`hide_the_feed_head_from_the_next_revocation`].
async fn show_the_feed_head_again(app: &TestApp) {
    run_sql(
        app,
        &[
            "DROP TRIGGER test_hide_meta ON revocation_events",
            "ALTER TABLE meta_hidden RENAME TO meta",
        ],
    )
    .await;
}

/// A logout commits, and the database stops answering the feed's reads right
/// after (here: a trigger renames the table the feed head is read with, in
/// the logout's own transaction; in production a connection lost, a
/// failover, a pool exhausted). The logout is still acknowledged (200):
/// it committed. From then on this instance's `ext_authz` must not admit
/// the logged-out token — it checks its in-memory list, which the failed
/// sync left without the logout, and which it still trusts for up to
/// `revocation.max_staleness_secs` (45 s) after the sync before the write.
/// The feed itself means to refuse a `304` over the acknowledged write
/// (`Feed::answer`, the `behind` flag); the own checks must not admit it either.
#[tokio::test]
async fn a_logout_acknowledged_while_the_feed_cannot_be_read_is_not_admitted_by_ext_authz() {
    let app = spawn_app().await;
    app.verified_user("gone@example.com").await;
    let t = app.signin("gone@example.com", PASSWORD).await;
    assert_eq!(ext_authz(&app, &t).await, 200);
    hide_the_feed_head_from_the_next_revocation(&app).await;
    let r = app.logout(&t).await;
    assert_eq!(r.status(), 200, "the logout committed");
    let status = ext_authz(&app, &t).await;
    assert!(
        status == 401 || status == 503,
        "ext_authz answers {status} for a token whose logout this instance acknowledged"
    );
    show_the_feed_head_again(&app).await;
    let mut status = 0;
    for _ in 0..40 {
        status = ext_authz(&app, &t).await;
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 401,
        "the logout is in force once the feed is read again"
    );
}

/// The maintenance task reads the clock once per round and syncs the feed
/// last, with that reading. A round held up by the database (here a prune
/// waits 8 s on a lock another client holds; in production a slow or
/// unreachable database, each step up to the pool's 10 s acquire timeout)
/// syncs with a time seconds older than the 250 ms follower's syncs used:
/// the list takes it for a clock stepped back (more than 5 s) and empties
/// itself to reload from the database. If that reload's read fails (the
/// database still failing), the list stays empty, not stale (the last sync
/// that worked was a moment ago), and this instance's `ext_authz` admits
/// every revoked token, here one logged out long before, until a sync
/// works again or the list goes stale (45 s). Even when the read works,
/// the list is empty while it runs.
#[tokio::test]
async fn a_maintenance_round_held_up_by_the_database_does_not_empty_the_revocation_list() {
    let app = spawn_app_with(|c| c.maintenance.interval = std::time::Duration::from_secs(1)).await;
    app.verified_user("held@example.com").await;
    let t = app.signin("held@example.com", PASSWORD).await;
    let r = app.logout(&t).await;
    assert_eq!(r.status(), 200);
    assert_eq!(ext_authz(&app, &t).await, 401);
    // The next maintenance round waits at its first prune; the follower syncs on.
    let held = hold_transaction(
        &app,
        &[],
        &["LOCK TABLE challenges IN ACCESS EXCLUSIVE MODE"],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    // The feed's events cannot be read from now on (the head still can).
    run_sql(
        &app,
        &["ALTER TABLE revocation_events RENAME COLUMN not_before TO not_before_hidden"],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(ext_authz(&app, &t).await, 401, "the list holds the logout");
    held.commit().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let status = ext_authz(&app, &t).await;
    run_sql(
        &app,
        &["ALTER TABLE revocation_events RENAME COLUMN not_before_hidden TO not_before"],
    )
    .await;
    assert!(
        status == 401 || status == 503,
        "ext_authz answers {status} for a token logged out before the database slowed down"
    );
}

/// The sync after a logout failed (the feed cannot be read), so the feed
/// must not answer `304` to a cursor from before the logout: the README
/// promises such polls sync first and are answered `500` while the database
/// cannot be read, "never a `304` over the acknowledged write". A poll that
/// comes while another sync is under way (the 250 ms follower's; during an
/// outage each one waits up to the pool's 10 s acquire timeout, so nearly
/// every poll does) waits for that sync and then answers as if it had
/// worked: `304`. A filter takes a `304` as "your list is current" and
/// restarts its staleness clock, so while this instance cannot read the
/// database (and another can, and takes bans) its filters never go stale.
#[tokio::test]
async fn a_poll_that_waits_for_a_failing_sync_is_not_answered_304() {
    let app = spawn_app().await;
    app.verified_user("poll@example.com").await;
    let t = app.signin("poll@example.com", PASSWORD).await;
    let cursor = app.state.feed.cursor();
    hide_the_feed_head_from_the_next_revocation(&app).await;
    let r = app.logout(&t).await;
    assert_eq!(r.status(), 200, "the logout committed");
    // A poll from before the logout syncs itself and fails (500), or shares
    // the failure of the follower's sync under way (503).
    let (status, _) = app.feed(Some(&cursor)).await;
    assert!(
        status == 500 || status == 503,
        "{status}: a poll from before an acknowledged logout, the feed unread since (304: the \
         same fault, hit when the follower's sync was under way)"
    );
    // The follower's next sync is held up (then fails: the feed cannot be read).
    let held = hold_transaction(
        &app,
        &[],
        &["LOCK TABLE feed_state IN ACCESS EXCLUSIVE MODE"],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let poll = {
        let (http, url) = (app.http.clone(), app.url("/v1/revocations"));
        let cursor = cursor.clone();
        tokio::spawn(async move {
            let r = http
                .get(url)
                .query(&[("since", cursor)])
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    held.commit().await;
    let status = poll.await.unwrap();
    show_the_feed_head_again(&app).await;
    assert_ne!(
        status, 304,
        "a 304 to a cursor from before a logout this instance acknowledged, its feed unread since"
    );
}

/// The database refuses this instance's connections (a failover under way,
/// a full connection limit, the server restarting): a request that needs
/// it is answered `503 temporarily_unavailable` with `Retry-After`, as the
/// service answers when a password-hashing slot stays busy — a client (or
/// Envoy's retry policy) may try again, another instance may answer — and
/// with nothing of the database in the answer. Today: `500 server_error`.
#[tokio::test]
async fn a_database_that_refuses_connections_is_answered_503_with_nothing_leaked() {
    use sqlx::Connection;
    let app = spawn_app().await;
    app.verified_user("away@example.com").await;
    let url = app.database_url.clone().unwrap();
    let (base, name) = url.rsplit_once('/').unwrap();
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    for sql in [
        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    let r = app
        .post(
            "/v1/auth/signin",
            serde_json::json!({"email": "away@example.com", "password": PASSWORD}),
        )
        .await;
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").cloned();
    let body = r.text().await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    for leak in ["pool", "postgres", "sql", "127.0.0.1", name] {
        assert!(!body.to_lowercase().contains(leak), "{leak} in {body}");
    }
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some());
    // Back as soon as the database is: no restart.
    let (challenge, _) = app.challenge("away@example.com", PASSWORD).await;
    assert!(!challenge.is_empty());
}
