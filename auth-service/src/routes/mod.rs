//! The HTTP surface: one file per area, assembled here with the shared
//! layers (body limit, panic guard, metrics) and JSON 404 / 405 answers.

pub mod admin;
pub mod auth;
pub mod dev;
pub mod ext_authz;
pub mod ops;
pub mod revocations;
pub mod tokens;
pub mod wellknown;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use crate::metrics::inc;
use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/v1/auth/signup", post(auth::signup))
        .route("/v1/auth/verify-email", post(auth::verify_email))
        .route("/v1/auth/signin", post(auth::signin))
        .route("/v1/auth/signin/verify", post(auth::signin_verify))
        .route("/v1/auth/password/forgot", post(auth::password_forgot))
        .route("/v1/auth/password/reset", post(auth::password_reset))
        .route("/v1/auth/totp/enroll", post(auth::totp_enroll))
        .route("/v1/auth/totp/confirm", post(auth::totp_confirm))
        .route("/v1/auth/totp/remove", post(auth::totp_remove))
        .route("/v1/auth/refresh", post(tokens::refresh))
        .route("/v1/auth/logout", post(tokens::logout))
        .route("/v1/auth/logout-all", post(tokens::logout_all))
        .route("/v1/admin/users", get(admin::find_users))
        .route("/v1/admin/users/{user_id}/ban", post(admin::ban).delete(admin::unban))
        .route("/v1/admin/users/{user_id}/sessions", get(admin::sessions))
        .route("/v1/admin/tokens/revoke", post(admin::revoke_token))
        .route("/v1/admin/keys", get(admin::list_keys))
        .route("/v1/admin/keys/rotate", post(admin::rotate_keys))
        .route("/v1/admin/audit", get(admin::audit_log))
        .route("/.well-known/jwks.json", get(wellknown::jwks))
        .route("/.well-known/openid-configuration", get(wellknown::openid_configuration))
        .route("/v1/revocations", get(revocations::feed))
        .route("/v1/ext-authz", any(ext_authz::check))
        .route("/v1/ext-authz/{*rest}", any(ext_authz::check))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi));
    if state.config.dev_endpoints {
        router = router.route("/v1/dev/outbox", get(dev::outbox));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count_responses))
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn count_responses(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    inc(&state.metrics.http_requests);
    let status = response.status();
    if status.is_client_error() {
        inc(&state.metrics.http_client_errors);
    } else if status.is_server_error() {
        inc(&state.metrics.http_server_errors);
    }
    response
}
