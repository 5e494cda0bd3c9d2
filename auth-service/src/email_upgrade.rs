//! Stored emails in the form `Email::parse` gives today. Earlier releases
//! only trimmed and lowercased, so an address written with a decomposed
//! accent, a compatibility character or a Unicode domain was stored in a form
//! a sign-in no longer looks up. At start, each such row takes its current
//! form; a row whose current form another account already holds (two
//! accounts for one address, which the plainer normalization allowed) is
//! left as it is and reported, for an operator to settle.

use crate::domain::Email;
use crate::store::{Store, StoreError, StoreResult};

/// What the pass did (counts; the ids of what it could not settle).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Upgraded {
    pub renamed: usize,
    /// Users whose address, in its current form, belongs to another account.
    pub taken: Vec<String>,
    /// Users whose stored address no longer parses (refused since).
    pub unparsable: Vec<String>,
}

/// Brings every stored email to its current form. Idempotent, and cheap when
/// there is nothing to do: only addresses outside printable ASCII can differ
/// (for the others the old and the new forms agree).
pub async fn normalize_stored_emails(store: &dyn Store) -> StoreResult<Upgraded> {
    let mut done = Upgraded::default();
    for (id, stored) in store.users_with_non_ascii_email().await? {
        let Ok(email) = Email::parse(&stored) else {
            done.unparsable.push(id);
            continue;
        };
        if email.as_str() == stored {
            continue;
        }
        match store.rename_email(&id, &stored, email.as_str()).await {
            Ok(true) => done.renamed += 1,
            // Changed meanwhile by another instance doing the same.
            Ok(false) => {}
            Err(StoreError::Conflict(_)) => {
                if displace_unverified(store, &id, &stored, email.as_str()).await? {
                    done.renamed += 1;
                } else {
                    done.taken.push(id);
                }
            }
            Err(e) => return Err(e),
        }
    }
    if done.renamed > 0 {
        tracing::info!(
            renamed = done.renamed,
            "stored emails brought to their normalized form (NFKC, lowercase, IDNA)"
        );
    }
    if !done.taken.is_empty() {
        tracing::warn!(
            users = ?done.taken,
            "these accounts' emails, normalized, belong to other accounts: they cannot be signed in to by email \
             until an admin settles them (two accounts for one address)"
        );
    }
    if !done.unparsable.is_empty() {
        tracing::warn!(users = ?done.unparsable, "these accounts' stored emails are not valid addresses any more");
    }
    Ok(done)
}

/// The account `id`, stored as `from`, cannot take `to`: another account
/// holds it. When that one never verified the address and `id` did, the
/// holder proves nothing about the address (anyone could sign up under that
/// spelling, and its links went to this inbox): it is moved to an address
/// at `.invalid` (RFC 2606: no mail, no sign-in past the second factor, and
/// never unverified-and-reachable again) and `id` takes `to`. True when it did.
async fn displace_unverified(
    store: &dyn Store,
    id: &str,
    from: &str,
    to: &str,
) -> StoreResult<bool> {
    let (Some(renamed), Some(holder)) =
        (store.user_by_id(id).await?, store.user_by_email(to).await?)
    else {
        return Ok(false);
    };
    if !renamed.email_verified || holder.email_verified || holder.id == renamed.id {
        return Ok(false);
    }
    let aside = format!("displaced-{}@unverified.invalid", holder.id);
    if !store.rename_email(&holder.id, to, &aside).await? {
        return Ok(false);
    }
    match store.rename_email(id, from, to).await {
        Ok(true) => {
            tracing::warn!(
                user = id,
                displaced = holder.id,
                "an unverified account held this verified account's address in its normalized form: \
                 it was moved aside"
            );
            Ok(true)
        }
        Ok(false) | Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
