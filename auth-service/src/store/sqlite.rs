//! SQLite implementation of [`Store`].
//!
//! One writer connection and a small reader pool: SQLite allows one writer at
//! a time anyway, and funnelling writes through one connection avoids
//! SQLITE_BUSY on deferred transactions that upgrade from read to write.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::portable::{
    authenticator_in, ban_service_tokens_in, change_service_credential, count_not_kept,
    end_sessions_past_cap_in, insert_access_token, insert_signing_key_in, kept_sealed,
    published_keys_in, record_kek_in_use, revoke_sessions_in, session_event_in,
    sessions_still_verifiable, withdraw_key_in, NEXT_ROTATION, SESSION_COLUMNS, USER_COLUMNS,
};
use super::rows::{ChallengeRow, EventRow, KeyRow, UserRow};
use super::sealed::{self, key_purpose, totp_purpose};
use super::*;
use crate::kek::Kek;
use std::sync::Arc;

pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// Seals TOTP secrets and private keys (see `kek.rs`).
    kek: Arc<Kek>,
}

/// This release's migrations; `ahead`: the database may hold newer ones (see
/// [`super::migrations_ahead`]), which are then left alone.
fn migrator(ahead: bool) -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations/sqlite");
    m.set_ignore_missing(ahead);
    m
}

/// See [`super::EditedMigration`].
const EDITED: super::EditedMigration = super::EditedMigration {
    version: 14,
    first_checksum: "e5f61613b32741657e9e8411e574865bdf74287fc0b56f4789c18b684a1713a2fb8e764d7989b51f878a72b5a8d90a66",
    catch_up: "ALTER TABLE refresh_tokens ADD COLUMN dpop_bound INTEGER NOT NULL DEFAULT 0",
};

/// No row locks in SQLite: a statement that writes reads the latest commit
/// and holds the one write lock until its transaction ends (see `portable`).
const SHARE_LOCK: &str = "";
/// Nor here: a transaction on the one writer runs alone (see `portable`).
const UPDATE_LOCK: &str = "";
/// Nor here.
const DELETE_LOCK: &str = "";

/// Whether SQLite keeps this database in a file of that name (not in
/// memory, nor behind a `file:` URI).
fn is_a_file(path: &std::path::Path) -> bool {
    let name = path.to_string_lossy();
    !(name.is_empty() || name == ":memory:" || name.starts_with("file:"))
}

