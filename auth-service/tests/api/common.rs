//! Test fixtures: the real service on 127.0.0.1 port 0 over a fresh database
//! per test (a SQLite file, or a PostgreSQL database in the `api_postgres`
//! test binary: see `crate::backend`), and helpers that drive it over HTTP
//! like a client would.

use std::sync::Arc;
use std::time::Duration;

use authflow_auth_service::clock::now;
use authflow_auth_service::config::Config;
use authflow_auth_service::domain::password::Hasher;
use authflow_auth_service::startup::{spawn, Running};
use authflow_auth_service::state::AppState;
use authflow_auth_service::store::{SessionCap, User};
use serde_json::{json, Value};

pub const UA: &str = "authflow-test/1.0";
pub const LANG: &str = "en-GB,en;q=0.9";
pub const PASSWORD: &str = "correct horse battery staple";

/// The cap for sessions a test writes straight to the store: none ends another.
pub const UNCAPPED: SessionCap = SessionCap {
    max_live: u32::MAX,
    feed_expires_at: 0,
};

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: Arc<AppState>,
    /// Kept so the server task lives as long as the test.
    #[allow(dead_code)]
    pub running: Running,
    /// Shared so a second instance can run on the same data (a restart).
    pub dir: Arc<tempfile::TempDir>,
    /// The PostgreSQL database of this test; `None`: SQLite in `dir`.
    pub database_url: Option<String>,
}

/// Fast settings for tests; `tweak` adjusts them.
pub fn test_config(
    dir: &std::path::Path,
    database_url: Option<&str>,
    tweak: impl FnOnce(&mut Config),
) -> Config {
    let mut config = Config::for_data_dir(dir).unwrap();
    if let Some(url) = database_url {
        config.database.url = url.into();
    }
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    // The tests read mailed codes and tokens from the development outbox (off by default).
    config.server.dev_endpoints = true;
    config.passwords.hash_memory_kib = 1024;
    config.passwords.hash_iterations = 1;
    config.keys.publish_lead = Duration::from_secs(1);
    // A development KEK per data directory, generated at run time (kept in
    // the directory so a restarted instance opens the same secrets).
    let kek_file = dir.join("test-kek");
    if !kek_file.exists() {
        std::fs::write(&kek_file, authflow_auth_service::kek::generate_key()).unwrap();
    }
    config.kek.current = Some(
        authflow_auth_service::kek::parse_key(&std::fs::read_to_string(&kek_file).unwrap())
            .unwrap(),
    );
    tweak(&mut config);
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let database_url = crate::backend::fresh_database_url().await;
    spawn_app_in(Arc::new(tempfile::tempdir().unwrap()), database_url, tweak).await
}

/// Another instance of the service on `app`'s data: after a restart, or
/// beside it (several instances on one PostgreSQL database).
pub async fn spawn_app_beside(app: &TestApp, tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_in(Arc::clone(&app.dir), app.database_url.clone(), tweak).await
}

/// An instance on the given data dir and database (`None`: SQLite in `dir`).
pub async fn spawn_app_in(
    dir: Arc<tempfile::TempDir>,
    database_url: Option<String>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let config = test_config(dir.path(), database_url.as_deref(), tweak);
    let running = spawn(config).await.unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("accept-language", LANG.parse().unwrap());
    let http = reqwest::Client::builder()
        .user_agent(UA)
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp {
        base: format!("http://{}", running.addr),
        http,
        state: Arc::clone(&running.state),
        running,
        dir,
        database_url,
    }
}

pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub device: String,
    pub session: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// A bearer request carrying the device secret, like a non-browser client.
    pub fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        t: &Tokens,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&t.access)
            .header("x-authflow-device", &t.device)
    }

    /// `POST /v1/auth/logout` from the device `t` was issued to.
    pub async fn logout(&self, t: &Tokens) -> reqwest::Response {
        self.authed(reqwest::Method::POST, "/v1/auth/logout", t)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/admin/users/{user_id}/ban` by `admin`.
    /// The newest hundred audit rows of `user_id`, newest first.
    pub async fn audit_of(&self, user_id: &str) -> Vec<authflow_auth_service::store::AuditEntry> {
        self.state
            .store
            .audit_log(Some(user_id), 100)
            .await
            .unwrap()
    }

    pub async fn ban(&self, admin: &Tokens, user_id: &str) -> reqwest::Response {
        self.authed(
            reqwest::Method::POST,
            &format!("/v1/admin/users/{user_id}/ban"),
            admin,
        )
        .send()
        .await
        .unwrap()
    }

    /// Messages to `to`, oldest first, polling briefly (some mail is sent in the background).
    pub async fn outbox(&self, to: &str, at_least: usize) -> Vec<Value> {
        for _ in 0..100 {
            let r = self
                .http
                .get(self.url("/v1/dev/outbox"))
                .query(&[("to", to)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let mails: Vec<Value> = r.json().await.unwrap();
            if mails.len() >= at_least {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {at_least} mails reached {to}");
    }

    pub async fn last_mail(&self, to: &str, at_least: usize) -> Value {
        self.outbox(to, at_least).await.last().cloned().unwrap()
    }

    /// Sign-up plus email verification through the outbox; returns the user id.
    pub async fn verified_user(&self, email: &str) -> String {
        let r = self
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
        let mail = self.last_mail(email, 1).await;
        let r = self
            .post("/v1/auth/verify-email", json!({"token": mail["token"]}))
            .await;
        assert_eq!(r.status(), 200);
        user_id
    }

    /// An admin created directly in the store (as the CLI does), signed in.
    pub async fn admin(&self, email: &str) -> Tokens {
        let hasher = Hasher::new(1024, 1).unwrap();
        let user = User {
            email_verified: true,
            ..User::new(
                email,
                hasher.hash(PASSWORD).unwrap(),
                vec!["user".into(), "admin".into()],
                now(),
            )
        };
        self.state.store.create_user(&user).await.unwrap();
        self.signin(email, PASSWORD).await
    }

    pub async fn challenge(&self, email: &str, password: &str) -> (String, String) {
        let r = self
            .post(
                "/v1/auth/signin",
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(r.status(), 200, "signin of {email}");
        let body: Value = r.json().await.unwrap();
        (
            body["challenge_id"].as_str().unwrap().to_owned(),
            body["method"].as_str().unwrap().to_owned(),
        )
    }

    /// Password, then the mailed code: the full sign-in.
    pub async fn signin(&self, email: &str, password: &str) -> Tokens {
        let before = self.outbox(email, 0).await.len();
        let (challenge, method) = self.challenge(email, password).await;
        assert_eq!(method, "email");
        let mail = self.last_mail(email, before + 1).await;
        let r = self
            .post(
                "/v1/auth/signin/verify",
                json!({"challenge_id": challenge, "code": mail["code"]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        tokens_of(r).await
    }

    /// Starts a first TOTP enrolment for a signed-in user (proving the
    /// password); the pending base32 secret.
    pub async fn begin_totp(&self, t: &Tokens) -> String {
        let r = self
            .authed(reqwest::Method::POST, "/v1/auth/totp/enroll", t)
            .json(&json!({"password": PASSWORD}))
            .send()
            .await
            .unwrap();
        ok_text(r, "secret").await
    }

    /// Sets up TOTP for a signed-in user (proving the password, then a current
    /// code) and returns its base32 secret and the time the code was made for.
    pub async fn enrol_totp(&self, t: &Tokens) -> (String, i64) {
        let secret = self.begin_totp(t).await;
        let now = now();
        let r = self
            .authed(reqwest::Method::POST, "/v1/auth/totp/confirm", t)
            .json(&json!({"code": totp_code(&secret, now)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        (secret, now)
    }

    pub async fn feed(&self, since: Option<&str>) -> (u16, Option<Value>) {
        let mut req = self.http.get(self.url("/v1/revocations"));
        if let Some(s) = since {
            req = req.query(&[("since", s)]);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body = if status == 200 {
            Some(r.json().await.unwrap())
        } else {
            None
        };
        (status, body)
    }
}

/// The authenticator app's code for `secret` at time `at` (RFC 6238: SHA-1,
/// 6 digits, 30 s steps), as the service's TOTP settings expect.
pub fn totp_code(secret: &str, at: i64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .unwrap();
    totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        None,
        String::new(),
    )
    .generate(at as u64)
}

pub async fn tokens_of(r: reqwest::Response) -> Tokens {
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    Tokens {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        device: body["device_secret"].as_str().unwrap().to_owned(),
        session: body["session_id"].as_str().unwrap().to_owned(),
    }
}

/// Moves the rotation of the (used) refresh token `refresh` `secs` seconds
/// into the past, in the database: what the service sees once that much
/// time has gone by since the rotation.
pub async fn age_rotation(app: &TestApp, refresh: &str, secs: i64) {
    let hash = authflow_auth_service::domain::hash_secret(refresh);
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    let sql =
        "UPDATE refresh_tokens SET used_at = used_at - $1 WHERE hash = $2 AND used_at IS NOT NULL";
    let updated = if app.database_url.is_some() {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sql)
            .bind(secs)
            .bind(&hash)
            .execute(&mut db)
            .await
            .unwrap()
            .rows_affected()
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let n = sqlx::query(sql)
            .bind(secs)
            .bind(&hash)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
        pool.close().await;
        n
    };
    assert_eq!(updated, 1, "a rotated refresh token to age");
}

/// A refresh with the refresh token `refresh` and the device secret `device` (none: `None`).
pub async fn refresh_with_device(
    app: &TestApp,
    refresh: &str,
    device: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/v1/auth/refresh"))
        .json(&json!({"refresh_token": refresh}));
    if let Some(device) = device {
        request = request.header("x-authflow-device", device);
    }
    request.send().await.unwrap()
}

/// The `error_description` of a 400 `invalid_grant` answer.
pub async fn invalid_grant(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");
    body["error_description"].as_str().unwrap().to_owned()
}

/// The claims of a JWT, unverified (tests inspect what was issued).
pub fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

pub fn header(token: &str) -> Value {
    use base64::Engine as _;
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Asserts a 200 and returns the string `field` of its JSON body.
pub async fn ok_text(r: reqwest::Response, field: &str) -> String {
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{field}`"))
        .to_owned()
}

