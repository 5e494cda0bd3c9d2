-- A right password takes its sign-in attempt back, its time too: the quiet
-- period that wipes a key's failures then runs from the last attempt that
-- stayed counted, not from the last right password. `attempt_seq` numbers
-- the key's attempts (and after-the-fact failures); `prior_failure` is
-- `last_failure` as it was before the latest one. Taking back the latest
-- attempt restores it; one counted since keeps its own time.
ALTER TABLE signin_throttle ADD COLUMN attempt_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE signin_throttle ADD COLUMN prior_failure BIGINT NOT NULL DEFAULT 0;
