//! Envoy HTTP ext_authz target, for comparison benchmarks: verifies the
//! bearer token (signature, iss/aud/exp, revocation) from memory only (503
//! once the revocation list has gone unsynced past its bound), and a
//! device-bound token's device as the filter does: Envoy must forward the
//! device secret (`x-authflow-device`, `cookie`) and the configured
//! attributes, or such a token is refused. DPoP-bound tokens are refused here,
//! whatever the scheme: their proofs are checked by the filter, and a bound
//! token must never pass on its own. As the filter: a second token in an
//! `access_token` query parameter is refused, and no client copy of an
//! identity header reaches the backend, nor the device secret header, nor
//! the token itself (`authorization`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use authflow_contract::fingerprint::DEVICE_HEADER;
use authflow_contract::header_spellings::underscore_spellings;
use authflow_contract::identity::DEFAULT_IDENTITY_NAMES;
use authflow_contract::query;

use crate::clock::now;
use crate::error::ApiError;
use crate::extract::{access_token, bearer, check_device, no_token};
use crate::metrics::inc;
use crate::state::AppState;
use crate::tokens::{self, Refusal};

/// Envoy's HTTP ext_authz keeps the original method (CONNECT excepted) and
/// appends the original path: any method, under any sub-path.
#[utoipa::path(method(get, post, put, delete, patch, head, options, trace), path = "/v1/ext-authz", tag = "ext_authz",
    security(("bearer" = [])),
    responses((status = 200, description = "allowed; `x-auth-user` carries the subject, `x-envoy-auth-headers-to-remove` names every other identity header and spelling (a client's copies), the device secret header and `authorization`"), (status = 401, description = "denied"), (status = 400, description = "a second token (one in an `access_token` query parameter too) or a malformed `Authorization`: `invalid_request`"),
        (status = 503, description = "this instance's revocation list is stale (`revocation.max_staleness_secs`): retry, on another instance")))]
pub async fn check(State(state): State<Arc<AppState>>, parts: Parts) -> Response {
    // Envoy appends the original path and query to this endpoint's.
    let second_token = query::gives(parts.uri.query().unwrap_or_default(), "access_token");
    // As the filter answers (RFC 6750 §3.1): no credentials, a challenge
    // without an error code; two tokens (one in the query: a backend reading
    // the query first would take it, unverified, as the caller's) or an
    // unusable one, `invalid_request`; a `DPoP` token, refused below.
    let refusal = match (bearer(&parts.headers), access_token(&parts.headers)) {
        (Some(_), _) if second_token => Some(ApiError::UnusableToken),
        (Some(_), _) => None,
        (None, Some(_)) => Some(ApiError::InvalidToken("a bearer access token is required")),
        (None, None) => Some(no_token(&parts.headers)),
    };
    if let Some(refusal) = refusal {
        inc(&state.metrics.ext_authz_denied);
        return refusal.into_response();
    }
    let verified = bearer(&parts.headers)
        .ok_or(Refusal::Invalid("a bearer access token is required"))
        .and_then(|t| tokens::verify_signed(&state, t, now()).map_err(Refusal::Invalid))
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
        })
        // The revocation set after the device, as the filter judges it.
        .and_then(|v| tokens::not_revoked(&state, &v, now()).map(|()| v));
    match verified.map(|v| HeaderValue::from_str(&v.sub)) {
        Ok(Ok(user)) => {
            inc(&state.metrics.ext_authz_allowed);
            (
                StatusCode::OK,
                [
                    ("x-auth-user", user),
                    (HEADERS_TO_REMOVE, identity_headers_to_remove().clone()),
                ],
            )
                .into_response()
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

/// The ext_authz answer's header naming request headers Envoy removes before
/// the request goes upstream (the check itself sees only Envoy's
/// `allowed_headers`, so a client's copies cannot be told from here).
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Every identity header the filter owns, in every `-`/`_` spelling, but
/// `x-auth-user`, which the answer sets: a client's `x-auth-roles: admin`
/// or `x_auth_user` must not reach the backend. And the device secret, a
/// credential for this service alone, which the filter removes too: a
/// backend holding it with the token could use a device-bound token anywhere.
/// And `authorization`: the verified token itself, which neither the filter
/// (unless `forward_token`) nor `jwt_authn` passes on, for a backend could
/// replay it at every other API it is for.
fn identity_headers_to_remove() -> &'static HeaderValue {
    static LIST: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        let mut names: Vec<String> = DEFAULT_IDENTITY_NAMES
            .iter()
            .filter(|n| **n != "x-auth-user")
            .map(|n| (*n).to_owned())
            .collect();
        names.extend(underscore_spellings(DEFAULT_IDENTITY_NAMES));
        names.push(DEVICE_HEADER.to_owned());
        names.push(header::AUTHORIZATION.as_str().to_owned());
        HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static(""))
    })
}

/// The methods Envoy's ext_authz checks with (every one but `CONNECT`).
pub const METHODS: axum::routing::MethodFilter = axum::routing::MethodFilter::GET
    .or(axum::routing::MethodFilter::POST)
    .or(axum::routing::MethodFilter::PUT)
    .or(axum::routing::MethodFilter::DELETE)
    .or(axum::routing::MethodFilter::PATCH)
    .or(axum::routing::MethodFilter::HEAD)
    .or(axum::routing::MethodFilter::OPTIONS)
    .or(axum::routing::MethodFilter::TRACE);

/// The same check with the original request path appended.
#[utoipa::path(method(get, post, put, delete, patch, head, options, trace), path = "/v1/ext-authz/{*rest}", tag = "ext_authz",
    params(("rest" = String, Path, description = "the original request path (any number of segments)")),
    security(("bearer" = [])),
    responses((status = 200, description = "allowed; `x-auth-user` carries the subject, `x-envoy-auth-headers-to-remove` names every other identity header and spelling (a client's copies), the device secret header and `authorization`"), (status = 401, description = "denied"), (status = 400, description = "a second token (one in an `access_token` query parameter too) or a malformed `Authorization`: `invalid_request`"),
        (status = 503, description = "this instance's revocation list is stale (`revocation.max_staleness_secs`): retry, on another instance")))]
pub async fn check_subpath(state: State<Arc<AppState>>, parts: Parts) -> Response {
    check(state, parts).await
}
