//! Sign-in (password, then the mailed or TOTP code), the refresh endpoint
//! the filter sends browsers to, and logout.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use authflow_contract::browser::{REFRESH_PATH, SIGNIN_PATH};

use super::return_target::{from_query, target, with_return_to};
use super::templates::{self, Form};
use super::{
    cookies, csrf_token, explain, failed, see_other, MaybeSignedIn, Page, Posted, SignedIn,
};
use crate::audit;
use crate::clock::now;
use crate::domain::Secret;
use crate::error::ApiError;
use crate::extract::Client;
use crate::routes::auth::{finish_signin, start_signin, MailLink};
use crate::sessions;
use crate::state::AppState;

pub const LOGOUT_PATH: &str = "/auth/logout";

#[derive(Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    return_to: Option<String>,
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
    return_to: Option<String>,
}

/// The refresh page's button (and its CSRF token, checked by [`Posted`]).
#[derive(Deserialize)]
pub struct RefreshForm {
    return_to: Option<String>,
}

/// Only the CSRF token (checked by [`Posted`]).
#[derive(Deserialize)]
pub struct NoFields {}

fn signin_page(
    state: &AppState,
    client: &Client,
    email: &str,
    return_to: &str,
    error: Option<&str>,
) -> Page {
    let (csrf, cookie) = csrf_token(state, &client.headers);
    let body = templates::signin(
        &Form { csrf: &csrf, error },
        email,
        return_to,
        "/auth/signup",
    );
    Page::ok("Sign in", body).with_cookie(cookie)
}

pub async fn form(
    State(state): State<Arc<AppState>>,
    client: Client,
    RawQuery(raw): RawQuery,
) -> Response {
    signin_page(&state, &client, "", &from_query(raw.as_deref()), None).into_response()
}

/// Password checked: the challenge goes into a short-lived cookie and the
/// browser on to the code page. An account whose address is not verified
/// gets the wrong-password answer (and, with the right password, a fresh
/// link to the verification page), as at the API.
pub async fn submit(
    State(state): State<Arc<AppState>>,
    client: Client,
    Posted(f): Posted<SigninForm>,
) -> Response {
    let return_to = target(f.return_to.as_deref());
    match start_signin(
        &state,
        &client,
        &f.email,
        &Secret::new(f.password),
        MailLink::Page,
    )
    .await
    {
        Ok(challenge) => {
            let cookie = cookies::challenge(
                &challenge.challenge_id,
                state.config.accounts.challenge_ttl.as_secs(),
            );
            see_other(&with_return_to("/auth/signin/code", &return_to), &[cookie])
        }
        Err(e) => signin_page(&state, &client, &f.email, &return_to, Some(&explain(&e)))
            .refused_by(&e)
            .into_response(),
    }
}

/// The method of the browser's pending challenge, if it is still open.
async fn pending_method(state: &AppState, client: &Client) -> Option<(String, String)> {
    let id = cookies::read(&client.headers, cookies::CHALLENGE_COOKIE)?;
    let challenge = state.store.challenge(id).await.ok()??;
    (challenge.consumed_at.is_none() && challenge.expires_at > now())
        .then_some((challenge.id, challenge.method))
}

fn code_page(
    state: &AppState,
    client: &Client,
    method: &str,
    return_to: &str,
    error: Option<&str>,
) -> Page {
    let (csrf, cookie) = csrf_token(state, &client.headers);
    let title = if method == "totp" {
        "Enter your app's code"
    } else {
        "Enter the mailed code"
    };
    Page::ok(
        title,
        templates::code(&Form { csrf: &csrf, error }, method, return_to),
    )
    .with_cookie(cookie)
}

pub async fn code_form(
    State(state): State<Arc<AppState>>,
    client: Client,
    RawQuery(raw): RawQuery,
) -> Response {
    let return_to = from_query(raw.as_deref());
    match pending_method(&state, &client).await {
        Some((_, method)) => code_page(&state, &client, &method, &return_to, None).into_response(),
        None => see_other(&with_return_to(SIGNIN_PATH, &return_to), &[]),
    }
}

