//! Storage behind one trait. Routes only see [`Store`]; the implementation
//! is chosen at start-up from the database URL ([`open`]): SQLite for one
//! process, PostgreSQL for several instances sharing one database.
//!
//! Every method that revokes something appends its revocation-feed event in
//! the same transaction, so the feed can never miss a revocation that was
//! acknowledged.

pub mod by_user;
pub mod maintenance;
mod page;
mod pg_connect;
mod portable;
pub mod postgres;
mod rows;
mod sealed;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::kek::Kek;
pub use page::{Cursor, IdCursor, PageCursor, PageRequest};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The backend a database URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite:…` or `postgres://…` / `postgresql://…`; anything else is refused.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Whether opening may set a database up where there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// The service and `migrate` (and the first admin's `user create`):
    /// create the SQLite file, apply the migrations to an empty database.
    CreateIfMissing,
    /// Every other command acts on the database a running service uses: at
    /// a mistyped path or URL it must fail, not revoke, rotate or mint in a
    /// new, empty database nobody reads and report success.
    Existing,
    /// As [`Opening::Existing`], and opening re-seals nothing: for
    /// `kek status`, which counts what is still under an older KEK (possibly
    /// with the new key alone configured, before `kek.previous` is dropped).
    Inspect,
}

/// Opens the store the URL names, applies its migrations and seals every
/// secret at rest with the current KEK. `production` holds a remote
/// database to a TLS mode named on purpose (see `pg_connect`).
pub async fn open(
    url: &str,
    kek: Arc<Kek>,
    production: bool,
    opening: Opening,
) -> StoreResult<Arc<dyn Store>> {
    let existing = opening != Opening::CreateIfMissing;
    let reseal = opening != Opening::Inspect;
    match Backend::of_url(url) {
        Some(Backend::Sqlite) => {
            if existing && !SqliteStore::exists(url).await? {
                return Err(StoreError::NoDatabase);
            }
            Ok(Arc::new(SqliteStore::open_with(url, kek, reseal).await?))
        }
        Some(Backend::Postgres) => Ok(Arc::new(
            PostgresStore::open(url, kek, production, existing, reseal).await?,
        )),
        None => Err(StoreError::UnsupportedUrl),
    }
}

/// The versions in `applied` (those recorded in a database) that are newer
/// than every migration of this release: a newer release of the service
/// migrated the database (a rolling upgrade under way, or one rolled back).
/// Migrations are additive, so this release still runs on that schema, and
/// refusing to start would turn every restart during a rollout, and every
/// rollback, into an outage. An unknown version *older* than this release's
/// newest is another line of history altogether: refused, as before.
pub(crate) fn migrations_ahead(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
) -> StoreResult<Vec<i64>> {
    let newest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let mut ahead = Vec::new();
    for &version in applied {
        if migrator.version_exists(version) {
            continue;
        }
        if version < newest {
            return Err(sqlx::migrate::MigrateError::VersionMissing(version).into());
        }
        ahead.push(version);
    }
    Ok(ahead)
}

/// A migration edited after commits of this repository had applied it:
/// 81460e9 added `refresh_tokens.dpop_bound` to the DPoP binding migration
/// that aff1dbb had added. A database those commits migrated records the
/// first form's checksum, which sqlx refuses ("previously applied but has
/// been modified"), and lacks the column. Such a database is brought to
/// the edited form (`catch_up`) and its recorded checksum to the file's.
pub(crate) struct EditedMigration {
    pub version: i64,
    /// SHA-384 of the file as first applied.
    pub first_checksum: &'static str,
    pub catch_up: &'static str,
}

/// The checksum `migrator` has for `edit`'s version, when `recorded` is
/// that of the first form (the database needs `edit.catch_up`).
pub(crate) fn edited_since_applied(
    migrator: &sqlx::migrate::Migrator,
    edit: &EditedMigration,
    recorded: Option<&[u8]>,
) -> Option<Vec<u8>> {
    if recorded.map(hex::encode).as_deref() != Some(edit.first_checksum) {
        return None;
    }
    migrator
        .iter()
        .find(|m| m.version == edit.version)
        .map(|m| m.checksum.to_vec())
}

/// Logs that the database is ahead of this release (see [`migrations_ahead`]).
pub(crate) fn warn_migrations_ahead(ahead: &[i64]) {
    if !ahead.is_empty() {
        tracing::warn!(
            ?ahead,
            "the database has migrations of a newer release; running on it (finish or undo the upgrade)"
        );
    }
}

/// Why a store call failed. Callers branch on [`StoreError::Conflict`];
/// everything else is a failure of the database or of the data in it, which
/// the HTTP layer answers with a generic 500 (`error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused the query or could not be reached.
    #[error("storage error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("storage error: migrations failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The write collides with an existing row (a unique key is taken);
    /// names what is taken.
    #[error("storage error: {0} is taken")]
    Conflict(&'static str),
    /// The first connection to the database failed; the text names the
    /// server (never the URL: it may carry the password) and what to change.
    #[error("storage error: {0}")]
    Connect(String),
    /// The database URL names no backend this service has.
    #[error("storage error: the database URL must start with sqlite: or postgres://")]
    UnsupportedUrl,
    /// A command that acts on a running service's database found none
    /// there (see [`Opening::Existing`]).
    #[error(
        "storage error: no authflow database there (`database.url`, by default in `server.data_dir`): \
         this command acts on the database a service runs on; check the settings, or set one up \
         first with `authflow-auth migrate` or by starting the service"
    )]
    NoDatabase,
    /// A secret at rest cannot be sealed or opened (e.g. the wrong
    /// key-encryption key); the text says which key sealed it.
    #[error("storage error: {0}")]
    Sealed(String),
    /// A stored value is not what this service writes (corrupt or foreign data).
    #[error("storage error: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How long a background read of the database may wait for its answer.
