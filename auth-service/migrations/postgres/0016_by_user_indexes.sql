-- Requests that act on one user's rows (`store::by_user`) find them through
-- these, not by reading every row of a table that grows with the users: a
-- password reset ends the user's live links and challenges (before, every
-- live one of every user was read, by expiry, under the write lock), and the
-- admin audit listing for a user read the whole log, newest first, when the
-- user had few rows. The audit index replaces the one by (user_id, at),
-- which no query used.
CREATE INDEX one_time_tokens_by_user ON one_time_tokens(user_id);
CREATE INDEX challenges_by_user ON challenges(user_id);
CREATE INDEX audit_log_by_user_id ON audit_log(user_id, id);
DROP INDEX audit_log_by_user;