/// The code: through the API's own checks and attempt limits; on success
/// the session's cookies and 303 to `return_to`.
pub async fn code_submit(
    State(state): State<Arc<AppState>>,
    client: Client,
    Posted(f): Posted<CodeForm>,
) -> Response {
    let return_to = target(f.return_to.as_deref());
    let Some((challenge_id, method)) = pending_method(&state, &client).await else {
        return see_other(
            &with_return_to(SIGNIN_PATH, &return_to),
            &[cookies::cleared_challenge()],
        );
    };
    let now = now();
    match finish_signin(
        &state,
        &client,
        &challenge_id,
        &Secret::new(f.code),
        None,
        now,
    )
    .await
    {
        Ok(tokens) => {
            if let Err(e) = sessions::end_replaced(&state, &client, &tokens.session_id).await {
                tracing::warn!(error = ?e, "the browser's earlier session was not ended");
            }
            let mut set = cookies::session(&state, &tokens);
            set.push(cookies::cleared_challenge());
            see_other(&return_to, &set)
        }
        Err(e) => code_page(&state, &client, &method, &return_to, Some(&explain(&e)))
            .refused_by(&e)
            .into_response(),
    }
}

/// `GET /auth/refresh?return_to=…`: rotate the refresh cookie and go back,
/// or (no cookie, expired, revoked, reused, banned) clear the cookies and go
/// to sign-in. Never a page of its own.
///
/// A cookie rotated moments ago ([`sessions::JUST_ROTATED`]: another tab of
/// this browser refreshed at the same time and won) goes to sign-in too, but
/// leaves the cookies alone: the jar they share holds, or is about to hold,
/// the winner's, which clearing could wipe. Not back to `return_to`: if the
/// winner's answer never arrived (its tab closed), the stale cookie would
/// bounce between the filter and this endpoint until the browser gives up.
/// From sign-in, the page the user came from works again as soon as the
/// winner's cookies are in.
///
/// A navigation another site started (`Sec-Fetch-Site` other than
/// `same-origin` or `none`) rotates nothing: the rotated cookie's only copy
/// is in this answer, and that site can navigate the window on before the
/// answer lands, leaving the browser with a rotated-out cookie whose next
/// use ends the session as reuse. It gets a page whose button
/// ([`refresh_submit`]) continues from this site instead.
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    client: Client,
    RawQuery(raw): RawQuery,
) -> Response {
    let return_to = from_query(raw.as_deref());
    let candidates = cookies::refresh_candidates(&state, &client.headers);
    if !candidates.tokens.is_empty()
        && (started_by_another_site(&client) || !a_page_navigation(&client))
    {
        let (csrf, cookie) = csrf_token(&state, &client.headers);
        return Page::ok(
            "Continue",
            templates::refresh_continue(
                &Form {
                    csrf: &csrf,
                    error: None,
                },
                &return_to,
            ),
        )
        .with_cookie(cookie)
        .into_response();
    }
    rotate_and_return(&state, &client, candidates, &return_to).await
}

/// `POST /auth/refresh`: the refresh page's button, from this site's page
/// (same origin and its CSRF token, checked by [`Posted`]).
pub async fn refresh_submit(
    State(state): State<Arc<AppState>>,
    client: Client,
    Posted(f): Posted<RefreshForm>,
) -> Response {
    let return_to = target(f.return_to.as_deref());
    let candidates = cookies::refresh_candidates(&state, &client.headers);
    rotate_and_return(&state, &client, candidates, &return_to).await
}

/// Whether the browser says another site (a sibling one included) started
/// this navigation. Absent (an older browser, a client that is no browser):
/// not known to be another site's.
fn started_by_another_site(client: &Client) -> bool {
    client
        .headers
        .get("sec-fetch-site")
        .is_some_and(|site| !matches!(site.as_bytes(), b"same-origin" | b"none"))
}

/// Whether the browser says this is a top-level navigation (`Sec-Fetch-Mode:
/// navigate`, `Sec-Fetch-Dest: document`), not an image, a style sheet, a
/// frame or a script's request some page of the origin made: those must not
/// rotate (each one would, and the browser may drop the answer). Absent (an
/// older browser): not known to be anything else.
fn a_page_navigation(client: &Client) -> bool {
    let header = |name: &str| client.headers.get(name).map(|v| v.as_bytes());
    authflow_contract::browser::is_page_load(header("sec-fetch-mode"), header("sec-fetch-dest"))
}

