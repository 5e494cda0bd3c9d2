//! The audit trail: one row per security-relevant event.

use std::future::Future;

use crate::clock::now;
use crate::error::ApiResult;
use crate::extract::Client;
use crate::state::AppState;
use crate::store::{AuditEntry, Store, StoreError};

/// The `detail` of a privileged action's row while it runs; left there by a
/// crash before the action's result was written.
pub const STARTED: &str = "started";

/// Runs a privileged action (an admin's change to who may do what, or to
/// what the service trusts), audited first: its row is written with
/// `detail` [`STARTED`] before the action runs, and the action runs only
/// once that row is stored (no row, no action: the request fails). The
/// action's result then goes into `detail`: `settled(&value)` on success
/// (`"done"`, or what was made), `failed: <error code>` otherwise. A crash
/// in between leaves `started`: an action is never without its row, which
/// a row written after the action could not promise.
pub async fn privileged<T>(
    state: &AppState,
    client: &Client,
    what: (&str, &str),
    about: (Option<&str>, Option<&str>),
    action: impl Future<Output = ApiResult<T>>,
    settled: impl FnOnce(&T) -> String,
) -> ApiResult<T> {
    let (event, outcome) = what;
    let (user_id, email) = about;
    let entry = entry(Some(client), event, outcome, user_id, email);
    run_first(state.store.as_ref(), entry, action, |result| match result {
        Ok(value) => settled(value),
        Err(e) => format!("failed: {}", e.code()),
    })
    .await?
}

/// [`privileged`] for any caller with its own row and errors (the CLI):
/// `Err` when the row could not be written (then the action did not run),
/// else the action's own result, which `settled` describes in the row.
pub async fn run_first<T, E>(
    store: &dyn Store,
    mut entry: AuditEntry,
    action: impl Future<Output = Result<T, E>>,
    settled: impl FnOnce(&Result<T, E>) -> String,
) -> Result<Result<T, E>, StoreError> {
    entry.detail = Some(STARTED.to_owned());
    let id = store.audit_started(&entry).await?;
    let result = action.await;
    if let Err(e) = store.settle_audit(id, &settled(&result)).await {
        tracing::warn!(error = %e, event = entry.event, "the audit row's result was not written; it stays `started`");
    }
    Ok(result)
}

fn entry(
    client: Option<&Client>,
    event: &str,
    outcome: &str,
    user_id: Option<&str>,
    email: Option<&str>,
) -> AuditEntry {
    AuditEntry {
        at: now(),
        event: event.to_owned(),
        outcome: outcome.to_owned(),
        user_id: user_id.map(str::to_owned),
        email: email.map(str::to_owned),
        ip: client.map(|c| c.ip.clone()),
        user_agent: client.map(|c| c.user_agent.clone()),
        detail: None,
    }
}

/// How long a refusal repeats from one client address without a row of its
/// own (see [`record_repeatable`]).
const REPEAT_WINDOW_SECS: i64 = 60;
/// Most (event, address) pairs [`Repeats`] follows at once.
const MAX_REPEAT_KEYS: usize = 4096;
/// Where the refusals past [`MAX_REPEAT_KEYS`] are counted.
const OVERFLOW: &str = "\0overflow";

/// The refusals for a limit this process wrote a row for lately, by event
/// and client address, and how many it held back since.
#[derive(Default)]
pub struct Repeats {
    seen: std::sync::Mutex<std::collections::HashMap<String, Repeat>>,
}

struct Repeat {
    since: i64,
    held_back: u64,
}

impl Repeats {
    /// Whether to write a row for `key` at `now`, and if so the `detail`
    /// saying how many were held back before it.
    fn admit(&self, key: String, now: i64) -> Option<Option<String>> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let recent = |r: &Repeat| (0..REPEAT_WINDOW_SECS).contains(&(now - r.since));
        let mut key = key;
        if !seen.contains_key(&key) && seen.len() >= MAX_REPEAT_KEYS {
            seen.retain(|_, r| recent(r));
        }
        if !seen.contains_key(&key) && seen.len() >= MAX_REPEAT_KEYS {
            // As many recent keys as it follows: clients changing their
            // address per request. One row a minute for all of them.
            key = OVERFLOW.to_owned();
        }
        if let Some(repeat) = seen.get_mut(&key).filter(|r| recent(r)) {
            repeat.held_back += 1;
            return None;
        }
        let held_back = seen.get(&key).map_or(0, |r| r.held_back);
        seen.insert(
            key,
            Repeat {
                since: now,
                held_back: 0,
            },
        );
        Some((held_back > 0).then(|| format!("and {held_back} more from this address before it")))
    }
}

