//! Rows as both stores read them (`#[derive(sqlx::FromRow)]`), and their
//! conversion into the types the rest of the service sees. Where the two
//! databases store a column differently, the row type's comment says so.

use super::{Challenge, FeedEvent, FeedKind, StoredKey, User};

#[derive(sqlx::FromRow)]
/// `email_verified` is BOOLEAN on PostgreSQL and INTEGER 0/1 on SQLite (it
/// has no boolean type); sqlx decodes both into `bool`. `roles` is one
/// space-separated text column on both.
pub(super) struct UserRow {
    pub(super) id: String,
    pub(super) email: String,
    pub(super) password_hash: String,
    pub(super) roles: String,
    pub(super) scope: String,
    pub(super) email_verified: bool,
    pub(super) banned_at: Option<i64>,
    pub(super) totp_secret: Option<String>,
    pub(super) totp_pending: Option<String>,
    pub(super) totp_last_step: i64,
    pub(super) created_at: i64,
    pub(super) password_version: i64,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            email: r.email,
            password_hash: r.password_hash,
            roles: r
                .roles
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            scope: r.scope,
            email_verified: r.email_verified,
            banned_at: r.banned_at,
            totp_secret: r.totp_secret,
            totp_pending: r.totp_pending,
            totp_last_step: r.totp_last_step,
            created_at: r.created_at,
            password_version: r.password_version,
        }
    }
}

#[derive(sqlx::FromRow)]
/// `attempts` is BIGINT on PostgreSQL and INTEGER (64-bit) on SQLite.
pub(super) struct ChallengeRow {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) method: String,
    pub(super) code_hash: Option<String>,
    pub(super) expires_at: i64,
    pub(super) attempts: i64,
    pub(super) consumed_at: Option<i64>,
    pub(super) created_at: i64,
    pub(super) password_version: i64,
}

impl From<ChallengeRow> for Challenge {
    fn from(r: ChallengeRow) -> Self {
        Challenge {
            id: r.id,
            user_id: r.user_id,
            method: r.method,
            code_hash: r.code_hash,
            expires_at: r.expires_at,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            consumed_at: r.consumed_at,
            created_at: r.created_at,
            password_version: r.password_version,
        }
    }
}

#[derive(sqlx::FromRow)]
/// `private_key` is still sealed here (see `sealed.rs`); `public_key` is NULL
/// in rows written before the public half was stored.
pub(super) struct KeyRow {
    pub(super) kid: String,
    pub(super) alg: String,
    pub(super) private_key: Vec<u8>,
    pub(super) public_key: Option<Vec<u8>>,
    pub(super) created_at: i64,
    pub(super) publish_at: i64,
    pub(super) active_at: i64,
    pub(super) retired_at: Option<i64>,
    pub(super) withdrawn_at: Option<i64>,
}

impl From<KeyRow> for StoredKey {
    fn from(r: KeyRow) -> Self {
        StoredKey {
            kid: r.kid,
            alg: r.alg,
            private_key: r.private_key,
            private_key_unopened: None,
            public_key: r.public_key.unwrap_or_default(),
            created_at: r.created_at,
            publish_at: r.publish_at,
            active_at: r.active_at,
            retired_at: r.retired_at,
            withdrawn_at: r.withdrawn_at,
        }
    }
}

#[derive(sqlx::FromRow)]
/// `seq` is BIGINT on PostgreSQL (taken under a lock, see its migration) and
/// the INTEGER row id on SQLite.
pub(super) struct EventRow {
    pub(super) seq: i64,
    pub(super) kind: String,
    pub(super) subject: String,
    pub(super) not_before: Option<i64>,
    pub(super) expires_at: i64,
}

impl From<EventRow> for FeedEvent {
    fn from(r: EventRow) -> Self {
        FeedEvent {
            seq: r.seq,
            kind: match r.kind.as_str() {
                "token" => FeedKind::Token,
                "session" => FeedKind::Session,
                _ => FeedKind::Subject,
            },
            subject: r.subject,
            not_before: r.not_before,
            expires_at: r.expires_at,
        }
    }
}
