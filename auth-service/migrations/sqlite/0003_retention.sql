-- The public half of each signing key, so the private half can be deleted
-- (set to an empty blob) once the key no longer signs, while the public half
-- stays published until the last token it signed has expired. Rows from
-- before this migration are filled in from the private half on start.
ALTER TABLE signing_keys ADD COLUMN public_key BLOB;

-- Audit rows expire after the configured retention (by time).
CREATE INDEX audit_log_by_time ON audit_log(at);
