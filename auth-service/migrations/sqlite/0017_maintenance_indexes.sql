-- The maintenance task's deletes (`store::maintenance`, every
-- `maintenance.interval_secs`) find their rows through these, not by reading
-- the whole table while holding the write lock: sessions and refresh tokens
-- grow with the users, sign-in failures with an attack from many addresses.
CREATE INDEX sessions_by_expiry ON sessions(expires_at);
CREATE INDEX sessions_by_revocation ON sessions(revoked_at);
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens(expires_at);
CREATE INDEX challenges_by_expiry ON challenges(expires_at);
CREATE INDEX one_time_tokens_by_expiry ON one_time_tokens(expires_at);
CREATE INDEX signin_throttle_by_last_failure ON signin_throttle(last_failure);
CREATE INDEX mail_budget_by_window ON mail_budget(window_start);
-- Only the rows back at their start are ever deleted.
CREATE INDEX second_factor_guard_at_rest ON second_factor_guard(locked_until)
    WHERE attempts = 0 AND lockouts = 0;
