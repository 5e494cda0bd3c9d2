//! Nothing acknowledged is lost across `kill -9` and restart: the real binary
//! writes (sign-ups, bans) while it is killed, then restarts on the same data;
//! a write that fails halfway leaves nothing half done.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{refresh_with_device, spawn_app, TestApp, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_authflow-auth");

/// Kills the child on drop, so a failing assertion leaves no server behind.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary on `data_dir`, and on `database_url` when given (PostgreSQL).
pub fn command(data_dir: &Path, database_url: Option<&str>, port: u16) -> Command {
    // A KEK generated for this test, beside the data (the same one after a restart).
    let kek_file = data_dir.with_extension("kek");
    if !kek_file.exists() {
        std::fs::write(&kek_file, authflow_auth_service::kek::generate_key()).unwrap();
    }
    // The nested names (`AUTHFLOW_<SECTION>__<FIELD>`), through the real binary.
    let mut c = Command::new(BIN);
    if let Some(url) = database_url {
        c.env("AUTHFLOW_DATABASE__URL", url);
    }
    c.env("AUTHFLOW_SERVER__DATA_DIR", data_dir)
        .env("AUTHFLOW_KEK__KEY_FILE", &kek_file)
        .env("AUTHFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        // The outbox is read for the mailed token (off unless enabled).
        .env("AUTHFLOW_SERVER__DEV_ENDPOINTS", "true")
        .env("AUTHFLOW_PASSWORDS__HASH_MEMORY_KIB", "1024")
        .env("AUTHFLOW_PASSWORDS__HASH_ITERATIONS", "1")
        .env("AUTHFLOW_THROTTLE__ACCOUNT_MAX_FAILURES", "1000")
        // The writers sign up as fast as they can, all from 127.0.0.1.
        .env("AUTHFLOW_THROTTLE__IP_MAX_SIGNUPS", "100000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

pub async fn start(
    data_dir: &Path,
    database_url: Option<&str>,
    port: u16,
    http: &reqwest::Client,
) -> Server {
    let server = Server(
        command(data_dir, database_url, port)
            .arg("serve")
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status() == 200 {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service did not become ready");
}

pub async fn sign_in(http: &reqwest::Client, base: &str, email: &str) -> (String, String) {
    let r = http
        .post(format!("{base}/v1/auth/signin"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let challenge: Value = r.json().await.unwrap();
    let mails: Vec<Value> = http
        .get(format!("{base}/v1/dev/outbox"))
        .query(&[("to", email)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = mails.last().unwrap()["code"].clone();
    let r = http
        .post(format!("{base}/v1/auth/signin/verify"))
        .json(&json!({"challenge_id": challenge["challenge_id"], "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    (
        t["access_token"].as_str().unwrap().to_owned(),
        t["device_secret"].as_str().unwrap().to_owned(),
    )
}

/// What a load of sign-ups and bans got acknowledged before its server died.
pub struct Acknowledged {
    /// (email, user id) of every sign-up answered 201.
    pub signed_up: Vec<(String, String)>,
    /// User ids of every ban answered 200.
    pub banned: Vec<String>,
}

/// Three writers sign users up through `base` (and ban every other one with
/// the admin's token) until `server` is killed with SIGKILL, which happens once
/// at least 30 sign-ups are acknowledged (or after `patience`).
pub async fn write_until_killed(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    device: &str,
    server: &mut Server,
    patience: Duration,
) -> Acknowledged {
    let signed_up: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let banned: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..3 {
        let (http, base, admin, device) = (
            http.clone(),
            base.to_owned(),
            admin.to_owned(),
            device.to_owned(),
        );
        let (signed_up, banned) = (Arc::clone(&signed_up), Arc::clone(&banned));
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let email = format!("w{w}-{i}@example.com");
                let Ok(r) = http
                    .post(format!("{base}/v1/auth/signup"))
                    .json(&json!({"email": email, "password": PASSWORD}))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() != 201 {
                    return;
                }
                let Ok(body) = r.json::<Value>().await else {
                    return;
                };
                let id = body["user_id"].as_str().unwrap_or_default().to_owned();
                signed_up.lock().unwrap().push((email, id.clone()));
                if i % 2 == 0 {
                    let Ok(r) = http
                        .post(format!("{base}/v1/admin/users/{id}/ban"))
                        .bearer_auth(&admin)
                        .header("x-authflow-device", &device)
                        .send()
                        .await
                    else {
                        return;
                    };
                    if r.status() == 200 {
                        banned.lock().unwrap().push(id);
                    }
                }
            }
        }));
    }
    // Let writes flow, then SIGKILL in the middle of them: no shutdown path runs.
    let started = std::time::Instant::now();
    while signed_up.lock().unwrap().len() < 30 && started.elapsed() < patience {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    for w in writers {
        let _ = w.await;
    }
    let signed_up = signed_up.lock().unwrap().clone();
    let banned = banned.lock().unwrap().clone();
    Acknowledged { signed_up, banned }
}

/// Every acknowledged sign-up and ban is what the admin API of `base` lists,
/// and every acknowledged ban is in its revocation feed.
pub async fn assert_nothing_lost(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    device: &str,
    acked: &Acknowledged,
) {
    let users: Vec<Value> = http
        .get(format!("{base}/v1/admin/users"))
        .bearer_auth(admin)
        .header("x-authflow-device", device)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (email, id) in &acked.signed_up {
        let user = users
            .iter()
            .find(|u| u["email"] == email.as_str())
            .unwrap_or_else(|| panic!("{email} lost"));
        assert_eq!(user["user_id"], id.as_str());
        // A ban in flight at the kill may or may not have committed; an acknowledged one must have.
        if acked.banned.contains(id) {
            assert_eq!(user["banned"], true, "acknowledged ban of {email} lost");
        }
    }
    let feed: Value = http
        .get(format!("{base}/v1/revocations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subs: Vec<&str> = feed["banned_subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["sub"].as_str().unwrap())
        .collect();
    for id in &acked.banned {
        assert!(
            subs.contains(&id.as_str()),
            "ban of {id} is in the feed of {base}"
        );
    }
}

#[tokio::test]
async fn kill_dash_nine_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let database_url = crate::backend::fresh_database_url().await;
    let db = database_url.as_deref();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // The first admin comes from the CLI.
    let out = command(&data, db, port)
        .args([
            "user",
            "create",
            "--email",
            "root@example.com",
            "--password",
            PASSWORD,
            "--role",
            "admin",
        ])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = command(&data, db, port)
        .args(["user", "list"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("root@example.com  roles=user,admin"));

    let mut server = start(&data, db, port, &http).await;
    let (admin, device) = sign_in(&http, &base, "root@example.com").await;

    let acked = write_until_killed(
        &http,
        &base,
        &admin,
        &device,
        &mut server,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        acked.signed_up.len() >= 10,
        "writes were acknowledged before the kill ({})",
        acked.signed_up.len()
    );

    let _server = start(&data, db, port, &http).await;
    let (admin, device) = sign_in(&http, &base, "root@example.com").await;
    assert_nothing_lost(&http, &base, &admin, &device, &acked).await;
}

/// The first admin's password need not appear in the process list: the CLI
/// reads it from standard input (`--password-stdin`), and the account signs
/// in with exactly that password (the line ending is not part of it), even
/// when AUTHFLOW_NEW_PASSWORD is set too. With no password given at all, the
/// CLI says where to give one.
#[tokio::test]
async fn the_cli_takes_the_new_password_from_standard_input() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut child = command(&data, None, port)
        .args([
            "user",
            "create",
            "--email",
            "stdin@example.com",
            "--password-stdin",
        ])
        // Asked for standard input, the CLI reads it before the environment.
        .env(
            "AUTHFLOW_NEW_PASSWORD",
            "another-password-from-the-environment",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\r\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());

    let out = command(&data, None, port)
        .args(["user", "create", "--email", "none@example.com"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("AUTHFLOW_NEW_PASSWORD")
            && said.contains("--password-stdin"),
        "{said}"
    );
    let out = command(&data, None, port)
        .args([
            "user",
            "create",
            "--email",
            "empty@example.com",
            "--password-stdin",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an empty standard input made an account"
    );

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let _server = start(&data, None, port, &http).await;
    sign_in(
        &http,
        &format!("http://127.0.0.1:{port}"),
        "stdin@example.com",
    )
    .await;
}

/// The CLI gives no user a role the filter would refuse every token of:
/// one holding the comma `x-auth-roles` joins them with, or more roles than a
/// token may list.
#[test]
fn the_cli_refuses_roles_no_token_could_carry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let create = |email: &str, roles: &[String]| {
        let mut c = command(&data, None, free_port());
        c.args(["user", "create", "--email", email, "--password", PASSWORD]);
        for r in roles {
            c.args(["--role", r]);
        }
        c.stderr(Stdio::piped()).output().unwrap()
    };
    let out = create("comma@example.com", &["billing,admin".into()]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("without commas")
    );
    let many: Vec<String> = (0..authflow_contract::claims::MAX_LIST_ITEMS)
        .map(|i| format!("r{i}"))
        .collect();
    let out = create("many@example.com", &many);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("at most 64 roles")
    );
    // One fewer (with `user`, exactly as many as a token may list) is created.
    assert!(create("full@example.com", &many[1..]).status.success());
    let out = command(&data, None, free_port())
        .args(["user", "list"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("full@example.com") && !list.contains("comma@") && !list.contains("many@"),
        "{list}"
    );
}

/// The CLI's commands act on the database a running service uses. At a
/// mistyped path (or URL) they made a new, empty database and reported
/// success there: a key "rotated", an account "created" in a database no
/// service reads. Only `migrate`, `serve` and `user create` (the first
/// admin) set one up; the others refuse, naming the fix, and create nothing.
pub fn cli_refuses_a_database_that_is_not_there(data: &Path, database_url: Option<&str>) {
    let run = |args: &[&str]| {
        command(data, database_url, 0)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    for args in [
        &["keys", "rotate"][..],
        &["keys", "list"],
        &["user", "list"],
        &["service-account", "create", "--client-id", "billing"],
        &["feed", "new-epoch"],
        &["token", "mint", "--email", "a@example.com"],
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("no authflow database there"),
            "{args:?}: {err}"
        );
        if database_url.is_none() {
            assert!(!data.exists(), "{args:?} created {}", data.display());
        }
    }
    assert!(run(&["migrate"]).status.success());
    let out = run(&["keys", "rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_cli_refuses_a_database_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    cli_refuses_a_database_that_is_not_there(&dir.path().join("data"), None);
}

/// A SQLite file that is there but holds no authflow database (an empty
/// file, another program's database at a mistyped path) is no database a
/// service runs on, as an empty PostgreSQL database is not: the commands
/// that act on one refuse it and leave it as it was. `kek status` said
/// "`kek.previous` can go" of it, and `keys rotate` rotated in it.
#[test]
fn the_cli_refuses_a_sqlite_file_that_holds_no_authflow_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("other.db");
    std::fs::write(&file, b"").unwrap();
    let url = format!("sqlite:{}", file.display());
    for args in [
        &["kek", "status"][..],
        &["keys", "rotate"],
        &["user", "list"],
        &["feed", "new-epoch"],
    ] {
        let out = command(&data, Some(&url), 0)
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("no authflow database there"),
            "{args:?}: {err}"
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            0,
            "{args:?} wrote to it"
        );
    }
}

/// An environment variable that is not UTF-8 (any variable of the process,
/// not only the service's) made every command panic while reading the
/// settings (`std::env::vars`), printing the variable's value. Another
/// program's variable is none of the service's business; one of its own
/// that is not text is a configuration error naming it, not a panic.
#[cfg(unix)]
#[test]
fn a_non_utf8_environment_variable_is_no_panic() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let not_text = std::ffi::OsStr::from_bytes(b"secret-\xff\xfe");
    let out = command(&data, None, free_port())
        .arg("migrate")
        .env("SOME_OTHER_PROGRAMS_VARIABLE", not_text)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    let out = command(&data, None, free_port())
        .arg("migrate")
        .env("AUTHFLOW_TOKENS__ISSUER", not_text)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("AUTHFLOW_TOKENS__ISSUER") && !stderr.contains("secret-"),
        "{stderr}"
    );
}

/// Runs `sql` on the test's SQLite database (a fault injected from outside,
/// as a crash or a failing disk would).
async fn sqlite_exec(app: &TestApp, sql: &str) {
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

/// The status of a reset with `token` to "a brand new passphrase" while
/// writes matching `when` (a SQLite trigger's timing and event) fail; the
/// fault is over once it is answered (the instance restarted, the disk has
/// room again).
async fn reset_under_fault(app: &TestApp, token: &str, when: &str) -> u16 {
    sqlite_exec(
        app,
        &format!(
            "CREATE TRIGGER injected_fault {when} BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        ),
    )
    .await;
    let r = app
        .post(
            "/v1/auth/password/reset",
            json!({"token": token, "password": "a brand new passphrase"}),
        )
        .await;
    let status = r.status().as_u16();
    sqlite_exec(app, "DROP TRIGGER injected_fault").await;
    status
}

/// A password reset is the owner's way to throw out whoever holds a session
/// (a stolen refresh token and device secret). The store commits the new
/// password and uses up the link in one transaction, and only then, in a
/// second write outside it, are the sessions revoked
/// (as `routes::auth::reset_password` did with `sessions::revoke_all_sessions`). If
/// the process dies or the database refuses between the two, the owner is
/// told the reset failed, the link is spent, the password is changed — and
/// the attacker's session lives on and keeps refreshing.
#[tokio::test]
async fn a_reset_that_fails_after_its_commit_leaves_the_old_sessions_alive() {
    if crate::backend::fresh_database_url().await.is_some() {
        return; // the fault is injected with a SQLite trigger
    }
    let app = spawn_app().await;
    let email = "victim-reset@example.com";
    app.verified_user(email).await;
    // The attacker's session (its refresh token and device secret were stolen).
    let stolen = app.signin(email, PASSWORD).await;

    let before = app.outbox(email, 0).await.len();
    let r = app
        .post("/v1/auth/password/forgot", json!({"email": email}))
        .await;
    assert_eq!(r.status(), 202);
    let mail = app.last_mail(email, before + 1).await;
    assert_eq!(mail["subject"], "Reset your password");
    let token = mail["token"].as_str().unwrap().to_owned();

    // The second write fails (a crash, a full disk, a lost connection).
    let status = reset_under_fault(
        &app,
        &token,
        "BEFORE UPDATE OF revoked_at ON sessions WHEN NEW.revoke_reason = 'password_reset'",
    )
    .await;

    // The owner may retry the link: it is spent, although they saw an error.
    let retry = app
        .post(
            "/v1/auth/password/reset",
            json!({"token": token, "password": "a brand new passphrase"}),
        )
        .await;
    let retry_status = retry.status().as_u16();

    // Whatever the answers were: a reset that took effect must have ended every session.
    let r = refresh_with_device(&app, &stolen.refresh, Some(&stolen.device)).await;
    let refreshed = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_ne!(
        refreshed, 200,
        "reset answered {status}, retry answered {retry_status}: the password was changed \
         but the stolen session still refreshes ({body})"
    );
}

/// Once the reset's transaction has committed, the password is changed and
/// every session ended, whatever fails after it. Clearing the account's
/// sign-in failures (a write of its own) failed the request: the owner was
/// answered 500 for a reset that took effect, with no audit row and no
/// "your password was changed" mail.
#[tokio::test]
async fn a_reset_that_committed_is_answered_and_notified_when_a_later_write_fails() {
    if crate::backend::fresh_database_url().await.is_some() {
        return; // the fault is injected with a SQLite trigger
    }
    let app = spawn_app().await;
    let email = "owner-reset@example.com";
    app.verified_user(email).await;
    // A wrong password: the account has sign-in failures to clear.
    let r = app
        .post(
            "/v1/auth/signin",
            json!({"email": email, "password": "not the password"}),
        )
        .await;
    assert_eq!(r.status(), 401);
    let before = app.outbox(email, 0).await.len();
    let r = app
        .post("/v1/auth/password/forgot", json!({"email": email}))
        .await;
    assert_eq!(r.status(), 202);
    let token = app.last_mail(email, before + 1).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = reset_under_fault(&app, &token, "BEFORE DELETE ON signin_throttle").await;
    assert_eq!(status, 200, "the reset took effect");
    let notice = app.last_mail(email, before + 2).await;
    assert_eq!(notice["subject"], "Your password was changed");
    let r = app
        .post(
            "/v1/auth/signin",
            json!({"email": email, "password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(r.status(), 200, "the new password is the account's");
}

/// What the operator does with the CLI on the database is audited like
/// the admin API's actions: making an admin, service accounts, key rotation.
#[tokio::test]
async fn privileged_cli_commands_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let run = |args: &[&str]| {
        let out = command(&data, None, port)
            .env("AUTHFLOW_NEW_PASSWORD", PASSWORD)
            .args(args)
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        out
    };
    run(&["migrate"]);
    let created = run(&[
        "user",
        "create",
        "--email",
        "boss@example.com",
        "--role",
        "admin",
    ]);
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let boss = created["user_id"].as_str().unwrap().to_owned();
    run(&["service-account", "create", "--client-id", "billing"]);
    run(&["service-account", "rotate-secret", "--client-id", "billing"]);
    let key = jwt_simple::prelude::Ed25519KeyPair::generate();
    let jwk_file = dir.path().join("billing.jwk");
    std::fs::write(
        &jwk_file,
        json!({"kty": "OKP", "crv": "Ed25519", "x": base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            key.public_key().to_bytes(),
        )})
        .to_string(),
    )
    .unwrap();
    let with_key = run(&[
        "service-account",
        "set-key",
        "--client-id",
        "billing",
        "--jwk-file",
        jwk_file.to_str().unwrap(),
    ]);
    let without_key = run(&["service-account", "remove-key", "--client-id", "billing"]);
    for (out, has_key) in [(with_key, true), (without_key, false)] {
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            printed,
            json!({"client_id": "billing", "public_key": has_key})
        );
    }
    run(&["service-account", "disable", "--client-id", "billing"]);
    run(&["keys", "rotate"]);

    let http = reqwest::Client::new();
    let _server = start(&data, None, port, &http).await;
    let base = format!("http://127.0.0.1:{port}");
    let (access, device) = sign_in(&http, &base, "boss@example.com").await;
    let log: Vec<Value> = http
        .get(format!("{base}/v1/admin/audit?limit=1000"))
        .bearer_auth(&access)
        .header("x-authflow-device", &device)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Each row was written before its command changed anything, and then
    // settled with the result.
    let has = |event: &str, user: Option<&str>| {
        log.iter().any(|e| {
            e["event"] == event
                && user.is_none_or(|u| e["user_id"] == u)
                && e["detail"].as_str().is_some_and(|d| d.starts_with("done"))
        })
    };
    assert!(has("cli_user_create", Some(&boss)), "{log:#?}");
    assert!(
        has("cli_create_service_account", Some("svc:billing")),
        "{log:#?}"
    );
    assert!(
        has("cli_rotate_service_secret", Some("svc:billing")),
        "{log:#?}"
    );
    for event in ["cli_set_service_key", "cli_remove_service_key"] {
        assert!(has(event, Some("svc:billing")), "{event}: {log:#?}");
    }
    assert!(
        has("cli_disable_service_account", Some("svc:billing")),
        "{log:#?}"
    );
    assert!(has("cli_rotate_keys", None), "{log:#?}");
}

/// Confirming an address uses up the mailed link and marks the address
/// verified. Done as two writes (the link taken, then the flag set), a
/// crash or a refused write between them spends the link and leaves the
/// address unverified: the owner is told the link failed, and the same link
/// is then refused as invalid. Both must commit together, or neither.
#[tokio::test]
async fn a_verification_that_fails_halfway_does_not_spend_the_link() {
    if crate::backend::fresh_database_url().await.is_some() {
        return; // the fault is injected with a SQLite trigger
    }
    let app = spawn_app().await;
    let email = "verify-halfway@example.com";
    let r = app
        .post(
            "/v1/auth/signup",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let user_id = r.json::<Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = app.last_mail(email, 1).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The second write fails (a crash, a full disk, a lost connection).
    sqlite_exec(
        &app,
        "CREATE TRIGGER injected_fault BEFORE UPDATE OF email_verified ON users \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .await;
    let r = app
        .post("/v1/auth/verify-email", json!({"token": token}))
        .await;
    let status = r.status().as_u16();
    sqlite_exec(&app, "DROP TRIGGER injected_fault").await;
    assert_ne!(status, 200, "the fault did not fire");

    // The fault is over: the owner clicks the link again.
    let retry = app
        .post("/v1/auth/verify-email", json!({"token": token}))
        .await;
    let retry_status = retry.status().as_u16();
    let verified = app
        .state
        .store
        .user_by_id(&user_id)
        .await
        .unwrap()
        .unwrap()
        .email_verified;
    assert!(
        retry_status == 200 && verified,
        "first answer {status}, retry {retry_status}, verified: {verified}: \
         the failed confirmation spent the link without verifying the address"
    );
}

/// The CLI is another process writing the same SQLite file. A transaction
/// that read before it wrote (a deferred `BEGIN`) failed with "database is
/// locked" when that process held the write lock, instead of waiting its
/// turn within the busy timeout: the admin's request got a 500.
#[tokio::test]
async fn a_write_waits_its_turn_behind_another_process_on_sqlite() {
    use sqlx::Connection;
    let app = spawn_app().await;
    if app.database_url.is_some() {
        return; // Postgres: row locks, no file lock.
    }
    let url = format!("sqlite://{}", app.dir.path().join("authflow.db").display());
    let mut cli = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE cli_probe (x INTEGER)")
        .execute(&mut cli)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut cli)
        .await
        .unwrap();
    sqlx::query("INSERT INTO cli_probe VALUES (1)")
        .execute(&mut cli)
        .await
        .unwrap();
    let store = Arc::clone(&app.state.store);
    // Reads the feed's head, then deletes what expired: one transaction.
    let prune = tokio::spawn(async move { store.prune_feed(0).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut cli).await.unwrap();
    let pruned = tokio::time::timeout(Duration::from_secs(10), prune)
        .await
        .expect("the write finished within the busy timeout")
        .unwrap();
    assert!(pruned.is_ok(), "{pruned:?}");
}

/// SIGTERM (every rollout, every node drain) while a filter's long poll of
/// the feed is parked (`wait` up to 60 s; every filter holds one open all the
/// time): the parked poll is answered (a 304: the filter polls again,
/// elsewhere) and the process exits at once, well inside a termination grace
/// period (Kubernetes' default is 30 s), not killed with mail in flight.
#[tokio::test]
async fn sigterm_does_not_wait_for_parked_long_polls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(70))
        .build()
        .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start(&data, None, port, &http).await;
    let snapshot: Value = http
        .get(format!("{base}/v1/revocations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cursor = snapshot["cursor"].as_str().unwrap().to_owned();
    let poll = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/v1/revocations");
        async move {
            http.get(url)
                .query(&[("since", cursor.as_str()), ("wait", "60")])
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "the poll is parked");
    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopping = std::time::Instant::now();
    let exited = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break Some(status);
        }
        if stopping.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        exited.is_some(),
        "still running 10 s after SIGTERM, held by one parked long poll"
    );
    assert_eq!(
        poll.await.unwrap().ok(),
        Some(304),
        "the parked poll was answered"
    );
}
