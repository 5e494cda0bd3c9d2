-- Sign-in failures per throttle key (`account:<email>` or `ip:<address>`),
-- shared by every instance. Rows quiet for 2 × lockout_max are deleted.
CREATE TABLE signin_throttle (
    key          TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    last_failure BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0
);
