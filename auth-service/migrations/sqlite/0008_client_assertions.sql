-- private_key_jwt client authentication (RFC 7523): a service account may
-- register a public JWK (ES256 or EdDSA); an empty secret_hash means it has
-- no secret. Each assertion's jti is taken once, remembered until it expires.
ALTER TABLE service_accounts ADD COLUMN public_jwk TEXT;
CREATE TABLE client_assertion_jtis (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertion_jtis_expiry ON client_assertion_jtis (expires_at);
