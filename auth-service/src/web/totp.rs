//! TOTP enrolment: a fresh proof (as at the API: an access cookie alone
//! cannot take over the second factor; the password for a first
//! authenticator, a code from the current one to replace it), then the QR
//! code and the key, then a code from the app to turn it on.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use qrcode::render::svg;
use qrcode::QrCode;
use serde::Deserialize;

use super::templates::{self, Form};
use super::{csrf_token, explain, failed, see_other, Page, Posted, SignedIn};
use crate::domain::Secret;
use crate::error::ApiError;
use crate::extract::Client;
use crate::routes::auth::{
    begin_totp_enrollment, confirm_totp_enrollment, signed_in_recently, FactorProof,
};
use crate::state::AppState;
use crate::store::User;

/// The proof the start page asks for: the password, or a code from the
/// authenticator being replaced.
#[derive(Deserialize)]
pub struct ProofForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
    /// The enrolment page's tag of the key it showed ([`enrolment_tag`]).
    #[serde(default)]
    enrolment: String,
}

/// A tag of the pending key `secret` of user `user_id`, keyed with the
/// pages' CSRF key: the enrolment page (shown after the password was proven)
/// carries it, so a wrong code posted from that page may show the key again.
/// A session alone (an access token without the password) cannot make it,
/// and so never gets to see the pending key.
fn enrolment_tag(state: &AppState, user_id: &str, secret: &str) -> String {
    state.page_keys.tag(&enrolment(user_id, secret))
}

/// Whether `tag` is the [`enrolment_tag`] of `secret` (constant time; made
/// before a KEK rotation too).
fn shown_before(state: &AppState, user_id: &str, secret: &str, tag: &str) -> bool {
    state.page_keys.verifies(&enrolment(user_id, secret), tag)
}

fn enrolment<'a>(user_id: &'a str, secret: &'a str) -> [&'a [u8]; 4] {
    [
        b"authflow totp enrolment v1\0",
        user_id.as_bytes(),
        b"\0",
        secret.as_bytes(),
    ]
}

const TITLE: &str = "Set up an authenticator app";

async fn user_of(state: &AppState, sub: &str) -> Result<User, Response> {
    match state.store.user_by_id(sub).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(failed(TITLE, &ApiError::InvalidToken("unknown user"))),
        Err(e) => Err(failed(TITLE, &e.into())),
    }
}

fn start_page(state: &AppState, client: &Client, user: &User, error: Option<&str>) -> Page {
    let (csrf, cookie) = csrf_token(state, &client.headers);
    let replacing = user.totp_secret.is_some();
    Page::ok(
        TITLE,
        templates::totp_start(&Form { csrf: &csrf, error }, replacing),
    )
    .with_cookie(cookie)
}

/// A first authenticator needs a recent sign-in (see [`signed_in_recently`]):
/// said before the password is asked for, with the way there.
fn sign_in_again_page(e: &ApiError) -> Response {
    let signin =
        super::return_target::with_return_to(authflow_contract::browser::SIGNIN_PATH, "/auth/totp");
    Page::ok(
        TITLE,
        templates::message(&explain(e), Some((&signin, "Sign in again"))),
    )
    .refused_by(e)
    .into_response()
}

pub async fn start(
    State(state): State<Arc<AppState>>,
    client: Client,
    SignedIn(v): SignedIn,
) -> Response {
    let user = match user_of(&state, &v.sub).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    match signed_in_recently(&state, &user, &v.claims.sid).await {
        Err(e @ ApiError::SignInAgain { .. }) => return sign_in_again_page(&e),
        Err(e) => return failed(TITLE, &e),
        Ok(()) => {}
    }
    start_page(&state, &client, &user, None).into_response()
}

/// The otpauth URI as an SVG QR code; its attributes are presentational
/// (no `style`), so the CSP allows it inline.
fn qr_svg(uri: &str) -> Result<String, ApiError> {
    let code = QrCode::new(uri.as_bytes()).map_err(ApiError::internal)?;
    let svg = code.render::<svg::Color>().min_dimensions(200, 200).build();
    // The XML declaration has no place inside an HTML document.
    Ok(match svg.find("<svg") {
        Some(start) => svg.get(start..).unwrap_or_default().to_owned(),
        None => svg,
    })
}

