//! Administration. Callers need an access token with the `admin` role,
//! checked exactly like any other caller's (signature, revocation, device).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit;
use crate::clock::now;
use crate::domain::Email;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Admin, Client, Json, PathParam, QueryParams};
use crate::keys::{KeyInfo, RotateError, WithdrawError, Withdrawn};
use crate::routes::auth::{notify, StatusResponse};
use crate::sessions::feed_changed;
use crate::state::AppState;
use crate::store::{AuditRow, Cursor, IdCursor, PageCursor, PageRequest, Session, User};

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub user_id: String,
    pub email: String,
    pub roles: Vec<String>,
    pub email_verified: bool,
    pub banned: bool,
    pub totp_enabled: bool,
    pub created_at: i64,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            user_id: u.id.clone(),
            email: u.email.clone(),
            roles: u.roles.clone(),
            email_verified: u.email_verified,
            banned: u.banned_at.is_some(),
            totp_enabled: u.totp_secret.is_some(),
            created_at: u.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub active: bool,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl SessionView {
    fn new(s: &Session, now: i64) -> Self {
        Self {
            session_id: s.id.clone(),
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            revoked_at: s.revoked_at,
            revoke_reason: s.revoke_reason.clone(),
            active: s.revoked_at.is_none() && s.expires_at > now,
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// Exact email (case-insensitive); all users when absent, oldest first, a page at a time.
    pub email: Option<String>,
    /// Users per page: 1 to 1000, 100 when absent.
    pub limit: Option<u32>,
    /// Where the page starts: the cursor in the `after` of the previous page's `Link: <…>; rel="next"`.
    pub after: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Sessions per page (newest first): 1 to 1000, 100 when absent.
    pub limit: Option<u32>,
    /// Where the page starts: the cursor in the `after` of the previous page's `Link: <…>; rel="next"`.
    pub after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BanResponse {
    pub user_id: String,
    pub banned: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    pub jti: String,
}

#[derive(Serialize, ToSchema)]
pub struct RevokeTokenResponse {
    pub jti: String,
    /// When the feed entry (and the token) expires.
    pub expires_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct RotateResponse {
    pub kid: String,
    pub publish_at: i64,
    pub active_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct WithdrawResponse {
    pub kid: String,
    /// False when the key had been withdrawn before (nothing changed).
    pub withdrawn_now: bool,
    /// The key signing from now on, when the withdrawn one was signing (or due to).
    pub successor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only the entries naming this user; every entry when absent.
    pub user_id: Option<String>,
    /// Entries per page (newest first): 1 to 1000, 100 when absent.
    pub limit: Option<u32>,
    /// Where the page starts: the cursor in the `after` of the previous page's `Link: <…>; rel="next"`.
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", params(UserQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<UserView>, description = "a page of users; `Link: <…>; rel=\"next\"` when more follow"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn find_users(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    QueryParams(q): QueryParams<UserQuery>,
) -> ApiResult<Response> {
    let page = page_request(q.limit, q.after.as_deref())?;
    let Some(email) = q.email else {
        let users = state.store.list_users(&page.one_more()).await?;
        return Ok(paged(
            users,
            &page,
            "/v1/admin/users",
            |u| PageCursor {
                created_at: u.created_at,
                id: u.id.clone(),
            },
            |u| UserView::from(u),
        ));
    };
    // In the stored form (as at sign-up); what is no address matches no one.
    let users: Vec<User> = match Email::parse(&email) {
        Ok(email) => state
            .store
            .user_by_email(email.as_str())
            .await?
            .into_iter()
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok(axum::Json(users.iter().map(UserView::from).collect::<Vec<_>>()).into_response())
}

/// `limit` and `after` of a listing's query: 400 for a limit out of range or
/// a cursor this service did not write.
fn page_request<C: Cursor>(limit: Option<u32>, after: Option<&str>) -> ApiResult<PageRequest<C>> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit`: between 1 and {MAX_PAGE}"
        )));
    }
    let after =
        match after {
            None => None,
            Some(a) => Some(C::parse(a).ok_or_else(|| {
                ApiError::BadRequest("`after`: not a cursor of this listing".into())
            })?),
        };
    Ok(PageRequest { after, limit })
}

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// One page of a listing read with [`PageRequest::one_more`]: its first
/// `page.limit` rows, and when a row follows them, `Link: <PATH?limit=…&after=…>;
/// rel="next"` (RFC 8288; relative, as the request's own path). `path` may
/// carry the listing's filter as an escaped query (`PATH?user_id=…`): the
/// next page keeps it.
fn paged<T, V: Serialize, C: Cursor>(
    mut rows: Vec<T>,
    page: &PageRequest<C>,
    path: &str,
    key: impl Fn(&T) -> C,
    view: impl Fn(&T) -> V,
) -> Response {
    let more = rows.len() > page.limit as usize;
    rows.truncate(page.limit as usize);
    let body = axum::Json(rows.iter().map(view).collect::<Vec<V>>());
    let query = if path.contains('?') { '&' } else { '?' };
    match rows.last().filter(|_| more) {
        // A cursor is digits, a dot and an id's characters: nothing to escape.
        Some(last) => (
            [(
                header::LINK,
                format!(
                    "<{path}{query}limit={}&after={}>; rel=\"next\"",
                    page.limit,
                    key(last)
                ),
            )],
            body,
        )
            .into_response(),
        None => body.into_response(),
    }
}

async fn existing_user(state: &AppState, user_id: &str) -> ApiResult<User> {
    state
        .store
        .user_by_id(user_id)
        .await?
        .ok_or(ApiError::NotFound("no such user"))
}

/// Bans a user: sign-in is refused, every session ends (a sign-in under way
/// gets no session: see `Store::create_session`), and the feed gets a
/// subject entry killing every token issued up to now, this second included.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/ban", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = BanResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "an admin's own account: another admin bans it"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn ban(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    PathParam(user_id): PathParam<String>,
) -> ApiResult<axum::Json<BanResponse>> {
    let user = existing_user(&state, &user_id).await?;
    // A slip would end the admin's own sessions, and the last admin's access.
    if user.id == admin.sub {
        return Err(ApiError::Conflict("an admin cannot ban their own account"));
    }
    let now = now();
    let expires = now + i64::try_from(state.config.tokens.access_ttl.as_secs()).unwrap_or(900);
    let ban = async {
        state.store.ban_user(&user.id, now, expires).await?;
        feed_changed(&state).await;
        Ok(())
    };
    audit::privileged(
        &state,
        &client,
        ("admin_ban", &audit::by_admin(&admin)),
        (Some(&user.id), Some(&user.email)),
        ban,
        |_| "done".into(),
    )
    .await?;
    Ok(axum::Json(BanResponse {
        user_id: user.id,
        banned: true,
    }))
}

#[utoipa::path(delete, path = "/v1/admin/users/{user_id}/ban", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = BanResponse), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn unban(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    PathParam(user_id): PathParam<String>,
) -> ApiResult<axum::Json<BanResponse>> {
    let user = existing_user(&state, &user_id).await?;
    let unban = async { Ok(state.store.unban_user(&user.id).await?) };
    audit::privileged(
        &state,
        &client,
        ("admin_unban", &audit::by_admin(&admin)),
        (Some(&user.id), Some(&user.email)),
        unban,
        |_| "done".into(),
    )
    .await?;
    Ok(axum::Json(BanResponse {
        user_id: user.id,
        banned: false,
    }))
}

/// Removes a user's TOTP authenticator, for an owner who lost it (their own
/// removal needs a current code from it): sign-in falls back to mailed
/// codes, and the owner is mailed. 409 when none is set up, or when it
/// changed since it was read here: a replacement its owner confirmed
/// meanwhile is not removed unseen.
#[utoipa::path(delete, path = "/v1/admin/users/{user_id}/totp", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = StatusResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn remove_totp(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    PathParam(user_id): PathParam<String>,
) -> ApiResult<axum::Json<StatusResponse>> {
    let user = existing_user(&state, &user_id).await?;
    let Some(authenticator) = user.totp_secret.as_deref() else {
        return Err(ApiError::Conflict("no TOTP authenticator is set up"));
    };
    let remove = async {
        match state.store.clear_totp(&user.id, authenticator).await? {
            true => Ok(()),
            false => Err(ApiError::Conflict(
                "the authenticator changed since it was read; look again",
            )),
        }
    };
    audit::privileged(
        &state,
        &client,
        ("admin_totp_remove", &audit::by_admin(&admin)),
        (Some(&user.id), Some(&user.email)),
        remove,
        |_| "done".into(),
    )
    .await?;
    notify(
        &state,
        &user,
        "Your authenticator app was removed",
        "An administrator removed the authenticator app of your account; sign-in codes now come by mail.",
    )
    .await;
    Ok(axum::Json(StatusResponse {
        status: "totp_removed",
    }))
}

#[utoipa::path(get, path = "/v1/admin/users/{user_id}/sessions", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path), SessionQuery),
    responses((status = 200, body = Vec<SessionView>, description = "a page of sessions, newest first; `Link: <…>; rel=\"next\"` when more follow"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn sessions(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    PathParam(user_id): PathParam<String>,
    QueryParams(q): QueryParams<SessionQuery>,
) -> ApiResult<Response> {
    let page = page_request(q.limit, q.after.as_deref())?;
    let user = existing_user(&state, &user_id).await?;
    let now = now();
    let sessions = state.store.sessions_of(&user.id, &page.one_more()).await?;
    let path = format!("/v1/admin/users/{}/sessions", user.id);
    Ok(paged(
        sessions,
        &page,
        &path,
        |s| PageCursor {
            created_at: s.created_at,
            id: s.id.clone(),
        },
        |s| SessionView::new(s, now),
    ))
}

/// Revokes one access token by `jti`, also one just past its `exp` that
/// verifiers may still accept within their clock skew; the feed entry lives
/// until the token's own expiry plus the retention margin.
#[utoipa::path(post, path = "/v1/admin/tokens/revoke", tag = "admin", request_body = RevokeTokenRequest, security(("bearer" = [])),
    responses((status = 200, body = RevokeTokenResponse), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    Json(req): Json<RevokeTokenRequest>,
) -> ApiResult<axum::Json<RevokeTokenResponse>> {
    let now = now();
    let token = state
        .store
        .access_token(&req.jti)
        .await?
        .filter(|t| state.feed.may_still_pass(t.expires_at, now))
        .ok_or(ApiError::NotFound("no live access token has this jti"))?;
    let revoke = async {
        state
            .store
            .revoke_token(&token.jti, now, token.expires_at)
            .await?;
        feed_changed(&state).await;
        Ok(())
    };
    audit::privileged(
        &state,
        &client,
        (
            "admin_revoke_token",
            &format!("{}: jti {}", audit::by_admin(&admin), token.jti),
        ),
        (Some(&token.user_id), None),
        revoke,
        |_| "done".into(),
    )
    .await?;
    Ok(axum::Json(RevokeTokenResponse {
        jti: token.jti,
        expires_at: token.expires_at,
    }))
}

#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "every stored signing key (public metadata only)"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
) -> axum::Json<Vec<KeyInfo>> {
    axum::Json(state.keys.list())
}

/// Publishes a new key now; it signs after `key_publish_lead_secs`.
#[utoipa::path(post, path = "/v1/admin/keys/rotate", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = RotateResponse),
        (status = 409, body = ErrorBody, description = "as many keys are published as a verifier keeps (32): retired ones must leave the JWKS first"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn rotate_keys(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<RotateResponse>> {
    let now = now();
    let lead = i64::try_from(state.config.keys.publish_lead.as_secs()).unwrap_or(60);
    let rotate = async {
        state
            .keys
            .rotate(
                state.store.as_ref(),
                state.config.keys.signing_alg,
                now,
                lead,
            )
            .await
            .map_err(|e| match e {
                RotateError::TooManyKeys { .. } => ApiError::Conflict(
                    "too many signing keys are published: rotate again once retired keys have left the JWKS",
                ),
                RotateError::Store(e) => e.into(),
            })
    };
    let kid = audit::privileged(
        &state,
        &client,
        ("admin_rotate_keys", &audit::by_admin(&admin)),
        (None, None),
        rotate,
        |kid| format!("done: new key {kid}"),
    )
    .await?;
    Ok(axum::Json(RotateResponse {
        kid,
        publish_at: now,
        active_at: now + lead,
    }))
}

/// Withdraws a signing key whose private half leaked, as `authflow-auth keys
/// withdraw` does (`KeyRing::withdraw`): out of the JWKS and verifying
/// nothing at once, its private half deleted; a new key signs at once when
/// it was the one signing. A key withdrawn before: 200, nothing changed.
#[utoipa::path(post, path = "/v1/admin/keys/{kid}/withdraw", tag = "admin", security(("bearer" = [])),
    params(("kid" = String, Path)),
    responses((status = 200, body = WithdrawResponse), (status = 404, body = ErrorBody, description = "no signing key has this `kid`: nothing changed"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn withdraw_key(
    State(state): State<Arc<AppState>>,
    client: Client,
    Admin(admin): Admin,
    PathParam(kid): PathParam<String>,
) -> ApiResult<axum::Json<WithdrawResponse>> {
    let withdraw = async {
        state
            .keys
            .withdraw(
                state.store.as_ref(),
                state.config.keys.signing_alg,
                &kid,
                now(),
            )
            .await
            .map_err(|e| match e {
                WithdrawError::UnknownKey { .. } => ApiError::NotFound("no such signing key"),
                WithdrawError::Store(e) => e.into(),
            })
    };
    let done = audit::privileged(
        &state,
        &client,
        ("admin_withdraw_key", &audit::by_admin(&admin)),
        (None, None),
        withdraw,
        |done| done.audit_detail(&kid),
    )
    .await?;
    let (withdrawn_now, successor) = match done {
        Withdrawn::Already => (false, None),
        Withdrawn::Now { successor } => (true, successor),
    };
    Ok(axum::Json(WithdrawResponse {
        kid,
        withdrawn_now,
        successor,
    }))
}

/// The audit log, newest first, a page at a time back to its oldest row
/// kept: the cursor is the id of a page's last row (insertion order), so a
/// row written while an admin pages back is neither repeated nor skipped.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, description = "a page of audit entries, newest first; `Link: <…>; rel=\"next\"` when more follow"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn audit_log(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Response> {
    let page = page_request(q.limit, q.after.as_deref())?;
    let user_id = q.user_id.as_deref();
    let rows = state.store.audit_page(user_id, &page.one_more()).await?;
    let path = match user_id {
        // Any text: escaped, or the next page would list another filter's rows.
        Some(user_id) => format!(
            "/v1/admin/audit?user_id={}",
            url::form_urlencoded::byte_serialize(user_id.as_bytes()).collect::<String>()
        ),
        None => "/v1/admin/audit".to_owned(),
    };
    Ok(paged(
        rows,
        &page,
        &path,
        |r: &AuditRow| IdCursor(r.id),
        |r| r.entry.clone(),
    ))
}
