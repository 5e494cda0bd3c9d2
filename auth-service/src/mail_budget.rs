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

/// Takes one mail from the client's budget (by its address's bucket:
/// `throttle::address_bucket`) and, only if that still allowed it, from the
/// recipient's; true when both allowed it. A client past its own budget
/// spends nobody else's: otherwise one address could keep every recipient's
/// reset and verification mails from going out, unbounded by its own
/// budget. (Which budget is charged depends on the client's own count only,
/// never on whether the address has an account.)
pub async fn allow(
    state: &AppState,
    recipient: &str,
    client: &Client,
    now: i64,
) -> ApiResult<bool> {
    let ip_key = format!("ip:{}", client.bucket(state));
    let for_client = state
        .store
        .take_mail_budget(
            &ip_key,
            now,
            WINDOW_SECS,
            state.config.mail.max_per_client_per_hour,
        )
        .await?;
    if !for_client {
        return Ok(false);
    }
    allow_recipient(state, recipient, now).await
}

/// The mailbox a message to `address` lands in, as far as the budget is
/// concerned: `victim+1@…`, `victim+2@…` (subaddresses, RFC 5233) and, at
/// Gmail, `v.ictim@gmail.com` are each an account of their own but one
/// inbox, which would otherwise get one budget per spelling. Only for the
/// budget: accounts keep the address as given.
fn mailbox(address: &str) -> String {
    let address = address.to_ascii_lowercase();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address;
    };
    let local = local.split('+').next().unwrap_or(local);
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", local.replace('.', "")),
        _ => format!("{local}@{domain}"),
    }
}

/// Takes one mail from the recipient's budget only: for a mail whose sending
/// depends on the account behind the address (a fresh verification link at
/// sign-in goes only to an account not verified yet). Charged to the
/// requester's budget, it would let the requester count, with its own later
/// mails, whether the address was new; the recipient's budget it cannot see.
pub async fn allow_recipient(state: &AppState, recipient: &str, now: i64) -> ApiResult<bool> {
    // The address is hashed: the table need not be another list of who has an account.
    let to_key = format!(
        "to:{}",
        hex::encode(Sha256::digest(mailbox(recipient).as_bytes()))
    );
    Ok(state
        .store
        .take_mail_budget(
            &to_key,
            now,
            WINDOW_SECS,
            state.config.mail.max_per_recipient_per_hour,
        )
        .await?)
}

/// Takes one sign-in code mail from the account's budget
/// (`mail.max_signin_codes_per_hour`). Asked only once the password was
/// right, so the answer past it (429) tells the sender nothing the right
/// password did not; a budget of its own, so whoever spends it with a stolen
/// password does not also spend the owner's password-reset mails.
pub async fn allow_signin_code(state: &AppState, user_id: &str, now: i64) -> ApiResult<bool> {
    Ok(state
        .store
        .take_mail_budget(
            &format!("signin:{user_id}"),
            now,
            WINDOW_SECS,
            state.config.mail.max_signin_codes_per_hour,
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::mailbox;

    #[test]
    fn spellings_of_one_inbox_share_a_budget() {
        for (a, b) in [
            ("Victim+1@Example.com", "victim@example.com"),
            ("victim+a+b@example.com", "victim@example.com"),
            ("v.ic.tim+x@googlemail.com", "victim@gmail.com"),
            ("V.ictim@gmail.com", "victim@gmail.com"),
        ] {
            assert_eq!(mailbox(a), mailbox(b), "{a}");
        }
        for (a, b) in [
            ("v.ictim@example.com", "victim@example.com"),
            ("victim@example.org", "victim@example.com"),
            ("+@example.com", "x@example.com"),
        ] {
            assert_ne!(mailbox(a), mailbox(b), "{a}");
        }
    }
}
