//! The audit trail: one row per security-relevant event.

use crate::clock::now;
use crate::extract::Client;
use crate::state::AppState;
use crate::store::AuditEntry;

/// Writes one audit row; a failure is logged, never fatal to the request.
pub async fn record(
    state: &AppState,
    client: Option<&Client>,
    event: &str,
    outcome: &str,
    user_id: Option<&str>,
    email: Option<&str>,
) {
    let entry = AuditEntry {
        at: now(),
        event: event.to_owned(),
        outcome: outcome.to_owned(),
        user_id: user_id.map(str::to_owned),
        email: email.map(str::to_owned),
        ip: client.map(|c| c.ip.clone()),
        user_agent: client.map(|c| c.user_agent.clone()),
        detail: None,
    };
    if let Err(e) = state.store.audit(&entry).await {
        tracing::warn!(error = %e, event, "audit write failed");
    }
}
