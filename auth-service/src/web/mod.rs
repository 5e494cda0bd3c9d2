//! The service's own browser pages under `/auth/`: sign-up, e-mail
//! verification, sign-in with the second factor, refresh, logout, "your
//! devices", password reset and TOTP enrolment. HTML, not the API: these
//! routes are not in the OpenAPI document.
//!
//! The pages call the same functions as the JSON API (`routes::auth`,
//! `sessions`), so throttling, attempt limits and the mail budget hold here
//! too. What is theirs: the cookies (`cookies`), the CSRF check on every
//! form (`csrf`), the validated `return_to` (`return_target`), the HTML
//! (`templates`) and the security headers on every answer.

pub mod account;
pub mod cookies;
pub mod csrf;
pub mod devices;
pub mod return_target;
pub mod signin;
pub mod templates;
pub mod totp;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::Markup;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use authflow_contract::browser::{ACCESS_COOKIE, REFRESH_PATH, SIGNIN_PATH};

use crate::error::ApiError;
use crate::extract::{verify_user_token, Scheme};
use crate::state::AppState;
use crate::tokens::Verified;

/// Every answer of the pages: nothing but our own styles, images and
/// scripts (no inline script: the pages need none; `script-src` and
/// `connect-src` 'self' let a page of this origin load the DPoP client and
/// call the API with it), forms post only here, never framed, never cached,
/// no referrer leaks tokens in URLs (`/auth/verify?token=…`) to anyone.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("static/authflow.css");
/// The browser's DPoP client (RFC 9449, a non-extractable WebCrypto key): an ES module.
const DPOP_CLIENT: &str = include_str!("static/authflow-dpop.js");

/// HSTS (RFC 6797) for pages served over https: a year, this host only.
const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// The pages' routes (merged into the service's router after the documented
/// ones); `https`: the pages' address is an https one (then HSTS is sent).
pub fn routes(https: bool) -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/static/authflow.css", get(stylesheet))
        .route("/auth/static/authflow-dpop.js", get(dpop_client))
        .route("/auth/signin", get(signin::form).post(signin::submit))
        .route(
            "/auth/signin/code",
            get(signin::code_form).post(signin::code_submit),
        )
        .route(
            REFRESH_PATH,
            get(signin::refresh).post(signin::refresh_submit),
        )
        .route(
            signin::LOGOUT_PATH,
            get(signin::logout_page).post(signin::logout),
        )
        .route("/auth/logout-all", axum::routing::post(signin::logout_all))
        .route(
            "/auth/signup",
            get(account::signup_form).post(account::signup_submit),
        )
        .route("/auth/signup/sent", get(account::signup_sent))
        .route(
            "/auth/verify",
            get(account::verify_form).post(account::verify_submit),
        )
        .route(
            "/auth/password/forgot",
            get(account::forgot_form).post(account::forgot_submit),
        )
        .route("/auth/password/forgot/sent", get(account::forgot_sent))
        .route(
            "/auth/password/reset",
            get(account::reset_form).post(account::reset_submit),
        )
        .route("/auth/password/reset/done", get(account::reset_done))
        .route("/auth/devices", get(devices::list))
        .route(
            "/auth/devices/logout",
            axum::routing::post(devices::logout_one),
        )
        .route("/auth/totp", get(totp::start).post(totp::enrol))
        .route("/auth/totp/confirm", axum::routing::post(totp::confirm))
        .route("/auth/totp/done", get(totp::done))
        // The pages' own 405, set before the layer so that it runs inside it:
        // the service's JSON one, set on the merged router, only replaces a
        // default fallback, and would answer outside the pages' headers.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::map_response(move |response| {
            security_headers(response, https)
        }))
}

async fn security_headers(mut response: Response, https: bool) -> Response {
    let headers = response.headers_mut();
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // No opener handle across sites: a site that opened a page (the refresh
    // page's Continue, say) cannot navigate it on before its answer lands.
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A page's path asked with a method it does not take (axum adds `Allow`).
async fn method_not_allowed() -> Response {
    refusal(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not allowed",
        "This page cannot be used that way.",
    )
}

async fn stylesheet() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
        (header::CACHE_CONTROL, "public, max-age=3600"),
    ];
    (headers, STYLESHEET).into_response()
}

async fn dpop_client() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
        (header::CACHE_CONTROL, "public, max-age=3600"),
    ];
    (headers, DPOP_CLIENT).into_response()
}

/// An HTML page with its status and any cookies to set.
pub struct Page {
    pub status: StatusCode,
    pub title: &'static str,
    pub body: Markup,
    pub cookies: Vec<String>,
    /// `Retry-After` (seconds), for a refusal that says when to try again.
    pub retry_after: Option<u64>,
}

