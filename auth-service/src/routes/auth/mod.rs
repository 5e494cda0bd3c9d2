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
use crate::mailer::Mail;
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
