//! TOTP enrolment and removal, each after a fresh proof of ownership.

use std::sync::Arc;

use axum::extract::State;

use crate::audit;
use crate::clock::now;
use crate::domain::Secret;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, Client, Json};
use crate::state::AppState;
use crate::store::{EnrolmentProof, TotpStep, User};

use super::second_factor::{count_second_factor_attempt, second_factor_failed, totp_step};
use super::signin::{account_lock_key, password_attempt, password_ok, throttled};
use super::{notify, CodeRequest, FactorProof, StatusResponse, TotpEnrollment, MAX_PASSWORD_BYTES};

/// Checks a [`FactorProof`]. With an authenticator set up, only a current
/// code from it (through the same per-account guard as sign-in): the second
/// factor exists because the password alone may be known, so the password
/// alone must not replace or remove it (a lost one is removed by an
/// administrator). Without one, the password (throttled like sign-in).
async fn prove_owner(
    state: &AppState,
    client: &Client,
    user: &User,
    proof: &FactorProof,
) -> ApiResult<()> {
    if let Some(secret) = &user.totp_secret {
        let Some(code) = &proof.code else {
            return Err(ApiError::BadRequest(
                "an authenticator app is set up: confirm with a current `code` from it \
                 (an administrator can remove a lost one)"
                    .into(),
            ));
        };
        throttled(state, user, client).await?;
        return check_code(state, client, user, secret, code, "factor_proof").await;
    }
    let Some(password) = &proof.password else {
        return Err(ApiError::BadRequest("confirm with your `password`".into()));
    };
    if password.expose().len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::BadRequest("password is too long".into()));
    }
    // Counted before it is compared, as at sign-in, once its hashing slot is held.
    let slot = state.password_work.reserve().await?;
    let account = account_lock_key(state, &user.email, Some(&user.id), client).await?;
    let attempt = password_attempt(state, &account, client).await?;
    if state
        .password_work
        .verify_in(
            slot,
            password.expose().to_owned(),
            Some(user.password_hash.clone()),
        )
        .await?
    {
        return password_ok(state, &user.email, &account, attempt).await;
    }
    audit::record(
        state,
        Some(client),
        "factor_proof",
        "bad_password",
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    Err(ApiError::InvalidCredentials)
}

/// A current code of the TOTP key `secret`, counted against the account's
/// second-factor guard before it is compared (each time step once, as at
/// sign-in); a wrong one is audited as `event`.
async fn check_code(
    state: &AppState,
    client: &Client,
    user: &User,
    secret: &str,
    code: &Secret,
    event: &str,
) -> ApiResult<()> {
    let now = now();
    let attempt = count_second_factor_attempt(state, user, client, now).await?;
    let accepted = match totp_step(secret, code.expose().trim(), now) {
        Some(step) => match state.store.use_totp_step(&user.id, secret, step).await? {
            TotpStep::Recorded => true,
            TotpStep::UsedBefore => {
                // The right code, second (a double submit): no wrong guess.
                attempt.right_but_late(state, &user.id).await?;
                return Err(ApiError::InvalidCode(
                    "this code was used already; wait for the next one",
                ));
            }
            // A code of an authenticator removed or replaced since `user` was
            // read: it proves nothing about the account as it is now.
            TotpStep::NotCurrent => {
                attempt.right_but_late(state, &user.id).await?;
                return Err(ApiError::Conflict(
                    "the authenticator changed while this was proven; try again",
                ));
            }
        },
        None => false,
    };
    if accepted {
        attempt.accepted(state).await?;
        state.store.second_factor_success(&user.id).await?;
        return Ok(());
    }
    Err(code_refused(state, client, user, event, (now, attempt.number)).await)
}

