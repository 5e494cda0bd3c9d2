-- `authflow-auth keys withdraw`: a key whose private half leaked leaves the
-- JWKS at once and verifies nothing from `withdrawn_at` on (NULL: never
-- withdrawn); its private half is deleted in the same write.
ALTER TABLE signing_keys ADD COLUMN withdrawn_at BIGINT;
