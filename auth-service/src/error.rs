//! One error type for every route. The status and the `error` code are
//! decided in one `match`; internal errors are logged and answered with a
//! generic 500 that reveals nothing.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// Malformed request (bad JSON, wrong type, unknown field, bad value).
    BadRequest(String),
    PayloadTooLarge,
    UnsupportedMediaType,
    WeakPassword(String),
    /// Unknown email, wrong password, or (at sign-in) an address not verified
    /// yet: deliberately indistinguishable.
    InvalidCredentials,
    /// Bad or expired second-factor code / challenge.
    InvalidCode(&'static str),
    /// Bad, expired, used or revoked one-time token (verify-email / reset).
    InvalidLink,
    /// No access token at all: RFC 6750 §3.1 asks for a challenge without
    /// an error code (the client may not know the resource needs one).
    MissingToken,
    /// Several tokens, or an `Authorization` with a token scheme and nothing
    /// usable after it: RFC 6750 §3.1's `invalid_request`, as the filter answers.
    UnusableToken,
    /// Bad bearer token (RFC 6750).
    InvalidToken(&'static str),
    /// Refresh token refused (OAuth 2.0 `invalid_grant`).
    InvalidGrant(&'static str),
    /// Client authentication failed at the token endpoint (RFC 6749 §5.2).
    InvalidClient,
    /// The requested scope exceeds the client's (RFC 6749 §5.2).
    InvalidScope(&'static str),
    /// A `grant_type` the token endpoint does not serve (RFC 6749 §5.2).
    UnsupportedGrantType,
    /// A token request's DPoP proof is missing, invalid, replayed or from
    /// the wrong key (RFC 9449 §5: 400 `invalid_dpop_proof`).
    InvalidDpopProof(&'static str),
    /// A token request needs a (fresh) server nonce: 400 `use_dpop_nonce`
    /// with the nonce to use in `DPoP-Nonce` (RFC 9449 §8).
    UseDpopNonce(String),
    /// An access token sent to this service's own endpoints was refused
    /// under the DPoP scheme (RFC 9449 §7.1): 401 with a `DPoP` challenge;
    /// `error` is `invalid_token`, `invalid_dpop_proof` or `use_dpop_nonce`
    /// (then `nonce` is the one to use).
    DpopUnauthorized {
        error: &'static str,
        description: &'static str,
        algs: String,
        nonce: Option<String>,
    },
    /// [`ApiError::Forbidden`] for a token presented in the `DPoP` scheme:
    /// 403 `insufficient_scope` with a `DPoP` challenge (RFC 9449 §7.1).
    DpopForbidden {
        description: &'static str,
        algs: String,
    },
    /// The session's sign-in is older than the step needs (RFC 9470): 401
    /// `insufficient_user_authentication` with `max_age`, the most seconds
    /// since the sign-in (its second factor) the step accepts. The challenge
    /// is `Bearer`, or `DPoP` with these algorithms for a DPoP caller.
    SignInAgain {
        description: &'static str,
        max_age_secs: u64,
        dpop_algs: Option<String>,
    },
    EmailNotVerified,
    AccountDisabled,
    Forbidden(&'static str),
    NotFound(&'static str),
    MethodNotAllowed,
    Conflict(&'static str),
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// No capacity for the work this request needs (every password-hashing
    /// slot stayed busy): 503 `temporarily_unavailable` with `Retry-After`.
    TemporarilyUnavailable {
        retry_after_secs: u64,
    },
    Unavailable(&'static str),
    Internal(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: &'static str,
    pub error_description: String,
}

impl ApiError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// When to try again, for the refusals that say so (`Retry-After`, on the
    /// API's answers and on the pages').
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests { retry_after_secs }
            | Self::TemporarilyUnavailable { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The human-readable description (fixed texts; internal details never).
    pub fn description(&self) -> String {
        self.parts().2
    }

    /// The `error` code of the answer (`invalid_request`, `not_found`, …).
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        use StatusCode as S;
        match self {
            Self::BadRequest(d) => (S::BAD_REQUEST, "invalid_request", d.clone()),
            Self::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is too large".into()),
            Self::UnsupportedMediaType => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send Content-Type: application/json".into())
            }
            Self::WeakPassword(d) => (S::BAD_REQUEST, "weak_password", d.clone()),
            Self::InvalidCredentials => (
                S::UNAUTHORIZED,
                "invalid_credentials",
                "wrong email or password, or the address is not verified yet (then a new verification link is mailed)".into(),
            ),
            Self::InvalidCode(d) => (S::UNAUTHORIZED, "invalid_code", (*d).into()),
            Self::InvalidLink => (S::BAD_REQUEST, "invalid_token", "the link is invalid, expired or already used".into()),
            Self::MissingToken => (S::UNAUTHORIZED, "unauthorized", "authentication required".into()),
            Self::UnusableToken => (
                S::BAD_REQUEST,
                "invalid_request",
                "more than one token, or a malformed Authorization header".into(),
            ),
            Self::InvalidToken(d) => (S::UNAUTHORIZED, "invalid_token", (*d).into()),
            // RFC 6749 §5.2: 400 (the client authenticated nothing; no challenge applies).
            Self::InvalidGrant(d) => (S::BAD_REQUEST, "invalid_grant", (*d).into()),
            Self::InvalidClient => (S::UNAUTHORIZED, "invalid_client", "client authentication failed".into()),
            Self::InvalidScope(d) => (S::BAD_REQUEST, "invalid_scope", (*d).into()),
            Self::UnsupportedGrantType => {
                (S::BAD_REQUEST, "unsupported_grant_type", "grant_type must be client_credentials".into())
            }
            Self::InvalidDpopProof(d) => (S::BAD_REQUEST, "invalid_dpop_proof", (*d).into()),
            Self::UseDpopNonce(_) => (S::BAD_REQUEST, "use_dpop_nonce", "use the server nonce in the DPoP-Nonce header".into()),
            Self::DpopUnauthorized { error, description, .. } => (S::UNAUTHORIZED, error, (*description).into()),
            Self::DpopForbidden { description, .. } => (S::FORBIDDEN, "insufficient_scope", (*description).into()),
            Self::SignInAgain { description, .. } => {
                (S::UNAUTHORIZED, "insufficient_user_authentication", (*description).into())
            }
            Self::EmailNotVerified => (S::FORBIDDEN, "email_not_verified", "verify the email address first".into()),
            Self::AccountDisabled => (S::FORBIDDEN, "account_disabled", "this account is disabled".into()),
            Self::Forbidden(d) => (S::FORBIDDEN, "insufficient_scope", (*d).into()),
            Self::NotFound(d) => (S::NOT_FOUND, "not_found", (*d).into()),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here".into()),
            Self::Conflict(d) => (S::CONFLICT, "conflict", (*d).into()),
            Self::TooManyRequests { .. } => {
                (S::TOO_MANY_REQUESTS, "too_many_attempts", "too many attempts; retry later".into())
            }
            Self::TemporarilyUnavailable { .. } => {
                (S::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the service is busy; retry later".into())
            }
            Self::Unavailable(d) => (S::SERVICE_UNAVAILABLE, "unavailable", (*d).into()),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "server_error", "internal error".into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let (status, error, error_description) = self.parts();
        let mut response = (
            status,
            axum::Json(ErrorBody {
                error,
                error_description: error_description.clone(),
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            // As the filter answers one (`Bearer`, nothing more).
            Self::MissingToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::InvalidToken(_) | Self::UnusableToken | Self::Forbidden(_) => {
                // RFC 6750 §3: the description is fixed text, never input.
                let value =
                    format!("Bearer error=\"{error}\", error_description=\"{error_description}\"");
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Self::SignInAgain {
                max_age_secs,
                dpop_algs,
                ..
            } => {
                // RFC 9470 §3: fixed text and a configured number, never input.
                let params = format!(
                    "error=\"{error}\", error_description=\"{error_description}\", max_age=\"{max_age_secs}\""
                );
                let value = match dpop_algs {
                    Some(algs) => format!("DPoP {params}, algs=\"{algs}\""),
                    None => format!("Bearer {params}"),
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Self::InvalidClient => {
                // RFC 6749 §5.2: a 401 names the scheme the client can authenticate with.
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"authflow\""),
                );
            }
            Self::UseDpopNonce(nonce) => {
                if let Ok(v) = HeaderValue::from_str(nonce) {
                    headers.insert(crate::dpop::NONCE_HEADER, v);
                }
            }
            Self::DpopUnauthorized { algs, nonce, .. } => {
                dpop_challenge(headers, error, &error_description, algs);
                if let Some(v) = nonce.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
                    headers.insert(crate::dpop::NONCE_HEADER, v);
                }
            }
            Self::DpopForbidden { algs, .. } => {
                dpop_challenge(headers, error, &error_description, algs);
            }
            Self::TooManyRequests { .. } | Self::TemporarilyUnavailable { .. } => {
                if let Some(secs) = self.retry_after() {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
            }
            _ => {}
        }
        response
    }
}

/// RFC 9449 §7.1's challenge: fixed texts and the configured algorithms, never input.
fn dpop_challenge(headers: &mut header::HeaderMap, error: &str, description: &str, algs: &str) {
    let value =
        format!("DPoP error=\"{error}\", error_description=\"{description}\", algs=\"{algs}\"");
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::WWW_AUTHENTICATE, v);
    }
}

/// Storage failures as HTTP answers. A conflict a route expects (a taken
/// email at sign-up) is handled by that route before it gets here; whatever
/// reaches this point is the service's fault and answers a generic 500 (the
/// detail goes to the log only).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // PostgreSQL's text cannot hold NUL (SQLSTATE 22021): a value
            // sent with one (JSON `\u0000`, `%00`) can match no id or token
            // this service wrote. The client's input, not the service's fault.
            StoreError::Database(sqlx::Error::Database(ref db))
                if db.code().as_deref() == Some(CHARACTER_NOT_IN_REPERTOIRE) =>
            {
                Self::BadRequest("a value contains a NUL character".into())
            }
            // The database cannot be reached right now (connections refused
            // or lost, the pool's wait over, the server shutting down or not
            // yet accepting): not a fault of this request, and another try,
            // here or at another instance, may work. Nothing of it is answered.
            StoreError::Database(ref db) if database_unavailable(db) => {
                Self::TemporarilyUnavailable {
                    retry_after_secs: 1,
                }
            }
            StoreError::Conflict(what) => {
                Self::Internal(format!("unexpected conflict: {what} is taken"))
            }
            StoreError::Database(_)
            | StoreError::Connect(_)
            | StoreError::Migration(_)
            | StoreError::UnsupportedUrl
            | StoreError::NoDatabase
            | StoreError::Sealed(_)
            | StoreError::Corrupt(_) => Self::Internal(e.to_string()),
        }
    }
}

/// PostgreSQL's SQLSTATE for text it cannot store (a NUL character).
const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";

/// Whether `e` says the database could not be reached, rather than that it
/// refused what was asked: the pool's errors, a connection that failed, and
/// PostgreSQL's connection exceptions (class 08), operator intervention
/// (57P01 … 57P03: shutdown, crash recovery, not accepting connections yet),
/// too many connections (53300) and a database not accepting connections (55000
/// on connect). Logged as the cause of the answer.
fn database_unavailable(e: &sqlx::Error) -> bool {
    let unavailable = match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300" | "55000")
        }),
        _ => false,
    };
    if unavailable {
        tracing::warn!(error = %e, "the database is unavailable");
    }
    unavailable
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Why the service (or a CLI command) could not start; the text says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl StartError {
    pub fn from_display(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}
