-- DPoP (RFC 9449). A session started with a DPoP proof is bound to the
-- RFC 7638 thumbprint of the proof's key: its refresh tokens (every one the
-- rotation hands out) need a proof from that key. NULL: not bound.
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;

-- Proofs seen at this service, so each is accepted once within its window
-- by every instance: SHA-256 (hex) of the key thumbprint and the proof's
-- `jti`; the row is pruned once the proof would be too old anyway.
CREATE TABLE dpop_proofs (
    id_hash    TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dpop_proofs_by_expiry ON dpop_proofs(expires_at);