impl Page {
    pub fn ok(title: &'static str, body: Markup) -> Self {
        Self {
            status: StatusCode::OK,
            title,
            body,
            cookies: Vec::new(),
            retry_after: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The page answering a refused action: the error's status, and its
    /// `Retry-After` when it has one (a throttle, a busy service).
    pub fn refused_by(mut self, e: &ApiError) -> Self {
        self.status = e.status();
        self.retry_after = e.retry_after();
        self
    }

    pub fn with_cookie(mut self, cookie: Option<String>) -> Self {
        self.cookies.extend(cookie);
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let html = templates::layout(self.title, self.body).into_string();
        let mut response = with_cookies((self.status, Html(html)).into_response(), &self.cookies);
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for cookie in cookies {
        if let Ok(v) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// `303 See Other` to one of our own paths (already validated).
pub fn see_other(location: &str, cookies: &[String]) -> Response {
    let location = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    with_cookies(
        (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        cookies,
    )
}

/// What a refused action tells the person, from the API's error.
pub fn explain(e: &ApiError) -> String {
    match e {
        ApiError::InvalidCredentials => {
            "Email or password is wrong, or the address is not confirmed yet (then we mailed you a new link to confirm it).".into()
        }
        ApiError::AccountDisabled => "This account is disabled. You cannot sign in.".into(),
        ApiError::EmailNotVerified => "Confirm your email address first: open the link we mailed you.".into(),
        ApiError::TooManyRequests { retry_after_secs } => format!("Too many attempts. Try again in {retry_after_secs} seconds."),
        ApiError::InvalidLink => "This link is invalid, expired or already used.".into(),
        ApiError::Internal(_) => "Something went wrong on our side. Try again.".into(),
        other => {
            let text = other.description();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str().trim_end_matches('.')),
                None => "The request was refused.".into(),
            }
        }
    }
}

/// The page a request that cannot be served gets (bad form, refused CSRF…).
fn refusal(status: StatusCode, title: &'static str, text: &str) -> Response {
    Page::ok(
        title,
        templates::refused(text, (SIGNIN_PATH, "Go to sign-in")),
    )
    .with_status(status)
    .into_response()
}

/// An action that failed on the service's side (the store): a page saying so.
pub fn failed(title: &'static str, e: &ApiError) -> Response {
    Page::ok(
        title,
        templates::refused(&explain(e), (SIGNIN_PATH, "Go to sign-in")),
    )
    .refused_by(e)
    .into_response()
}

/// The CSRF token for a page's forms (and the cookie when the browser has none).
pub fn csrf_token(state: &AppState, headers: &HeaderMap) -> (String, Option<String>) {
    csrf::token_for(&state.page_keys, headers)
}

/// A form POST whose CSRF token checked out, decoded into `T`. The body is
/// bounded by the service's body limit (413 past it).
pub struct Posted<T>(pub T);

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Form too large",
                    "The form you sent is too large.",
                )
            } else {
                refusal(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "The form could not be read.",
                )
            }
        })?;
        let bad_form = |_| {
            refusal(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The form could not be read.",
            )
        };
        let CsrfField { csrf: token } = serde_urlencoded::from_bytes(&bytes).map_err(bad_form)?;
        if let Err(why) = csrf::check(&state.page_keys, &headers, &token) {
            tracing::info!(?why, "form refused: CSRF check");
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form has expired or was not sent from this site. Go back, reload the page and try again.",
            ));
        }
        serde_urlencoded::from_bytes(&bytes)
            .map(Self)
            .map_err(bad_form)
    }
}

/// A query string decoded leniently: anything unreadable is the default
/// (a page never fails on a mangled link; `return_to` falls back to `/`).
pub fn query<T: DeserializeOwned + Default>(raw: Option<&str>) -> T {
    raw.and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

/// The user of the access cookie, checked like a bearer token at the API
/// (signature, revocation, device fingerprint); `None` when signed out.
pub async fn signed_in_user(state: &AppState, parts: &Parts) -> Option<Verified> {
    let token = cookies::read(&parts.headers, ACCESS_COOKIE)?;
    verify_user_token(state, parts, Scheme::Bearer, token)
        .await
        .ok()
}

/// A page that needs a signed-in user: otherwise 303 through the refresh
/// endpoint (which comes back here, or goes on to sign-in).
pub struct SignedIn(pub Verified);

impl FromRequestParts<Arc<AppState>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match signed_in_user(state, parts).await {
            Some(v) => Ok(Self(v)),
            None => {
                let here = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let back = return_target::target(Some(here));
                Err(see_other(
                    &return_target::with_return_to(REFRESH_PATH, &back),
                    &[],
                ))
            }
        }
    }
}

/// For form posts: the signed-in user, if any (a POST is not sent round
/// the refresh endpoint).
pub struct MaybeSignedIn(pub Option<Verified>);

impl FromRequestParts<Arc<AppState>> for MaybeSignedIn {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(signed_in_user(state, parts).await))
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC` (Howard Hinnant's civil-from-days).
pub fn utc(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400 + 3661), "2000-02-29 01:01 UTC");
        assert_eq!(utc(1_796_103_000), "2026-12-01 05:30 UTC");
    }

    #[test]
    fn refusals_read_as_sentences() {
        assert_eq!(
            explain(&ApiError::InvalidCode("the code is wrong")),
            "The code is wrong."
        );
        assert_eq!(
            explain(&ApiError::TooManyRequests {
                retry_after_secs: 30
            }),
            "Too many attempts. Try again in 30 seconds."
        );
        assert!(!explain(&ApiError::Internal("db path /x".into())).contains("/x"));
    }
}