/// Creates a missing database file readable by its owner only, before
/// SQLite creates it with the process umask (0644 as a rule): it holds the
/// password hashes, the sessions and the sealed keys, and may live outside
/// the (owner-only) data directory. SQLite gives the WAL and shared-memory
/// files the database file's permissions.
fn create_owner_only(path: &std::path::Path) {
    if !is_a_file(path) || path.exists() {
        return;
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    // On failure (another process created it first, a missing directory)
    // SQLite opens or reports it as before.
    let _ = open.open(path);
}

/// The one writer connection. Connecting switches a database in the
/// rollback journal to WAL, which needs the file to itself: two processes
/// switching at once deadlock, and SQLite answers one of them "database is
/// locked" at once rather than waiting its busy timeout. That one tries
/// again (by then the file is in WAL, and the switch is a no-op).
async fn connect_writer(options: &SqliteConnectOptions) -> StoreResult<SqlitePool> {
    let mut tries = 0;
    loop {
        let connected = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await;
        match connected {
            Err(sqlx::Error::Database(e)) if tries < 50 && is_busy(e.as_ref()) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// SQLITE_BUSY, in any of its extended forms (the low byte is the primary code).
fn is_busy(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

/// Brings the schema up to this release's, as one transaction that holds
/// the write lock from its start. sqlx's migration lock does nothing on
/// SQLite, so processes starting together on an older schema (the service
/// and a CLI command, two instances) each applied the missing migrations
/// and all but one failed (`duplicate column name`). Under `BEGIN IMMEDIATE`
/// the others wait, then find nothing left to do; a migration that fails
/// leaves the schema as it was.
async fn migrate(write: &SqlitePool) -> StoreResult<()> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
    // A database a newer release migrated further is run on, not refused.
    // (A new database has no such table yet: nothing applied.)
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(&mut *tx)
        .await
        .unwrap_or_default();
    let ahead = super::migrations_ahead(&migrator(false), &applied)?;
    super::warn_migrations_ahead(&ahead);
    let recorded: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
            .bind(EDITED.version)
            .fetch_optional(&mut *tx)
            .await
            .unwrap_or_default();
    if let Some(checksum) =
        super::edited_since_applied(&migrator(false), &EDITED, recorded.as_deref())
    {
        sqlx::query(EDITED.catch_up).execute(&mut *tx).await?;
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
            .bind(checksum)
            .bind(EDITED.version)
            .execute(&mut *tx)
            .await?;
    }
    // Each migration runs in a savepoint of this transaction.
    migrator(!ahead.is_empty()).run(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Takes other users' access away from an existing database file and its
/// WAL and shared-memory files: an earlier release created the file with
/// the process umask, and a file copied in keeps the mode it came with.
/// (New files are made owner-only by [`create_owner_only`]; the group's
/// access is left as the operator set it.)
#[cfg(unix)]
fn close_to_other_users(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if !is_a_file(path) {
        return;
    }
    let name = path.to_string_lossy();
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{name}{suffix}"));
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o007 == 0 {
            continue;
        }
        let closed = mode & !0o007;
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(closed)) {
            Ok(()) => tracing::warn!(
                file = %file.display(),
                was = format!("{mode:o}"),
                now = format!("{closed:o}"),
                "the database file was readable by other users; their access is removed"
            ),
            Err(e) => tracing::error!(
                file = %file.display(),
                mode = format!("{mode:o}"),
                error = %e,
                "the database file is readable by other users and its mode cannot be changed"
            ),
        }
    }
}

#[cfg(not(unix))]
fn close_to_other_users(_path: &std::path::Path) {}

impl SqliteStore {
    /// Where reads go: the read-only pool.
    fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// Where writes go: the one writer connection.
    fn writer(&self) -> &SqlitePool {
        &self.write
    }

    /// A write transaction that takes the write lock at its start: a deferred
    /// `BEGIN` that read first could not wait for another process (the CLI)
    /// holding the lock — SQLite answers such an upgrade "database is locked"
    /// at once, without its busy timeout — where `BEGIN IMMEDIATE` waits.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
        self.write.begin_with("BEGIN IMMEDIATE").await
    }

    /// Whether the database file the URL names exists and holds an authflow
    /// database (migrations were applied to it): an empty file, or another
    /// program's database at a mistyped path, is none, as an empty PostgreSQL
    /// database is not. Looked at without writing anything to it.
    pub async fn exists(url: &str) -> StoreResult<bool> {
        let options = SqliteConnectOptions::from_str(url)?;
        if !options.get_filename().is_file() {
            return Ok(false);
        }
        let mut conn = sqlx::ConnectOptions::connect(&options.read_only(true)).await?;
        let table: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut conn)
        .await?;
        let applied: i64 = if table == 0 {
            0
        } else {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(&mut conn)
                .await?
        };
        sqlx::Connection::close(conn).await?;
        Ok(applied > 0)
    }

    /// Opens (creating if needed) the database, applies migrations, and seals
    /// with the current KEK every secret still in clear or sealed with an
    /// older one (a wrong KEK fails here, naming the key that sealed them).
    pub async fn open(url: &str, kek: Arc<Kek>) -> StoreResult<Self> {
        Self::open_with(url, kek, true).await
    }

    /// [`Self::open`]; with `reseal` false, nothing is re-sealed (`kek status`).
    pub async fn open_with(url: &str, kek: Arc<Kek>, reseal: bool) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL: readers never block the writer and vice versa.
            .journal_mode(SqliteJournalMode::Wal)
            // FULL (not WAL's usual NORMAL): fsync the WAL on every commit, so
            // a commit we acknowledged survives power loss, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted content (a private key's sealed half, a replaced secret) is overwritten, not left in free pages.
            .pragma("secure_delete", "on")
            .busy_timeout(Duration::from_secs(10));
        create_owner_only(options.get_filename());
        close_to_other_users(options.get_filename());
        let write = connect_writer(&options).await?;
        migrate(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let store = Self { read, write, kek };
        if !reseal {
            return Ok(store);
        }
        let resealed = store.reseal_all().await?;
        if resealed > 0 {
            // Leave no copy of the old form behind: rewrite the file and empty the WAL.
            for sql in ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"] {
                sqlx::query(sql).execute(&store.write).await?;
            }
            tracing::info!(
                values = resealed,
                kek = store.kek.id(),
                "secrets at rest sealed with the current key-encryption key"
            );
        }
        Ok(store)
    }

    fn open_secret(&self, purpose: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        sealed::open(&self.kek, purpose, value)
    }

    fn seal(&self, purpose: &str, value: &[u8]) -> StoreResult<String> {
        sealed::seal(&self.kek, purpose, value)
    }

    /// One transaction: every TOTP secret and private key under the current KEK.
    async fn reseal_all(&self) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        record_kek_in_use!(&mut *tx, self.kek);
        let kept = kept_sealed!(&mut *tx, self.kek);
        let mut count = 0;
        let rows = sqlx::query("SELECT id, totp_secret, totp_pending FROM users WHERE totp_secret IS NOT NULL OR totp_pending IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?;
        for row in &rows {
            let id: String = row.try_get("id")?;
            for column in ["totp_secret", "totp_pending"] {
                let Some(value) = row.try_get::<Option<String>, _>(column)? else {
                    continue;
                };
                if let Some(sealed) =
                    sealed::resealed(&self.kek, &kept, &totp_purpose(&id), value.as_bytes())?
                {
                    sqlx::query(&format!("UPDATE users SET {column} = ? WHERE id = ?"))
                        .bind(sealed)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                    count += 1;
                }
            }
        }
        let keys =
            sqlx::query("SELECT kid, private_key FROM signing_keys WHERE length(private_key) > 0")
                .fetch_all(&mut *tx)
                .await?;
        for row in &keys {
            let kid: String = row.try_get("kid")?;
            let value: Vec<u8> = row.try_get("private_key")?;
            if let Some(sealed) = sealed::resealed(&self.kek, &kept, &key_purpose(&kid), &value)? {
                sqlx::query("UPDATE signing_keys SET private_key = ? WHERE kid = ?")
                    .bind(sealed.into_bytes())
                    .bind(&kid)
                    .execute(&mut *tx)
                    .await?;
                count += 1;
            }
        }
        tx.commit().await?;
        Ok(count)
    }

    /// A user as stored, with its TOTP secrets opened.
    fn user(&self, row: UserRow) -> StoreResult<User> {
        let mut user = User::from(row);
        let purpose = totp_purpose(&user.id);
        for secret in [&mut user.totp_secret, &mut user.totp_pending] {
            if let Some(sealed) = secret.take() {
                let clear = self.open_secret(&purpose, sealed.as_bytes())?;
                *secret = Some(
                    String::from_utf8(clear)
                        .map_err(|_| StoreError::Corrupt("a TOTP secret is not text".into()))?,
                );
            }
        }
        Ok(user)
    }
}

/// When the last access token recorded for `user_id` expires (0: none). A
/// revocation lives at least that long, whatever the token lifetime is now:
/// one set from a lifetime lowered since would be forgotten (by the service
/// and every filter) while tokens issued under the longer one still verify.
async fn latest_token_expiry(
    tx: &mut sqlx::SqliteConnection,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MAX(expires_at), 0) FROM access_tokens WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(tx)
        .await
}