/// A query sent on a connection a failover silenced (the old primary's host
/// gone, a partition: no reset) is never answered, and neither sqlx nor the
/// socket bounds the wait (no keepalive); a task that waits for it holds
/// what it holds (the feed's sync lock, a follower loop) for as long.
pub const DATABASE_WAIT_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// `step`, given up as the database being unavailable once it has waited
/// [`DATABASE_WAIT_BOUND`].
pub async fn bounded<T>(step: impl std::future::Future<Output = StoreResult<T>>) -> StoreResult<T> {
    tokio::time::timeout(DATABASE_WAIT_BOUND, step)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the database did not answer in time",
            ))))
        })
}

/// The rows of `rows`, given up as [`bounded`] gives up once none has come
/// for [`DATABASE_WAIT_BOUND`]: a long read that keeps answering (the whole
/// revocation list, a million rows over a slow link) is not cut short; one
/// on a connection that stopped answering is.
pub async fn collect_while_answering<R>(
    rows: impl futures_util::Stream<Item = Result<R, sqlx::Error>>,
) -> StoreResult<Vec<R>> {
    use futures_util::TryStreamExt;
    let mut rows = std::pin::pin!(rows);
    let mut collected = Vec::new();
    while let Some(row) = bounded(async { Ok(rows.try_next().await?) }).await? {
        collected.push(row);
    }
    Ok(collected)
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub scope: String,
    pub email_verified: bool,
    pub banned_at: Option<i64>,
    pub totp_secret: Option<String>,
    pub totp_pending: Option<String>,
    pub totp_last_step: i64,
    pub created_at: i64,
    /// How many times the password was replaced. A sign-in carries the
    /// version whose password it checked, and gets a session only while that
    /// is still the user's (see [`Store::create_session`]).
    pub password_version: i64,
}

impl User {
    /// A new account: a fresh id, the default scope, no second factor yet,
    /// the e-mail not verified (the CLI and tests set `email_verified` themselves).
    pub fn new(email: &str, password_hash: String, roles: Vec<String>, created_at: i64) -> Self {
        Self {
            id: crate::domain::random_id(),
            email: email.to_owned(),
            password_hash,
            roles,
            scope: "profile".into(),
            email_verified: false,
            banned_at: None,
            totp_secret: None,
            totp_pending: None,
            totp_last_step: 0,
            created_at,
            password_version: 0,
        }
    }
}

/// A caller of the client-credentials grant (RFC 6749 §4.4).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ServiceAccount {
    pub client_id: String,
    /// The client secret's SHA-256 as `sha256$<hex>` (an argon2id PHC string
    /// when stored by an earlier release; never the secret itself); empty
    /// when the account authenticates with its key only.
    pub secret_hash: String,
    /// Space-separated scopes the account may be granted.
    pub scope: String,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
    pub rotated_at: i64,
    /// The public JWK (ES256 or EdDSA) its `private_key_jwt` assertions are
    /// checked with, if it registered one.
    pub public_jwk: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPurpose {
    VerifyEmail,
    ResetPassword,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Challenge {
    pub id: String,
    pub user_id: String,
    /// `email` or `totp`.
    pub method: String,
    pub code_hash: Option<String>,
    pub expires_at: i64,
    pub attempts: u32,
    pub consumed_at: Option<i64>,
    pub created_at: i64,
    /// The user's [`User::password_version`] whose password this sign-in
    /// checked: a reset since then ends it.
    pub password_version: i64,
}

/// The sign-in throttle's answer to one password attempt against a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigninAttempt {
    /// Counted: the key now holds `failures` (this attempt included), and
    /// `locked_until` is its lock (written by this attempt when `failures`
    /// reached the limit; otherwise not in force). `seq` numbers the attempt
    /// among the key's, for [`Store::undo_signin_attempt`].
    Counted {
        failures: u32,
        locked_until: i64,
        seq: i64,
    },
    /// Locked until this time; nothing was counted.
    Locked(i64),
}

impl SigninAttempt {
    /// The attempt statement's row (`failures`, `locked_until`, `attempt_seq`)
    /// when it counted the attempt.
    pub(crate) fn counted((failures, locked_until, seq): (i64, i64, i64)) -> Self {
        SigninAttempt::Counted {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            locked_until,
            seq,
        }
    }

    /// Not counted: the key's lock as read after the statement. None or past
    /// means a success cleared it in between; this attempt is still refused, briefly.
    pub(crate) fn refused(locked_until: Option<i64>, now: i64) -> Self {
        SigninAttempt::Locked(locked_until.unwrap_or(0).max(now + 1))
    }
}

/// What became of a refresh token's rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    Rotated,
    /// The token was used already (by a parallel request, on any instance).
    AlreadyUsed,
    /// The session was revoked or expired since it was read (a logout that
    /// committed meanwhile).
    SessionEnded,
    /// The session rotated its refresh token [`RefreshLimit::max_per_window`]
    /// times within the window already; nothing was written (the token
    /// stays unused). It may rotate again at this time.
    Throttled(i64),
}