/// A wrong code, counted as attempt `attempt` at `now`: audited as `event`,
/// locking the guard at its limit; the error to answer with.
async fn code_refused(
    state: &AppState,
    client: &Client,
    user: &User,
    event: &str,
    (now, attempt): (i64, u32),
) -> ApiError {
    audit::record(
        state,
        Some(client),
        event,
        "bad_code",
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    match second_factor_failed(state, user, client, now, attempt).await {
        Ok(()) => ApiError::InvalidCode("the code is wrong"),
        Err(e) => e,
    }
}

/// How recent a session's sign-in must be to set up the first authenticator.
pub const FIRST_AUTHENTICATOR_MAX_SIGNIN_AGE_SECS: u64 = 15 * 60;

/// The first authenticator replaces the mailed code, and only a code from
/// it removes it (a password reset keeps it): a session and the password
/// alone, both of which a thief may hold without the mailbox, would take
/// the account over for good. So it needs a session whose sign-in (the
/// mailed code) is recent: a fresh proof of the factor it replaces. A
/// replacement is proven with the current authenticator's code instead.
pub async fn signed_in_recently(state: &AppState, user: &User, session: &str) -> ApiResult<()> {
    if user.totp_secret.is_some() {
        return Ok(());
    }
    let signed_in_at = state
        .store
        .session(session)
        .await?
        .map_or(i64::MIN, |s| s.created_at);
    let max_age = FIRST_AUTHENTICATOR_MAX_SIGNIN_AGE_SECS;
    if now().saturating_sub(signed_in_at) > i64::try_from(max_age).unwrap_or(i64::MAX) {
        return Err(ApiError::SignInAgain {
            description: "sign in again (with the mailed code) to set up an authenticator: \
                          the sign-in must be at most 15 minutes old",
            max_age_secs: max_age,
            dpop_algs: None,
        });
    }
    Ok(())
}

/// The account of the access token's subject (gone since the token was issued: 401).
async fn caller_account(state: &AppState, caller: &Caller) -> ApiResult<User> {
    state
        .store
        .user_by_id(&caller.0.sub)
        .await?
        .ok_or_else(|| caller.refusal_in_its_scheme(state, ApiError::InvalidToken("unknown user")))
}

/// Starts setting up (or replacing) the TOTP authenticator; needs a fresh
/// proof, so an access token alone cannot take over the second factor.
#[utoipa::path(post, path = "/v1/auth/totp/enroll", tag = "auth", request_body = FactorProof, security(("bearer" = [])),
    responses((status = 200, body = TotpEnrollment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "`conflict`: the account changed while the proof was checked (an authenticator set up, replaced or removed, or the password reset meanwhile); enroll again"),
              (status = 429, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "`temporarily_unavailable`: no password-hashing slot came free within `limits.password_hash_wait_ms` for the password proof, or this instance's revocation list has gone unsynced past `revocation.max_staleness_secs`; retry after `Retry-After`")))]
pub async fn totp_enroll(
    State(state): State<Arc<AppState>>,
    client: Client,
    caller: Caller,
    Json(proof): Json<FactorProof>,
) -> ApiResult<axum::Json<TotpEnrollment>> {
    let user = caller_account(&state, &caller).await?;
    begin_totp_enrollment(&state, &client, &user, &caller.0.claims.sid, &proof)
        .await
        .map(axum::Json)
        .map_err(|e| caller.refusal_in_its_scheme(&state, e))
}

/// TOTP enrolment for the API and the pages: after a fresh proof, a new
/// pending secret, which only `session` (the caller's) confirms
/// ([`confirm_totp_enrollment`]).
pub async fn begin_totp_enrollment(
    state: &AppState,
    client: &Client,
    user: &User,
    session: &str,
    proof: &FactorProof,
) -> ApiResult<TotpEnrollment> {
    signed_in_recently(state, user, session).await?;
    prove_owner(state, client, user, proof).await?;
    let mut bytes = [0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let totp = totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes.to_vec(),
        Some(state.config.accounts.totp_issuer.clone()),
        user.email.clone(),
    )
    .map_err(ApiError::internal)?;
    let secret = totp.get_secret_base32();
    // The account as the proof saw it: an authenticator set up, replaced or
    // removed meanwhile (by another request, an admin) or a password reset
    // since makes this proof stale.
    let proven = EnrolmentProof {
        password_version: user.password_version,
        authenticator: user.totp_secret.as_deref(),
    };
    if !state
        .store
        .set_totp_pending(&user.id, &secret, session, proven)
        .await?
    {
        return Err(ApiError::Conflict(
            "the account changed while this enrolment was proven; enroll again",
        ));
    }
    audit::record(
        state,
        Some(client),
        "totp_enroll",
        "pending",
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    Ok(TotpEnrollment {
        otpauth_uri: totp.get_url(),
        secret,
    })
}

#[utoipa::path(post, path = "/v1/auth/totp/confirm", tag = "auth", request_body = CodeRequest, security(("bearer" = [])),
    responses((status = 200, body = StatusResponse), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "`too_many_attempts`: the account's second factor is locked (`throttle.second_factor_max_failures`); retry after `Retry-After`")))]
