-- authflow auth service, initial schema (SQLite).
-- Times are seconds since the Unix epoch. Secrets never appear in clear:
-- every *_hash column is a hex SHA-256 of a random value the client holds.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,            -- argon2id PHC string
    roles          TEXT NOT NULL,            -- space-separated
    scope          TEXT NOT NULL,            -- space-separated
    email_verified INTEGER NOT NULL DEFAULT 0,
    banned_at      INTEGER,
    totp_secret    TEXT,                     -- base32, confirmed
    totp_pending   TEXT,                     -- base32, enrolled but not confirmed
    totp_last_step INTEGER NOT NULL DEFAULT 0, -- refuses a replayed TOTP code
    created_at     INTEGER NOT NULL
);

-- Email verification and password reset links (single use).
CREATE TABLE one_time_tokens (
    hash       TEXT PRIMARY KEY,
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    user_id    TEXT NOT NULL REFERENCES users(id),
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);

-- Sign-in step 2: a password that checked out waits here for its second factor.
CREATE TABLE challenges (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    method      TEXT NOT NULL CHECK (method IN ('email', 'totp')),
    code_hash   TEXT,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    consumed_at INTEGER,
    created_at  INTEGER NOT NULL
);

CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users(id),
    device_secret_hash TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    last_seen_at       INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    revoked_at         INTEGER,
    revoke_reason      TEXT,
    ip                 TEXT,
    user_agent         TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- Rotating refresh tokens: each is used once; a second use is theft.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

-- Issued access tokens (by jti), so an admin revocation knows the expiry.
CREATE TABLE access_tokens (
    jti        TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    session_id TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX access_tokens_by_expiry ON access_tokens(expires_at);

-- The revocation feed: append-only, pruned once an entry's tokens are all expired.
CREATE TABLE revocation_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL CHECK (kind IN ('token', 'session', 'subject')),
    subject    TEXT NOT NULL,
    not_before INTEGER,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX revocation_events_by_expiry ON revocation_events(expires_at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
    private_key BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    publish_at  INTEGER NOT NULL,
    active_at   INTEGER NOT NULL,
    retired_at  INTEGER
);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    event      TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    user_id    TEXT,
    email      TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT
);
CREATE INDEX audit_log_by_user ON audit_log(user_id, at);
