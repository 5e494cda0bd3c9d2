-- Service accounts: callers authenticated with the OAuth 2.0 client
-- credentials grant. The secret is stored as an argon2 hash, like passwords.
CREATE TABLE service_accounts (
    client_id   TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    scope       TEXT NOT NULL DEFAULT '',
    disabled_at INTEGER,
    created_at  INTEGER NOT NULL,
    rotated_at  INTEGER NOT NULL
);