async fn append_event(
    tx: &mut sqlx::SqliteConnection,
    kind: FeedKind,
    subject: &str,
    not_before: Option<i64>,
    expires_at: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO revocation_events (kind, subject, not_before, expires_at, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(kind.as_str())
        .bind(subject)
        .bind(not_before)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn meta_get(conn: &SqlitePool, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
        .bind(key)
        .fetch_optional(conn)
        .await
}

super::portable::impl_store! {
    SqliteStore;

    async fn epoch(&self) -> StoreResult<String> {
        let fresh = crate::domain::random_id();
        // INSERT OR IGNORE: the first value written wins forever.
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('feed_epoch', ?)")
            .bind(&fresh)
            .execute(&self.write)
            .await?;
        meta_get(&self.write, "feed_epoch").await?.ok_or_else(|| StoreError::Corrupt("no feed epoch".into()))
    }

    async fn create_user(&self, u: &User) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO users (id, email, password_hash, roles, scope, email_verified, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT(email) DO NOTHING",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(u.roles.join(" "))
        .bind(&u.scope)
        .bind(i64::from(u.email_verified))
        .bind(u.created_at)
        .execute(&self.write)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Conflict("the email"));
        }
        Ok(())
    }

    async fn users_with_non_ascii_email(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as("SELECT id, email FROM users WHERE email GLOB '*[^ -~]*'").fetch_all(&self.write).await?)
    }

    async fn set_email_verified(&self, user_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE users SET email_verified = 1 WHERE id = ?")
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn confirm_totp(&self, user_id: &str, secret: &str, session_id: &str, step: i64) -> StoreResult<bool> {
        // Sealed values differ on every write: compare the opened pending
        // secret, then move exactly the sealed value that was compared.
        let mut tx = self.begin_write().await?;
        let pending: Option<String> = sqlx::query_scalar("SELECT totp_pending FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
        let Some(pending) = pending else { return Ok(false) };
        if self.open_secret(&totp_purpose(user_id), pending.as_bytes())? != secret.as_bytes() {
            return Ok(false);
        }
        let r = sqlx::query(
            "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = ? \
             WHERE id = ? AND totp_pending = ? AND totp_pending_session = ?",
        )
        .bind(step)
        .bind(user_id)
        .bind(&pending)
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    async fn second_factor_attempt(&self, user_id: &str, now: i64) -> StoreResult<SecondFactorAttempt> {
        // One statement: concurrent attempts each get their own number.
        let counted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO second_factor_guard (user_id, attempts) VALUES (?1, 1) \
             ON CONFLICT(user_id) DO UPDATE SET attempts = attempts + 1 WHERE locked_until <= ?2 \
             RETURNING attempts",
        )
        .bind(user_id)
        .bind(now)
        .fetch_optional(&self.write)
        .await?;
        if let Some(n) = counted {
            return Ok(SecondFactorAttempt::Counted(u32::try_from(n).unwrap_or(u32::MAX)));
        }
        let until: i64 = sqlx::query_scalar("SELECT locked_until FROM second_factor_guard WHERE user_id = ?")
            .bind(user_id)
            .fetch_one(&self.write)
            .await?;
        Ok(SecondFactorAttempt::Locked(until))
    }

    async fn second_factor_lock(&self, user_id: &str, now: i64, base_secs: i64, max_secs: i64) -> StoreResult<Option<i64>> {
        // No attempt counted: a right code signed in meanwhile (see the Postgres store).
        sqlx::query_scalar(
            "UPDATE second_factor_guard SET attempts = 0, lockouts = lockouts + 1, \
             locked_until = ?2 + MIN(?4, ?3 << MIN(lockouts, 30)) WHERE user_id = ?1 AND locked_until <= ?2 AND attempts > 0 RETURNING locked_until",
        )
        .bind(user_id)
        .bind(now)
        .bind(base_secs)
        .bind(max_secs)
        .fetch_optional(&self.write)
        .await
        .map_err(StoreError::from)
    }

    async fn signin_attempt(&self, key: &str, now: i64, quiet_secs: i64, limit: u32, base_secs: i64, max_secs: i64) -> StoreResult<SigninAttempt> {
        // One statement on the one writer: concurrent attempts each get their own
        // count, and the one that reaches the limit has locked the key before the
        // next is counted. SET reads the old row, so the new count is spelt out.
        // `last_failure` moves to now at once, so a burst after a quiet period
        // starts over once, not at every attempt; `prior_failure` keeps the old
        // value for `undo_signin_attempt`, and `attempt_seq` numbers the attempt.
        let count = "(CASE WHEN ?2 - last_failure > ?3 THEN 1 ELSE failures + 1 END)";
        let counted: Option<(i64, i64, i64)> = sqlx::query_as(&format!(
            "INSERT INTO signin_throttle (key, failures, last_failure, locked_until, attempt_seq, prior_failure) \
             VALUES (?1, 1, ?2, CASE WHEN 1 >= ?4 THEN ?2 + MIN(?6, ?5) ELSE 0 END, 1, 0) \
             ON CONFLICT(key) DO UPDATE SET \
               failures = {count}, \
               locked_until = CASE WHEN {count} >= ?4 THEN ?2 + MIN(?6, ?5 << MIN({count} - ?4, 20)) ELSE 0 END, \
               prior_failure = last_failure, \
               last_failure = ?2, \
               attempt_seq = attempt_seq + 1 \
             WHERE locked_until <= ?2 \
             RETURNING failures, locked_until, attempt_seq"
        ))
        .bind(key)
        .bind(now)
        .bind(quiet_secs)
        .bind(i64::from(limit))
        .bind(base_secs)
        .bind(max_secs)
        .fetch_optional(&self.write)
        .await?;
        if let Some(row) = counted {
            return Ok(SigninAttempt::counted(row));
        }
        let until: Option<i64> = sqlx::query_scalar("SELECT locked_until FROM signin_throttle WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.write)
            .await?;
        Ok(SigninAttempt::refused(until, now))
    }

    async fn count_signin_failure(&self, key: &str, now: i64, quiet_secs: i64) -> StoreResult<u32> {
        // One statement: concurrent failures each count. SET reads the old row.
        // A new `attempt_seq`: an attempt taken back later leaves this time alone.
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO signin_throttle (key, failures, last_failure, locked_until, attempt_seq) VALUES (?1, 1, ?2, 0, 1) \
             ON CONFLICT(key) DO UPDATE SET \
               failures = CASE WHEN ?2 - last_failure > ?3 THEN 1 ELSE failures + 1 END, \
               locked_until = CASE WHEN ?2 - last_failure > ?3 THEN 0 ELSE locked_until END, \
               last_failure = ?2, \
               attempt_seq = attempt_seq + 1 \
             RETURNING failures",
        )
        .bind(key)
        .bind(now)
        .bind(quiet_secs)
        .fetch_one(&self.write)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn lock_signin(&self, key: &str, until: i64) -> StoreResult<()> {
        sqlx::query("UPDATE signin_throttle SET locked_until = MAX(locked_until, ?2) WHERE key = ?1")
            .bind(key)
            .bind(until)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn signin_locked_until(&self, keys: &[String]) -> StoreResult<i64> {
        let mut until = 0;
        for key in keys {
            // Through the writer: a lock written a moment ago is seen.
            let locked: Option<i64> = sqlx::query_scalar("SELECT locked_until FROM signin_throttle WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.write)
                .await?;
            until = until.max(locked.unwrap_or(0));
        }
        Ok(until)
    }

    async fn feed_head(&self) -> StoreResult<FeedHead> {
        // Read through the writer so a head read right after a commit sees it.
        let head: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'revocation_events'")
            .fetch_optional(&self.write)
            .await?;
        let pruned = meta_get(&self.write, "feed_pruned_through").await?;
        Ok(FeedHead {
            head: head.unwrap_or(0),
            pruned_through: pruned.and_then(|p| p.parse().ok()).unwrap_or(0),
            epoch: meta_get(&self.write, "feed_epoch").await?,
        })
    }

    async fn prune_feed(&self, forgotten_through: i64) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let pruned: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM revocation_events WHERE expires_at <= ?")
                .bind(forgotten_through)
                .fetch_one(&mut *tx)
                .await?;
        let deleted = sqlx::query("DELETE FROM revocation_events WHERE expires_at <= ?")
            .bind(forgotten_through)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if let Some(seq) = pruned {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ('feed_pruned_through', ?1) \
                 ON CONFLICT(key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), ?1)",
            )
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        // Access-token records exist to revoke a token by jti: kept as long.
        sqlx::query("DELETE FROM access_tokens WHERE expires_at <= ?")
            .bind(forgotten_through)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn add_first_signing_key(&self, k: &StoredKey) -> StoreResult<bool> {
        // One statement on the one writer connection: atomic.
        let r = sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, public_key, created_at, publish_at, active_at, retired_at) \
             SELECT ?, ?, ?, ?, ?, ?, ?, NULL WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(self.seal(&key_purpose(&k.kid), &k.private_key)?.into_bytes())
        .bind(&k.public_key)
        .bind(k.created_at)
        .bind(k.publish_at)
        .bind(k.active_at)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn add_signing_key(&self, k: &StoredKey, limit: PublishedLimit) -> StoreResult<Result<(), usize>> {
        // BEGIN IMMEDIATE: rotations are one at a time from the count on.
        let mut tx = self.begin_write().await?;
        let published = published_keys_in!(tx, limit);
        if published >= limit.max {
            return Ok(Err(published));
        }
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(k.active_at)
            .execute(&mut *tx)
            .await?;
        let sealed = StoredKey { private_key: self.seal(&key_purpose(&k.kid), &k.private_key)?.into_bytes(), ..k.clone() };
        insert_signing_key_in!(tx, &sealed);
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn withdraw_signing_key(&self, kid: &str, now: i64, successor: &StoredKey) -> StoreResult<Withdrawal> {
        let sealed = StoredKey { private_key: self.seal(&key_purpose(&successor.kid), &successor.private_key)?.into_bytes(), ..successor.clone() };
        // BEGIN IMMEDIATE: one at a time with rotations.
        let mut tx = self.begin_write().await?;
        Ok(withdraw_key_in!(tx, kid, now, &sealed))
    }

    async fn delete_retired_private_keys(&self, now: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE signing_keys SET private_key = X'' \
             WHERE retired_at IS NOT NULL AND retired_at <= ? AND length(private_key) > 0 AND length(public_key) > 0",
        )
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected())
    }

    async fn take_mail_budget(&self, key: &str, now: i64, window_secs: i64, max: u32) -> StoreResult<bool> {
        let sent: i64 = sqlx::query_scalar(
            "INSERT INTO mail_budget (key, window_start, sent) VALUES (?1, ?2, 1) \
             ON CONFLICT(key) DO UPDATE SET \
               sent = CASE WHEN window_start <= ?2 - ?3 THEN 1 ELSE sent + 1 END, \
               window_start = CASE WHEN window_start <= ?2 - ?3 THEN ?2 ELSE window_start END \
             RETURNING sent",
        )
        .bind(key)
        .bind(now)
        .bind(window_secs)
        .fetch_one(&self.write)
        .await?;
        Ok(sent <= i64::from(max))
    }
}
