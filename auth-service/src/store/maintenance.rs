//! The maintenance task's deletes, shared by both backends. They run every
//! `maintenance.interval_secs` over tables that grow with the users
//! (sessions, refresh tokens) or with an attack (sign-in failures from many
//! addresses), and on SQLite each holds the database's one write lock while
//! it runs: every one finds its rows through an index, never by reading the
//! whole table (`tests/api/retention.rs` checks each plan on both backends).

/// Rows past their end at `$1`, one statement per table (see `prune`).
pub const EXPIRED: [&str; 6] = [
    "DELETE FROM challenges WHERE expires_at <= $1",
    "DELETE FROM one_time_tokens WHERE expires_at <= $1",
    "DELETE FROM refresh_tokens WHERE expires_at <= $1",
    "DELETE FROM dpop_proofs WHERE expires_at <= $1",
    "DELETE FROM client_assertion_jtis WHERE expires_at <= $1",
    // A guard row back at its start (after a right code) says no more than
    // no row. Every other one stays: a count of wrong codes lasts until a
    // right one (there is no window), and the count of lockouts makes the
    // next lock as long as the last.
    "DELETE FROM second_factor_guard WHERE attempts = 0 AND lockouts = 0 AND locked_until <= $1",
];

/// Sign-in failure counts neither locked at `$1` nor counted since `$2`.
pub const SIGNIN_FAILURES: &str =
    "DELETE FROM signin_throttle WHERE locked_until <= $1 AND last_failure < $2";

/// Mail budgets whose window began before `$1`.
pub const MAIL_BUDGET: &str = "DELETE FROM mail_budget WHERE window_start < $1";

/// Audit rows older than `$1`.
pub const AUDIT: &str = "DELETE FROM audit_log WHERE at < $1";

/// Sessions that ended before `$1`. Nothing still needs one once no
/// refresh-token record (its rotation history, whose reuse it judges) and no
/// access-token record (the expiry its revocation is kept until) names it: a
/// refresh token of it found by its tag alone is refused as unknown, a token
/// of it as revoked.
pub const ENDED_SESSIONS: &str = "DELETE FROM sessions WHERE (expires_at < $1 OR revoked_at < $1) \
     AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.session_id = sessions.id) \
     AND NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.session_id = sessions.id)";

/// Accounts whose address was never verified, begun before `$1`, with no
/// link still live at `$2` (a verification link resent late keeps its
/// account) and never banned: the oldest first, a batch a round. Such an
/// account never signed in (no session: checked all the same), and holds
/// nothing but an address someone typed and a password hash.
pub const UNVERIFIED_ACCOUNTS: &str = "SELECT id FROM users \
     WHERE email_verified = FALSE AND created_at < $1 AND banned_at IS NULL \
     AND NOT EXISTS (SELECT 1 FROM one_time_tokens t WHERE t.user_id = users.id AND t.expires_at > $2) \
     AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = users.id) \
     ORDER BY created_at LIMIT 100";

/// What an account of [`UNVERIFIED_ACCOUNTS`] (`$1` its id) leaves in other
/// tables, deleted before it.
pub const UNVERIFIED_ACCOUNT_ROWS: [&str; 3] = [
    "DELETE FROM one_time_tokens WHERE user_id = $1",
    "DELETE FROM challenges WHERE user_id = $1",
    "DELETE FROM second_factor_guard WHERE user_id = $1",
];

/// The account `$1` itself, while still unverified and never banned.
pub const UNVERIFIED_ACCOUNT: &str =
    "DELETE FROM users WHERE id = $1 AND email_verified = FALSE AND banned_at IS NULL";

/// Every statement above, for the plan check.
pub const ALL: [&str; 15] = [
    EXPIRED[0],
    EXPIRED[1],
    EXPIRED[2],
    EXPIRED[3],
    EXPIRED[4],
    EXPIRED[5],
    SIGNIN_FAILURES,
    MAIL_BUDGET,
    AUDIT,
    ENDED_SESSIONS,
    UNVERIFIED_ACCOUNTS,
    UNVERIFIED_ACCOUNT_ROWS[0],
    UNVERIFIED_ACCOUNT_ROWS[1],
    UNVERIFIED_ACCOUNT_ROWS[2],
    UNVERIFIED_ACCOUNT,
];
