//! Sign-up, email verification, sign-in with a second factor, password
//! reset, TOTP enrolment: the request and answer types and what the flows
//! share here, each flow in a module of its own.

mod reset;
mod second_factor;
mod signin;
mod signup;
mod totp;

pub use reset::*;
pub use second_factor::*;
pub use signin::*;
pub use signup::*;
pub use totp::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Email, Secret};
use crate::error::{ApiError, ApiResult};
use std::sync::Arc;

use crate::mailer::{Mail, Mailer};
use crate::state::AppState;
use crate::store::User;

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

/// Delivers `mail` before returning (within `mail.delivery_timeout_secs`):
/// for work already in the background, whose slot (`limits.background_tasks`)
/// stays held while the relay takes the mail.
async fn deliver(state: &AppState, mail: Mail) {
    deliver_with(state.mailer.as_ref(), mail).await;
}

async fn deliver_with(mailer: &dyn Mailer, mail: Mail) {
    let domain = crate::mailer::recipient_domain(&mail.to).to_owned();
    if let Err(e) = mailer.send(mail).await {
        // The domain only: no address, no token.
        tracing::warn!(error = %e, recipient_domain = %domain, "mail not sent");
    }
}

/// Delivers `mail` made by slot work (see [`crate::background::Background::hand_off`])
/// in a task of its own, so that the slot is not held by the delivery; dropped
/// (and logged) when `limits.background_tasks` deliveries are under way. The
/// development outbox, a local file, is written at once. Whether the mail
/// went to its delivery: the caller's audit row says which.
async fn hand_off(state: &AppState, mail: Mail) -> HandedOff {
    if state.mailer.is_local() {
        deliver(state, mail).await;
        return HandedOff::Sent;
    }
    let domain = crate::mailer::recipient_domain(&mail.to).to_owned();
    let mailer = Arc::clone(&state.mailer);
    if state
        .background
        .hand_off(async move { deliver_with(mailer.as_ref(), mail).await })
    {
        return HandedOff::Sent;
    }
    tracing::warn!(recipient_domain = %domain, "mail not sent: limits.background_tasks deliveries are under way");
    HandedOff::Dropped
}

/// What [`hand_off`] did with a mail, as the audit row's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HandedOff {
    Sent,
    Dropped,
}

impl HandedOff {
    fn outcome(self) -> &'static str {
        match self {
            Self::Sent => "mail_sent",
            Self::Dropped => "mail_dropped",
        }
    }
}

/// Hands `mail` to a task of its own and returns at once: for a request that
/// answers without waiting for the relay (its answer's timing must not
/// depend on it). The task is counted, so a stopping service waits for it.
/// The development outbox, a local file, is written before the answer: its
/// reader (the walkthrough, a test) asks for the mail right after.
async fn send_mail(state: &AppState, mail: Mail) {
    if state.mailer.is_local() {
        return deliver(state, mail).await;
    }
    let mailer = Arc::clone(&state.mailer);
    state
        .background
        .detach(async move { deliver_with(mailer.as_ref(), mail).await });
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

/// A security notice to the owner (never limited: it is about their account).
pub(crate) async fn notify(state: &AppState, user: &User, subject: &str, body: &str) {
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
