//! What should expire does: retired signing keys lose their private half once
//! they no longer sign, and audit rows go after the retention period — both
//! done by the service's background task.

use std::time::Duration;

use authflow_auth_service::store::AuditEntry;
use authflow_contract::KeySet;
use reqwest::Method;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn retired_key_loses_its_private_half_but_stays_published() {
    let app = spawn_app_with(|c| {
        c.keys.publish_lead = Duration::from_secs(1);
        c.maintenance.interval = Duration::from_secs(1);
    })
    .await;
    let admin = app.admin("keys@example.com").await;
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
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let stored = app.state.store.signing_keys().await.unwrap();
    let old = stored
        .iter()
        .find(|k| k.kid == old_kid)
        .expect("the retired key's row (public half) is kept");
    assert!(
        old.private_key.is_empty(),
        "the retired key's private half is deleted once it no longer signs"
    );
    let new = stored.iter().find(|k| k.kid == new_kid).unwrap();
    assert!(!new.private_key.is_empty());

    // Its tokens still verify until they expire: it stays in the JWKS and the service accepts them.
    let jwks = KeySet::parse(
        &app.get("/.well-known/jwks.json")
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(jwks.has_kid(&old_kid) && jwks.has_kid(&new_kid));
    let r = app
        .authed(Method::GET, "/v1/admin/keys", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = app.signin("keys@example.com", PASSWORD).await;
    assert_eq!(header(&t.access)["kid"], new_kid.as_str());
}

#[tokio::test]
async fn audit_rows_expire_after_the_retention_period() {
    let app = spawn_app_with(|c| c.maintenance.interval = Duration::from_secs(1)).await;
    let now = authflow_auth_service::clock::now();
    let old = AuditEntry {
        at: now - 91 * 86_400,
        event: "signin".into(),
        outcome: "ancient".into(),
        ..AuditEntry::default()
    };
    let recent = AuditEntry {
        at: now - 89 * 86_400,
        event: "signin".into(),
        outcome: "recent".into(),
        ..AuditEntry::default()
    };
    app.state.store.audit(&old).await.unwrap();
    app.state.store.audit(&recent).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let log = app.state.store.audit_log(None, 1000).await.unwrap();
    assert!(
        !log.iter().any(|e| e.outcome == "ancient"),
        "rows older than 90 days are gone"
    );
    assert!(
        log.iter().any(|e| e.outcome == "recent"),
        "younger rows stay"
    );
}

/// Sessions stay long after they end (for the audit retention), so an
/// account keeps months of sessions. Ending "all" of them (a ban, a password
/// reset, logout-all) must not publish a revocation for each session that
/// expired long ago, with no token alive: every such event is pushed to every filter (snapshots and
/// deltas) and counts against its `revocation.max_entries`, for nothing.
/// An account that signs in over and over (or just a long-lived one) would
/// otherwise turn one logout-all into thousands of feed entries.
#[tokio::test]
async fn ending_all_sessions_publishes_nothing_for_sessions_long_expired() {
    use authflow_auth_service::store::{RefreshRecord, Session};
    let app = spawn_app().await;
    let email = "many-sessions@example.com";
    let user_id = app.verified_user(email).await;
    let live = app.signin(email, PASSWORD).await;
    let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    let now = authflow_auth_service::clock::now();
    // A year of sign-ins, every one of them long expired (no token of theirs alive).
    const OLD: i64 = 200;
    for i in 0..OLD {
        let at = now - 400 * 86_400 + i * 3600;
        let id = format!("old-session-{i}");
        let session = Session {
            id: id.clone(),
            user_id: user_id.clone(),
            device_secret_hash: "00".repeat(32),
            created_at: at,
            last_seen_at: at,
            expires_at: at + 30 * 86_400,
            revoked_at: None,
            revoke_reason: None,
            ip: None,
            user_agent: None,
            dpop_jkt: None,
            dpop_bound_at: None,
        };
        let refresh = RefreshRecord {
            hash: format!("{i:064x}"),
            session_id: id,
            created_at: at,
            expires_at: at + 30 * 86_400,
            used_at: None,
            dpop_bound: false,
        };
        assert!(app
            .state
            .store
            .create_session(&session, &refresh, None, user.password_version, UNCAPPED)
            .await
            .unwrap()
            .is_some());
    }
    // One of them gave out an access token that still verifies (its record
    // says so): that one's revocation is still needed.
    app.state
        .store
        .record_access_token(&authflow_auth_service::store::IssuedToken {
            jti: "still-verifies".into(),
            user_id: user_id.clone(),
            session_id: "old-session-7".into(),
            issued_at: now - 60,
            expires_at: now + 600,
        })
        .await
        .unwrap();
    let head_before = app.state.store.feed_head().await.unwrap().head;

    let r = app
        .authed(reqwest::Method::POST, "/v1/auth/logout-all", &live)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "logout-all: {}", r.status());

    let events = app
        .state
        .store
        .feed_events_after(head_before, 0)
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.subject == live.session),
        "the live session is revoked in the feed"
    );
    assert!(
        events.iter().any(|e| e.subject == "old-session-7"),
        "an expired session whose token still verifies is revoked in the feed"
    );
    assert!(
        events.len() <= 2,
        "logout-all of two sessions that matter published {} feed events (one per session ever \
         expired)",
        events.len()
    );
}

