//! Sign-up, email verification, sign-in with a second factor, password
//! reset, TOTP enrolment.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit;
use crate::clock::now;
use crate::domain::password::Password;
use crate::domain::secret::{hash_secret, hashes_match, random_code};
use crate::domain::{random_id, random_secret, Email, Secret};
use crate::dpop::PendingProof;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, Client, Json};
use crate::mail_budget;
use crate::mailer::Mail;
use crate::metrics::inc;
use crate::sessions::{self, SessionTokens};
use crate::state::AppState;
use crate::store::{Challenge, SecondFactorAttempt, StoreError, TokenPurpose, User};
use crate::throttle::{account_device_key, account_key, ip_key, signup_key, Attempt};

/// Where sign-in completes (DPoP proofs name it in `htu`).
pub const SIGNIN_VERIFY_PATH: &str = "/v1/auth/signin/verify";

/// Longest password accepted at sign-in (argon2 cost must stay bounded).
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
}

#[derive(Serialize, ToSchema)]
pub struct SignupResponse {
    pub user_id: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(value_type = String)]
    pub token: Secret,
}

#[derive(Serialize, ToSchema)]
pub struct StatusResponse {
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct ChallengeResponse {
    pub challenge_id: String,
    /// `email` (a code was mailed) or `totp`.
    pub method: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeAnswer {
    pub challenge_id: String,
    #[schema(value_type = String)]
    pub code: Secret,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotRequest {
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    #[schema(value_type = String)]
    pub token: Secret,
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
}

#[derive(Serialize, ToSchema)]
pub struct TotpEnrollment {
    /// Base32 secret, for manual entry.
    pub secret: String,
    pub otpauth_uri: String,
}

/// A fresh proof that the caller is the account's owner, not just the holder
/// of its access token: the password, or a current TOTP code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FactorProof {
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<Secret>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub code: Option<Secret>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    #[schema(value_type = String)]
    pub code: Secret,
}

fn parse_email(raw: &str) -> ApiResult<Email> {
    Email::parse(raw).map_err(ApiError::BadRequest)
}

/// argon2id, under the service-wide limit (503 when no slot frees up in time).
async fn hash_password(state: &AppState, password: String) -> ApiResult<String> {
    state.password_work.hash(password).await
}

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

async fn send_mail(state: &AppState, mail: Mail) {
    let to = mail.to.clone();
    if let Err(e) = state.mailer.send(mail).await {
        tracing::warn!(error = %e, to, "mail not sent");
    }
}

/// What a mailed one-time token leads to: the API endpoint that takes it
/// (clients of the JSON API) or the service's own page (the browser flow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailLink {
    Api,
    Page,
}

/// The page a mailed token opens: the public origin of the pages, then
/// `path?token=…` (tokens are URL-safe base64, so nothing needs escaping).
fn page_link(state: &AppState, path: &str, token: &Secret) -> String {
    format!(
        "{}{path}?token={}",
        state.config.accounts.pages_url(&state.config.tokens.issuer),
        token.expose()
    )
}

async fn send_verification(
    state: &AppState,
    user_id: &str,
    email: &str,
    link: MailLink,
) -> ApiResult<()> {
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
    let mail = Mail {
        to: email.to_owned(),
        subject: "Verify your email address".into(),
        body,
        code: None,
        token: Some(token.expose().to_owned()),
        sent_at: 0,
    };
    send_mail(state, mail).await;
    Ok(())
}

/// A fresh verification link for `user`, whose address is not verified yet
/// (its first link lost, expired, or never sent past the mail budget), out of
/// the recipient's mail budget (not the requester's: whether this mail goes
/// out depends on the account being new, which the requester could measure
/// with its own later mails). In the background: the caller's answer must
/// take as long as one that sends nothing.
/// A right password whose stored hash was made under another cost than the
/// one configured now (the operator raised it) is hashed again under today's
/// cost and stored, in the background: the answer waits for no extra work.
/// The same password, so nothing is ended; a password changed meanwhile is
/// left as it is.
fn rehash_in_background(state: &Arc<AppState>, user: &User, password: &Secret) {
    if !state.password_work.needs_rehash(&user.password_hash) {
        return;
    }
    let (state, user_id, old) = (
        Arc::clone(state),
        user.id.clone(),
        user.password_hash.clone(),
    );
    let password = password.expose().to_owned();
    tokio::spawn(async move {
        let stored = match state.password_work.hash(password).await {
            Ok(new) => state
                .store
                .rehash_password(&user_id, &old, &new)
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            tracing::warn!(user_id, error = ?e, "could not store the password under today's hash cost; the next sign-in tries again");
        }
    });
}

/// Skipped (with a warning) when `limits.background_tasks` are running: the
/// sign-in's answer must stay the wrong password's, and the next sign-in tries again.
fn resend_verification(state: &Arc<AppState>, client: &Client, user: &User, link: MailLink) {
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
            send_verification(state, &user_id, &email, link).await?;
            audit::record(
                state,
                Some(&client),
                "verify_email_resend",
                "mail_sent",
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

/// Creates an account and mails a verification token. An email that is
/// already registered gets the same 201 (with an id that leads nowhere) and
/// its owner a notice, so sign-up does not reveal who has an account.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = Credentials,
    responses((status = 201, body = SignupResponse), (status = 400, body = ErrorBody)))]
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
    state: &AppState,
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
        audit::record(
            state,
            Some(client),
            "signup",
            "throttled",
            None,
            Some(email.as_str()),
        )
        .await;
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
        send_verification(state, &user.id, email.as_str(), link).await?;
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

fn signin_locked(state: &AppState, retry_after_secs: u64) -> ApiError {
    inc(&state.metrics.signin_throttled);
    ApiError::TooManyRequests {
        retry_after_secs: retry_after_secs.max(1),
    }
}

/// The key that counts this client's password failures for the account:
/// the account's own, or — from a device the account signed in on before,
/// which presents that session's device secret (OWASP's "device cookie") —
/// that device's. A stranger's wrong passwords lock the account for every
/// other client, never for its owner on a device of its own. `user_id`:
/// `None` for an unknown address (the same query runs, for the same time).
async fn account_lock_key(
    state: &AppState,
    email: &str,
    user_id: Option<&str>,
    client: &Client,
) -> ApiResult<String> {
    let Some(secret) = crate::tokens::device_secret(&client.headers) else {
        return Ok(account_key(email));
    };
    let hash = hash_secret(&secret);
    let known = state
        .store
        .signed_in_on_device(user_id.unwrap_or(""), &hash)
        .await?;
    Ok(if known && user_id.is_some() {
        account_device_key(email, &hash)
    } else {
        account_key(email)
    })
}

async fn throttled(state: &AppState, user: &User, client: &Client) -> ApiResult<()> {
    let account = account_lock_key(state, &user.email, Some(&user.id), client).await?;
    let keys = [account, ip_key(&client.bucket(state))];
    state
        .throttle
        .check(state.store.as_ref(), &keys, now())
        .await?
        .map_err(|retry| signin_locked(state, retry))
}

/// A password attempt, counted against the client address and the account
/// (`account`: its key for this client, see [`account_lock_key`]) before the
/// password is compared: parallel guesses cannot all pass a check
/// before any failure is counted. 429 while either key is locked, and then
/// nothing stays counted. A wrong password needs nothing more (it was
/// counted, and locked at the limit); a right one calls [`password_ok`] with
/// the address's attempt. The caller holds the hashing slot for the
/// comparison already: a 503 for want of one must leave nothing counted.
async fn password_attempt(state: &AppState, account: &str, client: &Client) -> ApiResult<Attempt> {
    let (store, now, limits) = (state.store.as_ref(), now(), &state.config.throttle);
    let address = state
        .throttle
        .attempt(
            store,
            &ip_key(&client.bucket(state)),
            limits.ip_max_failures,
            now,
        )
        .await?
        .map_err(|retry| signin_locked(state, retry))?;
    match state
        .throttle
        .attempt(store, account, limits.account_max_failures, now)
        .await?
    {
        Ok(_account) => Ok(address),
        Err(retry) => {
            // Refused unchecked: not a failure of this address.
            state.throttle.undo(store, &address).await?;
            Err(signin_locked(state, retry))
        }
    }
}

/// The password was right: the account's failures are forgotten, and the
/// address's count (which only success does not clear: a guesser could sign in
/// to an account of its own) takes this attempt back.
async fn password_ok(
    state: &AppState,
    email: &str,
    account: &str,
    address: Attempt,
) -> ApiResult<()> {
    clear_account_failures(state, email).await?;
    if account != account_key(email) {
        state
            .throttle
            .success(state.store.as_ref(), account)
            .await?;
    }
    Ok(state.throttle.undo(state.store.as_ref(), &address).await?)
}

async fn count_address_failure(state: &AppState, client: &Client, now: i64) -> ApiResult<()> {
    Ok(state
        .throttle
        .failure(
            state.store.as_ref(),
            &ip_key(&client.bucket(state)),
            state.config.throttle.ip_max_failures,
            now,
        )
        .await?)
}

async fn clear_account_failures(state: &AppState, email: &str) -> ApiResult<()> {
    Ok(state
        .throttle
        .success(state.store.as_ref(), &account_key(email))
        .await?)
}

/// Step 1: password. The same 401, after the same argon2 work, for an unknown
/// email, a wrong password and an account whose address is not verified yet
/// (whose right password also mails a fresh verification link). A banned
/// account is told so only after its password checked out. Each attempt is
/// counted (per account and per client address) before the password is
/// compared, so parallel guesses cannot exceed the limit.
#[utoipa::path(post, path = "/v1/auth/signin", tag = "auth", request_body = Credentials,
    responses((status = 200, body = ChallengeResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn signin(
    State(state): State<Arc<AppState>>,
    client: Client,
    Json(req): Json<Credentials>,
) -> ApiResult<axum::Json<ChallengeResponse>> {
    start_signin(&state, &client, &req.email, &req.password, MailLink::Api)
        .await
        .map(axum::Json)
}

/// Sign-in step 1 for the API and the pages: checks the password and starts
/// a second-factor challenge (mailing the code unless the user has TOTP).
/// An account whose address is not verified is answered as a wrong password
/// is; when its password was right, the address is mailed a fresh
/// verification link (`link`: what it opens).
pub async fn start_signin(
    state: &Arc<AppState>,
    client: &Client,
    raw_email: &str,
    password: &Secret,
    link: MailLink,
) -> ApiResult<ChallengeResponse> {
    let email = parse_email(raw_email)?;
    if password.expose().len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::BadRequest("password is too long".into()));
    }
    // The hashing slot before the attempt is counted: a 503 (every slot busy) is no failure.
    let slot = state.password_work.reserve().await?;
    let user = state.store.user_by_email(email.as_str()).await?;
    let account = account_lock_key(
        state,
        email.as_str(),
        user.as_ref().map(|u| u.id.as_str()),
        client,
    )
    .await?;
    let attempt = match password_attempt(state, &account, client).await {
        Ok(attempt) => attempt,
        Err(e) => {
            audit::record(
                state,
                Some(client),
                "signin",
                "throttled",
                None,
                Some(email.as_str()),
            )
            .await;
            return Err(e);
        }
    };
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = state
        .password_work
        .verify_in(slot, password.expose().to_owned(), stored)
        .await?;
    let user = match (ok, user) {
        (true, Some(user)) if user.email_verified => user,
        (true, Some(user)) => {
            // The same answer as a wrong password, and the attempt stays counted as
            // one: a sign-up with a chosen password followed by this sign-in must not
            // tell a new address (this account) from a taken one. The link goes out
            // in the background, so the answer takes no longer either.
            inc(&state.metrics.signin_password_failed);
            audit::record(
                state,
                Some(client),
                "signin",
                "email_not_verified",
                Some(&user.id),
                Some(email.as_str()),
            )
            .await;
            resend_verification(state, client, &user, link);
            return Err(ApiError::InvalidCredentials);
        }
        (_, user) => {
            // Already counted (and the key locked at the limit) by `password_attempt`.
            inc(&state.metrics.signin_password_failed);
            let uid = user.as_ref().map(|u| u.id.as_str());
            audit::record(
                state,
                Some(client),
                "signin",
                "bad_credentials",
                uid,
                Some(email.as_str()),
            )
            .await;
            return Err(ApiError::InvalidCredentials);
        }
    };
    password_ok(state, email.as_str(), &account, attempt).await?;
    if user.banned_at.is_some() {
        audit::record(
            state,
            Some(client),
            "signin",
            "banned",
            Some(&user.id),
            Some(email.as_str()),
        )
        .await;
        return Err(ApiError::AccountDisabled);
    }
    inc(&state.metrics.signin_password_ok);
    rehash_in_background(state, &user, password);
    let now = now();
    let expires_at =
        now + i64::try_from(state.config.accounts.challenge_ttl.as_secs()).unwrap_or(300);
    let (method, code) = if user.totp_secret.is_some() {
        ("totp", None)
    } else {
        ("email", Some(random_code()))
    };
    let challenge = Challenge {
        id: random_id(),
        user_id: user.id.clone(),
        method: method.into(),
        code_hash: code.as_ref().map(Secret::hash),
        expires_at,
        attempts: 0,
        consumed_at: None,
        created_at: now,
        // The version whose password was just checked (read with its hash): a
        // reset from here on ends this sign-in, even one that misses this challenge.
        password_version: user.password_version,
    };
    state.store.put_challenge(&challenge).await?;
    if let Some(code) = code {
        let mail = Mail {
            to: user.email.clone(),
            subject: "Your sign-in code".into(),
            body: format!(
                "Your sign-in code is {}. It expires in {} minutes. If you did not try to sign in, change your password.",
                code.expose(),
                state.config.accounts.challenge_ttl.as_secs() / 60
            ),
            code: Some(code.expose().to_owned()),
            token: None,
            sent_at: 0,
        };
        send_mail(state, mail).await;
    }
    audit::record(
        state,
        Some(client),
        "signin",
        "challenge_sent",
        Some(&user.id),
        Some(email.as_str()),
    )
    .await;
    Ok(ChallengeResponse {
        challenge_id: challenge.id,
        method: method.into(),
    })
}

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
    responses((status = 200, body = super::tokens::TokenResponse, headers(("DPoP-Nonce" = String, description = "a fresh server nonce, when nonces are required"))),
              (status = 400, body = ErrorBody, description = "`invalid_dpop_proof`, or `use_dpop_nonce` with the nonce in `DPoP-Nonce`"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn signin_verify(
    State(state): State<Arc<AppState>>,
    client: Client,
    Json(req): Json<ChallengeAnswer>,
) -> ApiResult<Response> {
    let now = now();
    let proof = crate::dpop::token_request_proof(&state, &client.headers, SIGNIN_VERIFY_PATH, now)?;
    let tokens = finish_signin(&state, &client, &req.challenge_id, &req.code, proof, now).await?;
    Ok(super::tokens::token_response(&state, tokens, now))
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
    throttled(state, &user, client).await?;
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
            Err(refused) => {
                // Counted, not accepted: a failure, whichever check refused it.
                second_factor_failed(state, &user, client, now, attempt).await?;
                return Err(refused);
            }
        };
    inc(&state.metrics.second_factor_ok);
    state.store.second_factor_success(&user.id).await?;
    clear_account_failures(state, &user.email).await?;
    let tokens = sessions::start(state, &user, client, dpop_jkt, now).await?;
    audit::record(
        state,
        Some(client),
        "signin_verify",
        "success",
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    Ok(tokens)
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
) -> ApiResult<Option<String>> {
    if state.store.challenge_attempt(&challenge.id).await?
        > state.config.accounts.challenge_max_attempts
    {
        return Err(ApiError::InvalidCode("too many wrong codes; sign in again"));
    }
    let code = code.expose().trim();
    let accepted = match (
        challenge.method.as_str(),
        &challenge.code_hash,
        &user.totp_secret,
    ) {
        ("email", Some(expected), _) => hashes_match(&hash_secret(code), expected),
        ("totp", _, Some(secret)) => match totp_step(secret, code, now) {
            Some(step) => state.store.use_totp_step(&user.id, step).await?,
            None => false,
        },
        _ => false,
    };
    if !accepted {
        count_address_failure(state, client, now).await?;
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
        return Err(ApiError::InvalidCode("the code is wrong"));
    }
    // A replayed proof is refused before the challenge is consumed.
    let dpop_jkt = crate::dpop::accept(state, proof, now).await?;
    if !state.store.consume_challenge(&challenge.id, now).await? {
        return Err(ApiError::InvalidCode("unknown or expired challenge"));
    }
    Ok(dpop_jkt)
}

/// Counts a second-factor attempt for the account before any code is
/// compared: its number, or 429 while locked, or past the limit (parallel
/// attempts overtook the one at the limit, or a count was left past it):
/// then refused unchecked, and locked unless a lock is in force already, so
/// that the refusal always ends when a lock runs out.
async fn count_second_factor_attempt(
    state: &AppState,
    user: &User,
    client: &Client,
    now: i64,
) -> ApiResult<u32> {
    match state.store.second_factor_attempt(&user.id, now).await? {
        SecondFactorAttempt::Locked(until) => Err(second_factor_locked(state, until - now)),
        SecondFactorAttempt::Counted(n) if n > state.config.throttle.second_factor_max_failures => {
            let until = lock_second_factor(state, user, client, now).await?;
            let base = i64::try_from(state.config.throttle.lockout_base.as_secs()).unwrap_or(30);
            Err(second_factor_locked(
                state,
                until.map_or(base, |until| until - now),
            ))
        }
        SecondFactorAttempt::Counted(n) => Ok(n),
    }
}

/// Attempt `attempt` was counted and refused: at the limit, lock and tell the owner.
async fn second_factor_failed(
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
        audit::record(
            state,
            Some(client),
            "password_forgot",
            "mail_limited",
            None,
            Some(email.as_str()),
        )
        .await;
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
    send_mail(state, mail).await;
    audit::record(
        state,
        Some(client),
        "password_forgot",
        "mail_sent",
        Some(&user.id),
        Some(&user.email),
    )
    .await;
    Ok(())
}

/// Sets a new password with a mailed token; every session of the user ends,
/// and so do their other reset links and their sign-ins waiting for a code.
#[utoipa::path(post, path = "/v1/auth/password/reset", tag = "auth", request_body = ResetRequest,
    responses((status = 200, body = StatusResponse), (status = 400, body = ErrorBody)))]
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
    clear_account_failures(state, &user.email).await?;
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

/// Checks a [`FactorProof`]: a current TOTP code (through the same
/// per-account guard as sign-in) or the password (throttled like sign-in).
async fn prove_owner(
    state: &AppState,
    client: &Client,
    user: &User,
    proof: &FactorProof,
) -> ApiResult<()> {
    let now = now();
    if let (Some(code), Some(secret)) = (&proof.code, &user.totp_secret) {
        throttled(state, user, client).await?;
        let attempt = count_second_factor_attempt(state, user, client, now).await?;
        let accepted = match totp_step(secret, code.expose().trim(), now) {
            Some(step) => state.store.use_totp_step(&user.id, step).await?,
            None => false,
        };
        if accepted {
            state.store.second_factor_success(&user.id).await?;
            return Ok(());
        }
        audit::record(
            state,
            Some(client),
            "factor_proof",
            "bad_code",
            Some(&user.id),
            Some(&user.email),
        )
        .await;
        second_factor_failed(state, user, client, now, attempt).await?;
        return Err(ApiError::InvalidCode("the code is wrong"));
    }
    let Some(password) = &proof.password else {
        return Err(ApiError::BadRequest(
            "confirm with your `password` (or a current TOTP `code`)".into(),
        ));
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

/// A security notice to the owner (never limited: it is about their account).
async fn notify(state: &AppState, user: &User, subject: &str, body: &str) {
    let mail = Mail {
        to: user.email.clone(),
        subject: subject.into(),
        body: format!("{body} If it was not you, reset your password and sign out everywhere now."),
        code: None,
        token: None,
        sent_at: 0,
    };
    send_mail(state, mail).await;
}

/// Starts setting up (or replacing) the TOTP authenticator; needs a fresh
/// proof, so an access token alone cannot take over the second factor.
#[utoipa::path(post, path = "/v1/auth/totp/enroll", tag = "auth", request_body = FactorProof, security(("bearer" = [])),
    responses((status = 200, body = TotpEnrollment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn totp_enroll(
    State(state): State<Arc<AppState>>,
    client: Client,
    Caller(caller): Caller,
    Json(proof): Json<FactorProof>,
) -> ApiResult<axum::Json<TotpEnrollment>> {
    let user = state
        .store
        .user_by_id(&caller.sub)
        .await?
        .ok_or(ApiError::InvalidToken("unknown user"))?;
    begin_totp_enrollment(&state, &client, &user, &proof)
        .await
        .map(axum::Json)
}

/// TOTP enrolment for the API and the pages: after a fresh proof, a new
/// pending secret (confirmed by [`confirm_totp_enrollment`]).
pub async fn begin_totp_enrollment(
    state: &AppState,
    client: &Client,
    user: &User,
    proof: &FactorProof,
) -> ApiResult<TotpEnrollment> {
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
    state
        .store
        .set_totp_pending(&user.id, Some(&secret))
        .await?;
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
    responses((status = 200, body = StatusResponse), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn totp_confirm(
    State(state): State<Arc<AppState>>,
    client: Client,
    Caller(caller): Caller,
    Json(req): Json<CodeRequest>,
) -> ApiResult<axum::Json<StatusResponse>> {
    let user = state
        .store
        .user_by_id(&caller.sub)
        .await?
        .ok_or(ApiError::InvalidToken("unknown user"))?;
    confirm_totp_enrollment(&state, &client, &user, &req.code).await?;
    Ok(axum::Json(StatusResponse {
        status: "totp_enabled",
    }))
}

/// Confirms the pending TOTP secret with a current code (API and pages).
pub async fn confirm_totp_enrollment(
    state: &AppState,
    client: &Client,
    user: &User,
    code: &Secret,
) -> ApiResult<()> {
    let pending = user.totp_pending.clone().ok_or(ApiError::Conflict(
        "no TOTP enrolment is pending; call /v1/auth/totp/enroll",
    ))?;
    let step = totp_step(&pending, code.expose().trim(), now())
        .ok_or(ApiError::InvalidCode("the code is wrong"))?;
    if !state.store.confirm_totp(&user.id, &pending, step).await? {
        return Err(ApiError::Conflict("the enrolment changed; enroll again"));
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
    Caller(caller): Caller,
    Json(proof): Json<FactorProof>,
) -> ApiResult<axum::Json<StatusResponse>> {
    let user = state
        .store
        .user_by_id(&caller.sub)
        .await?
        .ok_or(ApiError::InvalidToken("unknown user"))?;
    if user.totp_secret.is_none() {
        return Err(ApiError::Conflict("no TOTP authenticator is set up"));
    }
    prove_owner(&state, &client, &user, &proof).await?;
    state.store.clear_totp(&user.id).await?;
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