pub async fn totp_confirm(
    State(state): State<Arc<AppState>>,
    client: Client,
    caller: Caller,
    Json(req): Json<CodeRequest>,
) -> ApiResult<axum::Json<StatusResponse>> {
    let user = caller_account(&state, &caller).await?;
    confirm_totp_enrollment(&state, &client, &user, &caller.0.claims.sid, &req.code).await?;
    Ok(axum::Json(StatusResponse {
        status: "totp_enabled",
    }))
}

/// Confirms the pending TOTP secret with a current code (API and pages), in
/// the session that began the enrolment.
pub async fn confirm_totp_enrollment(
    state: &AppState,
    client: &Client,
    user: &User,
    session: &str,
    code: &Secret,
) -> ApiResult<()> {
    let pending = user.totp_pending.clone().ok_or(ApiError::Conflict(
        "no TOTP enrolment is pending; call /v1/auth/totp/enroll",
    ))?;
    // Guarded like every code: a session that found an enrolment left pending
    // must not try codes until it switches on a key it never saw.
    let now = now();
    let attempt = count_second_factor_attempt(state, user, client, now).await?;
    let Some(step) = totp_step(&pending, code.expose().trim(), now) else {
        return Err(code_refused(state, client, user, "totp_confirm", (now, attempt.number)).await);
    };
    attempt.accepted(state).await?;
    if !state
        .store
        .confirm_totp(&user.id, &pending, session, step)
        .await?
    {
        return Err(ApiError::Conflict("the enrolment changed; enroll again"));
    }
    // A right code, as at sign-in: the count of wrong ones starts again.
    // After the commit (the authenticator is on), so a failure here is
    // logged, not answered: the owner is answered and told all the same.
    if let Err(e) = state.store.second_factor_success(&user.id).await {
        tracing::warn!(error = %e, "authenticator confirmed: its guard was not reset");
    }
    audit::record(
        state,
        Some(client),
        "totp_confirm",
        "success",
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    let what = if user.totp_secret.is_some() {
        "replaced"
    } else {
        "set up"
    };
    notify(
        state,
        user,
        "A new authenticator app was set up",
        &format!("The authenticator app of your account was {what}."),
    )
    .await;
    Ok(())
}

/// Removes the TOTP authenticator (sign-in falls back to mailed codes); needs
/// a fresh proof and mails the owner.
#[utoipa::path(post, path = "/v1/auth/totp/remove", tag = "auth", request_body = FactorProof, security(("bearer" = [])),
    responses((status = 200, body = StatusResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn totp_remove(
    State(state): State<Arc<AppState>>,
    client: Client,
    caller: Caller,
    Json(proof): Json<FactorProof>,
) -> ApiResult<axum::Json<StatusResponse>> {
    let user = caller_account(&state, &caller).await?;
    let Some(authenticator) = user.totp_secret.as_deref() else {
        return Err(ApiError::Conflict("no TOTP authenticator is set up"));
    };
    prove_owner(&state, &client, &user, &proof).await?;
    // Only the authenticator whose code proved this: one that replaced it
    // meanwhile (its owner's, confirmed and answered) stays.
    if !state.store.clear_totp(&user.id, authenticator).await? {
        return Err(ApiError::Conflict(
            "the authenticator changed while this was proven; try again",
        ));
    }
    audit::record(
        &state,
        Some(&client),
        "totp_remove",
        "success",
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    notify(
        &state,
        &user,
        "Your authenticator app was removed",
        "The authenticator app of your account was removed; sign-in codes now come by mail.",
    )
    .await;
    Ok(axum::Json(StatusResponse {
        status: "totp_removed",
    }))
}
