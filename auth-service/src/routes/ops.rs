//! Health, readiness, metrics, the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::openapi::ServedDocument;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Health), (status = 503)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> ApiResult<axum::Json<Health>> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::Unavailable("database unavailable")
    })?;
    Ok(axum::Json(Health { status: "ready" }))
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render()
            + &state.feed.render_metrics()
            + &state.password_work.render_metrics()
            + &state.background.render_metrics(),
    )
        .into_response()
}

/// This document: assembled with the routes, so it lists exactly the
/// endpoints this instance serves.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi(Extension(doc): Extension<ServedDocument>) -> Response {
    axum::Json(doc.0.as_ref()).into_response()
}