/// Rotates the first of the browser's refresh cookies that is its session's
/// and goes back to `return_to`; otherwise to sign-in (see [`refresh`]).
async fn rotate_and_return(
    state: &AppState,
    client: &Client,
    candidates: cookies::RefreshCandidates,
    return_to: &str,
) -> Response {
    // Cookies are cleared only when a refresh cookie of this browser's was
    // presented and refused: none presented (a navigation another site
    // started, whose answer's cookies the browser takes all the same; a
    // JSON-API client's session, whose device cookie is its own), or only
    // untagged copies (another site of the domain can plant one, with
    // `Domain=` the parent, which no clearing answer removes) leaves the jar
    // as it is.
    let presented = candidates.tagged;
    let candidates = candidates.tokens;
    let to_signin = || {
        let cleared = if presented {
            cookies::cleared_session()
        } else {
            Vec::new()
        };
        see_other(&with_return_to(SIGNIN_PATH, return_to), &cleared)
    };
    // Every copy, ours first or not: one planted beside it (another site of
    // the domain can) is unknown here, or bound to another device, and is
    // refused without effect before or after ours is taken.
    let mut just_rotated = false;
    let mut unavailable = None;
    for token in candidates {
        match sessions::refresh(state, client, &Secret::new(token), None, now()).await {
            Ok(tokens) => return see_other(return_to, &cookies::session(state, &tokens)),
            Err(ApiError::InvalidGrant(why)) if why == sessions::JUST_ROTATED => {
                just_rotated = true
            }
            // The session's refresh limit: the cookie is still good later, and
            // clearing it would end a session nobody ended.
            Err(ApiError::TooManyRequests { .. }) => just_rotated = true,
            // Not a refusal: the service could not answer (its database, no
            // key to sign with). The session lives on; so do its cookies.
            Err(
                e @ (ApiError::Internal(_)
                | ApiError::Unavailable(_)
                | ApiError::TemporarilyUnavailable { .. }),
            ) => {
                tracing::warn!(error = ?e, "browser refresh failed");
                unavailable = Some(e);
            }
            Err(e) => tracing::debug!(error = ?e, "browser refresh refused"),
        }
    }
    if let Some(e) = unavailable {
        let again = with_return_to(REFRESH_PATH, return_to);
        return Page::ok(
            "Try again",
            templates::message(
                "Your session could not be refreshed just now. Try again in a moment.",
                Some((&again, "Try again")),
            ),
        )
        .refused_by(&ApiError::TemporarilyUnavailable {
            retry_after_secs: e.retry_after().unwrap_or(1),
        })
        .into_response();
    }
    if just_rotated {
        // Another tab refreshed first: its cookies are (or will be) this browser's.
        tracing::debug!("browser refresh lost a race with another tab");
        return see_other(&with_return_to(SIGNIN_PATH, return_to), &[]);
    }
    to_signin()
}

/// Where a logout clicked without a valid access cookie (it expired with
/// its token) goes: through the refresh endpoint, which signs the browser
/// back in and shows the logout page, or (no live session) goes to sign-in.
fn logout_via_refresh() -> Response {
    see_other(&with_return_to(REFRESH_PATH, LOGOUT_PATH), &[])
}

/// `GET /auth/logout`: the page asking to log out (where a logout clicked
/// after the access cookie expired lands, signed in again).
pub async fn logout_page(
    State(state): State<Arc<AppState>>,
    client: Client,
    SignedIn(_): SignedIn,
) -> Response {
    let (csrf, cookie) = csrf_token(&state, &client.headers);
    Page::ok(
        "Log out",
        templates::logout(&Form {
            csrf: &csrf,
            error: None,
        }),
    )
    .with_cookie(cookie)
    .into_response()
}

/// Ends this browser's session and clears its cookies. Without a valid
/// access cookie the session is found through the refresh cookie first
/// (clearing cookies alone would leave the session alive on the server).
pub async fn logout(
    State(state): State<Arc<AppState>>,
    client: Client,
    MaybeSignedIn(user): MaybeSignedIn,
    Posted(_): Posted<NoFields>,
) -> Response {
    let Some(v) = user else {
        return logout_via_refresh();
    };
    if let Err(e) = sessions::revoke_session(&state, &v.claims.sid, "logout").await {
        return failed("Log out", &e);
    }
    audit::record_with(
        &state,
        Some(&client),
        ("logout", "success"),
        (Some(&v.sub), None),
        Some(format!("session {}", v.claims.sid)),
    )
    .await;
    see_other(SIGNIN_PATH, &cookies::cleared_session())
}

/// Ends every session of the signed-in user and clears this browser's cookies.
pub async fn logout_all(
    State(state): State<Arc<AppState>>,
    client: Client,
    MaybeSignedIn(user): MaybeSignedIn,
    Posted(_): Posted<NoFields>,
) -> Response {
    let Some(v) = user else {
        return logout_via_refresh();
    };
    if let Err(e) = sessions::revoke_all_sessions(&state, &v.sub, "logout_all").await {
        return failed("Log out everywhere", &e);
    }
    audit::record(
        &state,
        Some(&client),
        "logout_all",
        "success",
        Some(&v.sub),
        None,
    )
    .await;
    see_other(SIGNIN_PATH, &cookies::cleared_session())
}