/// Sessions that ended (expired or revoked) longer ago than the audit
/// retention, with no token record left naming them, are deleted by the
/// background task, as are second-factor guard rows that count nothing;
/// everything still needed stays: a session ended recently (the admin
/// listing), one whose access token still verifies (its revocation), a live
/// one, a guard row with a count of wrong codes or of lockouts.
#[tokio::test]
async fn ended_sessions_and_idle_second_factor_guards_are_pruned() {
    use authflow_auth_service::store::{IssuedToken, RefreshRecord, Session};
    let app = spawn_app_with(|c| c.maintenance.interval = Duration::from_secs(1)).await;
    let email = "pruned-sessions@example.com";
    let user_id = app.verified_user(email).await;
    let live = app.signin(email, PASSWORD).await;
    let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    let now = authflow_auth_service::clock::now();
    const DAY: i64 = 86_400;
    // (id, created, expires, refresh token expires)
    let sessions = [
        (
            "expired-long-ago",
            now - 400 * DAY,
            now - 370 * DAY,
            now - 370 * DAY,
        ),
        (
            "expired-recently",
            now - 40 * DAY,
            now - 10 * DAY,
            now - 10 * DAY,
        ),
        (
            "revoked-long-ago",
            now - 200 * DAY,
            now + 30 * DAY,
            now - 95 * DAY,
        ),
        (
            "token-still-verifies",
            now - 400 * DAY,
            now - 370 * DAY,
            now - 370 * DAY,
        ),
    ];
    for (i, (id, created, expires, refresh_expires)) in sessions.into_iter().enumerate() {
        let session = Session {
            id: id.into(),
            user_id: user_id.clone(),
            device_secret_hash: "00".repeat(32),
            created_at: created,
            last_seen_at: created,
            expires_at: expires,
            revoked_at: None,
            revoke_reason: None,
            ip: None,
            user_agent: None,
            dpop_jkt: None,
            dpop_bound_at: None,
        };
        let refresh = RefreshRecord {
            hash: format!("{i:064x}"),
            session_id: id.into(),
            created_at: created,
            expires_at: refresh_expires,
            used_at: None,
            dpop_bound: false,
        };
        assert!(app
            .state
            .store
            .create_session(&session, &refresh, None, user.password_version, UNCAPPED)
            .await
            .unwrap()
            .is_some());
    }
    assert!(app
        .state
        .store
        .revoke_session(
            "revoked-long-ago",
            "logout",
            now - 100 * DAY,
            now - 99 * DAY
        )
        .await
        .unwrap());
    app.state
        .store
        .record_access_token(&IssuedToken {
            jti: "still-verifies".into(),
            user_id: user_id.clone(),
            session_id: "token-still-verifies".into(),
            issued_at: now - 60,
            expires_at: now + 600,
        })
        .await
        .unwrap();

    // Second-factor guards: one back at its start after a right code, one
    // with a wrong code counted, one locked out.
    let store = &app.state.store;
    let cleared = app.verified_user("cleared-guard@example.com").await;
    store.second_factor_attempt(&cleared, now).await.unwrap();
    store.second_factor_success(&cleared).await.unwrap();
    let counting = app.verified_user("counting-guard@example.com").await;
    store.second_factor_attempt(&counting, now).await.unwrap();
    let locked = app.verified_user("locked-guard@example.com").await;
    store.second_factor_attempt(&locked, now).await.unwrap();
    assert!(store
        .second_factor_lock(&locked, now, 1, 1)
        .await
        .unwrap()
        .is_some());

    tokio::time::sleep(Duration::from_millis(2500)).await;

    for (id, kept) in [
        ("expired-long-ago", false),
        ("revoked-long-ago", false),
        ("expired-recently", true),
        ("token-still-verifies", true),
        (live.session.as_str(), true),
    ] {
        assert_eq!(
            rows_where(&app, "sessions", "id", id).await,
            i64::from(kept),
            "session {id}"
        );
    }
    for (user, kept) in [(&cleared, false), (&counting, true), (&locked, true)] {
        assert_eq!(
            rows_where(&app, "second_factor_guard", "user_id", user).await,
            i64::from(kept),
            "guard of {user}"
        );
    }
    // The live session still refreshes.
    let r = refresh_with_device(&app, &live.refresh, Some(&live.device)).await;
    assert_eq!(r.status(), 200);
}

