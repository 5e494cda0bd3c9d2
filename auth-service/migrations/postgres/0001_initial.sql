-- authflow auth service, schema for PostgreSQL (the same tables as the SQLite
-- tree, as of its migration 0004, in one step).
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
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    banned_at      BIGINT,
    totp_secret    TEXT,
    totp_pending   TEXT,
    totp_last_step BIGINT NOT NULL DEFAULT 0, -- refuses a replayed TOTP code
    created_at     BIGINT NOT NULL
);

CREATE TABLE one_time_tokens (
    hash       TEXT PRIMARY KEY,
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    user_id    TEXT NOT NULL REFERENCES users(id),
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE challenges (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    method      TEXT NOT NULL CHECK (method IN ('email', 'totp')),
    code_hash   TEXT,
    expires_at  BIGINT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    consumed_at BIGINT,
    created_at  BIGINT NOT NULL
);

-- Second-factor guesses per account, across challenges, restarts and instances.
CREATE TABLE second_factor_guard (
    user_id      TEXT PRIMARY KEY REFERENCES users(id),
    attempts     BIGINT NOT NULL DEFAULT 0,
    lockouts     BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users(id),
    device_secret_hash TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    last_seen_at       BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    revoked_at         BIGINT,
    revoke_reason      TEXT,
    ip                 TEXT,
    user_agent         TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- Rotating refresh tokens: each is used once; a second use is theft.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

CREATE TABLE access_tokens (
    jti        TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    session_id TEXT NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX access_tokens_by_expiry ON access_tokens(expires_at);

-- The revocation feed. `seq` is not a sequence: it is taken from
-- `feed_state.head` inside the writing transaction (see store/postgres.rs),
-- so feed events become visible in `seq` order.
CREATE TABLE revocation_events (
    seq        BIGINT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('token', 'session', 'subject')),
    subject    TEXT NOT NULL,
    not_before BIGINT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX revocation_events_by_expiry ON revocation_events(expires_at);

-- One row: the newest feed event ever written and the newest ever pruned.
CREATE TABLE feed_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    head           BIGINT NOT NULL,
    pruned_through BIGINT NOT NULL
);
INSERT INTO feed_state (id, head, pruned_through) VALUES (1, 0, 0);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
    private_key BYTEA NOT NULL,               -- empty once the key no longer signs
    public_key  BYTEA,
    created_at  BIGINT NOT NULL,
    publish_at  BIGINT NOT NULL,
    active_at   BIGINT NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    event      TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    user_id    TEXT,
    email      TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT
);
CREATE INDEX audit_log_by_user ON audit_log(user_id, at);
CREATE INDEX audit_log_by_time ON audit_log(at);

-- Mails an anonymous client can trigger, per recipient hash and per client address.
CREATE TABLE mail_budget (
    key          TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    sent         BIGINT NOT NULL
);
