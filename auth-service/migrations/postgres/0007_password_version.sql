-- Counts the user's password changes. A sign-in's challenge keeps the
-- version of the password it checked, and its session is stored only while
-- that is still the user's version: a reset ends every sign-in begun with
-- the old password, one past its code check too. 0 for rows already there.
ALTER TABLE users ADD COLUMN password_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE challenges ADD COLUMN password_version BIGINT NOT NULL DEFAULT 0;
