//! PostgreSQL implementation of [`Store`], for several service instances on
//! one database. Every decision an instance makes (counters, single-use
//! tokens, refresh rotation, the feed) is one atomic statement or one
//! transaction here, never a read-then-write in the process.
//!
//! The revocation feed's order. A Postgres sequence hands out numbers at
//! `nextval`, but transactions commit in any order: a poller at cursor N
//! could read the feed while event N−1 is still uncommitted, move its
//! cursor past it, and never see it. So `seq` comes instead from the single
//! `feed_state` row (`UPDATE … SET head = head + 1 RETURNING head`): the row
//! lock that update takes is held until the transaction ends, so a second
//! feed writer waits for the first to commit (or roll back) before it gets
//! its number. Events therefore become visible in `seq` order, and a reader
//! that sees event N has every event before it. Feed writes are rare (admin
//! actions, sign-outs), so serializing them costs nothing noticeable.
//! `feed_state.head` is also the feed's head, read without touching events.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

use super::pg_connect;
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

pub struct PostgresStore {
    pool: PgPool,
    /// Seals TOTP secrets and private keys (see `kek.rs`).
    kek: Arc<Kek>,
}

/// Key of the transaction-level advisory lock under which an instance
/// checks for and creates the first signing key, or adds one: two rotations
/// at once (one per instance) would each retire only the keys their UPDATE
/// saw, and leave both new keys unretired.
const SIGNING_KEYS_LOCK: i64 = 0x6175_7468_666c_0002;

/// Key of the transaction-level advisory lock under which an instance
/// re-seals the secrets at rest on start (instances starting together take turns).
const RESEAL_LOCK: i64 = 0x6175_7468_666c_0001;

/// See [`super::EditedMigration`].
const EDITED: super::EditedMigration = super::EditedMigration {
    version: 11,
    first_checksum: "123c92aeb9eff0f131df075f79bf275804ef6f8d5a3c1bb767685bb4eb240ad959091c30e81868796687aa1ac9faf7d1",
    catch_up: "ALTER TABLE refresh_tokens ADD COLUMN IF NOT EXISTS dpop_bound BOOLEAN NOT NULL DEFAULT FALSE",
};

/// This release's migrations; `ahead`: the database may hold newer ones (see
/// [`super::migrations_ahead`]), which are then left alone.
fn migrator(ahead: bool) -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations/postgres");
    m.set_ignore_missing(ahead);
    m
}

/// Read under a share lock, a row being updated by another transaction is
/// waited for and then read as committed (see `portable`).
const SHARE_LOCK: &str = " FOR SHARE";
/// Read under this lock, a row is held for an update later in the same
/// transaction: another such reader waits for the commit (see `portable`).
/// NO KEY: inserts referencing the row (its foreign keys) are not held up.
const UPDATE_LOCK: &str = " FOR NO KEY UPDATE";
/// Read under this lock, a row is held for its delete: an insert referencing
/// it (a link mailed to the account) waits for the commit, then fails.
const DELETE_LOCK: &str = " FOR UPDATE";

/// Upper bound on connections one instance holds.
const MAX_CONNECTIONS: u32 = 10;

impl PostgresStore {
    /// Where reads go (the one pool).
    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// Where writes go (the one pool).
    fn writer(&self) -> &PgPool {
        &self.pool
    }

