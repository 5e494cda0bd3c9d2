//! Development only (`dev_endpoints`, refused in production): the outbox.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::domain::Email;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::mailer::Mail;
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    pub to: String,
}

/// Messages sent to `to`, oldest first, with `code` / `token` extracted.
#[utoipa::path(get, path = "/v1/dev/outbox", tag = "development", params(OutboxQuery),
    responses((status = 200, description = "messages sent to that address, newest last")))]
pub async fn outbox(
    State(state): State<Arc<AppState>>,
    QueryParams(q): QueryParams<OutboxQuery>,
) -> ApiResult<axum::Json<Vec<Mail>>> {
    let to = Email::parse(&q.to).map_err(ApiError::BadRequest)?;
    let mails = state
        .mailer
        .outbox(to.as_str())
        .await
        .map_err(ApiError::internal)?;
    Ok(axum::Json(mails))
}