/// Writes the row of a refusal for a limit (`outcome` `throttled`), as
/// [`record_repeatable`] does.
pub async fn record_throttled(
    state: &AppState,
    client: &Client,
    event: &str,
    user_id: Option<&str>,
    email: Option<&str>,
) {
    let about = Repeated {
        user_id,
        email,
        per_account: false,
    };
    record_repeatable(state, client, (event, "throttled"), about).await;
}

/// Whom a repeated refusal is about. `per_account`: `user_id` names an
/// account that exists (not one the client made up), and that account gets
/// rows of its own: an attack on one account shows in its own trail, not
/// hidden behind the row of another the same client named first.
pub struct Repeated<'a> {
    pub user_id: Option<&'a str>,
    pub email: Option<&'a str>,
    pub per_account: bool,
}

/// Writes the row of a refusal any client can repeat at will, for the cost
/// of the request (a limit hit, a client authentication that failed, an
/// admin route refused): at most one per event and client address a minute
/// on this process, the next one saying how many were held back. A row per
/// request would grow the log without bound, hold the database's writer,
/// and bury the rows that matter. The first row of the minute keeps its
/// detail (subject, outcome); the ones held back are only counted. Per
/// account too when `about` says so.
pub async fn record_repeatable(
    state: &AppState,
    client: &Client,
    (event, outcome): (&str, &str),
    about: Repeated<'_>,
) {
    // Not keyed by outcome, a made-up subject or an email: the client chooses those.
    let account = about
        .user_id
        .filter(|_| about.per_account)
        .unwrap_or_default();
    // The address's bucket: an IPv6 client holds a whole prefix.
    let key = format!("{event}\0{}\0{account}", client.bucket(state));
    let (user_id, email) = (about.user_id, about.email);
    let Some(detail) = state.audit_repeats.admit(key, now()) else {
        return;
    };
    let mut entry = entry(Some(client), event, outcome, user_id, email);
    entry.detail = detail;
    if let Err(e) = state.store.audit(&entry).await {
        tracing::warn!(error = %e, event, "audit write failed");
    }
}

/// Writes one audit row; a failure is logged, never fatal to the request.
pub async fn record(
    state: &AppState,
    client: Option<&Client>,
    event: &str,
    outcome: &str,
    user_id: Option<&str>,
    email: Option<&str>,
) {
    record_with(state, client, (event, outcome), (user_id, email), None).await;
}

/// [`record`] with a `detail`: what the row is about beyond the account
/// (the sessions it started or ended), text of the service's own.
pub async fn record_with(
    state: &AppState,
    client: Option<&Client>,
    (event, outcome): (&str, &str),
    (user_id, email): (Option<&str>, Option<&str>),
    detail: Option<String>,
) {
    let mut entry = entry(client, event, outcome, user_id, email);
    entry.detail = detail;
    if let Err(e) = state.store.audit(&entry).await {
        tracing::warn!(error = %e, event, "audit write failed");
    }
}

/// Who ran an admin action: the admin and the session it acted in.
pub fn by_admin(admin: &crate::tokens::Verified) -> String {
    format!("by {} in session {}", admin.sub, admin.claims.sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_of_a_refusal_are_one_row_a_minute_with_the_count_held_back() {
        let r = Repeats::default();
        let t = 1_900_000_000;
        assert_eq!(r.admit("signin\u{0}1.2.3.4".into(), t), Some(None));
        for i in 1..50 {
            assert_eq!(r.admit("signin\u{0}1.2.3.4".into(), t + i % 60), None);
        }
        assert_eq!(
            r.admit("signin\u{0}5.6.7.8".into(), t),
            Some(None),
            "another address"
        );
        assert_eq!(
            r.admit("signin\u{0}1.2.3.4".into(), t + 60),
            Some(Some("and 49 more from this address before it".into()))
        );
        // A clock that stepped back starts a new window rather than holding rows back for good.
        assert_eq!(r.admit("signin\u{0}1.2.3.4".into(), t - 3600), Some(None));
        // Past the bound, old pairs make room; recent ones still count.
        for i in 0..MAX_REPEAT_KEYS {
            let _ = r.admit(format!("signup\0{i}"), t + 200);
        }
        assert_eq!(r.admit("signup\0new".into(), t + 200), Some(None));
        assert_eq!(r.admit("signup\u{0}0".into(), t + 201), None);
        // Clients changing address per request, past the bound: no row each,
        // one a minute for all of them.
        for i in 0..100 {
            assert_eq!(r.admit(format!("signup\0other-{i}"), t + 202), None);
        }
    }
}
