//! Sign-in step 2: the mailed code or TOTP, under per-challenge and per-account limits.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use crate::audit;
use crate::clock::now;
use crate::domain::Secret;
use crate::dpop::PendingProof;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Client, Json};
use crate::mailer::Mail;
use crate::metrics::inc;
use crate::sessions::{self, SessionTokens};
use crate::signin_codes;
use crate::state::AppState;
use crate::store::{Challenge, SecondFactorAttempt, SignedInWith, TotpStep, User};
use crate::throttle::{ip_key, Attempt};

use super::signin::{clear_account_failures, signin_locked, throttled};
use super::{send_mail, ChallengeAnswer, SIGNIN_VERIFY_PATH};

/// The TOTP time step that `code` matches (RFC 6238, 30 s steps, ±1 step).
pub fn totp_step(secret_base32: &str, code: &str, now: i64) -> Option<i64> {
    let bytes = totp_rs::Secret::Encoded(secret_base32.to_owned())
        .to_bytes()
        .ok()?;
    let totp = totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        None,
        String::new(),
    );
    let current = now / 30;
    let mut found = None;
    for step in [current - 1, current, current + 1] {
        let expected = totp.generate(u64::try_from(step * 30).unwrap_or(0));
        // No early exit: every candidate costs the same.
        if expected.len() == code.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_bytes(),
                code.as_bytes(),
            ))
        {
            found = Some(step);
        }
    }
    found
}

/// Step 2: the second factor. Returns the tokens and sets the device cookie.
///
/// Every attempt is counted (per challenge and per account, atomically)
/// before the code is compared, so parallel guesses cannot exceed the limit;
/// the account's count survives new challenges, a correct password and a
/// restart, and each lockout doubles the next. Whatever refuses a counted
/// attempt (a wrong code, a used-up challenge, a refused proof), the one that
/// reaches the limit locks, so a lock that runs out always lets the next
/// attempt be compared.
///
/// With a `DPoP` proof (RFC 9449 §5) the session and its tokens are bound to
/// the proof's key (`token_type: DPoP`). The proof is checked before the
/// code, so a refused proof costs no attempt; it is recorded as used only
/// once the code is accepted, so a request without a valid challenge and
/// code writes nothing and burns no proof.
#[utoipa::path(post, path = "/v1/auth/signin/verify", tag = "auth", request_body = ChallengeAnswer,
    params(("DPoP" = Option<String>, Header, description = "DPoP proof (RFC 9449): `htm` POST, `htu` the issuer + `/v1/auth/signin/verify`")),
    responses((status = 200, body = crate::routes::tokens::TokenResponse, headers(("DPoP-Nonce" = String, description = "a fresh server nonce, when nonces are required"))),
              (status = 400, body = ErrorBody, description = "`invalid_dpop_proof`, or `use_dpop_nonce` with the nonce in `DPoP-Nonce`"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "`temporarily_unavailable`: no signing key this instance can open is active; retry after `Retry-After`, or on another instance")))]
pub async fn signin_verify(
    State(state): State<Arc<AppState>>,
    client: Client,
    Json(req): Json<ChallengeAnswer>,
) -> ApiResult<Response> {
    let now = now();
    let proof = crate::dpop::token_request_proof(&state, &client.headers, SIGNIN_VERIFY_PATH, now)?;
    let tokens = finish_signin(&state, &client, &req.challenge_id, &req.code, proof, now).await?;
    Ok(crate::routes::tokens::token_response(&state, tokens, now))
}

