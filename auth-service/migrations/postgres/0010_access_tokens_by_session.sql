-- A revoked session's feed entry outlives the session's last access token
-- (MAX(expires_at) by session_id): found through this index, not a scan.
CREATE INDEX access_tokens_by_session ON access_tokens(session_id);
