//! Sign-in step 1: the password, counted per account and per client address.

use std::sync::Arc;

use axum::extract::State;

use crate::audit;
use crate::clock::now;
use crate::domain::secret::{hash_secret, random_code};
use crate::domain::{random_id, Secret};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Client, Json};
use crate::mail_budget;
use crate::mailer::Mail;
use crate::metrics::inc;
use crate::signin_codes;
use crate::state::AppState;
use crate::store::{Challenge, StoreResult, User};
use crate::throttle::{account_device_key, account_key, ip_key, Attempt};

use super::signup::resend_verification;
use super::{parse_email, send_mail, ChallengeResponse, Credentials, MailLink, MAX_PASSWORD_BYTES};

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

pub(super) fn signin_locked(state: &AppState, retry_after_secs: u64) -> ApiError {
    inc(&state.metrics.signin_throttled);
    ApiError::TooManyRequests {
        retry_after_secs: retry_after_secs.max(1),
    }
}

/// The key that counts this client's password failures for the account:
/// the account's own, or — from a device the account is signed in on, which
/// presents that live session's device secret (OWASP's "device cookie") —
/// that device's. A stranger's wrong passwords lock the account for every
/// other client, never for its owner on a device of its own. `user_id`:
/// `None` for an unknown address (the same query runs, for the same time).
pub(super) async fn account_lock_key(
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
        .signed_in_on_device(user_id.unwrap_or(""), &hash, now())
        .await?;
    Ok(if known && user_id.is_some() {
        account_device_key(email, &hash)
    } else {
        account_key(email)
    })
}

pub(super) async fn throttled(state: &AppState, user: &User, client: &Client) -> ApiResult<()> {
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
pub(super) async fn password_attempt(
    state: &AppState,
    account: &str,
    client: &Client,
) -> ApiResult<Attempt> {
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
pub(super) async fn password_ok(
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

pub(super) async fn clear_account_failures(state: &AppState, email: &str) -> StoreResult<()> {
    state
        .throttle
        .success(state.store.as_ref(), &account_key(email))
        .await
}

/// Step 1: password. The same 401, after the same argon2 work, for an unknown
/// email, a wrong password and an account whose address is not verified yet
/// (whose right password also mails a fresh verification link). A banned
/// account is told so only after its password checked out, and that attempt
/// stays counted as a failure (it is throttled like a guess). Each attempt is
/// counted (per account and per client address) before the password is
/// compared, so parallel guesses cannot exceed the limit.
#[utoipa::path(post, path = "/v1/auth/signin", tag = "auth", request_body = Credentials,
    responses((status = 200, body = ChallengeResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "`temporarily_unavailable`: no password-hashing slot came free within `limits.password_hash_wait_ms`; retry after `Retry-After`")))]
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
            let uid = user.as_ref().map(|u| u.id.as_str());
            audit::record_throttled(state, client, "signin", uid, Some(email.as_str())).await;
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
    if user.banned_at.is_some() {
        // The attempt stays counted as a failure: the banned user, who has
        // the password, is throttled like a guesser instead of writing a
        // `banned` audit row as often as the hashing allows.
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
    password_ok(state, email.as_str(), &account, attempt).await?;
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
    // Taken for a TOTP sign-in too, though nothing is mailed: each sign-in
    // opens a challenge and writes an audit row, and the password hashing
    // slots alone would let one account open them without bound.
    let budget =
        mail_budget::allow_signin_code(state, &user.id, user.password_version, now).await?;
    if let Err(retry_after_secs) = budget {
        let about = audit::Repeated {
            user_id: Some(&user.id),
            email: Some(email.as_str()),
            per_account: true,
        };
        audit::record_repeatable(state, client, ("signin", "code_mail_limit"), about).await;
        return Err(ApiError::TooManyRequests { retry_after_secs });
    }
    let id = random_id();
    let challenge = Challenge {
        code_hash: code
            .as_ref()
            .map(|code| signin_codes::stored_form(&state.signin_code_keys, &id, code.expose())),
        id,
        user_id: user.id.clone(),
        method: method.into(),
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
