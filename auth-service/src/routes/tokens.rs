//! Sessions and their tokens: start (after the second factor), refresh with
//! rotation and reuse detection, logout, logout-all.

use std::sync::Arc;

use authflow_contract::fingerprint::DEVICE_COOKIE;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::secret::hashes_match;
use crate::domain::{random_id, random_secret, Secret};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, Client, Json};
use crate::metrics::inc;
use crate::store::{RefreshRecord, Session, User};
use crate::{audit, now, tokens, AppState};

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
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

fn feed_expiry(state: &AppState, now: i64) -> i64 {
    // The last access token of a session revoked now expires at the latest
    // one access-token lifetime from now.
    now + i64::try_from(state.config.access_ttl.as_secs()).unwrap_or(900)
}

/// After a revoking write: refresh the in-memory feed head (and revocation
/// set) before the caller gets its answer.
pub async fn feed_changed(state: &AppState) {
    if let Err(e) = state.feed.sync(state.store.as_ref(), now()).await {
        tracing::warn!(error = %e, "feed sync after write failed");
    }
}

pub async fn revoke_session(state: &AppState, session_id: &str, reason: &str) -> ApiResult<bool> {
    let now = now();
    let revoked = state.store.revoke_session(session_id, reason, now, feed_expiry(state, now)).await?;
    if revoked {
        inc(&state.metrics.sessions_revoked);
        feed_changed(state).await;
    }
    Ok(revoked)
}

pub async fn revoke_all_sessions(state: &AppState, user_id: &str, reason: &str) -> ApiResult<usize> {
    let now = now();
    let ids = state.store.revoke_user_sessions(user_id, reason, now, feed_expiry(state, now)).await?;
    for _ in &ids {
        inc(&state.metrics.sessions_revoked);
    }
    feed_changed(state).await;
    Ok(ids.len())
}

