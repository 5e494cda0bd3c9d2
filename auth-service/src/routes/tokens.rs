//! The token endpoints: refresh, logout, logout-all. The session logic
//! itself is in `crate::sessions`.

use std::sync::Arc;

use authflow_contract::fingerprint::DEVICE_COOKIE;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit;
use crate::clock::now;
use crate::domain::Secret;
use crate::dpop;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Client, Json};
use crate::sessions::{self, SessionTokens};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// `DPoP` when the request carried a DPoP proof (the token is bound to
    /// its key: `cnf.jkt`), else `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
    /// Send it back as `x-authflow-device` (or the cookie) with every request.
    pub device_secret: String,
    pub session_id: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: Secret,
}

#[derive(Serialize, ToSchema)]
pub struct LogoutResponse {
    pub revoked_sessions: usize,
}

/// Where the refresh endpoint is (DPoP proofs name it in `htu`).
pub const REFRESH_PATH: &str = "/v1/auth/refresh";

/// The token answer, plus the hardened device cookie for browsers and a
/// fresh `DPoP-Nonce` when nonces are required.
pub fn token_response(state: &AppState, tokens: SessionTokens, now: i64) -> Response {
    let SessionTokens {
        access,
        refresh,
        device_secret,
        session_id,
    } = tokens;
    let cookie =
        format!("{DEVICE_COOKIE}={device_secret}; HttpOnly; Secure; SameSite=Strict; Path=/");
    let body = TokenResponse {
        token_type: access.token_type(),
        access_token: access.token,
        expires_in: access.expires_in,
        refresh_token: refresh.expose().to_owned(),
        device_secret,
        session_id,
    };
    let mut response = axum::Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some((name, value)) = dpop::nonce_header(state, now) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// Rotates the refresh token; reuse of a rotated one from its device revokes
/// the session, except within 10 s of its rotation (a client's own requests
/// racing): then 400 `invalid_grant` "refresh token was just rotated" and
/// nothing changes (every refused refresh token is 400 `invalid_grant`,
/// RFC 6749 §5.2).
/// Without the device secret nothing changes either. A session started with a DPoP proof refreshes only with a proof from the
/// same key (else 400 `invalid_dpop_proof`, and the token stays usable).
/// A session that rotated `throttle.refresh_max_per_hour` times within the
/// last hour is refused with 429 and `Retry-After` (the token stays usable).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "tokens", request_body = RefreshRequest,
    params(("x-authflow-device" = String, Header, description = "device secret (or the cookie)"),
           ("DPoP" = Option<String>, Header, description = "DPoP proof (RFC 9449): `htm` POST, `htu` the issuer + `/v1/auth/refresh`; required for a DPoP-bound session")),
    responses((status = 200, body = TokenResponse, headers(("DPoP-Nonce" = String, description = "a fresh server nonce, when nonces are required"))),
              (status = 400, body = ErrorBody, description = "`invalid_grant` (unknown, rotated out, ended, or sent without its device secret), `invalid_dpop_proof`, or `use_dpop_nonce` with the nonce in `DPoP-Nonce`"),
              (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "the session's refresh limit (`throttle.refresh_max_per_hour`); `Retry-After` says when", headers(("Retry-After" = u64, description = "seconds"))),
              (status = 503, body = ErrorBody, description = "`temporarily_unavailable`: no signing key this instance can open is active; retry after `Retry-After`, or on another instance")))]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    client: Client,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Response> {
    let now = now();
    let proof = dpop::token_request_proof(&state, &client.headers, REFRESH_PATH, now)?;
    let tokens = sessions::refresh(&state, &client, &req.refresh_token, proof, now).await?;
    Ok(token_response(&state, tokens, now))
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = LogoutResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    client: Client,
    Caller(caller): Caller,
) -> ApiResult<axum::Json<LogoutResponse>> {
    let revoked = sessions::revoke_session(&state, &caller.claims.sid, "logout").await?;
    audit::record_with(
        &state,
        Some(&client),
        ("logout", "success"),
        (Some(&caller.sub), None),
        Some(format!("session {}", caller.claims.sid)),
    )
    .await;
    Ok(axum::Json(LogoutResponse {
        revoked_sessions: usize::from(revoked),
    }))
}

#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = LogoutResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn logout_all(
    State(state): State<Arc<AppState>>,
    client: Client,
    Caller(caller): Caller,
) -> ApiResult<axum::Json<LogoutResponse>> {
    let n = sessions::revoke_all_sessions(&state, &caller.sub, "logout_all").await?;
    audit::record(
        &state,
        Some(&client),
        "logout_all",
        "success",
        Some(&caller.sub),
        None,
    )
    .await;
    Ok(axum::Json(LogoutResponse {
        revoked_sessions: n,
    }))
}
