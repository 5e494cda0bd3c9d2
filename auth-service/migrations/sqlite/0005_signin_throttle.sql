-- Sign-in failures per throttle key (`account:<email>` or `ip:<address>`),
-- in the database so every instance counts the same failures and a restart
-- forgets no lock. Rows quiet for 2 × lockout_max are deleted.
CREATE TABLE signin_throttle (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0
);
