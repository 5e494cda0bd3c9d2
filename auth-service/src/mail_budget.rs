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

/// The IPv6 prefix an inbox's shares are counted by (unless
/// `throttle.ipv6_prefix_len` is wider still): a routed /48 is free for
/// the asking (tunnel brokers), and counted by its /64s it held the ten
/// shares that fill an inbox's hour, keeping the owner's reset link from
/// going out. IPv4 addresses count alone, as everywhere.
const SHARE_IPV6_PREFIX_LEN: u8 = 48;

/// How many clients' shares of one inbox's hour (`mail.max_per_recipient_per_hour`
/// each) the inbox takes in all: the ceiling a flood from many addresses meets.
pub const RECIPIENT_SHARES: u32 = 10;

/// Takes one mail from the client's budget (by its address's bucket:
/// `throttle::address_bucket`) and, only if that still allowed it, from the
/// client's share of the recipient's (`mail.max_per_recipient_per_hour`),
/// then from the recipient's whole hour ([`RECIPIENT_SHARES`] shares); true
/// when all allowed it. A client past its own budget spends nobody else's:
/// otherwise one address could keep every recipient's reset and verification
/// mails from going out, unbounded by its own budget. And a client spends
/// only its own share of an inbox: one stranger's requests cannot keep the
/// owner's reset link from going out (it takes as many addresses as shares).
/// (Which budget is charged depends on the client's own count only, never on
/// whether the address has an account.)
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
    let to_key = recipient_key(recipient);
    let max = state.config.mail.max_per_recipient_per_hour;
    let network = crate::throttle::address_bucket(
        &client.ip,
        state
            .config
            .throttle
            .ipv6_prefix_len
            .min(SHARE_IPV6_PREFIX_LEN),
    );
    let share = state
        .store
        .take_mail_budget(&format!("{to_key}:ip:{network}"), now, WINDOW_SECS, max)
        .await?;
    if !share {
        return Ok(false);
    }
    Ok(state
        .store
        .take_mail_budget(
            &to_key,
            now,
            WINDOW_SECS,
            max.saturating_mul(RECIPIENT_SHARES),
        )
        .await?)
}

/// The key of the budget of the inbox `recipient` lands in. The address is
/// hashed: the table need not be another list of who has an account.
fn recipient_key(recipient: &str) -> String {
    format!(
        "to:{}",
        hex::encode(Sha256::digest(mailbox(recipient).as_bytes()))
    )
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

/// Takes one mail from the recipient's budgets only: for a mail whose
/// sending depends on the account behind the address (a fresh verification
/// link at sign-in goes only to an account not verified yet). Charged to the
/// requester's budget, it would let the requester count, with its own later
/// mails, whether the address was new; the recipient's budget it cannot see.
/// Such mails have a share of the inbox's hour of their own
/// (`mail.max_per_recipient_per_hour`), and count toward its whole hour as
/// any mail does: capped at one share on the whole hour's count instead,
/// they stopped once anyone's mails reached it, and five reset requests
/// from one stranger kept the owner's sign-in from mailing a fresh link.
pub async fn allow_recipient(state: &AppState, recipient: &str, now: i64) -> ApiResult<bool> {
    let to_key = recipient_key(recipient);
    let max = state.config.mail.max_per_recipient_per_hour;
    let share = state
        .store
        .take_mail_budget(&format!("{to_key}:resend"), now, WINDOW_SECS, max)
        .await?;
    if !share {
        return Ok(false);
    }
    Ok(state
        .store
        .take_mail_budget(
            &to_key,
            now,
            WINDOW_SECS,
            max.saturating_mul(RECIPIENT_SHARES),
        )
        .await?)
}

/// Takes one sign-in code mail from the account's budget
/// (`mail.max_signin_codes_per_hour`). Asked only once the password was
/// right, so the answer past it (429) tells the sender nothing the right
/// password did not; a budget of its own, so whoever spends it with a stolen
/// password does not also spend the owner's password-reset mails. Kept per
/// password (`password_version`): a reset, which ends what the stolen
/// password began, starts the owner's new password with a budget of its own.
pub async fn allow_signin_code(
    state: &AppState,
    user_id: &str,
    password_version: i64,
    now: i64,
) -> ApiResult<Result<(), u64>> {
    let key = format!("signin:{user_id}:{password_version}");
    let max = state.config.mail.max_signin_codes_per_hour;
    if state
        .store
        .take_mail_budget(&key, now, WINDOW_SECS, max)
        .await?
    {
        return Ok(Ok(()));
    }
    // Refused: the seconds until the window frees (it is fixed, from its
    // first mail), not a whole window.
    let start = state.store.mail_budget_window_start(&key).await?;
    let frees_at = start.unwrap_or(now).saturating_add(WINDOW_SECS);
    Ok(Err(u64::try_from(frees_at.saturating_sub(now))
        .unwrap_or(0)
        .max(1)))
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