/// The plan `sql` would run with, one line per step: SQLite's `EXPLAIN QUERY
/// PLAN` details, or PostgreSQL's `EXPLAIN` with sequential scans priced out
/// (on a near-empty table a scan is cheapest; it must still be avoidable).
/// On PostgreSQL every parameter is `'0'`, which the server reads as the
/// type it infers for it (a number, a text, a boolean).
async fn query_plan(app: &TestApp, sql: &str) -> Vec<String> {
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    let params = (1..=9).filter(|n| sql.contains(&format!("${n}"))).count();
    if app.database_url.is_some() {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!(
            "SET enable_seqscan = off; PREPARE planned AS {sql}"
        ))
        .execute(&mut db)
        .await
        .unwrap();
        let values = vec!["'0'"; params].join(", ");
        let execute = if params == 0 {
            "EXECUTE planned".to_owned()
        } else {
            format!("EXECUTE planned({values})")
        };
        sqlx::query_scalar::<_, String>(&format!("EXPLAIN {execute}"))
            .fetch_all(&mut db)
            .await
            .unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
        for _ in 0..params {
            q = q.bind(0_i64);
        }
        let plan = q.fetch_all(&pool).await.unwrap();
        pool.close().await;
        plan.into_iter().map(|(_, _, _, detail)| detail).collect()
    }
}

/// Finding: the maintenance task (every `maintenance.interval_secs`, 30 s
/// by default) deleted ended sessions, expired refresh tokens, reset links,
/// sign-in challenges, idle sign-in failure counts and mail budgets by reading
/// every row of their tables. Sessions and refresh tokens grow with the
/// users, failure counts with an attack from many addresses; on SQLite each
/// such read holds the one write lock, stalling every sign-in and refresh
/// behind it. Each delete now finds its rows through an index.
#[tokio::test]
async fn maintenance_deletes_read_no_whole_table() {
    let app = spawn_app().await;
    let mut scans = Vec::new();
    for sql in authflow_auth_service::store::maintenance::ALL {
        let plan = query_plan(&app, sql).await;
        assert!(!plan.is_empty(), "no plan for {sql}");
        if plan
            .iter()
            .any(|step| step.starts_with("SCAN ") || step.contains("Seq Scan"))
        {
            scans.push(format!("{sql}:\n  {}", plan.join("\n  ")));
        }
    }
    assert!(
        scans.is_empty(),
        "maintenance deletes that read a whole table:\n{}",
        scans.join("\n")
    );
}

