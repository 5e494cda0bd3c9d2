-- Second-factor guesses per account, across challenges and restarts.
-- `attempts` is counted before a code is compared; a success clears it and
-- `lockouts`; reaching the limit locks for base × 2^lockouts (capped).
CREATE TABLE second_factor_guard (
    user_id      TEXT PRIMARY KEY REFERENCES users(id),
    attempts     INTEGER NOT NULL DEFAULT 0,
    lockouts     INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0
);
