//! A database made by an earlier version upgrades in place: its rows keep
//! working under the migrations added since.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::SqliteJournalMode;

use authflow_auth_service::clock::now;
use authflow_auth_service::domain::password::Hasher;
use authflow_auth_service::domain::Email;
use authflow_auth_service::store::{SigninAttempt, User};
use authflow_auth_service::throttle::Throttle;

use crate::common::*;

/// The first migration (per backend) this test treats as new: a database
/// made by the ones before it (the schema before the throttle's
/// `attempt_seq`, `password_version` and the `access_tokens` user index).
const SQLITE_FIRST_NEW: i64 = 9;
const POSTGRES_FIRST_NEW: i64 = 6;

/// A copy of `backend`'s migrations numbered below `first_new`.
fn earlier_migrations(backend: &str, first_new: i64, into: &Path) -> PathBuf {
    let dir = into.join(format!("earlier-{backend}"));
    std::fs::create_dir_all(&dir).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version < first_new {
            std::fs::copy(&path, dir.join(name)).unwrap();
        }
    }
    dir
}

/// A SQLite database of the earlier schema at `data`'s `authflow.db`, in
/// the given journal mode (the migrations copied under `work`).
async fn earlier_sqlite(data: &Path, work: &Path, journal: SqliteJournalMode) -> sqlx::SqlitePool {
    std::fs::create_dir_all(data).unwrap();
    let url = format!("sqlite://{}", data.join("authflow.db").display());
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .unwrap()
        .journal_mode(journal)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(earlier_migrations("sqlite", SQLITE_FIRST_NEW, work))
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

/// The PostgreSQL database at `url` brought to the earlier schema.
async fn earlier_postgres(url: &str, work: &Path) -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(earlier_migrations("postgres", POSTGRES_FIRST_NEW, work))
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

/// Rows an earlier version wrote, in its schema (no column added since).
const EARLIER_ROWS: [&str; 3] = [
    "INSERT INTO users (id, email, password_hash, roles, scope, email_verified, created_at) \
     VALUES ('old-user', 'old@example.com', $1, 'user', 'profile', $2, 0)",
    "INSERT INTO signin_throttle (key, failures, last_failure, locked_until) VALUES ('ip:192.0.2.9', 1, $3, 0)",
    "INSERT INTO access_tokens (jti, user_id, session_id, issued_at, expires_at) VALUES ('old-jti', 'svc:old', '', $3, $3)",
];

#[tokio::test]
async fn a_database_of_the_earlier_schema_upgrades_and_keeps_working() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let database_url = crate::backend::fresh_database_url().await;
    let hash = Hasher::new(1024, 1).unwrap().hash(PASSWORD).unwrap();
    let at = now();
    match &database_url {
        None => {
            let pool = earlier_sqlite(dir.path(), dir.path(), SqliteJournalMode::Wal).await;
            for sql in EARLIER_ROWS {
                sqlx::query(sql)
                    .bind(&hash)
                    .bind(1_i64)
                    .bind(at)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        Some(url) => {
            let pool = earlier_postgres(url, dir.path()).await;
            for sql in EARLIER_ROWS {
                sqlx::query(sql)
                    .bind(&hash)
                    .bind(true)
                    .bind(at)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
    }

    // The service applies the rest on start.
    let app = spawn_app_in(dir, database_url, |_| {}).await;
    let store = app.state.store.as_ref();
    let user = store.user_by_id("old-user").await.unwrap().unwrap();
    assert_eq!(user.password_version, 0);
    // The earlier user signs in (challenge and session carry version 0).
    app.signin("old@example.com", PASSWORD).await;
    // The earlier throttle row: its failure still counts, and a right password taken back keeps it.
    let throttle = Throttle::new(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(100),
    );
    let attempt = throttle
        .attempt(store, "ip:192.0.2.9", 3, at)
        .await
        .unwrap()
        .unwrap();
    throttle.undo(store, &attempt).await.unwrap();
    let next = store
        .signin_attempt("ip:192.0.2.9", at, throttle.quiet_secs(), 3, 10, 100)
        .await
        .unwrap();
    assert!(
        matches!(next, SigninAttempt::Counted { failures: 2, .. }),
        "{next:?}"
    );
}

/// Accounts stored by a release that only trimmed and lowercased emails: an
/// address with a decomposed accent or a Unicode domain is brought to its
/// normalized form when the service starts, and can be signed in to by any
/// spelling; one whose normalized form another account holds is left alone.
#[tokio::test]
async fn emails_stored_in_an_earlier_form_are_normalized_at_start() {
    let first = spawn_app().await;
    let hasher = Hasher::new(1024, 1).unwrap();
    let stored = |email: &str| User {
        email_verified: true,
        ..User::new(
            email,
            hasher.hash(PASSWORD).unwrap(),
            vec!["user".into()],
            now(),
        )
    };
    let decomposed = stored("jose\u{301}@example.com");
    let unicode_domain = stored("ana@b\u{fc}cher.example");
    // Two accounts for one address: the composed spelling was signed up separately.
    let composed = stored("l\u{e9}a@example.com");
    let twin = stored("le\u{301}a@example.com");
    for user in [&decomposed, &unicode_domain, &composed, &twin] {
        first.state.store.create_user(user).await.unwrap();
    }

    let again = spawn_app_beside(&first, |_| {}).await;
    for (user, spelling) in [
        (&decomposed, "jos\u{e9}@example.com"),
        (&decomposed, "JOSE\u{301}@example.com"),
        (&unicode_domain, "ana@xn--bcher-kva.example"),
        (&unicode_domain, "ana@B\u{dc}CHER.example"),
        (&composed, "le\u{301}a@example.com"),
    ] {
        let found = again
            .state
            .store
            .user_by_email(Email::parse(spelling).unwrap().as_str())
            .await
            .unwrap();
        assert_eq!(found.map(|u| u.id), Some(user.id.clone()), "{spelling}");
    }
    again.signin("jos\u{e9}@example.com", PASSWORD).await;
    // The twin keeps its row as it was; the pass reports it again at the next start.
    let twin_now = again
        .state
        .store
        .user_by_id(&twin.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twin_now.email, twin.email);
    let upgraded =
        authflow_auth_service::email_upgrade::normalize_stored_emails(again.state.store.as_ref())
            .await
            .unwrap();
    assert_eq!(upgraded.renamed, 0, "nothing left to rename");
    assert_eq!(upgraded.taken, vec![twin.id.clone()]);
}

/// A rolling upgrade: an instance of the next release starts first and
/// applies its new migration (here an additive one, as a rolling upgrade
/// needs), while instances of this release keep serving. One of those then
/// restarts (a crash, a node drain, the rollout undone): it must start on
/// the newer schema, not refuse the database because a migration it does
/// not know was applied. Refusing turns any restart during a rollout, and
/// every rollback, into an outage.
#[tokio::test]
async fn an_instance_restarts_on_a_schema_a_newer_release_migrated() {
    let app = spawn_app().await;
    app.verified_user("rolling@example.com").await;
    let backend = if app.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    // This release's migrations and the next one's, applied by a newer instance.
    let next = app.dir.path().join("next-release");
    std::fs::create_dir_all(&next).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, next.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        next.join("9999_next_release.sql"),
        "ALTER TABLE users ADD COLUMN display_name TEXT;\n",
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(next.as_path()).await.unwrap();
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    if app.database_url.is_some() {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        migrator.run(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        migrator.run(&pool).await.unwrap();
        pool.close().await;
    }

    // An instance of this release (re)starts on that database.
    let config = test_config(app.dir.path(), app.database_url.as_deref(), |_| {});
    starts_and_serves(
        config,
        "an instance of this release refuses a database one release ahead",
    )
    .await;
}

/// Starts the service with `config` and asserts that it is ready.
async fn starts_and_serves(config: authflow_auth_service::config::Config, failure: &str) {
    let running = authflow_auth_service::startup::spawn(config)
        .await
        .unwrap_or_else(|e| panic!("{failure}: {e}"));
    let r = reqwest::get(format!("http://{}/readyz", running.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{failure}");
}

/// Processes that start together on a database of an earlier schema (the
/// service and a CLI command, two `serve`s of a rolling restart) each find
/// the same migrations missing. sqlx's migration lock does nothing on
/// SQLite, so each applied them: the losers failed with `duplicate column
/// name` and did not start. Every one of them must start, whichever applies
/// the migrations, and the schema must come out whole once.
#[tokio::test]
async fn processes_starting_together_on_an_earlier_schema_all_upgrade() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let database_url = crate::backend::fresh_database_url().await;
        match &database_url {
            // In WAL mode, as the earlier release made it; every other round
            // in the rollback journal (made by the `sqlite3` tool, or restored
            // from a backup that way): each process then also switches it to
            // WAL as it connects.
            None => {
                let journal = if round % 2 == 0 {
                    SqliteJournalMode::Wal
                } else {
                    SqliteJournalMode::Delete
                };
                earlier_sqlite(&data, dir.path(), journal)
                    .await
                    .close()
                    .await;
            }
            Some(url) => earlier_postgres(url, dir.path()).await.close().await,
        }
        migrate_together(&data, database_url.as_deref(), round);
        // The schema is whole: the service starts on it (with the KEK the
        // commands used) and serves.
        std::fs::copy(data.with_extension("kek"), data.join("test-kek")).unwrap();
        let config = test_config(&data, database_url.as_deref(), |_| {});
        starts_and_serves(config, &format!("round {round}: no start after the race")).await;
    }
}

/// The same on a new data directory: processes starting together each find
/// no database, and each must come up on the one that gets made (SQLite:
/// the first to connect creates it, in WAL mode).
#[tokio::test]
async fn processes_starting_together_on_no_database_all_start() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let database_url = crate::backend::fresh_database_url().await;
        migrate_together(&data, database_url.as_deref(), round);
    }
}

/// Runs four `migrate`s of the real binary at once on `data` (and on
/// `database_url`, PostgreSQL), and asserts that each succeeded.
fn migrate_together(data: &Path, database_url: Option<&str>, round: usize) {
    let children: Vec<_> = (0..4)
        .map(|_| {
            crate::durability::command(data, database_url, crate::durability::free_port())
                .arg("migrate")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "round {round}: a `migrate` started beside others failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Rows of every kind an earlier version wrote, in its schema: a user with
/// an authenticator (its secret still in clear, from before sealing), a
/// live session and its refresh token (of the older form: one random
/// string), a revoked session and its feed entry, a signing key in clear
/// without its public half, a service account with an argon2id secret.
/// After the upgrade each keeps working: the refresh token rotates, the
/// authenticator's code signs in, the old key signs and verifies, the
/// revocation is in the feed and one made now follows it in the deltas,
/// the service account gets a token.
#[tokio::test]
async fn every_kind_of_row_of_the_earlier_schema_keeps_working() {
    use authflow_auth_service::domain::hash_secret;
    use jwt_simple::prelude::Ed25519KeyPair;

    let dir = Arc::new(tempfile::tempdir().unwrap());
    let database_url = crate::backend::fresh_database_url().await;
    let hash = Hasher::new(1024, 1).unwrap().hash(PASSWORD).unwrap();
    let svc_hash = Hasher::new(1024, 1).unwrap().hash("old-secret").unwrap();
    let key = Ed25519KeyPair::generate();
    let at = now();
    let totp = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let rows: [&str; 8] = [
        "INSERT INTO users (id, email, password_hash, roles, scope, email_verified, totp_secret, created_at) \
         VALUES ('totp-user', 'totp@example.com', $1, 'user', 'profile', $2, $7, 0)",
        "INSERT INTO users (id, email, password_hash, roles, scope, email_verified, created_at) \
         VALUES ('old-user', 'old@example.com', $1, 'user', 'profile', $2, 1)",
        "INSERT INTO sessions (id, user_id, device_secret_hash, created_at, last_seen_at, expires_at) \
         VALUES ('oldsession', 'old-user', $4, $3, $3, $3 + 86400)",
        "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at) VALUES ($5, 'oldsession', $3, $3 + 86400)",
        "INSERT INTO sessions (id, user_id, device_secret_hash, created_at, last_seen_at, expires_at, revoked_at, revoke_reason) \
         VALUES ('goneession', 'old-user', $4, $3, $3, $3 + 86400, $3, 'logout')",
        "INSERT INTO revocation_events (seq, kind, subject, expires_at, created_at) VALUES (1, 'session', 'goneession', $3 + 3600, $3)",
        "INSERT INTO signing_keys (kid, alg, private_key, created_at, publish_at, active_at) VALUES ('oldkid', 'EdDSA', $6, 0, 0, 0)",
        "INSERT INTO service_accounts (client_id, secret_hash, scope, created_at, rotated_at) VALUES ('oldsvc', $8, 'reports:read', 0, 0)",
    ];
    let private = key.to_bytes();
    // Each statement is bound the parameters up to the highest it names.
    fn highest(sql: &str) -> usize {
        (1..=8)
            .filter(|n| sql.contains(&format!("${n}")))
            .max()
            .unwrap_or(0)
    }
    macro_rules! fill {
        ($pool:expr, $verified:expr) => {
            for sql in rows {
                let mut q = sqlx::query(sql);
                let n = highest(sql);
                q = q.bind(hash.clone());
                if n >= 2 {
                    q = q.bind($verified);
                }
                if n >= 3 {
                    q = q.bind(at);
                }
                if n >= 4 {
                    q = q.bind(hash_secret("olddevice"));
                }
                if n >= 5 {
                    q = q.bind(hash_secret("oldrefresh"));
                }
                if n >= 6 {
                    q = q.bind(private.clone());
                }
                if n >= 7 {
                    q = q.bind(totp);
                }
                if n >= 8 {
                    q = q.bind(svc_hash.clone());
                }
                q.execute(&$pool).await.unwrap();
            }
        };
    }
    match &database_url {
        None => {
            let pool = earlier_sqlite(dir.path(), dir.path(), SqliteJournalMode::Wal).await;
            fill!(pool, 1_i64);
            pool.close().await;
        }
        Some(url) => {
            let pool = earlier_postgres(url, dir.path()).await;
            fill!(pool, true);
            sqlx::query("UPDATE feed_state SET head = 1")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }

    let app = spawn_app_in(dir, database_url, |_| {}).await;
    // The revocation made before is in the snapshot.
    let (status, snapshot) = app.feed(None).await;
    assert_eq!(status, 200);
    let snapshot = snapshot.unwrap();
    assert!(snapshot.to_string().contains("goneession"), "{snapshot}");
    let cursor = snapshot["cursor"].as_str().unwrap().to_owned();

    // The earlier refresh token rotates, from its device.
    let r = crate::common::refresh_with_device(&app, "oldrefresh", Some("olddevice")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let body: serde_json::Value = r.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap();
    // Signed with the earlier key, which still verifies.
    assert_eq!(header(access)["kid"], "oldkid");
    let jwks = app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    assert!(jwks.contains("oldkid"), "{jwks}");
    // Sent again, the earlier one is refused.
    let r = crate::common::refresh_with_device(&app, "oldrefresh", Some("olddevice")).await;
    assert_eq!(r.status(), 400);

    // The authenticator's code completes a sign-in.
    let (challenge, method) = app.challenge("totp@example.com", PASSWORD).await;
    assert_eq!(method, "totp");
    let r = app
        .post(
            "/v1/auth/signin/verify",
            serde_json::json!({"challenge_id": challenge, "code": totp_code(totp, now())}),
        )
        .await;
    assert_eq!(r.status(), 200);

    // The service account's argon2id secret still authenticates.
    let r = app
        .http
        .post(app.url("/v1/oauth/token"))
        .basic_auth("oldsvc", Some("old-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A revocation made now follows the earlier ones in the deltas.
    let t = app.signin("old@example.com", PASSWORD).await;
    assert!(app.logout(&t).await.status().is_success());
    let (status, delta) = app.feed(Some(&cursor)).await;
    assert_eq!(status, 200);
    assert!(delta.unwrap().to_string().contains(&t.session));
}

/// `0014_dpop_bound_at.sql` (SQLite) and `0011_dpop_bound_at.sql`
/// (PostgreSQL) as commits aff1dbb..8c6af15 applied them: 81460e9 then
/// added `refresh_tokens.dpop_bound` to the same files instead of adding a
/// migration. A database those commits migrated records the earlier
/// checksum and lacks the column.
const DPOP_BOUND_AT_AS_FIRST_APPLIED: [(&str, i64, &str); 2] = [
    (
        "sqlite",
        14,
        r#"-- When a session was bound to its DPoP key: at its start (NULL: then), or
-- at a later refresh that carried a proof (RFC 9449 §5: a refresh token
-- issued to a request with a proof works only with proofs from that key).
-- A refresh token rotated out before the binding and sent again from the
-- device is reuse, whatever proof comes with it.
ALTER TABLE sessions ADD COLUMN dpop_bound_at INTEGER;
"#,
    ),
    (
        "postgres",
        11,
        r#"-- When a session was bound to its DPoP key: at its start (NULL: then), or
-- at a later refresh that carried a proof (RFC 9449 §5: a refresh token
-- issued to a request with a proof works only with proofs from that key).
-- A refresh token rotated out before the binding and sent again from the
-- device is reuse, whatever proof comes with it.
ALTER TABLE sessions ADD COLUMN dpop_bound_at BIGINT;
"#,
    ),
];

/// A database migrated by a commit that applied the first form of the DPoP
/// binding migration starts under this release, with the column added
/// since: sqlx refused it ("migration 14 was previously applied but has
/// been modified"), and no service of this release could start on it.
#[tokio::test]
async fn a_database_that_applied_the_first_form_of_an_edited_migration_upgrades() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let database_url = crate::backend::fresh_database_url().await;
    let backend = if database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let (_, version, text) = DPOP_BOUND_AT_AS_FIRST_APPLIED
        .into_iter()
        .find(|(b, _, _)| *b == backend)
        .unwrap();
    let earlier = earlier_migrations(backend, version, dir.path());
    let name = format!("{version:04}_dpop_bound_at.sql");
    std::fs::write(earlier.join(name), text).unwrap();
    let migrator = sqlx::migrate::Migrator::new(earlier.as_path())
        .await
        .unwrap();
    match &database_url {
        None => {
            let url = format!("sqlite://{}", dir.path().join("authflow.db").display());
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let config = test_config(dir.path(), database_url.as_deref(), |_| {});
    starts_and_serves(
        config,
        "a database migrated by the first form of the DPoP binding migration is refused",
    )
    .await;
    // And the column is there: a sign-in stores its refresh token.
    let app = spawn_app_in(dir, database_url, |_| {}).await;
    app.verified_user("bound@example.com").await;
    app.signin("bound@example.com", PASSWORD).await;
}