/// How many rotated-out refresh tokens a session keeps for reuse detection
/// (each rotation keeps the token it replaced): the newest ones, by their
/// rotation. Older ones are deleted by the rotation that pushes them out, so
/// a session holds at most this many plus its current one, however often it
/// refreshes. A token pushed out is refused as unknown (nothing rotated,
/// nothing revoked) rather than taken for reuse; with the per-session limit
/// ([`RefreshLimit`]) a second holder needs this many rotations, hours at
/// the limit, before the owner's old token is forgotten.
pub const ROTATED_REFRESH_TOKENS_KEPT: u32 = 256;

/// The per-session refresh limit [`Store::rotate_refresh`] enforces, counted
/// from the rotations the session keeps (so it holds across instances and
/// restarts, with no table of its own): at most `max_per_window` rotations
/// within any `window_secs`. `max_per_window` must not exceed
/// [`ROTATED_REFRESH_TOKENS_KEPT`] (the configuration bounds it).
/// The most signing keys published at once: those not retired, and those
/// retired less than `retired_kept_secs` before `now` (still in the JWKS).
#[derive(Clone, Copy, Debug)]
pub struct PublishedLimit {
    pub max: usize,
    pub retired_kept_secs: i64,
    pub now: i64,
}

/// The signing keys `limit` counts as published, in SQL (`$1`: its
/// `retired_kept_secs`, `$2`: its `now`).
pub(crate) const COUNT_PUBLISHED_KEYS: &str =
    "SELECT COUNT(*) FROM signing_keys WHERE withdrawn_at IS NULL AND (retired_at IS NULL OR retired_at + $1 > $2)";

/// What [`Store::withdraw_signing_key`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawal {
    /// No key has that kid: nothing was written.
    Unknown,
    /// It was withdrawn before: nothing was written.
    Already,
    /// Withdrawn now; `replaced`: the successor was added and signs.
    Done { replaced: bool },
}

/// The tokens a service account holds, killed with a change of its
/// credentials: `subject` is their `sub`; the feed entry is kept at least
/// until `expires_at` (see `Store::disable_service_account`).
#[derive(Clone, Copy, Debug)]
pub struct TokensBan<'a> {
    pub subject: &'a str,
    pub expires_at: i64,
}

/// How many live sessions a user may hold once a new one is stored
/// (`max_live`, the new one included), and how long the revocation of one
/// it ends is published (`feed_expires_at`, or until its last access token
/// expires if later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionCap {
    pub max_live: u32,
    pub feed_expires_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshLimit {
    pub max_per_window: u32,
    pub window_secs: i64,
}

/// The per-account second-factor guard's answer to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondFactorAttempt {
    /// Counted: this is the account's `n`-th attempt since the last success or lockout.
    Counted(u32),
    /// Locked until this time; nothing was counted.
    Locked(i64),
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub device_secret_hash: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// RFC 7638 thumbprint of the DPoP key the session is bound to (RFC
    /// 9449 §5): its refresh tokens need a proof from that key. `None`: not bound.
    pub dpop_jkt: Option<String>,
    /// When a refresh bound it (its first with a proof); `None`: bound at
    /// its start, or not bound.
    pub dpop_bound_at: Option<i64>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RefreshRecord {
    pub hash: String,
    pub session_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// Whether its session was bound to a DPoP key when it was issued.
    pub dpop_bound: bool,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct IssuedToken {
    pub jti: String,
    pub user_id: String,
    pub session_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedKind {
    Token,
    Session,
    Subject,
}

impl FeedKind {
    /// The `kind` column of a feed event (both stores).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Session => "session",
            Self::Subject => "subject",
        }
    }
}

/// Equal when the same revocation (the sequence number too): what a history
/// that went back wrote under a lost event's number is told apart by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEvent {
    pub seq: i64,
    pub kind: FeedKind,
    /// jti, sid or sub according to `kind`.
    pub subject: String,
    pub not_before: Option<i64>,
    pub expires_at: i64,
}

/// What a TOTP enrolment was proven against when it began: its pending
/// secret is written only while that still holds. The password is checked
/// while another request may be setting up the first authenticator, or a
/// reset may be under way: written after either, the password alone would
/// have replaced an authenticator, or outlived the reset. A code is checked
/// while an admin may be removing that authenticator (lost, or stolen), or
/// its owner replacing it: written after either, a code of an authenticator
/// the account no longer has would set up the next one.
#[derive(Clone, Copy, Debug)]
pub struct EnrolmentProof<'a> {
    /// The user's [`User::password_version`] when the proof was checked.
    pub password_version: i64,
    /// The secret of the authenticator whose code proved the owner, which
    /// must still be the account's; `None`: proven by the password, with no
    /// authenticator set up, and one must still not be.
    pub authenticator: Option<&'a str>,
}

/// The second factor a new session was signed in with
/// ([`Store::create_session_by`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedInWith<'a> {
    /// Nothing checked here (a session minted by the CLI).
    Unchecked,
    /// A mailed code: stored only while the user has no authenticator.
    MailedCode,
    /// A code of this TOTP secret: stored only while it is still the
    /// account's authenticator (not removed or replaced meanwhile).
    Authenticator(&'a str),
}

/// What [`Store::use_totp_step`] made of a code's time step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotpStep {
    /// Recorded as used: the code counts.
    Recorded,
    /// This step, or a later one, was used already (a replay, a double submit).
    UsedBefore,
    /// The secret is no longer the account's authenticator (removed or
    /// replaced since the code was checked against it).
    NotCurrent,
}