    /// A write transaction (row locks: nothing to take up front, unlike SQLite).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    fn open_secret(&self, purpose: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        sealed::open(&self.kek, purpose, value)
    }

    fn seal(&self, purpose: &str, value: &[u8]) -> StoreResult<String> {
        sealed::seal(&self.kek, purpose, value)
    }

    /// Connects (`postgres://…` URL), applies migrations, and seals with the
    /// current KEK every secret still in clear or sealed with an older one
    /// (a wrong KEK fails here).
    /// `existing`: refuse a database no migration was applied to (see
    /// [`Opening::Existing`](super::Opening::Existing)). `reseal` false:
    /// nothing re-sealed (see [`Opening::Inspect`](super::Opening::Inspect)).
    pub async fn open(
        url: &str,
        kek: Arc<Kek>,
        production: bool,
        existing: bool,
        reseal: bool,
    ) -> StoreResult<Self> {
        let (options, target) = pg_connect::options(url)?;
        if production {
            target.check_production()?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .idle_timeout(Duration::from_secs(60))
            .connect_with(options)
            .await
            .map_err(|e| pg_connect::connect_error(&target, e))?;
        // Whether this connection is encrypted (with `prefer`, up to the server).
        let tls: Option<String> = sqlx::query_scalar(
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
        )
        .fetch_optional(&pool)
        .await
        .unwrap_or_default();
        tracing::info!(database = %target, tls = tls.as_deref().unwrap_or("none"), "connected to PostgreSQL");
        if !target.verifies() && !target.is_local() {
            tracing::warn!(
                database = %target,
                "the PostgreSQL server's identity is not checked: use sslmode=verify-full (with sslrootcert=PATH for a private CA) \
                 unless the network to it is trusted"
            );
        }
        // Migrations take their own advisory lock: instances starting together apply them once.
        // A database a newer release migrated further is run on, not refused.
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        if existing && applied.is_empty() {
            return Err(StoreError::NoDatabase);
        }
        let ahead = super::migrations_ahead(&migrator(false), &applied)?;
        super::warn_migrations_ahead(&ahead);
        let recorded: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
                .bind(EDITED.version)
                .fetch_optional(&pool)
                .await
                .unwrap_or_default();
        if let Some(checksum) =
            super::edited_since_applied(&migrator(false), &EDITED, recorded.as_deref())
        {
            // Instances starting together may both get here: each step is idempotent.
            sqlx::query(EDITED.catch_up).execute(&pool).await?;
            sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
                .bind(checksum)
                .bind(EDITED.version)
                .execute(&pool)
                .await?;
        }
        migrator(!ahead.is_empty()).run(&pool).await?;
        let store = Self { pool, kek };
        if !reseal {
            return Ok(store);
        }
        let resealed = store.reseal_all().await?;
        if resealed > 0 {
            tracing::info!(
                values = resealed,
                kek = store.kek.id(),
                "secrets at rest sealed with the current key-encryption key"
            );
        }
        Ok(store)
    }

    /// One transaction: every TOTP secret and private key under the current KEK.
    async fn reseal_all(&self) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(RESEAL_LOCK)
            .execute(&mut *tx)
            .await?;
        record_kek_in_use!(&mut *tx, self.kek);
        let kept = kept_sealed!(&mut *tx, self.kek);
        let mut count = 0;
        // Only the rows holding a value to re-seal are read and locked: every
        // start (and every command) comes here, and locking every user with a
        // second factor held their sign-ins until it committed.
        let sql = format!(
            "SELECT id, totp_secret, totp_pending FROM users \
             WHERE (totp_secret IS NOT NULL AND {}) OR (totp_pending IS NOT NULL AND {}) FOR UPDATE",
            kept.excluded("totp_secret", 1),
            kept.excluded("totp_pending", 1),
        );
        let mut query = sqlx::query_as(&sql);
        for pattern in kept.patterns() {
            query = query.bind(pattern.as_str());
        }
        let users: Vec<(String, Option<String>, Option<String>)> =
            query.fetch_all(&mut *tx).await?;
        for (id, secret, pending) in &users {
            for (column, value) in [("totp_secret", secret), ("totp_pending", pending)] {
                let Some(value) = value else { continue };
                if let Some(sealed) =
                    sealed::resealed(&self.kek, &kept, &totp_purpose(id), value.as_bytes())?
                {
                    sqlx::query(&format!("UPDATE users SET {column} = $1 WHERE id = $2"))
                        .bind(sealed)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    count += 1;
                }
            }
        }
        let sql = format!(
            "SELECT kid, private_key FROM signing_keys WHERE length(private_key) > 0 AND {} FOR UPDATE",
            kept.excluded("private_key", 1),
        );
        let mut query = sqlx::query_as(&sql);
        for pattern in kept.patterns() {
            query = query.bind(pattern.as_bytes());
        }
        let keys: Vec<(String, Vec<u8>)> = query.fetch_all(&mut *tx).await?;
        for (kid, value) in &keys {
            if let Some(sealed) = sealed::resealed(&self.kek, &kept, &key_purpose(kid), value)? {
                sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
                    .bind(sealed.into_bytes())
                    .bind(kid)
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
            if let Some(value) = secret.take() {
                let clear = sealed::open(&self.kek, &purpose, value.as_bytes())?;
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
async fn latest_token_expiry(tx: &mut PgConnection, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MAX(expires_at), 0) FROM access_tokens WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(tx)
        .await
}

/// Appends one feed event inside the caller's transaction. The `feed_state`
/// row lock taken here is held until that transaction ends: it is what keeps
/// feed events committing in `seq` order (see the module comment). Callers
/// take every other row lock first, so feed writers cannot deadlock. The
/// feed-change notification (`pg_notify` on [`FEED_CHANNEL`]) is sent in the
/// same transaction, so it is delivered only once the event has committed.
async fn append_event(
    tx: &mut PgConnection,
    kind: FeedKind,
    subject: &str,
    not_before: Option<i64>,
    expires_at: i64,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let seq: i64 =
        sqlx::query_scalar("UPDATE feed_state SET head = head + 1 WHERE id = 1 RETURNING head")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("INSERT INTO revocation_events (seq, kind, subject, not_before, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(seq)
        .bind(kind.as_str())
        .bind(subject)
        .bind(not_before)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(FEED_CHANNEL)
        .bind(seq.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(seq)
}

/// The `LISTEN/NOTIFY` channel on which every committed feed event is announced.
pub const FEED_CHANNEL: &str = "authflow_feed";

/// The channel on which every committed key withdrawal is announced.
pub const KEYS_CHANNEL: &str = "authflow_keys";

/// `LISTEN` on [`FEED_CHANNEL`]: sent again on a connection that listens,
/// it changes nothing.
const LISTEN_STATEMENT: &str = "LISTEN authflow_feed";

/// Wait before listening again after the listening connection failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// After this long without a notification the listening connection is checked.
const LISTEN_CHECK: Duration = Duration::from_secs(10);

/// Wakes `feed` on every feed notification and `keys` on every key one, and
/// both after every (re)connection (notifications sent while disconnected
/// are lost: the woken side re-reads).
async fn listen_for_changes(
    pool: PgPool,
    feed: Arc<tokio::sync::Notify>,
    keys: Arc<tokio::sync::Notify>,
) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for feed changes; retrying");
                tokio::time::sleep(LISTEN_RETRY).await;
                continue;
            }
        };
        let listened = async { Ok(listener.listen_all([FEED_CHANNEL, KEYS_CHANNEL]).await?) };
        if let Err(e) = super::bounded(listened).await {
            tracing::warn!(error = %e, "cannot listen for feed changes; retrying");
            tokio::time::sleep(LISTEN_RETRY).await;
            continue;
        }
        feed.notify_one();
        keys.notify_one();
        // `try_recv` gives `None` when the connection was lost (it reconnects
        // on the next call): wake then too, something may have been missed.
        loop {
            // Quiet for a while: the connection is checked. One a failover
            // silenced (no reset: the old primary's host gone, a partition)
            // is never closed by the kernel while idle, and nothing would
            // arrive on it any more, from any instance.
            let failed = match tokio::time::timeout(LISTEN_CHECK, listener.try_recv()).await {
                Ok(Ok(notification)) => {
                    match notification {
                        Some(n) if n.channel() == KEYS_CHANNEL => keys.notify_one(),
                        Some(_) => feed.notify_one(),
                        None => {
                            feed.notify_one();
                            keys.notify_one();
                        }
                    }
                    continue;
                }
                Ok(Err(e)) => StoreError::from(e),
                // Checked with the statement it listens with (the same again
                // changes nothing), so the connection still shows as listening.
                Err(_) => match super::bounded(async {
                    sqlx::query(LISTEN_STATEMENT).execute(&mut listener).await?;
                    Ok(())
                })
                .await
                {
                    Ok(()) => continue,
                    Err(e) => e,
                },
            };
            tracing::warn!(error = %failed, "feed change listener failed; reconnecting");
            tokio::time::sleep(LISTEN_RETRY).await;
            break;
        }
    }
}

async fn insert_key(tx: &mut PgConnection, k: &StoredKey) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
        .bind(k.active_at)
        .execute(&mut *tx)
        .await?;
    insert_signing_key_in!(tx, k);
    Ok(())
}

