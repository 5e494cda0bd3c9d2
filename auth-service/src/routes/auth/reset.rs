//! Password reset with a mailed one-time token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::audit;
use crate::clock::now;
use crate::domain::password::Password;
use crate::domain::{random_secret, Email, Secret};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Client, Json};
use crate::mail_budget;
use crate::mailer::Mail;
use crate::sessions::{self};
use crate::state::AppState;
use crate::store::TokenPurpose;

use super::signin::clear_account_failures;
use super::{hand_off, hash_password, notify, page_link, parse_email};
use super::{ForgotRequest, MailLink, ResetRequest, StatusResponse};

/// Always 202; the work (and the mail, if the account exists) happens in the
/// background so timing does not reveal who has an account.
#[utoipa::path(post, path = "/v1/auth/password/forgot", tag = "auth", request_body = ForgotRequest,
    responses((status = 202, body = StatusResponse), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "`limits.background_tasks` mail tasks are running; retry after `Retry-After`")))]
pub async fn password_forgot(
    State(state): State<Arc<AppState>>,
    client: Client,
    Json(req): Json<ForgotRequest>,
) -> ApiResult<Response> {
    request_password_reset(&state, client, &req.email, MailLink::Api)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(StatusResponse { status: "accepted" }),
    )
        .into_response())
}

/// Password reset for the API and the pages: only the address is checked
/// here; the lookup and the mail happen in the background.
pub fn request_password_reset(
    state: &Arc<AppState>,
    client: Client,
    raw_email: &str,
    link: MailLink,
) -> ApiResult<()> {
    let email = parse_email(raw_email)?;
    let task_state = Arc::clone(state);
    state.background.spawn(async move {
        if let Err(e) = send_reset(&task_state, &email, &client, link).await {
            tracing::warn!(error = ?e, "password reset mail failed");
        }
    })
}

async fn send_reset(
    state: &AppState,
    email: &Email,
    client: &Client,
    link: MailLink,
) -> ApiResult<()> {
    // Taken for unknown addresses too, so the limit behaves the same for both.
    if !mail_budget::allow(state, email.as_str(), client, now()).await? {
        // A refusal any client repeats at will: one row per address a minute,
        // not one per request (the log would grow with the flood).
        let about = audit::Repeated {
            user_id: None,
            email: Some(email.as_str()),
            per_account: false,
        };
        audit::record_repeatable(state, client, ("password_forgot", "mail_limited"), about).await;
        return Ok(());
    }
    let Some(user) = state.store.user_by_email(email.as_str()).await? else {
        audit::record(
            state,
            Some(client),
            "password_forgot",
            "unknown_email",
            None,
            Some(email.as_str()),
        )
        .await;
        return Ok(());
    };
    let token = random_secret();
    let expires =
        now() + i64::try_from(state.config.accounts.reset_token_ttl.as_secs()).unwrap_or(1800);
    state
        .store
        .put_one_time_token(
            &token.hash(),
            TokenPurpose::ResetPassword,
            &user.id,
            expires,
        )
        .await?;
    let mail = Mail {
        to: user.email.clone(),
        subject: "Reset your password".into(),
        body: match link {
            MailLink::Api => format!(
                "Reset your password with this token (POST /v1/auth/password/reset); it expires in {} minutes:\n\n{}\n",
                state.config.accounts.reset_token_ttl.as_secs() / 60,
                token.expose()
            ),
            MailLink::Page => format!(
                "Choose a new password by opening this link; it expires in {} minutes:\n\n{}\n",
                state.config.accounts.reset_token_ttl.as_secs() / 60,
                page_link(state, "/auth/password/reset", &token)
            ),
        },
        code: None,
        token: Some(token.expose().to_owned()),
        sent_at: 0,
    };
    // Not in this task: its slot would be held longer than for an unknown address.
    let handed = hand_off(state, mail).await;
    audit::record(
        state,
        Some(client),
        "password_forgot",
        handed.outcome(),
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    Ok(())
}

/// Sets a new password with a mailed token; every session of the user ends,
/// and so do their other reset links and their sign-ins waiting for a code.
#[utoipa::path(post, path = "/v1/auth/password/reset", tag = "auth", request_body = ResetRequest,
    responses((status = 200, body = StatusResponse), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "`temporarily_unavailable`: no password-hashing slot came free within `limits.password_hash_wait_ms`; retry after `Retry-After`")))]
pub async fn password_reset(
    State(state): State<Arc<AppState>>,
    client: Client,
    Json(req): Json<ResetRequest>,
) -> ApiResult<axum::Json<StatusResponse>> {
    reset_password(&state, &client, &req.token, &req.password).await?;
    Ok(axum::Json(StatusResponse {
        status: "password_changed",
    }))
}

/// A new password with a mailed token, for the API and the pages.
pub async fn reset_password(
    state: &AppState,
    client: &Client,
    token: &Secret,
    password: &Secret,
) -> ApiResult<()> {
    let hash = token.hash();
    // Check the policy before using the token, so a weak password does not burn it.
    let user_id = state
        .store
        .peek_one_time_token(&hash, TokenPurpose::ResetPassword, now())
        .await?
        .ok_or(ApiError::InvalidLink)?;
    let user = state
        .store
        .user_by_id(&user_id)
        .await?
        .ok_or(ApiError::InvalidLink)?;
    let password =
        Password::parse(password.expose(), &user.email).map_err(|e| ApiError::WeakPassword(e.0))?;
    let password_hash = hash_password(state, password.expose().to_owned()).await?;
    // One transaction: the token is used up with the user's other reset links,
    // the password set, the sign-ins begun with the old password ended, and
    // every session revoked (never one without the other).
    let now = now();
    let Some((_, revoked)) = state
        .store
        .reset_password(
            &hash,
            &password_hash,
            now,
            sessions::feed_expiry(state, now),
        )
        .await?
    else {
        return Err(ApiError::InvalidLink);
    };
    sessions::revoked_by_store(state, revoked.len()).await;
    // Committed: the password is changed and every session ended, so the
    // answer, the audit row and the owner's notice follow whatever fails
    // now (an error would tell the owner nothing changed). The sign-in
    // failures left behind lift on their own.
    if let Err(e) = clear_account_failures(state, &user.email).await {
        tracing::warn!(error = %e, "password reset: the account's sign-in failures were not cleared");
    }
    audit::record(
        state,
        Some(client),
        "password_reset",
        "success",
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    notify(
        state,
        &user,
        "Your password was changed",
        "The password of your account was changed and every session was signed out.",
    )
    .await;
    Ok(())
}
