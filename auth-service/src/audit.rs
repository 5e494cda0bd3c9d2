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

/// Writes one audit row; a failure is logged, never fatal to the request.
pub async fn record(
    state: &AppState,
    client: Option<&Client>,
    event: &str,
    outcome: &str,
    user_id: Option<&str>,
    email: Option<&str>,
) {
    let entry = entry(client, event, outcome, user_id, email);
    if let Err(e) = state.store.audit(&entry).await {
        tracing::warn!(error = %e, event, "audit write failed");
    }
}
