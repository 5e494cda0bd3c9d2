//! Statements that requests run over one user's rows of tables that grow
//! with the users (reset links and verification links, sign-in challenges,
//! audit rows), shared by both backends. Each finds the user's rows through
//! an index on the user, never by reading every row of the table (nor every
//! live one, by expiry): `tests/api/retention.rs` checks each plan on both
//! backends.

/// A password reset (`$1` now, `$2` the user, `$3` the purpose): the user's
/// other live links of that purpose are used up.
pub const USE_UP_LINKS_FOR: &str = "UPDATE one_time_tokens SET used_at = $1 \
     WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1";

/// An unverified address claimed (`$1` now, `$2` the user): every live link
/// of the user is used up.
pub const USE_UP_LINKS: &str =
    "UPDATE one_time_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL AND expires_at > $1";

/// A new password (`$1` now, `$2` the user): the sign-ins waiting for their
/// code end.
pub const CONSUME_CHALLENGES: &str = "UPDATE challenges SET consumed_at = $1 \
     WHERE user_id = $2 AND consumed_at IS NULL AND expires_at > $1";

/// A page of user `$1`'s audit rows: the newest `$3` with an id below `$2`,
/// newest first (the admin listing).
pub const AUDIT_OF_USER: &str =
    "SELECT id, at, event, outcome, user_id, email, ip, user_agent, detail \
     FROM audit_log WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3";

/// A page of the audit log: the newest `$2` rows with an id below `$1`,
/// newest first (the admin listing).
pub const AUDIT_NEWEST: &str =
    "SELECT id, at, event, outcome, user_id, email, ip, user_agent, detail \
     FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2";

/// Every statement above on one user's rows, for the plan check
/// ([`AUDIT_NEWEST`], on no user's, reads the log backwards by its primary
/// key from the page's cursor and stops after `$2` rows; its plan is checked
/// with [`AUDIT_OF_USER`]'s in `audit_pages_are_read_from_an_index`).
pub const ALL: [&str; 4] = [
    USE_UP_LINKS_FOR,
    USE_UP_LINKS,
    CONSUME_CHALLENGES,
    AUDIT_OF_USER,
];
