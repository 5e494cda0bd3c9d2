//! Discovery: the JWKS (with ETag) and issuer metadata.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::clock::now;
use crate::metrics::inc;
use crate::state::AppState;

/// How long a cache may keep the key set: half the publish lead, at most a
/// minute. A cache between the service and a verifier that fetched the set
/// just before a rotated-in key was published then lets it go, and the
/// verifier fetches again, before that key signs; a shorter lead
/// (`keys.publish_lead_secs`) would otherwise leave its tokens refused
/// behind such a cache for up to the rest of a longer `max-age`.
fn jwks_cache_control(publish_lead: std::time::Duration) -> HeaderValue {
    let max_age = (publish_lead.as_secs() / 2).min(60);
    HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .unwrap_or(HeaderValue::from_static("no-cache"))
}

/// Every key that is published and not yet past its last token's expiry.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    responses((status = 200, description = "JWK Set"), (status = 304, description = "unchanged (If-None-Match)")))]
pub async fn jwks(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    inc(&state.metrics.jwks_requests);
    let (body, etag) = state.keys.jwks(now());
    let cache = jwks_cache_control(state.config.keys.publish_lead);
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    // Weak comparison (RFC 9110 §13.1.2): a compressing proxy on the way
    // hands the `ETag` out as `W/"…"`.
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
        });
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, description = "issuer metadata")))]
pub async fn openid_configuration(State(state): State<Arc<AppState>>) -> Response {
    let issuer = &state.config.tokens.issuer;
    // The published keys' algorithms, not `keys.signing_alg` alone: a key
    // made before that changed signs on until a rotation.
    let algs = state.keys.published_algorithms(now());
    let body = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        // The OAuth token endpoint (RFC 8414 §2) is the client-credentials grant's;
        // users refresh through the service's own JSON API (`/v1/auth/refresh`).
        "token_endpoint": format!("{issuer}{}", crate::routes::oauth::TOKEN_PATH),
        "revocation_feed_endpoint": format!("{issuer}{}", authflow_contract::revocation::FEED_PATH),
        "grant_types_supported": [crate::routes::oauth::CLIENT_CREDENTIALS],
        // No authorization endpoint, so no response type (`token` is the implicit grant's).
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        // RFC 7523 assertions: the key types an admin can register (`client_assertion::ClientKey`).
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA"],
        "access_token_signing_alg_values_supported": algs,
        "id_token_signing_alg_values_supported": algs,
        "scopes_supported": ["profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "roles", "scope", "dfp", "cnf", "client_id"],
        // RFC 9449 §5.1: proofs accepted at the token endpoints.
        "dpop_signing_alg_values_supported": state.config.dpop.algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "service_documentation": format!("{issuer}/openapi.json"),
    });
    // Kept no longer than the key set: the algorithms change with the keys.
    let cache = jwks_cache_control(state.config.keys.publish_lead);
    ([(header::CACHE_CONTROL, cache)], axum::Json(body)).into_response()
}