#[derive(Clone)]
pub struct StoredKey {
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: String,
    /// Empty once the key no longer signs (deleted; only the public half is
    /// kept), or when it could not be opened (see `private_key_unopened`).
    pub private_key: Vec<u8>,
    /// Why the stored private half could not be opened: sealed under a KEK
    /// this process does not hold (another instance already runs a newer
    /// `kek.key`). Its public half is still good.
    pub private_key_unopened: Option<String>,
    /// Empty only in rows written before the public half was stored.
    pub public_key: Vec<u8>,
    pub created_at: i64,
    pub publish_at: i64,
    pub active_at: i64,
    pub retired_at: Option<i64>,
    /// When `keys withdraw` took it out (its private half leaked): from then
    /// on it is in no JWKS, verifies nothing and signs nothing.
    pub withdrawn_at: Option<i64>,
}

/// `Debug` leaves the private key out.
impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("publish_at", &self.publish_at)
            .field("active_at", &self.active_at)
            .field("retired_at", &self.retired_at)
            .field("withdrawn_at", &self.withdrawn_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Default, serde::Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub at: i64,
    pub event: String,
    pub outcome: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

/// An audit row as read back: its entry and its id (the log's insertion
/// order, the cursor of its pages).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    #[sqlx(flatten)]
    pub entry: AuditEntry,
}

/// Position of the revocation feed: the newest event and the newest event
/// ever pruned (a cursor older than that is "too old"), and the epoch the
/// database holds (`None` before the first instance started on it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedHead {
    pub head: i64,
    pub pruned_through: i64,
    pub epoch: Option<String>,
}

/// What one [`Store::reseal_batch`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResealReport {
    /// Values now sealed with the current KEK.
    pub resealed: u64,
    /// Values this process's KEKs cannot open (sealed with a key that is
    /// neither `kek` nor in `kek.previous`): left as they are, each reason kept.
    pub unopened: Vec<String>,
}

