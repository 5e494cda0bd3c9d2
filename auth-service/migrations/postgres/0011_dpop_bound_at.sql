-- When a session was bound to its DPoP key: at its start (NULL: then), or
-- at a later refresh that carried a proof (RFC 9449 §5: a refresh token
-- issued to a request with a proof works only with proofs from that key).
ALTER TABLE sessions ADD COLUMN dpop_bound_at BIGINT;

-- Whether the session was bound when the refresh token was issued. Of a
-- session bound by a refresh, a token issued before (false) that is rotated
-- out and sent again from the device is reuse whatever proof comes with it:
-- otherwise a thief who bound a stolen session first would hide it.
ALTER TABLE refresh_tokens ADD COLUMN dpop_bound BOOLEAN NOT NULL DEFAULT FALSE;
