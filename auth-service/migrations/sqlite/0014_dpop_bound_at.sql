-- When a session was bound to its DPoP key: at its start (NULL: then), or
-- at a later refresh that carried a proof (RFC 9449 §5: a refresh token
-- issued to a request with a proof works only with proofs from that key).
-- A refresh token rotated out before the binding and sent again from the
-- device is reuse, whatever proof comes with it.
ALTER TABLE sessions ADD COLUMN dpop_bound_at INTEGER;
