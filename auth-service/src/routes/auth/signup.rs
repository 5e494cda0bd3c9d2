//! Sign-up and email verification.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::audit;
use crate::clock::now;
use crate::domain::password::Password;
use crate::domain::{random_secret, Secret};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Client, Json};
use crate::mail_budget;
use crate::mailer::Mail;
use crate::metrics::inc;
use crate::state::AppState;
use crate::store::{StoreError, TokenPurpose, User};
use crate::throttle::signup_key;

use super::{deliver, hand_off, page_link, parse_email, send_mail};
use super::{Credentials, MailLink, SignupResponse, StatusResponse, TokenRequest};

/// A sign-up from the client's address, counted before its password is
/// hashed (with the sign-in throttle's lockout and backoff): 429 with
/// `Retry-After` once the address reached `throttle.ip_max_signups`. The
/// caller holds its hashing slot already, so a 503 never counts.
async fn count_signup(state: &AppState, client: &Client) -> ApiResult<()> {
    let key = signup_key(&client.bucket(state));
    match state
        .throttle
        .attempt(
            state.store.as_ref(),
            &key,
            state.config.throttle.ip_max_signups,
            now(),
        )
        .await?
    {
        Ok(_) => Ok(()),
        Err(retry_after_secs) => {
            inc(&state.metrics.signup_throttled);
            Err(ApiError::TooManyRequests {
                retry_after_secs: retry_after_secs.max(1),
            })
        }
    }
}

/// A new verification link for `user_id`, stored; the mail to send it in.
async fn verification_mail(
    state: &AppState,
    user_id: &str,
    email: &str,
    link: MailLink,
) -> ApiResult<Mail> {
    let token = random_secret();
    let expires =
        now() + i64::try_from(state.config.accounts.email_token_ttl.as_secs()).unwrap_or(86_400);
    state
        .store
        .put_one_time_token(&token.hash(), TokenPurpose::VerifyEmail, user_id, expires)
        .await?;
    // Whoever signed up chose the password, not necessarily the address's owner.
    let unsought = "If you did not sign up, do not confirm: reset the password instead to use this address yourself.";
    let body = match link {
        MailLink::Api => {
            format!("Confirm your email address with this token (POST /v1/auth/verify-email):\n\n{}\n\n{unsought}\n", token.expose())
        }
        MailLink::Page => {
            format!(
                "Confirm your email address by opening this link:\n\n{}\n\n{unsought}\n",
                page_link(state, "/auth/verify", &token)
            )
        }
    };
    Ok(Mail {
        to: email.to_owned(),
        subject: "Verify your email address".into(),
        body,
        code: None,
        token: Some(token.expose().to_owned()),
        sent_at: 0,
    })
}

/// A fresh verification link for `user`, whose address is not verified yet
/// (its first link lost, expired, or never sent past the mail budget), out of
/// the recipient's mail budget (not the requester's: whether this mail goes
/// out depends on the account being new, which the requester could measure
/// with its own later mails). In the background: the caller's answer must
/// take as long as one that sends nothing.
///
/// Skipped (with a warning) when `limits.background_tasks` are running: the
/// sign-in's answer must stay the wrong password's, and the next sign-in tries again.
pub(super) fn resend_verification(
    state: &Arc<AppState>,
    client: &Client,
    user: &User,
    link: MailLink,
) {
    let task_state = Arc::clone(state);
    let (client, user_id, email) = (client.clone(), user.id.clone(), user.email.clone());
    let started = state.background.spawn(async move {
        let state = task_state.as_ref();
        let sent = async {
            // The recipient's budget only: the requester's would tell it whether the address was new.
            if !mail_budget::allow_recipient(state, &email, now()).await? {
                audit::record(
                    state,
                    Some(&client),
                    "verify_email_resend",
                    "mail_limited",
                    Some(&user_id),
                    Some(&email),
                )
                .await;
                return Ok(());
            }
            // Not in this task: its slot would be held only for a right
            // password on an unverified account (as in `reset`).
            let handed = hand_off(
                state,
                verification_mail(state, &user_id, &email, link).await?,
            )
            .await;
            audit::record(
                state,
                Some(&client),
                "verify_email_resend",
                handed.outcome(),
                Some(&user_id),
                Some(&email),
            )
            .await;
            Ok::<(), ApiError>(())
        };
        if let Err(e) = sent.await {
            tracing::warn!(error = ?e, "verification mail failed");
        }
    });
    if started.is_err() {
        tracing::warn!("verification link not sent again: limits.background_tasks are running");
    }
}