fn enrol_page(
    state: &AppState,
    client: &Client,
    user: &User,
    secret: &str,
    uri: &str,
    error: Option<&str>,
) -> Response {
    let svg = match qr_svg(uri) {
        Ok(svg) => svg,
        Err(e) => return failed(TITLE, &e),
    };
    let (csrf, cookie) = csrf_token(state, &client.headers);
    Page::ok(
        TITLE,
        templates::totp_enrol(
            &Form { csrf: &csrf, error },
            &svg,
            secret,
            &enrolment_tag(state, &user.id, secret),
        ),
    )
    .with_cookie(cookie)
    .into_response()
}

pub async fn enrol(
    State(state): State<Arc<AppState>>,
    client: Client,
    SignedIn(v): SignedIn,
    Posted(f): Posted<ProofForm>,
) -> Response {
    let user = match user_of(&state, &v.sub).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let given = |field: String| (!field.is_empty()).then(|| Secret::new(field));
    let proof = FactorProof {
        password: given(f.password),
        code: given(f.code),
    };
    match begin_totp_enrollment(&state, &client, &user, &v.claims.sid, &proof).await {
        Ok(enrolment) => enrol_page(
            &state,
            &client,
            &user,
            &enrolment.secret,
            &enrolment.otpauth_uri,
            None,
        ),
        Err(e @ ApiError::SignInAgain { .. }) => sign_in_again_page(&e),
        // Signed in, so the address is verified: a refused proof is the password alone.
        Err(ApiError::InvalidCredentials) => {
            start_page(&state, &client, &user, Some("The password is wrong."))
                .refused_by(&ApiError::InvalidCredentials)
                .into_response()
        }
        Err(e) => start_page(&state, &client, &user, Some(&explain(&e)))
            .refused_by(&e)
            .into_response(),
    }
}

pub async fn confirm(
    State(state): State<Arc<AppState>>,
    client: Client,
    SignedIn(v): SignedIn,
    Posted(f): Posted<CodeForm>,
) -> Response {
    let user = match user_of(&state, &v.sub).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let code = Secret::new(f.code);
    match confirm_totp_enrollment(&state, &client, &user, &v.claims.sid, &code).await {
        Ok(()) => see_other("/auth/totp/done", &[]),
        Err(e) => {
            // Show the same pending key again, so the person can retry.
            // The key again only for the page that showed it: a session that
            // never proved the password must not read the pending key.
            let Some(secret) = user
                .totp_pending
                .as_deref()
                .filter(|secret| shown_before(&state, &user.id, secret, &f.enrolment))
            else {
                return start_page(&state, &client, &user, Some(&explain(&e)))
                    .refused_by(&e)
                    .into_response();
            };
            let uri = otpauth_uri(&state, &user, secret);
            let mut response = enrol_page(&state, &client, &user, secret, &uri, Some(&explain(&e)));
            *response.status_mut() = e.status();
            if let Some(secs) = e.retry_after() {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, secs.into());
            }
            response
        }
    }
}

fn otpauth_uri(state: &AppState, user: &User, secret: &str) -> String {
    totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .ok()
        .and_then(|bytes| {
            totp_rs::TOTP::new(
                totp_rs::Algorithm::SHA1,
                6,
                1,
                30,
                bytes,
                Some(state.config.accounts.totp_issuer.clone()),
                user.email.clone(),
            )
            .ok()
        })
        .map(|t| t.get_url())
        .unwrap_or_default()
}

pub async fn done() -> Response {
    let text =
        "Your authenticator app is on: sign-in now asks for its code instead of a mailed one.";
    Page::ok(
        "Authenticator app on",
        templates::message(text, Some(("/auth/devices", "Your devices"))),
    )
    .into_response()
}
