//! Sign-up, the e-mail verification link, and the password reset.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use authflow_contract::browser::SIGNIN_PATH;

use super::templates::{self, Form};
use super::{cookies, csrf_token, explain, query, see_other, Page, Posted};
use crate::domain::Secret;
use crate::extract::Client;
use crate::routes::auth::{
    confirm_email, register, request_password_reset, reset_password, MailLink,
};
use crate::sessions;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    token: String,
}

#[derive(Default, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

fn signup_page(state: &AppState, client: &Client, email: &str, error: Option<&str>) -> Page {
    let (csrf, cookie) = csrf_token(state, &client.headers);
    Page::ok(
        "Create an account",
        templates::signup(&Form { csrf: &csrf, error }, email),
    )
    .with_cookie(cookie)
}

pub async fn signup_form(State(state): State<Arc<AppState>>, client: Client) -> Response {
    signup_page(&state, &client, "", None).into_response()
}

/// The same answer for a new and a taken address (as the API): "check your mail".
pub async fn signup_submit(
    State(state): State<Arc<AppState>>,
    client: Client,
    Posted(f): Posted<SignupForm>,
) -> Response {
    match register(
        &state,
        &client,
        &f.email,
        &Secret::new(f.password),
        MailLink::Page,
    )
    .await
    {
        Ok(_) => see_other("/auth/signup/sent", &[]),
        Err(e) => signup_page(&state, &client, &f.email, Some(&explain(&e)))
            .refused_by(&e)
            .into_response(),
    }
}

pub async fn signup_sent() -> Response {
    let text = "We mailed you a link to confirm your address. Open it, then sign in.";
    Page::ok(
        "Check your mail",
        templates::message(text, Some((SIGNIN_PATH, "Sign in"))),
    )
    .into_response()
}

/// The mailed link. Opening it confirms the address: it only marks the
/// address verified (no session), so a mail scanner that follows it gains
/// nothing.
/// The mailed link shows a button; only its POST uses the token up. Mail
/// scanners open links: one that confirmed on `GET` confirmed a sign-up made
/// with someone else's address without its owner.
pub async fn verify_form(
    State(state): State<Arc<AppState>>,
    client: Client,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: TokenQuery = query(raw.as_deref());
    let (csrf, cookie) = csrf_token(&state, &client.headers);
    let token = q.token.as_deref().unwrap_or("");
    Page::ok(
        "Confirm your address",
        templates::verify(
            &Form {
                csrf: &csrf,
                error: None,
            },
            token,
        ),
    )
    .with_cookie(cookie)
    .into_response()
}

pub async fn verify_submit(
    State(state): State<Arc<AppState>>,
    client: Client,
    Posted(f): Posted<VerifyForm>,
) -> Response {
    let token = Secret::new(f.token);
    match confirm_email(&state, &client, &token).await {
        Ok(()) => Page::ok(
            "Address confirmed",
            templates::message(
                "Your email address is confirmed.",
                Some((SIGNIN_PATH, "Sign in")),
            ),
        )
        .into_response(),
        Err(e) => Page::ok(
            "Link not valid",
            templates::refused(&explain(&e), ("/auth/signin", "Sign in")),
        )
        .refused_by(&e)
        .into_response(),
    }
}

fn forgot_page(state: &AppState, client: &Client, error: Option<&str>) -> Page {
    let (csrf, cookie) = csrf_token(state, &client.headers);
    Page::ok(
        "Forgot your password?",
        templates::forgot(&Form { csrf: &csrf, error }),
    )
    .with_cookie(cookie)
}

pub async fn forgot_form(State(state): State<Arc<AppState>>, client: Client) -> Response {
    forgot_page(&state, &client, None).into_response()
}

/// The same answer whether the account exists or not (as the API).
pub async fn forgot_submit(
    State(state): State<Arc<AppState>>,
    client: Client,
    Posted(f): Posted<ForgotForm>,
) -> Response {
    match request_password_reset(&state, client.clone(), &f.email, MailLink::Page) {
        Ok(()) => see_other("/auth/password/forgot/sent", &[]),
        Err(e) => forgot_page(&state, &client, Some(&explain(&e)))
            .refused_by(&e)
            .into_response(),
    }
}

pub async fn forgot_sent() -> Response {
    let text = "If an account uses that address, we mailed it a link to choose a new password.";
    Page::ok(
        "Check your mail",
        templates::message(text, Some((SIGNIN_PATH, "Sign in"))),
    )
    .into_response()
}

fn reset_page(state: &AppState, client: &Client, token: &str, error: Option<&str>) -> Page {
    let (csrf, cookie) = csrf_token(state, &client.headers);
    Page::ok(
        "Choose a new password",
        templates::reset(&Form { csrf: &csrf, error }, token),
    )
    .with_cookie(cookie)
}

/// The mailed link shows the form; only the POST uses the token up.
pub async fn reset_form(
    State(state): State<Arc<AppState>>,
    client: Client,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: TokenQuery = query(raw.as_deref());
    reset_page(&state, &client, q.token.as_deref().unwrap_or(""), None).into_response()
}

/// Every session ends (as at the API), this browser's cookies too.
pub async fn reset_submit(
    State(state): State<Arc<AppState>>,
    client: Client,
    Posted(f): Posted<ResetForm>,
) -> Response {
    match reset_password(
        &state,
        &client,
        &Secret::new(f.token.clone()),
        &Secret::new(f.password),
    )
    .await
    {
        Ok(()) => {
            // The reset ended the account's sessions; the browser's own may
            // be another account's (a second account, a link someone sent):
            // its cookies are cleared below, so it ends too.
            if let Err(e) = sessions::end_this_device(&state, &client, "password_reset").await {
                tracing::warn!(error = ?e, "the browser's session was not ended after a reset");
            }
            see_other("/auth/password/reset/done", &cookies::cleared_session())
        }
        Err(e) => reset_page(&state, &client, &f.token, Some(&explain(&e)))
            .refused_by(&e)
            .into_response(),
    }
}

pub async fn reset_done() -> Response {
    let text = "Your password is changed and every device was signed out.";
    Page::ok(
        "Password changed",
        templates::message(text, Some((SIGNIN_PATH, "Sign in"))),
    )
    .into_response()
}
