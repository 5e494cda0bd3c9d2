//! The HTTP surface: one file per area, assembled here with the shared
//! layers (request bodies read within a deadline and a bound, panic guard, metrics, response headers) and JSON
//! 404 / 405 answers.

pub mod admin;
pub mod auth;
pub mod dev;
pub mod ext_authz;
pub mod oauth;
pub mod ops;
mod request_body;
pub mod revocations;
pub mod service_accounts;
pub mod tokens;
pub mod wellknown;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::metrics::inc;
use crate::openapi::{self, ApiDoc, ServedDocument};
use crate::state::AppState;

/// The service: every documented route with the shared layers, the JSON
/// 404 / 405 answers and the OpenAPI document assembled from the same list.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, doc) = documented_routes(state.config.server.dev_endpoints).split_for_parts();
    let doc = openapi::with_request_refusals(openapi::with_openapi_path_templates(doc));
    let doc = ServedDocument(Arc::new(doc));
    let routes = router
        // Envoy appends the original path: a request for `/` is checked at
        // `/v1/ext-authz/`, which `/v1/ext-authz/{*rest}` does not match.
        .route(
            "/v1/ext-authz/",
            axum::routing::on(ext_authz::METHODS, ext_authz::check),
        )
        .layer(Extension(doc))
        // The browser pages: HTML, not the API, so outside the OpenAPI document.
        .merge(crate::web::routes(
            state
                .config
                .accounts
                .pages_url(&state.config.tokens.issuer)
                .starts_with("https://"),
        ));
    with_shared_layers(routes, state)
}

/// The 404 / 405 answers and the shared layers around `routes`: body limit,
/// the response counters (outside the panic guard, so a caught panic's 500
/// is counted as a server error), the panic guard, the response headers.
pub fn with_shared_layers(routes: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            request_body::read_first,
        ))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                ApiError::Internal("handler panicked".into()).into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_responses,
        ))
        .layer(middleware::map_response(response_headers))
        .with_state(state)
}

/// On every answer, outermost (errors, 404 / 405 and a caught panic too):
/// `X-Content-Type-Options: nosniff`, and `Cache-Control: no-store` unless
/// the handler chose its caching. Answers carry tokens (RFC 6749 §5.1 asks
/// `no-store` for them), TOTP and client secrets, mailed codes (development
/// outbox) and account data, so no cache keeps anything by default; the
/// public documents set their own (`public, max-age=…` on the JWKS and the
/// issuer metadata, `no-cache` on the revocation feed, whose poll
/// naming the newest cursor (`since`) answers 304), and the browser pages keep theirs
/// (`web::security_headers`).
async fn response_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let cache = headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    // RFC 6749 §5.1 asks `Pragma: no-cache` too on answers carrying tokens.
    if cache == "no-store" {
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    response
}

/// Every route with its OpenAPI operation (`#[utoipa::path]` on the
/// handler gives the method and path to both): one `routes!` per path.
pub fn documented_routes(dev_endpoints: bool) -> OpenApiRouter<Arc<AppState>> {
    let router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::signup))
        .routes(routes!(auth::verify_email))
        .routes(routes!(auth::signin))
        .routes(routes!(auth::signin_verify))
        .routes(routes!(auth::password_forgot))
        .routes(routes!(auth::password_reset))
        .routes(routes!(auth::totp_enroll))
        .routes(routes!(auth::totp_confirm))
        .routes(routes!(auth::totp_remove))
        .routes(routes!(tokens::refresh))
        .routes(routes!(tokens::logout))
        .routes(routes!(tokens::logout_all))
        .routes(routes!(admin::find_users))
        .routes(routes!(admin::ban, admin::unban))
        .routes(routes!(admin::sessions))
        .routes(routes!(admin::remove_totp))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(admin::list_keys))
        .routes(routes!(admin::rotate_keys))
        .routes(routes!(admin::withdraw_key))
        .routes(routes!(admin::audit_log))
        .routes(routes!(service_accounts::create))
        .routes(routes!(service_accounts::rotate_secret))
        .routes(routes!(
            service_accounts::set_key,
            service_accounts::remove_key
        ))
        .routes(routes!(service_accounts::disable))
        .routes(routes!(oauth::token))
        .routes(routes!(wellknown::jwks))
        .routes(routes!(wellknown::openid_configuration))
        .routes(routes!(revocations::feed))
        .routes(routes!(ext_authz::check))
        .routes(routes!(ext_authz::check_subpath))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi));
    if dev_endpoints {
        router.routes(routes!(dev::outbox))
    } else {
        router
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn count_responses(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
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
