-- The maintenance task deletes accounts whose address was never verified
-- (`accounts.unverified_retention_days`): found through this, the oldest
-- first, never by reading every account.
CREATE INDEX users_unverified_by_creation ON users(created_at) WHERE email_verified = FALSE;