/// The first verification link of a new account, written and mailed after
/// the answer: a taken address writes no link, so an answer that waited for
/// this write would tell a new address from a taken one by its time. The
/// development outbox is written before the answer (see `send_mail`): its
/// reader asks for the mail right after.
async fn send_first_verification(
    state: &Arc<AppState>,
    user_id: &str,
    email: &str,
    link: MailLink,
) -> Result<(), ApiError> {
    if state.mailer.is_local() {
        let mail = verification_mail(state, user_id, email, link).await?;
        deliver(state, mail).await;
        return Ok(());
    }
    let task_state = Arc::clone(state);
    let (user_id, email) = (user_id.to_owned(), email.to_owned());
    state.background.detach(async move {
        let state = task_state.as_ref();
        match verification_mail(state, &user_id, &email, link).await {
            Ok(mail) => deliver(state, mail).await,
            // Its next sign-in with the right password mails a fresh link.
            Err(e) => tracing::warn!(error = ?e, "verification link not stored"),
        }
    });
    Ok(())
}

/// Creates an account and mails a verification token. An email that is
/// already registered gets the same 201 (with an id that leads nowhere) and
/// its owner a notice, so sign-up does not reveal who has an account.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = Credentials,
    responses((status = 201, body = SignupResponse), (status = 400, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "`too_many_attempts`: the client address reached `throttle.ip_max_signups`; retry after `Retry-After`"),
              (status = 503, body = ErrorBody, description = "`temporarily_unavailable`: no password-hashing slot came free within `limits.password_hash_wait_ms`; retry after `Retry-After`")))]
pub async fn signup(
    State(state): State<Arc<AppState>>,
    client: Client,
    Json(req): Json<Credentials>,
) -> ApiResult<Response> {
    let user_id = register(&state, &client, &req.email, &req.password, MailLink::Api).await?;
    Ok((StatusCode::CREATED, axum::Json(SignupResponse { user_id })).into_response())
}

/// Sign-up for the API and the pages: the new user's id (or an id that leads
/// nowhere when the address is taken). `link` is what the mailed token opens.
pub async fn register(
    state: &Arc<AppState>,
    client: &Client,
    raw_email: &str,
    password: &Secret,
    link: MailLink,
) -> ApiResult<String> {
    let email = parse_email(raw_email)?;
    let password = Password::parse(password.expose(), email.as_str())
        .map_err(|e| ApiError::WeakPassword(e.0))?;
    // The hashing slot first: a sign-up refused for want of one (503) is not counted.
    let slot = state.password_work.reserve().await?;
    if let Err(e) = count_signup(state, client).await {
        audit::record_throttled(state, client, "signup", None, Some(email.as_str())).await;
        return Err(e);
    }
    let hash = state
        .password_work
        .hash_in(slot, password.expose().to_owned())
        .await?;
    let user = User::new(email.as_str(), hash, vec!["user".into()], now());
    let created = match state.store.create_user(&user).await {
        Ok(()) => true,
        Err(StoreError::Conflict(_)) => false,
        Err(e) => return Err(e.into()),
    };
    // Asked the same way for a new and a taken address (no difference in answer or timing).
    if !mail_budget::allow(state, email.as_str(), client, now()).await? {
        let outcome = if created {
            "success_mail_limited"
        } else {
            "duplicate_email_mail_limited"
        };
        let uid = created.then_some(user.id.as_str());
        audit::record(
            state,
            Some(client),
            "signup",
            outcome,
            uid,
            Some(email.as_str()),
        )
        .await;
    } else if created {
        send_first_verification(state, &user.id, email.as_str(), link).await?;
        audit::record(
            state,
            Some(client),
            "signup",
            "success",
            Some(&user.id),
            Some(email.as_str()),
        )
        .await;
    } else {
        let mail = Mail {
            to: email.as_str().to_owned(),
            subject: "Sign-up attempt".into(),
            body: "Someone tried to create an account with this address, which already has one. \
                   If it was you, sign in or reset your password."
                .into(),
            code: None,
            token: None,
            sent_at: 0,
        };
        send_mail(state, mail).await;
        audit::record(
            state,
            Some(client),
            "signup",
            "duplicate_email",
            None,
            Some(email.as_str()),
        )
        .await;
    }
    // Accepted sign-ups, new address or taken: the metrics do not tell them apart either.
    inc(&state.metrics.signups);
    Ok(user.id)
}

#[utoipa::path(post, path = "/v1/auth/verify-email", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = StatusResponse), (status = 400, body = ErrorBody)))]
pub async fn verify_email(
    State(state): State<Arc<AppState>>,
    client: Client,
    Json(req): Json<TokenRequest>,
) -> ApiResult<axum::Json<StatusResponse>> {
    confirm_email(&state, &client, &req.token).await?;
    Ok(axum::Json(StatusResponse { status: "verified" }))
}

/// Marks the address of the mailed `token`'s user verified (the token is used up).
pub async fn confirm_email(state: &AppState, client: &Client, token: &Secret) -> ApiResult<()> {
    let user_id = state
        .store
        .confirm_email(&token.hash(), now())
        .await?
        .ok_or(ApiError::InvalidLink)?;
    audit::record(
        state,
        Some(client),
        "verify_email",
        "success",
        Some(&user_id),
        None,
    )
    .await;
    Ok(())
}