/// Asserts the one error shape and returns the `error` code.
pub async fn error_code(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status);
    let body: Value = r.json().await.unwrap();
    assert!(body["error_description"].is_string(), "{body}");
    body["error"].as_str().unwrap().to_owned()
}

/// The auth service's `ext_authz` verdict on the tokens' access token.
pub async fn ext_authz(app: &TestApp, t: &Tokens) -> u16 {
    app.authed(reqwest::Method::GET, "/v1/ext-authz", t)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Runs `statements` on `app`'s database from a connection of its own (as an
/// operator, another instance or a failing disk would change it).
pub async fn run_sql(app: &TestApp, statements: &[&str]) {
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    if app.database_url.is_some() {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        for sql in statements {
            sqlx::query(sql).execute(&mut db).await.unwrap();
        }
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        for sql in statements {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
}

/// How many rows of `table` match `column = value`, read from the database directly.
pub async fn rows_where(app: &TestApp, table: &str, column: &str, value: &str) -> i64 {
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1");
    if app.database_url.is_some() {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(&sql)
            .bind(value)
            .fetch_one(&mut db)
            .await
            .unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let n = sqlx::query_scalar(&sql)
            .bind(value)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }
}

/// Makes every insert into `table` fail (a full disk, a lost connection, a
/// crash right there) until [`heal_inserts`].
pub async fn break_inserts(app: &TestApp, table: &str) {
    if app.database_url.is_some() {
        run_sql(
            app,
            &[
                "CREATE OR REPLACE FUNCTION test_fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
                &format!("CREATE TRIGGER test_fail_{table} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION test_fail_insert()"),
            ],
        )
        .await;
    } else {
        run_sql(
            app,
            &[&format!("CREATE TRIGGER test_fail_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'injected failure'); END")],
        )
        .await;
    }
}

pub async fn heal_inserts(app: &TestApp, table: &str) {
    let drop = if app.database_url.is_some() {
        format!("DROP TRIGGER test_fail_{table} ON {table}")
    } else {
        format!("DROP TRIGGER test_fail_{table}")
    };
    run_sql(app, &[&drop]).await;
}

/// A transaction another client of `app`'s database holds open: on SQLite
/// begun `IMMEDIATE` (it holds the write lock), on Postgres holding the locks
/// its statements took. Nothing is visible to others until [`Held::commit`].
pub enum Held {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

/// Opens [`Held`] and runs `statements` in it (`postgres` instead on Postgres).
pub async fn hold_transaction(app: &TestApp, sqlite: &[&str], postgres: &[&str]) -> Held {
    use sqlx::Connection;
    let url = secrecy::ExposeSecret::expose_secret(&app.state.config.database.url).to_owned();
    if app.database_url.is_some() {
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        for sql in std::iter::once("BEGIN").chain(postgres.iter().copied()) {
            sqlx::query(sql).execute(&mut db).await.unwrap();
        }
        Held::Postgres(db)
    } else {
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for sql in std::iter::once("BEGIN IMMEDIATE").chain(sqlite.iter().copied()) {
            sqlx::query(sql).execute(&mut db).await.unwrap();
        }
        Held::Sqlite(db)
    }
}

impl Held {
    pub async fn commit(self) {
        match self {
            Held::Sqlite(mut db) => sqlx::query("COMMIT").execute(&mut db).await.map(drop),
            Held::Postgres(mut db) => sqlx::query("COMMIT").execute(&mut db).await.map(drop),
        }
        .unwrap();
    }
}

/// Runs every request at once (each on its own task); the answers in order.
pub async fn join_all<T: Send + 'static>(
    requests: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = requests.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// A KEK rollout done out of order: an instance beside `app` starts with a
/// new `kek.key` (the old one in `kek.previous`), which re-seals every stored
/// key, and rotates the signing key to one active at once; `app`, still on
/// the old KEK, reloads its keys and cannot open the active one. The new instance.
pub async fn an_instance_on_a_new_kek_rotated_past(app: &TestApp) -> TestApp {
    let old = app.state.config.kek.current.unwrap();
    let rotated = spawn_app_beside(app, |c| {
        c.kek.current = Some([9u8; 32]);
        c.kek.previous = vec![old];
    })
    .await;
    let now = authflow_auth_service::clock::now();
    let alg = rotated.state.config.keys.signing_alg;
    rotated
        .state
        .keys
        .rotate(rotated.state.store.as_ref(), alg, now - 1, 0)
        .await
        .unwrap();
    app.state
        .keys
        .reload(app.state.store.as_ref())
        .await
        .unwrap();
    rotated
}