/// Finding (with the audit listing's pages): each page of `GET
/// /v1/admin/audit`, of every row or of one user's, starts below the
/// previous page's last id and is read from an index from there, never by
/// reading (or sorting) the whole log to reach it.
#[tokio::test]
async fn audit_pages_are_read_from_an_index() {
    let app = spawn_app().await;
    let mut wrong = Vec::new();
    for sql in [
        authflow_auth_service::store::by_user::AUDIT_OF_USER,
        authflow_auth_service::store::by_user::AUDIT_NEWEST,
    ] {
        let plan = query_plan(&app, sql).await;
        assert!(!plan.is_empty(), "no plan for {sql}");
        let whole = plan
            .iter()
            .any(|step| step.starts_with("SCAN ") || step.contains("Seq Scan"));
        let from_cursor = plan
            .iter()
            .any(|step| step.contains("id<?") || step.contains("(id < "));
        let sorted = plan.iter().any(|step| {
            step.contains("TEMP B-TREE")
                || step.trim_start().starts_with("->  Sort")
                || step.starts_with("Sort")
        });
        if whole || !from_cursor || sorted {
            wrong.push(format!("{sql}:\n  {}", plan.join("\n  ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "audit pages not read from an index at their cursor:\n{}",
        wrong.join("\n")
    );
}

/// Finding: a password reset ended the user's other live links and sign-in
/// challenges by reading every live link and challenge of every user (by
/// expiry: no index on the user), under SQLite's write lock, and the admin
/// audit listing for one user (`GET /v1/admin/audit?user_id=`) read the
/// whole audit log, newest first, when that user had few rows (one
/// statement for both listings, `($1 IS NULL OR user_id = $1)`). Links grow
/// with sign-ups (a day each by default), challenges with sign-ins, audit
/// rows with every request for the retention period. Each statement now
/// finds the user's rows through an index on the user, and the listing
/// takes them newest first from it without sorting them all.
#[tokio::test]
async fn per_user_statements_read_only_that_users_rows() {
    let app = spawn_app().await;
    let mut wrong = Vec::new();
    for sql in authflow_auth_service::store::by_user::ALL {
        let plan = query_plan(&app, sql).await;
        assert!(!plan.is_empty(), "no plan for {sql}");
        let whole = plan
            .iter()
            .any(|step| step.starts_with("SCAN ") || step.contains("Seq Scan"));
        let by_user = plan.iter().any(|step| {
            // On Postgres the user alone, or the user and the page's id bound.
            step.contains("(user_id=?")
                || step.contains("Index Cond: (user_id = ")
                || step.contains("Index Cond: ((user_id = ")
        });
        let sorted = plan.iter().any(|step| {
            step.contains("TEMP B-TREE")
                || step.trim_start().starts_with("->  Sort")
                || step.starts_with("Sort")
        });
        if whole || !by_user || sorted {
            wrong.push(format!("{sql}:\n  {}", plan.join("\n  ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "per-user statements that read other users' rows (or sort all of the user's):\n{}",
        wrong.join("\n")
    );
    // The two listings still answer as the one statement did.
    let now = authflow_auth_service::clock::now();
    for (user, outcome) in [
        (Some("u-1"), "first"),
        (Some("u-2"), "other"),
        (Some("u-1"), "second"),
        (None, "anon"),
    ] {
        let entry = AuditEntry {
            at: now,
            event: "signin".into(),
            outcome: outcome.into(),
            user_id: user.map(Into::into),
            ..AuditEntry::default()
        };
        app.state.store.audit(&entry).await.unwrap();
    }
    let outcomes = |log: Vec<AuditEntry>| log.into_iter().map(|e| e.outcome).collect::<Vec<_>>();
    let of_user = app.state.store.audit_log(Some("u-1"), 10).await.unwrap();
    assert_eq!(outcomes(of_user), ["second", "first"]);
    let newest = app.state.store.audit_log(None, 2).await.unwrap();
    assert_eq!(outcomes(newest), ["anon", "second"]);
}

/// Finding: an account whose address was never verified was kept for
/// ever: an address someone typed (perhaps another person's, perhaps by
/// the thousand) with a password hash beside it, that nothing would ever
/// use. The maintenance task now deletes it `accounts.unverified_retention_days`
/// after the sign-up, once no link of it is live, unless it was banned;
/// the address then signs up afresh.
#[tokio::test]
async fn unverified_accounts_are_deleted_after_their_retention() {
    let app = spawn_app_with(|c| c.maintenance.interval = Duration::from_secs(1)).await;
    let signup = |email: &'static str| {
        let app = &app;
        async move {
            let r = app
                .post(
                    "/v1/auth/signup",
                    serde_json::json!({"email": email, "password": PASSWORD}),
                )
                .await;
            assert_eq!(r.status(), 201);
        }
    };
    let age = |email: &str, days: i64| {
        format!("UPDATE users SET created_at = created_at - {days} * 86400 WHERE email = '{email}'")
    };
    let expire_links = |email: &str| {
        format!(
            "UPDATE one_time_tokens SET expires_at = 0 \
             WHERE user_id = (SELECT id FROM users WHERE email = '{email}')"
        )
    };
    let forgotten = "forgotten@example.com";
    let link_live = "link-live@example.com";
    let recent = "recent@example.com";
    let banned = "banned-unverified@example.com";
    let verified = "verified-old@example.com";
    for email in [forgotten, link_live, recent, banned] {
        signup(email).await;
    }
    app.verified_user(verified).await;
    run_sql(
        &app,
        &[
            &age(forgotten, 8),
            &expire_links(forgotten),
            &age(link_live, 8),
            &age(recent, 6),
            &expire_links(recent),
            &age(banned, 8),
            &expire_links(banned),
            &format!("UPDATE users SET banned_at = 1 WHERE email = '{banned}'"),
            &age(verified, 400),
            &expire_links(verified),
        ],
    )
    .await;
    let mut gone = false;
    for _ in 0..50 {
        if rows_where(&app, "users", "email", forgotten).await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "the unverified account past its retention was kept");
    for kept in [link_live, recent, banned, verified] {
        assert_eq!(rows_where(&app, "users", "email", kept).await, 1, "{kept}");
    }
    // The address is free: a sign-up gets a verification link, not the
    // notice an existing account's owner gets.
    let before = app.outbox(forgotten, 0).await.len();
    signup(forgotten).await;
    let mail = app.last_mail(forgotten, before + 1).await;
    assert_eq!(mail["subject"], "Verify your email address");
}