impl ResealReport {
    /// The value to write from one `sealed::resealed` outcome: none when it is
    /// current already, or when it could not be opened (the reason kept).
    pub fn to_write<T, E: std::fmt::Display>(
        &mut self,
        resealed: Result<Option<T>, E>,
    ) -> Option<T> {
        resealed.unwrap_or_else(|e| {
            self.unopened.push(e.to_string());
            None
        })
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;
    /// True when other service instances may write to the same database, so
    /// this one must follow their writes (the revocation feed) promptly.
    fn shared_by_instances(&self) -> bool {
        false
    }
    /// Wakes `feed` whenever any instance commits a feed event, and `keys`
    /// whenever one withdraws a signing key (both whenever the channel had
    /// to be re-established, since announcements may have been missed
    /// meanwhile), so this one syncs its feed — and wakes its long polls —
    /// or reloads its keys at once. False when the store has no such
    /// channel (SQLite: one process writes, and its own writes sync
    /// directly; another process's are read within a second).
    fn notify_changes(
        &self,
        feed: std::sync::Arc<tokio::sync::Notify>,
        keys: std::sync::Arc<tokio::sync::Notify>,
    ) -> bool {
        let _ = (feed, keys);
        false
    }
    /// A random identifier of this database, created on first use.
    async fn epoch(&self) -> StoreResult<String>;
    /// Replaces the feed epoch `old` with a fresh one (unless another
    /// instance already did) and returns the epoch now stored: the feed's
    /// history went back (a restore, a failover to a lagging replica), so
    /// every cursor handed out before names a position that no longer exists.
    async fn renew_epoch(&self, old: &str) -> StoreResult<String>;

    /// Adds a user; [`StoreError::Conflict`] when the email is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
    /// Users oldest first, by `(created_at, id)`.
    async fn list_users(&self, page: &PageRequest) -> StoreResult<Vec<User>>;
    /// `(id, email)` of the users whose stored email has a character outside
    /// printable ASCII: the only ones an earlier, plainer normalization can
    /// have stored in another form than `Email::parse` gives today.
    async fn users_with_non_ascii_email(&self) -> StoreResult<Vec<(String, String)>>;
    /// Changes a user's stored email from `from` to `to`: false when the row
    /// no longer holds `from`, [`StoreError::Conflict`] when `to` is taken.
    async fn rename_email(&self, user_id: &str, from: &str, to: &str) -> StoreResult<bool>;
    async fn set_email_verified(&self, user_id: &str) -> StoreResult<()>;
    /// Replaces the password (a new [`User::password_version`]).
    async fn set_password(&self, user_id: &str, password_hash: &str) -> StoreResult<()>;
    /// Replaces the hash `old` of a user's password with `new`, a hash of the
    /// same password under today's cost: the same [`User::password_version`].
    /// False when the row no longer holds `old` (the password changed since).
    async fn rehash_password(&self, user_id: &str, old: &str, new: &str) -> StoreResult<bool>;
    /// A password reset, in one transaction: uses up the reset token `hash`
    /// (unused, unexpired), sets `password_hash` (a new
    /// [`User::password_version`], so no sign-in begun with the old password
    /// gets a session), marks the email verified (the token was mailed to
    /// it), uses up every other reset token of the user and ends their open
    /// sign-in challenges, and revokes every live session of the user (one
    /// feed event each, kept until `feed_expires_at` at least): the new
    /// password and the end of the sessions the old one opened commit
    /// together, or not at all. Resets of one user take turns. The user's id
    /// and the ids of the sessions ended, or `None` when the token is not valid.
    async fn reset_password(
        &self,
        hash: &str,
        password_hash: &str,
        now: i64,
        feed_expires_at: i64,
    ) -> StoreResult<Option<(String, Vec<String>)>>;
    async fn set_roles(&self, user_id: &str, roles: &[String]) -> StoreResult<()>;
    /// Gives the account at `user.email` to `user` (the CLI's `user create`)
    /// when its address was never verified and it is not banned: whoever
    /// signed up with it proved nothing about the address. In one
    /// transaction: `user`'s password (a new [`User::password_version`]),
    /// roles and verified flag, no authenticator (set up or pending), its
    /// one-time links used up, its sign-ins waiting for a code ended and its
    /// sessions revoked. The id of the account, or `None` when the address
    /// is free, verified or banned.
    async fn claim_unverified_email(
        &self,
        user: &User,
        now: i64,
        feed_expires_at: i64,
    ) -> StoreResult<Option<String>>;
    /// Writes a new pending TOTP secret, begun by session `session_id`,
    /// only while what the enrolment was proven against still holds
    /// (`proven`); false when it no longer does.
    async fn set_totp_pending(
        &self,
        user_id: &str,
        secret: &str,
        session_id: &str,
        proven: EnrolmentProof<'_>,
    ) -> StoreResult<bool>;
    /// Moves the pending secret to the confirmed one and records `step` as
    /// used, only for the session that began the enrolment: false for any
    /// other, or when the pending secret is no longer `secret`.
    async fn confirm_totp(
        &self,
        user_id: &str,
        secret: &str,
        session_id: &str,
        step: i64,
    ) -> StoreResult<bool>;
    /// Removes the confirmed and any pending TOTP secret, only while
    /// `authenticator` (the secret whose code proved the request, or the one
    /// an admin's removal read) is still the account's (compared under the
    /// row lock): false when it was removed or replaced meanwhile.
    async fn clear_totp(&self, user_id: &str, authenticator: &str) -> StoreResult<bool>;
    /// Records time step `step` of the TOTP key `secret` as used, only while
    /// `secret` is still the account's authenticator (compared under the row
    /// lock): a code of one removed or replaced meanwhile proves nothing.
    async fn use_totp_step(&self, user_id: &str, secret: &str, step: i64) -> StoreResult<TotpStep>;

    async fn put_one_time_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        user_id: &str,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// The user of an unused, unexpired token, without using it.
    async fn peek_one_time_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: i64,
    ) -> StoreResult<Option<String>>;
    /// Uses up an email-verification token `hash` (unused, unexpired) and
    /// marks its user's email verified, in one transaction: a crash or a
    /// failed write cannot spend the link without verifying the address.
    /// The user's id, or `None` when the token is not valid.
    async fn confirm_email(&self, hash: &str, now: i64) -> StoreResult<Option<String>>;
    /// Marks the token used and returns its user, if it exists, is unused and unexpired.
    async fn take_one_time_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: i64,
    ) -> StoreResult<Option<String>>;

    /// Counts one second-factor attempt for the account, atomically, before
    /// any code is compared; refused while the account is locked.
    async fn second_factor_attempt(
        &self,
        user_id: &str,
        now: i64,
    ) -> StoreResult<SecondFactorAttempt>;
    /// Locks the account's second factor for `base × 2^lockouts` seconds
    /// (capped at `max`), counts the lockout, clears the attempts; returns
    /// the end. `None`, changing nothing, while a lock is in force at `now`
    /// (parallel attempts past the limit lock once, not once each).
    async fn second_factor_lock(
        &self,
        user_id: &str,
        now: i64,
        base_secs: i64,
        max_secs: i64,
    ) -> StoreResult<Option<i64>>;
    /// A correct code: attempts, lockouts and any lock start over.
    async fn second_factor_success(&self, user_id: &str) -> StoreResult<()>;
    /// Takes back one attempt counted by [`Store::second_factor_attempt`]
    /// whose code was right but came second (its time step or challenge
    /// taken first): no guess. Never below none.
    async fn second_factor_not_a_guess(&self, user_id: &str) -> StoreResult<()>;

    /// Counts one password attempt against a throttle key (an account or a
    /// client address) *before* the password is compared, in one atomic
    /// statement: refused, counting nothing, while the key is locked at
    /// `now`; otherwise counted, and when the count reaches `limit` (or is
    /// past it: the first attempt after a lock ran out) the key is locked at
    /// once, until `now + min(base × 2^(count − limit), max)`, so no parallel
    /// attempt gets past the limit. A key quiet for more than `quiet_secs`
    /// starts over: the quiet period runs from the key's last attempt that
    /// was not taken back.
    async fn signin_attempt(
        &self,
        key: &str,
        now: i64,
        quiet_secs: i64,
        limit: u32,
        base_secs: i64,
        max_secs: i64,
    ) -> StoreResult<SigninAttempt>;
    /// Takes back one counted attempt that was no failure (the password was
    /// right, or another key refused it unchecked), with the lock it wrote
    /// (`lock`, the `locked_until` it returned), if that lock is still the
    /// key's, and with its time if it is still the key's latest attempt
    /// (`seq`, as returned): the key's last failure is then the one before.
    async fn undo_signin_attempt(&self, key: &str, lock: Option<i64>, seq: i64) -> StoreResult<()>;
    /// Counts one sign-in failure against a throttle key (an account or a
    /// client address), atomically; a key quiet for more than `quiet_secs`
    /// starts over (its lock too). Returns the count.
    async fn count_signin_failure(&self, key: &str, now: i64, quiet_secs: i64) -> StoreResult<u32>;
    /// Locks a throttle key until `until` (a longer lock already there stays).
    async fn lock_signin(&self, key: &str, until: i64) -> StoreResult<()>;
    /// The latest lock end among `keys`; 0 when none is locked.
    async fn signin_locked_until(&self, keys: &[String]) -> StoreResult<i64>;
    /// A success: the key's failures and lock are forgotten.
    async fn clear_signin_failures(&self, key: &str) -> StoreResult<()>;
    /// Deletes throttle keys whose lock is over and whose last failure is before `before`.
    async fn prune_signin_failures(&self, now: i64, before: i64) -> StoreResult<u64>;

    async fn put_challenge(&self, challenge: &Challenge) -> StoreResult<()>;
    async fn challenge(&self, id: &str) -> StoreResult<Option<Challenge>>;
    /// Counts one attempt and returns the new count.
    async fn challenge_attempt(&self, id: &str) -> StoreResult<u32>;
    /// Single use: true only for the first caller.
    async fn consume_challenge(&self, id: &str, now: i64) -> StoreResult<bool>;

    /// Stores a session, its first refresh token and (when given) its first
    /// access token's record, in one transaction, only if its user is not
    /// banned at that moment and their password is still `password_version`
    /// (the one the sign-in checked); `None` otherwise, nothing stored.
    /// Decided in the transaction that inserts, against a concurrent
    /// [`Store::ban_user`] or [`Store::reset_password`]: either the insert
    /// sees it, or it sees (and ends) the session.
    /// The same transaction ends the user's least recently used live
    /// sessions past `cap` (one feed event each): the ids of those ended.
    /// Sign-ins of one user take turns there, on any instance, so none
    /// leaves more than `cap.max_live` live sessions.
    async fn create_session(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        access: Option<&IssuedToken>,
        password_version: i64,
        cap: SessionCap,
    ) -> StoreResult<Option<Vec<String>>> {
        self.create_session_by(
            session,
            refresh,
            access,
            password_version,
            cap,
            SignedInWith::Unchecked,
        )
        .await
    }
    /// [`Store::create_session`] for a sign-in whose second factor was
    /// `with`: a mailed code only while the user still has no authenticator,
    /// a TOTP code only while its secret is still the account's (each read
    /// under the same lock as the ban and the password's version), so one
    /// confirmed, removed or replaced while the sign-in was under way ends it.
    async fn create_session_by(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        access: Option<&IssuedToken>,
        password_version: i64,
        cap: SessionCap,
        with: SignedInWith<'_>,
    ) -> StoreResult<Option<Vec<String>>>;
    async fn session(&self, id: &str) -> StoreResult<Option<Session>>;
    /// A user's sessions newest first, by `(created_at, id)`.
    async fn sessions_of(&self, user_id: &str, page: &PageRequest) -> StoreResult<Vec<Session>>;
    /// Whether a session of the user still usable at `now` (not revoked, not
    /// expired) is bound to the device secret of this hash: a device it is
    /// signed in on. The secret of a session that ended is a stranger's.
    async fn signed_in_on_device(
        &self,
        user_id: &str,
        device_secret_hash: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// The newest `limit` sessions, of any user, still usable at `now` and
    /// bound to the device secret of this hash (`sessions_by_device`).
    async fn live_sessions_on_device(
        &self,
        device_secret_hash: &str,
        now: i64,
        limit: u32,
    ) -> StoreResult<Vec<Session>>;
    /// A user's newest `limit` sessions still usable at `now` (not revoked, not expired).
    async fn live_sessions_of(
        &self,
        user_id: &str,
        now: i64,
        limit: u32,
    ) -> StoreResult<Vec<Session>>;
    async fn refresh_token(&self, hash: &str) -> StoreResult<Option<RefreshRecord>>;
    /// Marks `old_hash` used, stores `new` and records `access` (the access
    /// token answered with it), in one transaction: a refresh that fails
    /// before its answer leaves the old token unused. Nothing is written
    /// when the session ended or `old_hash` was used since they were read,
    /// nor when the session reached `limit` ([`Rotation::Throttled`]). The
    /// same transaction deletes the session's rotated-out tokens past the
    /// newest [`ROTATED_REFRESH_TOKENS_KEPT`], and binds a session not bound
    /// yet to the DPoP key thumbprint `bind_to` (`dpop_bound_at` = `now`).
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        access: &IssuedToken,
        now: i64,
        limit: RefreshLimit,
        bind_to: Option<&str>,
    ) -> StoreResult<Rotation>;
    async fn record_access_token(&self, token: &IssuedToken) -> StoreResult<()>;
    /// Records a service account's access token only while `client_id` is
    /// live (false otherwise, nothing recorded); ordered against a concurrent
    /// [`Store::disable_service_account`], which thus sees every token that
    /// was recorded.
    /// Also only while its credentials are still those checked at
    /// `credentials_at` (its `rotated_at` then): a request authenticated
    /// just before a rotation gets no token after it.
    async fn record_service_token(
        &self,
        token: &IssuedToken,
        client_id: &str,
        credentials_at: i64,
    ) -> StoreResult<bool>;
    async fn access_token(&self, jti: &str) -> StoreResult<Option<IssuedToken>>;

    /// Revokes one session (and its refresh tokens) + a feed event. False if already revoked.
    async fn revoke_session(
        &self,
        session_id: &str,
        reason: &str,
        now: i64,
        feed_expires_at: i64,
    ) -> StoreResult<bool>;
    /// Revokes every live session of a user, one feed event each, and drops
    /// an authenticator enrolment they left pending; returns their ids.
    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        reason: &str,
        now: i64,
        feed_expires_at: i64,
    ) -> StoreResult<Vec<String>>;
    async fn revoke_token(&self, jti: &str, now: i64, expires_at: i64) -> StoreResult<()>;
    /// Bans a user, ends their sessions, and appends a subject event killing
    /// every token issued up to `now` (its `not_before` is `now + 1`: `iat`
    /// has whole seconds). False if already banned.
    async fn ban_user(&self, user_id: &str, now: i64, expires_at: i64) -> StoreResult<bool>;
    async fn unban_user(&self, user_id: &str) -> StoreResult<bool>;

    /// Adds a service account; [`StoreError::Conflict`] when the client id is taken.
    async fn create_service_account(&self, account: &ServiceAccount) -> StoreResult<()>;
    async fn service_account(&self, client_id: &str) -> StoreResult<Option<ServiceAccount>>;
    /// Replaces the secret hash of a live account (and, with `ban`, kills the
    /// tokens it holds, in the same transaction); false when there is none.
    async fn set_service_secret(
        &self,
        client_id: &str,
        secret_hash: &str,
        now: i64,
        ban: Option<TokensBan<'_>>,
    ) -> StoreResult<bool>;
    /// Replaces the secret hash of a live account with `new_hash` only while
    /// it is still `verified` (the hash a secret was just checked against: a
    /// rotation in between wins); the rotation time stays. False when not replaced.
    async fn upgrade_service_secret(
        &self,
        client_id: &str,
        verified: &str,
        new_hash: &str,
    ) -> StoreResult<bool>;
    /// Registers (or, with `None`, removes) a live account's public JWK; false when there is none.
    async fn set_service_public_jwk(
        &self,
        client_id: &str,
        public_jwk: Option<&str>,
        now: i64,
        ban: Option<TokensBan<'_>>,
    ) -> StoreResult<bool>;
    /// Takes a client assertion's `jti` for good (kept until `expires_at`);
    /// false when it was taken before, by this instance or another.
    async fn take_client_assertion(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> StoreResult<bool>;
    /// Whether a client assertion's `jti` was taken (and is still kept), read
    /// on the primary so a take on another instance is seen.
    async fn client_assertion_taken(&self, client_id: &str, jti: &str) -> StoreResult<bool>;
    /// Disables the account and appends a subject event for `subject` (its
    /// tokens' `sub`) killing every token issued up to `now`, or up to the
    /// newest one recorded for it if that is later (a token request that
    /// raced this disable); `expires_at` moves on as far. False if there is
    /// no such live account.
    async fn disable_service_account(
        &self,
        client_id: &str,
        subject: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<bool>;

    async fn feed_head(&self) -> StoreResult<FeedHead>;
    /// Events with `seq > after` whose `expires_at` is past `forgotten_through`, oldest first.
    async fn feed_events_after(
        &self,
        after: i64,
        forgotten_through: i64,
    ) -> StoreResult<Vec<FeedEvent>>;
    /// Deletes feed events and access-token records with `expires_at <=
    /// forgotten_through` (the feed decides that cut-off: revocations outlive
    /// their tokens); returns the number of feed events deleted.
    async fn prune_feed(&self, forgotten_through: i64) -> StoreResult<u64>;
    /// Deletes expired challenges, one-time tokens, refresh tokens,
    /// remembered DPoP proofs and client-assertion `jti`s, and second-factor
    /// guard rows that count nothing (no attempt, no lockout, no lock).
    async fn prune(&self, now: i64) -> StoreResult<()>;
    /// Deletes sessions that ended (expired or revoked) before `ended_before`
    /// and that no refresh-token or access-token record names any more;
    /// returns how many.
    async fn prune_sessions(&self, ended_before: i64) -> StoreResult<u64>;

    /// Remembers a DPoP proof (`id_hash`: its key thumbprint and `jti`,
    /// hashed) until `expires_at`, atomically: true the first time, false
    /// when any instance saw it before (a replay, RFC 9449 §11.1).
    async fn remember_dpop_proof(&self, id_hash: &str, expires_at: i64) -> StoreResult<bool>;

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Adds `key` only if there is no key at all (instances starting together
    /// on an empty database create one first key, not one each); false if
    /// another key was there first.
    async fn add_first_signing_key(&self, key: &StoredKey) -> StoreResult<bool>;
    /// Adds a key; every key not yet retired is retired at the new key's
    /// `active_at`. Refused, nothing written, while `limit.max` keys are
    /// published (counted in the transaction that orders rotations, so two
    /// at once cannot both pass): `Err(published)`.
    async fn add_signing_key(
        &self,
        key: &StoredKey,
        limit: PublishedLimit,
    ) -> StoreResult<Result<(), usize>>;
    async fn set_signing_key_public(&self, kid: &str, public_key: &[u8]) -> StoreResult<()>;
    /// Withdraws the key `kid` at `now` (its private half leaked): marks it
    /// withdrawn and deletes its private half. If it signs at `now` or would
    /// sign later (no later key retired it by `now`), `successor` is added
    /// in the same transaction, signing from its `active_at`, and every other
    /// key still signing or due to is retired at `now`: there is never a
    /// moment with no key to sign with. Nothing is written for a kid that is
    /// not there ([`Withdrawal::Unknown`]) or already withdrawn.
    async fn withdraw_signing_key(
        &self,
        kid: &str,
        now: i64,
        successor: &StoredKey,
    ) -> StoreResult<Withdrawal>;
    /// Deletes the private half of every key retired at or before `now` whose
    /// public half is stored; returns how many.
    async fn delete_retired_private_keys(&self, now: i64) -> StoreResult<u64>;
    /// Counts one mail against `key`'s budget of `max` per `window_secs`
    /// (atomically); false when it is used up.
    async fn take_mail_budget(
        &self,
        key: &str,
        now: i64,
        window_secs: i64,
        max: u32,
    ) -> StoreResult<bool>;
    /// When `key`'s current budget window started, if it has one.
    async fn mail_budget_window_start(&self, key: &str) -> StoreResult<Option<i64>>;
    /// Deletes mail budgets whose window started before `before`.
    async fn prune_mail_budget(&self, before: i64) -> StoreResult<u64>;
    /// How many secrets at rest (TOTP secrets, private halves of signing
    /// keys) are not sealed with the current KEK: sealed with an older one
    /// (e.g. written by an instance not yet rotated) or in clear. While not
    /// 0, `kek.previous` must stay. Reads only, locks nothing.
    async fn count_not_under_current_kek(&self) -> StoreResult<u64>;
    /// How many of those this process re-seals: not those sealed with a KEK
    /// put in use after its own (see `sealed::Kept`). Reads only, locks nothing.
    async fn count_to_reseal(&self) -> StoreResult<u64>;
    /// Re-seals with the current KEK up to `limit` of the values
    /// [`Store::count_to_reseal`] counts, each in its own write
    /// that replaces exactly the value read (one changed meanwhile is left
    /// for the next round). Locks no row to look for them.
    async fn reseal_batch(&self, limit: u32) -> StoreResult<ResealReport>;
    /// Deletes audit rows older than `before`; returns how many.
    async fn prune_audit(&self, before: i64) -> StoreResult<u64>;
    /// Deletes a batch of accounts whose address was never verified, begun
    /// before `before` and with no link live at `now`
    /// (`maintenance::UNVERIFIED_ACCOUNTS`); returns how many.
    async fn prune_unverified_accounts(&self, before: i64, now: i64) -> StoreResult<u64>;

    async fn audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Writes an audit row and returns its id, for [`Store::settle_audit`].
    async fn audit_started(&self, entry: &AuditEntry) -> StoreResult<i64>;
    /// Sets the `detail` of audit row `id` (what became of its action).
    async fn settle_audit(&self, id: i64, detail: &str) -> StoreResult<()>;
    /// A page of the audit log, newest first: every row, or those naming
    /// `user_id`; each page below the id of the previous page's last row.
    async fn audit_page(
        &self,
        user_id: Option<&str>,
        page: &PageRequest<IdCursor>,
    ) -> StoreResult<Vec<AuditRow>>;
    /// The newest `limit` rows of [`Store::audit_page`].
    async fn audit_log(&self, user_id: Option<&str>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let rows = self.audit_page(user_id, &PageRequest::first(limit)).await?;
        Ok(rows.into_iter().map(|r| r.entry).collect())
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;

    /// A migration is never edited once committed: a database that applied
    /// it records its checksum, and sqlx refuses to start on it after an
    /// edit ("previously applied but has been modified"; see
    /// [`EditedMigration`] for the one edit made before this check). Each
    /// migration's checksum is pinned in `migrations/checksums.txt`; a new
    /// migration adds its line there, an edited one fails here.
    #[test]
    fn a_committed_migration_is_never_edited() {
        let pinned = include_str!("../../migrations/checksums.txt");
        let pinned: std::collections::HashMap<(&str, i64), &str> = pinned
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let mut f = l.split_whitespace();
                let backend = f.next().unwrap();
                let version = f.next().unwrap().parse().unwrap();
                ((backend, version), f.next().unwrap())
            })
            .collect();
        let mut missing = String::new();
        for (backend, m) in [
            ("sqlite", sqlx::migrate!("./migrations/sqlite")),
            ("postgres", sqlx::migrate!("./migrations/postgres")),
        ] {
            for m in m.iter() {
                let checksum = hex::encode(&m.checksum);
                match pinned.get(&(backend, m.version)) {
                    Some(p) => assert_eq!(
                        *p, checksum,
                        "{backend} migration {} was edited after it was committed: \
                         databases that applied it refuse to start; add a new migration instead",
                        m.version
                    ),
                    None => missing.push_str(&format!("{backend} {} {checksum}\n", m.version)),
                }
            }
        }
        assert!(
            missing.is_empty(),
            "new migrations: add to migrations/checksums.txt\n{missing}"
        );
    }

    #[test]
    fn newer_migrations_are_run_on_and_foreign_ones_refused() {
        let m = sqlx::migrate!("./migrations/sqlite");
        let known: Vec<i64> = m.iter().map(|m| m.version).collect();
        let newest = *known.iter().max().unwrap();
        assert_eq!(migrations_ahead(&m, &known).unwrap(), Vec::<i64>::new());
        let mut ahead = known.clone();
        ahead.push(newest + 1);
        assert_eq!(migrations_ahead(&m, &ahead).unwrap(), vec![newest + 1]);
        // An unknown version among this release's own: another line of history.
        let mut foreign = known;
        foreign.push(-5);
        assert!(matches!(
            migrations_ahead(&m, &foreign),
            Err(StoreError::Migration(
                sqlx::migrate::MigrateError::VersionMissing(-5)
            ))
        ));
    }
}
