-- The session that began the pending authenticator enrolment: only it may
-- confirm it. An enrolment left pending by a session since ended (a stolen
-- one the owner signed out) is switched on by no other. An enrolment pending
-- from before this column is confirmed by none; it is begun again.
ALTER TABLE users ADD COLUMN totp_pending_session TEXT;