/// Sign-in step 2 for the API and the pages: the challenge's code, under the
/// per-challenge and per-account attempt limits; a new session on success
/// (bound to the key of `proof`, a DPoP proof already checked, if any).
pub async fn finish_signin(
    state: &AppState,
    client: &Client,
    challenge_id: &str,
    code: &Secret,
    proof: Option<PendingProof>,
    now: i64,
) -> ApiResult<SessionTokens> {
    crate::tokens::ensure_signer(state, now)?;
    let challenge = state
        .store
        .challenge(challenge_id)
        .await?
        .ok_or(ApiError::InvalidCode("unknown or expired challenge"))?;
    if challenge.consumed_at.is_some() || challenge.expires_at <= now {
        return Err(ApiError::InvalidCode("unknown or expired challenge"));
    }
    let user = state
        .store
        .user_by_id(&challenge.user_id)
        .await?
        .ok_or(ApiError::InvalidCode("unknown or expired challenge"))?;
    // Begun with a password replaced since (a challenge stored just after the reset that
    // would have ended it). A reset from here on is caught when the session is stored.
    if user.password_version != challenge.password_version {
        return Err(ApiError::InvalidCode("unknown or expired challenge"));
    }
    if let Err(e) = throttled(state, &user, client).await {
        if matches!(e, ApiError::TooManyRequests { .. }) {
            let (id, email) = (Some(user.id.as_str()), Some(user.email.as_str()));
            audit::record_throttled(state, client, "signin_verify", id, email).await;
        }
        return Err(e);
    }
    if user.banned_at.is_some() {
        return Err(ApiError::AccountDisabled);
    }
    // Step 1 gives no challenge to an unverified address; this only guards a
    // challenge stored otherwise (by an older version). Its holder passed the
    // password check, so the answer tells them nothing they did not know.
    if !user.email_verified {
        audit::record(
            state,
            Some(client),
            "signin_verify",
            "email_not_verified",
            Some(&user.id),
            Some(&user.email),
        )
        .await;
        return Err(ApiError::EmailNotVerified);
    }
    let attempt = count_second_factor_attempt(state, &user, client, now).await?;
    let dpop_jkt =
        match check_counted_attempt(state, client, &challenge, &user, code, proof, now).await {
            Ok(dpop_jkt) => dpop_jkt,
            Err(Refused::Failure(refused)) => {
                // Counted, not accepted: a failure, whichever check refused it.
                second_factor_failed(state, &user, client, now, attempt.number).await?;
                return Err(refused);
            }
            Err(Refused::RightCodeLate(refused)) => {
                attempt.right_but_late(state, &user.id).await?;
                audit::record(
                    state,
                    Some(client),
                    "signin_verify",
                    "right_code_late",
                    Some(&user.id),
                    Some(&user.email),
                )
                .await;
                return Err(refused);
            }
        };
    attempt.accepted(state).await?;
    inc(&state.metrics.second_factor_ok);
    state.store.second_factor_success(&user.id).await?;
    clear_account_failures(state, &user.email).await?;
    // The code's authenticator (the one `check_counted_attempt` took it from).
    let with = match user.totp_secret.as_deref() {
        Some(secret) if challenge.method != "email" => SignedInWith::Authenticator(secret),
        _ => SignedInWith::MailedCode,
    };
    let tokens = sessions::start_signed_in(state, &user, client, (dpop_jkt, with), now).await?;
    audit::record_with(
        state,
        Some(client),
        ("signin_verify", "success"),
        (Some(&user.id), Some(&user.email)),
        Some(format!("session {}", tokens.session_id)),
    )
    .await;
    Ok(tokens)
}

/// Why a counted attempt was refused.
enum Refused {
    /// Counted towards the lock: a wrong code, a used-up challenge, a bad proof.
    Failure(ApiError),
    /// The right code, second: another request with it (the owner's own
    /// double submit, a second tab) took the challenge or the time step
    /// first. Not a guess: counted as a failure, the loser of the race on the
    /// owner's last allowed attempt locked the account the winner had just
    /// signed in to, and mailed the owner about wrong codes.
    RightCodeLate(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Self::Failure(e)
    }
}

impl From<crate::store::StoreError> for Refused {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Failure(e.into())
    }
}

/// Everything that can refuse an attempt already counted against the
/// account: the challenge's own limit, the code, the proof, single use. The
/// DPoP key thumbprint to bind to when the challenge is consumed.
async fn check_counted_attempt(
    state: &AppState,
    client: &Client,
    challenge: &Challenge,
    user: &User,
    code: &Secret,
    proof: Option<PendingProof>,
    now: i64,
) -> Result<Option<String>, Refused> {
    if state.store.challenge_attempt(&challenge.id).await?
        > state.config.accounts.challenge_max_attempts
    {
        return Err(ApiError::InvalidCode("too many wrong codes; sign in again").into());
    }
    let code = code.expose().trim();
    let accepted = match (
        challenge.method.as_str(),
        &challenge.code_hash,
        &user.totp_secret,
    ) {
        // A mailed code only while the account has no authenticator: one set
        // up since this sign-in began is its second factor now (a thief with
        // the password and the mailbox must not finish a sign-in begun before).
        ("email", Some(stored), None) => {
            signin_codes::matches(&state.signin_code_keys, &challenge.id, code, stored)
        }
        ("totp", _, Some(secret)) => match totp_step(secret, code, now) {
            Some(step) => match state.store.use_totp_step(&user.id, secret, step).await? {
                TotpStep::Recorded => true,
                TotpStep::UsedBefore => {
                    return Err(Refused::RightCodeLate(ApiError::InvalidCode(
                        "this code was used already; wait for the next one",
                    )))
                }
                // An authenticator removed or replaced since `user` was read
                // (a lost or stolen one): its codes open no session.
                TotpStep::NotCurrent => false,
            },
            None => false,
        },
        _ => false,
    };
    if !accepted {
        inc(&state.metrics.second_factor_failed);
        audit::record(
            state,
            Some(client),
            "signin_verify",
            "bad_code",
            Some(&user.id),
            Some(&user.email),
        )
        .await;
        return Err(ApiError::InvalidCode("the code is wrong").into());
    }
    // A replayed proof is refused before the challenge is consumed.
    let dpop_jkt = crate::dpop::accept(state, proof, now).await?;
    if !state.store.consume_challenge(&challenge.id, now).await? {
        return Err(Refused::RightCodeLate(ApiError::InvalidCode(
            "unknown or expired challenge",
        )));
    }
    Ok(dpop_jkt)
}

