//! Envoy HTTP ext_authz target, for comparison benchmarks: verifies the
//! bearer token (signature, iss/aud/exp, revocation) from memory only (503
//! once the revocation list has gone unsynced past its bound), and a
//! device-bound token's device as the filter does: Envoy must forward the
//! device secret (`x-authflow-device`, `cookie`) and the configured
//! attributes, or such a token is refused. DPoP-bound tokens are refused here,
//! whatever the scheme: their proofs are checked by the filter, and a bound
//! token must never pass on its own.

use std::sync::Arc;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::clock::now;
use crate::error::ApiError;
use crate::extract::{bearer, check_device};
use crate::metrics::inc;
use crate::state::AppState;
use crate::tokens::{self, Refusal};

/// Envoy's HTTP ext_authz keeps the original method (CONNECT excepted) and
/// appends the original path: any method, under any sub-path.
#[utoipa::path(method(get, post, put, delete, patch, head, options, trace), path = "/v1/ext-authz", tag = "ext_authz",
    security(("bearer" = [])),
    responses((status = 200, description = "allowed; `x-auth-user` carries the subject"), (status = 401, description = "denied"),
        (status = 503, description = "this instance's revocation list is stale (`revocation.max_staleness_secs`): retry, on another instance")))]
pub async fn check(State(state): State<Arc<AppState>>, parts: Parts) -> Response {
    let verified = bearer(&parts.headers)
        .ok_or(Refusal::Invalid("a bearer access token is required"))
        .and_then(|t| tokens::verify(&state, t, now()))
        .and_then(|v| {
            if v.claims.cnf.is_some() {
                Err(Refusal::Invalid("a DPoP-bound token is not accepted here"))
            } else {
                Ok(v)
            }
        })
        .and_then(|v| {
            check_device(&state, &parts, &v)
                .map(|()| v)
                .map_err(Refusal::Invalid)
        });
    match verified.map(|v| HeaderValue::from_str(&v.sub)) {
        Ok(Ok(user)) => {
            inc(&state.metrics.ext_authz_allowed);
            (StatusCode::OK, [("x-auth-user", user)]).into_response()
        }
        Ok(Err(_)) => {
            inc(&state.metrics.ext_authz_denied);
            ApiError::InvalidToken("token subject is not a header value").into_response()
        }
        Err(refusal) => {
            inc(&state.metrics.ext_authz_denied);
            ApiError::from(refusal).into_response()
        }
    }
}

/// The same check with the original request path appended.
#[utoipa::path(method(get, post, put, delete, patch, head, options, trace), path = "/v1/ext-authz/{*rest}", tag = "ext_authz",
    params(("rest" = String, Path, description = "the original request path (any number of segments)")),
    security(("bearer" = [])),
    responses((status = 200, description = "allowed; `x-auth-user` carries the subject"), (status = 401, description = "denied"),
        (status = 503, description = "this instance's revocation list is stale (`revocation.max_staleness_secs`): retry, on another instance")))]
pub async fn check_subpath(state: State<Arc<AppState>>, parts: Parts) -> Response {
    check(state, parts).await
}