/// The token answer, plus the hardened device cookie for browsers.
fn token_response(access: tokens::IssuedAccess, refresh: &Secret, device: &str, session_id: &str) -> Response {
    let body = TokenResponse {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in,
        refresh_token: refresh.expose().to_owned(),
        device_secret: device.to_owned(),
        session_id: session_id.to_owned(),
    };
    let mut response = axum::Json(body).into_response();
    let cookie = format!("{DEVICE_COOKIE}={device}; HttpOnly; Secure; SameSite=Strict; Path=/");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Stores a new session bound to `device`, with `refresh` as its first refresh
/// token; `origin` is the (ip, user agent) it was created from. Returns its id.
pub async fn create_session(
    state: &AppState,
    user: &User,
    device: &Secret,
    refresh: &Secret,
    now: i64,
    origin: (Option<String>, Option<String>),
) -> ApiResult<String> {
    let session_id = random_id();
    let expires_at = now + i64::try_from(state.config.refresh_ttl.as_secs()).unwrap_or(0);
    let session = Session {
        id: session_id.clone(),
        user_id: user.id.clone(),
        device_secret_hash: device.hash(),
        created_at: now,
        last_seen_at: now,
        expires_at,
        revoked_at: None,
        revoke_reason: None,
        ip: origin.0,
        user_agent: origin.1,
    };
    let record = RefreshRecord { hash: refresh.hash(), session_id: session_id.clone(), created_at: now, expires_at, used_at: None };
    state.store.create_session(&session, &record).await?;
    Ok(session_id)
}

/// Creates a session bound to a fresh device secret and answers with tokens.
pub async fn start_session(state: &AppState, user: &User, client: &Client, now: i64) -> ApiResult<Response> {
    let device = random_secret();
    let refresh = random_secret();
    let origin = (Some(client.ip.clone()), Some(client.user_agent.clone()));
    let session_id = create_session(state, user, &device, &refresh, now, origin).await?;
    let dfp = client.fingerprint(state, device.expose());
    let access = tokens::issue(state, user, &session_id, Some(dfp), now).await?;
    Ok(token_response(access, &refresh, device.expose(), &session_id))
}

/// Rotates the refresh token. A refresh token that was already used means
/// two parties hold it: the whole session is revoked (OAuth 2.0 Security BCP
/// §4.14) and shows up in the revocation feed.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "tokens", request_body = RefreshRequest,
    params(("x-authflow-device" = String, Header, description = "device secret (or the cookie)")),
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn refresh(State(state): State<Arc<AppState>>, client: Client, Json(req): Json<RefreshRequest>) -> ApiResult<Response> {
    let now = now();
    let device = tokens::device_secret(&client.headers).ok_or(ApiError::InvalidGrant("the device secret is missing"))?;
    let old_hash = req.refresh_token.hash();
    let record = state.store.refresh_token(&old_hash).await?.ok_or(ApiError::InvalidGrant("unknown refresh token"))?;
    let session = state.store.session(&record.session_id).await?.ok_or(ApiError::InvalidGrant("unknown refresh token"))?;
    if record.used_at.is_some() {
        return reuse_detected(&state, &client, &session).await;
    }
    if session.revoked_at.is_some() || record.expires_at <= now || session.expires_at <= now {
        return Err(ApiError::InvalidGrant("the session has ended"));
    }
    if !hashes_match(&crate::domain::hash_secret(&device), &session.device_secret_hash) {
        audit(&state, Some(&client), "refresh", "wrong_device", Some(&session.user_id), None).await;
        return Err(ApiError::InvalidGrant("the refresh token belongs to another device"));
    }
    let user = state.store.user_by_id(&session.user_id).await?.ok_or(ApiError::InvalidGrant("unknown refresh token"))?;
    if user.banned_at.is_some() {
        return Err(ApiError::AccountDisabled);
    }
    let next = random_secret();
    let next_record = RefreshRecord {
        hash: next.hash(),
        session_id: session.id.clone(),
        created_at: now,
        expires_at: session.expires_at,
        used_at: None,
    };
    if !state.store.rotate_refresh(&old_hash, &next_record, now).await? {
        // Lost a race with another use of the same token: that is reuse too.
        return reuse_detected(&state, &client, &session).await;
    }
    inc(&state.metrics.refresh_ok);
    let dfp = client.fingerprint(&state, &device);
    let access = tokens::issue(&state, &user, &session.id, Some(dfp), now).await?;
    audit(&state, Some(&client), "refresh", "success", Some(&user.id), None).await;
    Ok(token_response(access, &next, &device, &session.id))
}

async fn reuse_detected(state: &AppState, client: &Client, session: &Session) -> ApiResult<Response> {
    inc(&state.metrics.refresh_reuse);
    revoke_session(state, &session.id, "refresh_token_reuse").await?;
    audit(state, Some(client), "refresh", "reuse_detected_session_revoked", Some(&session.user_id), None).await;
    Err(ApiError::InvalidGrant("refresh token reuse detected; the session is revoked"))
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = LogoutResponse), (status = 401, body = ErrorBody)))]
pub async fn logout(State(state): State<Arc<AppState>>, client: Client, Caller(caller): Caller) -> ApiResult<axum::Json<LogoutResponse>> {
    let revoked = revoke_session(&state, &caller.claims.sid, "logout").await?;
    audit(&state, Some(&client), "logout", "success", Some(&caller.sub), None).await;
    Ok(axum::Json(LogoutResponse { revoked_sessions: usize::from(revoked) }))
}

#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = LogoutResponse), (status = 401, body = ErrorBody)))]
pub async fn logout_all(State(state): State<Arc<AppState>>, client: Client, Caller(caller): Caller) -> ApiResult<axum::Json<LogoutResponse>> {
    let n = revoke_all_sessions(&state, &caller.sub, "logout_all").await?;
    audit(&state, Some(&client), "logout_all", "success", Some(&caller.sub), None).await;
    Ok(axum::Json(LogoutResponse { revoked_sessions: n }))
}