super::portable::impl_store! {
    PostgresStore;

    fn shared_by_instances(&self) -> bool {
        true
    }

    fn notify_changes(&self, feed: Arc<tokio::sync::Notify>, keys: Arc<tokio::sync::Notify>) -> bool {
        tokio::spawn(listen_for_changes(self.pool.clone(), feed, keys));
        true
    }

    async fn epoch(&self) -> StoreResult<String> {
        // ON CONFLICT DO NOTHING: the first value written wins forever.
        sqlx::query("INSERT INTO meta (key, value) VALUES ('feed_epoch', $1) ON CONFLICT (key) DO NOTHING")
            .bind(crate::domain::random_id())
            .execute(&self.pool)
            .await?;
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'feed_epoch'").fetch_one(&self.pool).await.map_err(StoreError::from)
    }

    async fn create_user(&self, u: &User) -> StoreResult<()> {
        let r = sqlx::query(
            "INSERT INTO users (id, email, password_hash, roles, scope, email_verified, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(u.roles.join(" "))
        .bind(&u.scope)
        .bind(u.email_verified)
        .bind(u.created_at)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Conflict("the email"));
        }
        Ok(())
    }

    async fn users_with_non_ascii_email(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as("SELECT id, email FROM users WHERE email ~ '[^ -~]'").fetch_all(&self.pool).await?)
    }

    async fn set_email_verified(&self, user_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1").bind(user_id).execute(&self.pool).await?;
        Ok(())
    }

    async fn confirm_totp(&self, user_id: &str, secret: &str, session_id: &str, step: i64) -> StoreResult<bool> {
        // Sealed values differ on every write: open the pending secret (row
        // locked), compare, then move exactly the sealed value compared.
        let mut tx = self.begin_write().await?;
        let pending: Option<String> = sqlx::query_scalar("SELECT totp_pending FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
        let Some(pending) = pending else { return Ok(false) };
        if sealed::open(&self.kek, &totp_purpose(user_id), pending.as_bytes())? != secret.as_bytes() {
            return Ok(false);
        }
        let r = sqlx::query(
            "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $1 \
             WHERE id = $2 AND totp_pending = $3 AND totp_pending_session = $4",
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
        let counted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO second_factor_guard (user_id, attempts) VALUES ($1, 1) \
             ON CONFLICT (user_id) DO UPDATE SET attempts = second_factor_guard.attempts + 1 \
             WHERE second_factor_guard.locked_until <= $2 \
             RETURNING attempts",
        )
        .bind(user_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(n) = counted {
            return Ok(SecondFactorAttempt::Counted(u32::try_from(n).unwrap_or(u32::MAX)));
        }
        let until: i64 = sqlx::query_scalar("SELECT locked_until FROM second_factor_guard WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(SecondFactorAttempt::Locked(until))
    }

    async fn second_factor_lock(&self, user_id: &str, now: i64, base_secs: i64, max_secs: i64) -> StoreResult<Option<i64>> {
        // Two lockers on two instances: the second waits on the row lock, re-checks
        // `locked_until` and finds the first one's lock. No attempt counted: a
        // right code signed in meanwhile (its success reset the count), and the
        // attempt that came to lock was the owner's own second submit.
        sqlx::query_scalar(
            "UPDATE second_factor_guard SET attempts = 0, lockouts = lockouts + 1, \
             locked_until = $2 + LEAST($4, $3 * (1::BIGINT << LEAST(lockouts, 30)::INTEGER)) \
             WHERE user_id = $1 AND locked_until <= $2 AND attempts > 0 RETURNING locked_until",
        )
        .bind(user_id)
        .bind(now)
        .bind(base_secs)
        .bind(max_secs)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    async fn signin_attempt(&self, key: &str, now: i64, quiet_secs: i64, limit: u32, base_secs: i64, max_secs: i64) -> StoreResult<SigninAttempt> {
        // One statement: attempts on any instance wait on the row lock and see the
        // count and lock of the one before. SET reads the old row, so the new count
        // is spelt out. `last_failure` moves to now at once, so a burst after a
        // quiet period starts over once, not at every attempt; `prior_failure`
        // keeps the old value for `undo_signin_attempt`, and `attempt_seq`
        // numbers the attempt.
        let count = "(CASE WHEN $2 - t.last_failure > $3 THEN 1 ELSE t.failures + 1 END)";
        let counted: Option<(i64, i64, i64)> = sqlx::query_as(&format!(
            "INSERT INTO signin_throttle AS t (key, failures, last_failure, locked_until, attempt_seq, prior_failure) \
             VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $2 + LEAST($6, $5) ELSE 0 END, 1, 0) \
             ON CONFLICT (key) DO UPDATE SET \
               failures = {count}, \
               locked_until = CASE WHEN {count} >= $4 \
                 THEN $2 + LEAST($6, $5 * (1::BIGINT << LEAST({count} - $4, 20)::INTEGER)) ELSE 0 END, \
               prior_failure = t.last_failure, \
               last_failure = $2, \
               attempt_seq = t.attempt_seq + 1 \
             WHERE t.locked_until <= $2 \
             RETURNING failures, locked_until, attempt_seq"
        ))
        .bind(key)
        .bind(now)
        .bind(quiet_secs)
        .bind(i64::from(limit))
        .bind(base_secs)
        .bind(max_secs)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = counted {
            return Ok(SigninAttempt::counted(row));
        }
        let until: Option<i64> = sqlx::query_scalar("SELECT locked_until FROM signin_throttle WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(SigninAttempt::refused(until, now))
    }

    async fn count_signin_failure(&self, key: &str, now: i64, quiet_secs: i64) -> StoreResult<u32> {
        // One statement: concurrent failures on any instance each count. SET reads the old row.
        // A new `attempt_seq`: an attempt taken back later leaves this time alone.
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO signin_throttle AS t (key, failures, last_failure, locked_until, attempt_seq) VALUES ($1, 1, $2, 0, 1) \
             ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN $2 - t.last_failure > $3 THEN 1 ELSE t.failures + 1 END, \
               locked_until = CASE WHEN $2 - t.last_failure > $3 THEN 0 ELSE t.locked_until END, \
               last_failure = $2, \
               attempt_seq = t.attempt_seq + 1 \
             RETURNING failures",
        )
        .bind(key)
        .bind(now)
        .bind(quiet_secs)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn lock_signin(&self, key: &str, until: i64) -> StoreResult<()> {
        sqlx::query("UPDATE signin_throttle SET locked_until = GREATEST(locked_until, $2) WHERE key = $1")
            .bind(key)
            .bind(until)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn signin_locked_until(&self, keys: &[String]) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(locked_until), 0)::BIGINT FROM signin_throttle WHERE key = ANY($1)")
            .bind(keys)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from)
    }

    async fn feed_head(&self) -> StoreResult<FeedHead> {
        let (head, pruned_through, epoch): (i64, i64, Option<String>) = sqlx::query_as(
            "SELECT head, pruned_through, (SELECT value FROM meta WHERE key = 'feed_epoch') FROM feed_state WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(FeedHead { head, pruned_through, epoch })
    }

    async fn prune_feed(&self, forgotten_through: i64) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let (deleted, pruned): (i64, Option<i64>) = sqlx::query_as(
            "WITH gone AS (DELETE FROM revocation_events WHERE expires_at <= $1 RETURNING seq) SELECT COUNT(*), MAX(seq) FROM gone",
        )
        .bind(forgotten_through)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(seq) = pruned {
            sqlx::query("UPDATE feed_state SET pruned_through = GREATEST(pruned_through, $1) WHERE id = 1")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        // Access-token records exist to revoke a token by jti: kept as long.
        sqlx::query("DELETE FROM access_tokens WHERE expires_at <= $1")
            .bind(forgotten_through)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    }

    async fn add_first_signing_key(&self, k: &StoredKey) -> StoreResult<bool> {
        let sealed = StoredKey { private_key: sealed::seal(&self.kek, &key_purpose(&k.kid), &k.private_key)?.into_bytes(), ..k.clone() };
        let mut tx = self.begin_write().await?;
        // Held to commit: a second instance checks only after the first key is visible.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SIGNING_KEYS_LOCK).execute(&mut *tx).await?;
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys)").fetch_one(&mut *tx).await?;
        if any {
            return Ok(false);
        }
        insert_key(&mut tx, &sealed).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn add_signing_key(&self, k: &StoredKey, limit: PublishedLimit) -> StoreResult<Result<(), usize>> {
        let sealed = StoredKey { private_key: sealed::seal(&self.kek, &key_purpose(&k.kid), &k.private_key)?.into_bytes(), ..k.clone() };
        let mut tx = self.begin_write().await?;
        // Held to commit: the next rotation's count and UPDATE then see this key.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SIGNING_KEYS_LOCK).execute(&mut *tx).await?;
        let published = published_keys_in!(tx, limit);
        if published >= limit.max {
            return Ok(Err(published));
        }
        insert_key(&mut tx, &sealed).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn withdraw_signing_key(&self, kid: &str, now: i64, successor: &StoredKey) -> StoreResult<Withdrawal> {
        let sealed = StoredKey { private_key: sealed::seal(&self.kek, &key_purpose(&successor.kid), &successor.private_key)?.into_bytes(), ..successor.clone() };
        let mut tx = self.begin_write().await?;
        // Held to commit: one at a time with rotations.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SIGNING_KEYS_LOCK).execute(&mut *tx).await?;
        // Delivered only if the withdrawal commits: every instance reloads its keys at once.
        sqlx::query("SELECT pg_notify($1, $2)").bind(KEYS_CHANNEL).bind(kid).execute(&mut *tx).await?;
        Ok(withdraw_key_in!(tx, kid, now, &sealed))
    }

    async fn delete_retired_private_keys(&self, now: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE signing_keys SET private_key = ''::BYTEA \
             WHERE retired_at IS NOT NULL AND retired_at <= $1 AND length(private_key) > 0 AND length(public_key) > 0",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn take_mail_budget(&self, key: &str, now: i64, window_secs: i64, max: u32) -> StoreResult<bool> {
        let sent: i64 = sqlx::query_scalar(
            "INSERT INTO mail_budget AS b (key, window_start, sent) VALUES ($1, $2, 1) \
             ON CONFLICT (key) DO UPDATE SET \
               sent = CASE WHEN b.window_start <= $2 - $3 THEN 1 ELSE b.sent + 1 END, \
               window_start = CASE WHEN b.window_start <= $2 - $3 THEN $2 ELSE b.window_start END \
             RETURNING sent",
        )
        .bind(key)
        .bind(now)
        .bind(window_secs)
        .fetch_one(&self.pool)
        .await?;
        Ok(sent <= i64::from(max))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listening_connection_is_checked_on_the_channel_it_listens_on() {
        assert_eq!(
            super::LISTEN_STATEMENT,
            format!("LISTEN {}", super::FEED_CHANNEL)
        );
    }
}
