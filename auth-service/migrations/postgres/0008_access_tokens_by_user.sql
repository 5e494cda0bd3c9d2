-- A service account's disable looks up its newest recorded token
-- (MAX(issued_at) for one user_id): found through this index, not a scan.
CREATE INDEX access_tokens_by_user ON access_tokens(user_id, issued_at);
