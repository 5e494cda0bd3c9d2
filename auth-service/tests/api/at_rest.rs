//! Secrets at rest: a copy of the database files alone holds neither a TOTP
//! secret nor a signing key's private half; the service refuses to start
//! without its key-encryption key, or with the wrong one.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// Every byte SQLite has on disk for this service (database and WAL); on
/// PostgreSQL, every stored value of the tables that hold secrets, as stored.
async fn database_files(app: &TestApp) -> Vec<u8> {
    if let Some(url) = &app.database_url {
        return postgres_values(url).await;
    }
    let mut all = Vec::new();
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("authflow.db")
        {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!all.is_empty());
    all
}

async fn postgres_values(url: &str) -> Vec<u8> {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let mut all = Vec::new();
    let users: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT totp_secret, totp_pending FROM users")
            .fetch_all(&mut db)
            .await
            .unwrap();
    for (secret, pending) in users {
        all.extend(secret.unwrap_or_default().into_bytes());
        all.extend(pending.unwrap_or_default().into_bytes());
    }
    let keys: Vec<Vec<u8>> = sqlx::query_scalar("SELECT private_key FROM signing_keys")
        .fetch_all(&mut db)
        .await
        .unwrap();
    keys.into_iter().for_each(|k| all.extend(k));
    assert!(!all.is_empty());
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_database_copy_holds_no_usable_secret() {
    let app = spawn_app().await;
    app.verified_user("rest@example.com").await;
    let t = app.signin("rest@example.com", PASSWORD).await;
    let r = app
        .authed(Method::POST, "/v1/auth/totp/enroll", &t)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let keys = app.state.store.signing_keys().await.unwrap();
    let private = &keys[0].private_key;
    assert!(private.len() >= 32);
    let files = database_files(&app).await;
    assert!(
        !contains(&files, secret.as_bytes()),
        "the TOTP secret is in the database in clear"
    );
    assert!(
        !contains(&files, private),
        "a signing key's private half is in the database in clear"
    );
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_a_clear_start_error() {
    let app = spawn_app().await;
    app.verified_user("kek@example.com").await;
    let mut config = test_config(app.dir.path(), app.database_url.as_deref(), |_| {});
    config.kek.current = None;
    let e = authflow_auth_service::startup::spawn(config)
        .await
        .err()
        .expect("no KEK: refused");
    assert!(e.to_string().contains("AUTHFLOW_KEK"), "{e}");
    let mut config = test_config(app.dir.path(), app.database_url.as_deref(), |_| {});
    config.kek.current = Some([7u8; 32]);
    let e = authflow_auth_service::startup::spawn(config)
        .await
        .err()
        .expect("wrong KEK: refused");
    assert!(e.to_string().contains("key-encryption key"), "{e}");
}

/// Finding: a process still configured with the KEK a rotation retired (a
/// CLI's environment, a forgotten deployment) started without complaint
/// once the database named a newer key: it kept what it could not open,
/// and sealed what it wrote (a rotated signing key, a second factor) under
/// the retired key, which the instances on the new key cannot open (every
/// token endpoint 503 once such a signing key is active). It is refused at
/// start, naming the key it needs.
#[tokio::test]
async fn a_process_on_a_kek_a_rotation_retired_is_refused_at_start() {
    let app = spawn_app().await;
    let email = "retired@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    app.enrol_totp(&t).await;
    let old = app.state.config.kek.current.unwrap();
    let new: [u8; 32] = std::array::from_fn(|i| i as u8 + 3);
    let _rotated = spawn_app_beside(&app, |c| {
        c.kek.current = Some(new);
        c.kek.previous = vec![old];
    })
    .await;
    let new_id = authflow_auth_service::kek::Kek::new(&new, &[])
        .unwrap()
        .id()
        .to_owned();
    let mut config = test_config(app.dir.path(), app.database_url.as_deref(), |_| {});
    config.kek.current = Some(old);
    config.kek.previous = Vec::new();
    let e = authflow_auth_service::startup::spawn(config)
        .await
        .err()
        .expect("the retired KEK alone: refused");
    assert!(e.to_string().contains(&new_id), "{e}");
    // With the new key as `kek_previous` (a rotation rolling out) it starts.
    let _rolling_out = spawn_app_beside(&app, |c| {
        c.kek.current = Some(old);
        c.kek.previous = vec![new];
    })
    .await;
}

/// Finding: a process left with a rotation's first settings (the old key as
/// `kek`, the new one as `kek_previous`) after the rotation finished holds
/// the new key, so it starts; but it sealed what it wrote (a second factor
/// here) under the old key, which the instances on the new key alone cannot
/// open: one of them restarting could not even start. It seals with the
/// newest key it has that another instance put in use.
#[tokio::test]
async fn a_process_left_on_a_rotations_first_settings_seals_with_the_new_key() {
    let app = spawn_app().await;
    let email = "leftover@example.com";
    let user_id = app.verified_user(email).await;
    let old = app.state.config.kek.current.unwrap();
    let new: [u8; 32] = std::array::from_fn(|i| i as u8 + 5);
    let _rotated = spawn_app_beside(&app, |c| {
        c.kek.current = Some(new);
        c.kek.previous = vec![old];
    })
    .await;
    let leftover = spawn_app_beside(&app, |c| {
        c.kek.current = Some(old);
        c.kek.previous = vec![new];
    })
    .await;
    let t = leftover.signin(email, PASSWORD).await;
    leftover.enrol_totp(&t).await;
    // The old key dropped, as `kek status` (0 left) allows: a new instance starts and reads it.
    let new_only = spawn_app_beside(&app, |c| {
        c.kek.current = Some(new);
        c.kek.previous = Vec::new();
    })
    .await;
    let user = new_only
        .state
        .store
        .user_by_id(&user_id)
        .await
        .unwrap()
        .unwrap();
    assert!(user.totp_secret.is_some(), "the second factor opens");
}

#[tokio::test]
async fn clear_secrets_are_sealed_on_start_and_a_rotated_key_reseals_everything() {
    let app = spawn_app().await;
    let email = "rotate@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let (secret, now) = app.enrol_totp(&t).await;

    // A database from before encryption: the secret in clear.
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    if app.database_url.is_some() {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE users SET totp_secret = $1 WHERE email = $2")
            .bind(&secret)
            .bind(email)
            .execute(&mut db)
            .await
            .unwrap();
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("UPDATE users SET totp_secret = ? WHERE email = ?")
            .bind(&secret)
            .bind(email)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    // Rotate while starting: new KEK current, the old one accepted for opening.
    let old = app.state.config.kek.current.unwrap();
    let new = [9u8; 32];
    let rotated = spawn_app_beside(&app, |c| {
        c.kek.current = Some(new);
        c.kek.previous = vec![old];
    })
    .await;
    assert!(
        !contains(&database_files(&rotated).await, secret.as_bytes()),
        "sealed in place on start"
    );
    // The old key can go now: everything opens with the new one alone.
    let only_new = spawn_app_beside(&app, |c| c.kek.current = Some(new)).await;
    let (challenge, method) = only_new.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");
    let r = only_new
        .post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": challenge, "code": totp_code(&secret, now + 30)}),
        )
        .await;
    assert_eq!(
        r.status(),
        200,
        "the TOTP secret survived the migration and the rotation"
    );
    let t = tokens_of(r).await;
    let r = only_new.logout(&t).await;
    assert_eq!(r.status(), 200, "the signing key survived too");
}

/// A KEK rotation over several instances, as the README says to roll it:
/// every instance first learns the new key as `kek.previous`, then one
/// starts on the new key and re-seals every value. The instances still on
/// the old key open what it sealed; one that skipped the first step cannot.
#[tokio::test]
async fn instances_not_yet_rotated_open_what_a_rotated_one_sealed() {
    let app = spawn_app().await;
    let email = "rolling@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let (secret, now) = app.enrol_totp(&t).await;
    let old = app.state.config.kek.current.unwrap();
    let new = [9u8; 32];
    let learning = spawn_app_beside(&app, |c| {
        c.kek.current = Some(old);
        c.kek.previous = vec![new];
    })
    .await;
    let _rotated = spawn_app_beside(&app, |c| {
        c.kek.current = Some(new);
        c.kek.previous = vec![old];
    })
    .await;
    assert_eq!(
        totp_sign_in(&learning, email, &secret, now + 30).await,
        200,
        "the TOTP secret the rotated instance re-sealed opens with the new key as previous"
    );
    assert_ne!(
        totp_sign_in(&app, email, &secret, now + 60).await,
        200,
        "an instance on the old key alone cannot open it"
    );
}

/// The README's rotation with instances still serving on the old key (a
/// rollout that keeps them until the new ones are up): an instance on the
/// new key (the old one as previous) starts and re-seals everything; then a
/// user enrols TOTP, and an admin rotates the signing keys, at an instance
/// still on the old key, which seals both with it. The rotated instance's
/// maintenance re-seals them: once it reports none left under the old key,
/// an instance on the new key alone starts and the user signs in.
#[tokio::test]
async fn what_an_instance_not_yet_rotated_seals_is_resealed_by_maintenance() {
    let app = spawn_app().await;
    let email = "late@example.com";
    app.verified_user(email).await;
    let admin = app.admin("root@example.com").await;
    let old = app.state.config.kek.current.unwrap();
    let new: [u8; 32] = std::array::from_fn(|i| i as u8 + 1); // not a placeholder: the CLI refuses those
    let rotated = spawn_app_beside(&app, |c| {
        c.kek.current = Some(new);
        c.kek.previous = vec![old];
        c.maintenance.interval = std::time::Duration::from_secs(1);
    })
    .await;

    let t = app.signin(email, PASSWORD).await;
    let (secret, now) = app.enrol_totp(&t).await;
    let r = app
        .authed(Method::POST, "/v1/admin/keys/rotate", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let store = rotated.state.store.as_ref();
    assert!(
        store.count_not_under_current_kek().await.unwrap() > 0,
        "the old instance sealed with the old key"
    );

    let (code, out) = kek_status(&app, &new);
    assert!(!code && out.contains("keep `kek.previous`"), "{out}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.count_not_under_current_kek().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated instance's maintenance never re-sealed what the old one sealed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let (code, out) = kek_status(&app, &new);
    assert!(code && out.contains("`kek.previous` can go"), "{out}");
    let only_new = spawn_app_beside(&app, |c| c.kek.current = Some(new)).await;
    assert_eq!(
        totp_sign_in(&only_new, email, &secret, now + 30).await,
        200,
        "the TOTP secret enrolled at the old instance survived the rotation"
    );
}

/// `authflow-auth kek status` on `app`'s database with `key` alone as the
/// KEK: whether it succeeded, and what it printed (stdout and stderr).
fn kek_status(app: &TestApp, key: &[u8; 32]) -> (bool, String) {
    use base64::Engine as _;
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authflow-auth"))
        .args(["kek", "status"])
        .env("AUTHFLOW_DATABASE__URL", url)
        .env("AUTHFLOW_SERVER__DATA_DIR", app.dir.path())
        .env(
            "AUTHFLOW_KEK__KEY",
            base64::engine::general_purpose::STANDARD.encode(key),
        )
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Nothing under an older key: a round of re-sealing finds nothing to do.
#[tokio::test]
async fn reseal_batch_is_bounded_and_idle_when_everything_is_current() {
    let app = spawn_app().await;
    let old = app.state.config.kek.current.unwrap();
    for i in 0..3 {
        let email = format!("batch{i}@example.com");
        app.verified_user(&email).await;
        let t = app.signin(&email, PASSWORD).await;
        app.enrol_totp(&t).await;
    }
    let store = app.state.store.as_ref();
    assert_eq!(store.count_not_under_current_kek().await.unwrap(), 0);
    assert_eq!(store.reseal_batch(10).await.unwrap().resealed, 0);

    // Maintenance an hour away: only the explicit rounds below re-seal.
    let rotated = spawn_app_beside(&app, |c| {
        c.kek.current = Some([9u8; 32]);
        c.kek.previous = vec![old];
        c.maintenance.interval = std::time::Duration::from_secs(3600);
    })
    .await;
    // Its start re-sealed everything: the old instance writes 3 more.
    for i in 3..6 {
        let email = format!("batch{i}@example.com");
        app.verified_user(&email).await;
        let t = app.signin(&email, PASSWORD).await;
        app.enrol_totp(&t).await;
    }
    let store = rotated.state.store.as_ref();
    assert_eq!(store.count_not_under_current_kek().await.unwrap(), 3);
    assert_eq!(store.reseal_batch(2).await.unwrap().resealed, 2);
    assert_eq!(store.count_not_under_current_kek().await.unwrap(), 1);
    let report = store.reseal_batch(10).await.unwrap();
    assert_eq!(report.resealed, 1);
    assert!(report.unopened.is_empty());
    assert_eq!(store.count_not_under_current_kek().await.unwrap(), 0);
}

/// The status of a TOTP sign-in at `instance` with the code of time `at`
/// (of its first step that fails).
async fn totp_sign_in(
    instance: &TestApp,
    email: &str,
    secret: &str,
    at: i64,
) -> reqwest::StatusCode {
    let r = instance
        .post(
            "/v1/auth/signin",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    if r.status() != 200 {
        return r.status();
    }
    let challenge: Value = r.json().await.unwrap();
    assert_eq!(challenge["method"], "totp");
    instance
        .post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": challenge["challenge_id"], "code": totp_code(secret, at)}),
        )
        .await
        .status()
}

/// A data directory, and a directory other users can list outside it with
/// the URL of a SQLite database `auth.db` there.
#[cfg(unix)]
fn sqlite_outside_the_data_dir() -> (tempfile::TempDir, tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let url = format!("sqlite://{}", elsewhere.path().join("auth.db").display());
    (data, elsewhere, url)
}

/// A SQLite database outside the data directory (`database.url` names
/// another path) is not covered by the data directory's owner-only mode:
/// the file SQLite creates (and its WAL, which takes the file's mode) must
/// not be readable by other local users: it holds the password hashes,
/// sessions, audit rows and sealed keys.
#[cfg(unix)]
#[tokio::test]
async fn a_sqlite_file_outside_the_data_dir_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    if crate::backend::fresh_database_url().await.is_some() {
        return; // SQLite only
    }
    let (data, elsewhere, url) = sqlite_outside_the_data_dir();
    let config = test_config(data.path(), Some(&url), |_| {});
    let running = authflow_auth_service::startup::spawn(config).await.unwrap();
    running.server.abort();
    for name in ["auth.db", "auth.db-wal"] {
        let path = elsewhere.path().join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
    }
}

/// A database file an earlier release created with the process umask (0644,
/// at a `database.url` outside the data directory), or one copied in with a
/// loose mode, stays readable by every local user: only files the service
/// creates were made owner-only. On start, the service takes the other
/// users' access away from the file and its WAL and shared-memory files.
#[cfg(unix)]
#[tokio::test]
async fn an_existing_world_readable_sqlite_file_is_closed_to_other_users() {
    use std::os::unix::fs::PermissionsExt;
    use std::str::FromStr;
    if crate::backend::fresh_database_url().await.is_some() {
        return; // SQLite only
    }
    let (data, elsewhere, url) = sqlite_outside_the_data_dir();
    let names = ["auth.db", "auth.db-wal", "auth.db-shm"];
    {
        // The files as an earlier release left them (its process still
        // running, so the WAL and shared memory are there too).
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .unwrap()
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::query("CREATE TABLE earlier (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        for name in names {
            let path = elsewhere.path().join(name);
            assert!(path.exists(), "{name}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::mem::forget(pool);
    }
    let config = test_config(data.path(), Some(&url), |_| {});
    let running = authflow_auth_service::startup::spawn(config).await.unwrap();
    running.server.abort();
    for name in names {
        let mode = std::fs::metadata(elsewhere.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode & 0o007, 0, "{name} has mode {mode:o}");
        assert_eq!(mode & 0o600, 0o600, "{name} has mode {mode:o}");
    }
}

/// A mailed sign-in code was stored as its plain SHA-256: six digits, so
/// whoever read the challenges table (a replica, a backup, a read-only
/// role) found the code in a second and finished the pending sign-in at
/// its first try. Its stored form is now keyed with the KEK.
#[tokio::test]
async fn a_stored_sign_in_code_does_not_give_the_code_away() {
    let app = spawn_app().await;
    let email = "codes@example.com";
    app.verified_user(email).await;
    let (challenge, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "email");
    let code = app.last_mail(email, 2).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = app
        .state
        .store
        .challenge(&challenge)
        .await
        .unwrap()
        .unwrap()
        .code_hash
        .unwrap();
    let found = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|guess| authflow_auth_service::domain::hash_secret(guess) == stored);
    assert_eq!(found, None, "the stored row gives the code {code} away");
    let r = app
        .post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": challenge, "code": code}),
        )
        .await;
    assert_eq!(r.status(), 200, "the mailed code still signs in");
}

/// A KEK rollout done out of order: an instance started with the new key
/// re-seals everything and rotates the signing key. An instance left on the
/// old key cannot open the new signing key: it answered a sign-in's code by
/// using the challenge up and then failing to sign (500), so the user had
/// to start again. It now answers 503 with `Retry-After` before spending
/// anything, and the same challenge signs in at an instance that can sign.
#[tokio::test]
async fn an_instance_that_cannot_sign_spends_no_challenge() {
    let app = spawn_app().await;
    let email = "kek-order@example.com";
    app.verified_user(email).await;
    let rotated = an_instance_on_a_new_kek_rotated_past(&app).await;

    let (challenge, _) = app.challenge(email, PASSWORD).await;
    let code = app.last_mail(email, 2).await["code"].clone();
    let answer = json!({"challenge_id": challenge, "code": code});
    let r = app.post("/v1/auth/signin/verify", answer.clone()).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let r = rotated.post("/v1/auth/signin/verify", answer).await;
    assert_eq!(r.status(), 200, "the challenge was not spent");
}

/// The README's rotation with several instances: first every instance
/// learns the new key as `kek.previous` beside the unchanged `kek.key`,
/// then the two are swapped one instance at a time. While both kinds run,
/// an instance of the first step has the new key in its `kek.previous` as
/// the swapped ones have the old: it must not re-seal, under the old key,
/// what they sealed with the new one (at its maintenance rounds or when it
/// restarts), or the secrets at rest (and any backup taken meanwhile) go
/// back under the key being retired — perhaps because it leaked — and
/// `kek status` never settles. `kek_succession` tells which came after.
#[tokio::test]
async fn instances_learning_the_new_kek_do_not_reseal_under_the_old_one() {
    let app = spawn_app().await;
    let email = "learning@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    app.enrol_totp(&t).await;
    let old = app.state.config.kek.current.unwrap();
    let new: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    let _learning = spawn_app_beside(&app, |c| {
        c.kek.current = Some(old);
        c.kek.previous = vec![new];
        c.maintenance.interval = std::time::Duration::from_secs(1);
    })
    .await;
    let rotated = spawn_app_beside(&app, |c| {
        c.kek.current = Some(new);
        c.kek.previous = vec![old];
        c.maintenance.interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let store = rotated.state.store.as_ref();
    assert_eq!(
        store.count_not_under_current_kek().await.unwrap(),
        0,
        "the swapped instance re-sealed everything with the new key at start"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        store.count_not_under_current_kek().await.unwrap(),
        0,
        "an instance that only learned the new key re-sealed the secrets under the old one"
    );
    let restarted = spawn_app_beside(&app, |c| {
        c.kek.current = Some(old);
        c.kek.previous = vec![new];
    })
    .await;
    let behind = restarted.state.store.as_ref();
    assert_eq!(behind.count_to_reseal().await.unwrap(), 0);
    assert_eq!(
        behind.count_not_under_current_kek().await.unwrap(),
        2,
        "`kek status` with the old key still names what is not under it"
    );
    assert_eq!(
        store.count_not_under_current_kek().await.unwrap(),
        0,
        "an instance that only learned the new key re-sealed the secrets under the old one at start"
    );
}