/// Counts a second-factor attempt for the account before any code is
/// compared: its number, or 429 while locked, or past the limit (parallel
/// attempts overtook the one at the limit, or a count was left past it):
/// then refused unchecked, and locked unless a lock is in force already, so
/// that the refusal always ends when a lock runs out.
pub(super) async fn count_second_factor_attempt(
    state: &AppState,
    user: &User,
    client: &Client,
    now: i64,
) -> ApiResult<CodeAttempt> {
    // The client address first, as for a password: counted before the code
    // is compared, so parallel guesses from one address (on any instance)
    // cannot all pass a check before any failure is counted.
    let address = state
        .throttle
        .attempt(
            state.store.as_ref(),
            &ip_key(&client.bucket(state)),
            state.config.throttle.ip_max_failures,
            now,
        )
        .await?
        .map_err(|retry| signin_locked(state, retry))?;
    let refused = match state.store.second_factor_attempt(&user.id, now).await? {
        SecondFactorAttempt::Locked(until) => second_factor_locked(state, until - now),
        SecondFactorAttempt::Counted(n) if n > state.config.throttle.second_factor_max_failures => {
            let until = lock_second_factor(state, user, client, now).await?;
            let base = i64::try_from(state.config.throttle.lockout_base.as_secs()).unwrap_or(30);
            second_factor_locked(state, until.map_or(base, |until| until - now))
        }
        SecondFactorAttempt::Counted(number) => return Ok(CodeAttempt { number, address }),
    };
    // Refused unchecked: not a failure of this address.
    state.throttle.undo(state.store.as_ref(), &address).await?;
    Err(refused)
}

/// A second-factor attempt counted for the account (its `number`) and the
/// client address, before its code is compared.
pub(super) struct CodeAttempt {
    pub(super) number: u32,
    address: Attempt,
}

impl CodeAttempt {
    /// The code was right: the address's count takes this attempt back (a
    /// failure stays counted, and locked the address at its limit).
    pub(super) async fn accepted(self, state: &AppState) -> ApiResult<()> {
        Ok(state
            .throttle
            .undo(state.store.as_ref(), &self.address)
            .await?)
    }

    /// The code was right, but another request with it came first (a
    /// double submit): no guess, so the account's count takes it back too.
    /// Left counted, it brought the owner's next lock one code early: at
    /// once, with one try allowed.
    pub(super) async fn right_but_late(self, state: &AppState, user_id: &str) -> ApiResult<()> {
        state.store.second_factor_not_a_guess(user_id).await?;
        self.accepted(state).await
    }
}

/// Attempt `attempt` was counted and refused: at the limit, lock and tell the owner.
pub(super) async fn second_factor_failed(
    state: &AppState,
    user: &User,
    client: &Client,
    now: i64,
    attempt: u32,
) -> ApiResult<()> {
    if attempt >= state.config.throttle.second_factor_max_failures {
        lock_second_factor(state, user, client, now).await?;
    }
    Ok(())
}

fn second_factor_locked(state: &AppState, retry_after_secs: i64) -> ApiError {
    inc(&state.metrics.signin_throttled);
    ApiError::TooManyRequests {
        retry_after_secs: u64::try_from(retry_after_secs).unwrap_or(1).max(1),
    }
}

/// The limit was reached: lock (doubling each time) and tell the owner, whose
/// password is probably known to whoever is guessing. The lock's end, or
/// `None` when a lock was in force already (written by a parallel attempt,
/// which told the owner).
async fn lock_second_factor(
    state: &AppState,
    user: &User,
    client: &Client,
    now: i64,
) -> ApiResult<Option<i64>> {
    let base = i64::try_from(state.config.throttle.lockout_base.as_secs()).unwrap_or(30);
    let max =
        i64::try_from(state.config.throttle.second_factor_lockout_max.as_secs()).unwrap_or(86_400);
    let Some(until) = state
        .store
        .second_factor_lock(&user.id, now, base, max)
        .await?
    else {
        return Ok(None);
    };
    audit::record(
        state,
        Some(client),
        "signin_verify",
        "second_factor_locked",
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    let mail = Mail {
        to: user.email.clone(),
        subject: "Sign-in blocked: too many wrong second factor codes".into(),
        body: format!(
            "Someone entered your password correctly and then {} wrong sign-in codes. Sign-in is blocked for {} seconds. \
             If it was not you, change your password now.",
            state.config.throttle.second_factor_max_failures,
            until - now
        ),
        code: None,
        token: None,
        sent_at: 0,
    };
    send_mail(state, mail).await;
    Ok(Some(until))
}
