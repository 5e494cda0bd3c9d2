//! Limits on mails an anonymous client can trigger (sign-up verification and
//! notices, password reset): per recipient and per client address, each per
//! hour, counted in the database (a restart does not reset them).
//!
//! Callers ask before sending and, past a limit, silently send nothing: the
//! HTTP answer is the same either way, and the budget is taken whether or not
//! the address has an account, so nothing reveals which addresses exist.

use sha2::{Digest, Sha256};

use crate::error::ApiResult;
use crate::extract::Client;
use crate::state::AppState;

/// The budgets' window.
pub const WINDOW_SECS: i64 = 3600;

/// Takes one mail from the recipient's and the client's budgets; true when
/// both still allowed it.
pub async fn allow(state: &AppState, recipient: &str, client: &Client, now: i64) -> ApiResult<bool> {
    // The address is hashed: the table need not be another list of who has an account.
    let to_key = format!("to:{}", hex::encode(Sha256::digest(recipient.to_ascii_lowercase().as_bytes())));
    let ip_key = format!("ip:{}", client.ip);
    let config = &state.config;
    let for_client = state.store.take_mail_budget(&ip_key, now, WINDOW_SECS, config.mail.max_per_client_per_hour).await?;
    let for_recipient = state.store.take_mail_budget(&to_key, now, WINDOW_SECS, config.mail.max_per_recipient_per_hour).await?;
    Ok(for_client && for_recipient)
}
