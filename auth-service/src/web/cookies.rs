//! The cookies the pages set: the session's three (access, refresh, device:
//! names from the contract, which the filter reads) and the pending sign-in
//! challenge. All HttpOnly and Secure; `SameSite=Lax` so that a navigation
//! arriving from another site still carries them (Strict would send such a
//! visitor through sign-in again).

use axum::http::{header, HeaderMap};

use authflow_contract::browser::{ACCESS_COOKIE, DEVICE_COOKIE, REFRESH_COOKIE, REFRESH_PATH};
use authflow_contract::cookie::{single_value, values};

use crate::sessions::SessionTokens;
use crate::state::AppState;

/// The challenge between the password and the code pages (service-only).
pub const CHALLENGE_COOKIE: &str = "__Host-authflow-challenge";

fn cookie(name: &str, value: &str, path: &str, max_age: u64) -> String {
    format!("{name}={value}; HttpOnly; Secure; SameSite=Lax; Path={path}; Max-Age={max_age}")
}

/// The `Set-Cookie` values of a started or refreshed session.
pub fn session(state: &AppState, tokens: &SessionTokens) -> Vec<String> {
    let session_life = state.config.tokens.refresh_ttl.as_secs();
    vec![
        cookie(
            ACCESS_COOKIE,
            &tokens.access.token,
            "/",
            tokens.access.expires_in,
        ),
        cookie(
            REFRESH_COOKIE,
            tokens.refresh.expose(),
            REFRESH_PATH,
            session_life,
        ),
        cookie(DEVICE_COOKIE, &tokens.device_secret, "/", session_life),
    ]
}

/// `Set-Cookie` values that remove the session's cookies (sign-out, a
/// refused refresh).
pub fn cleared_session() -> Vec<String> {
    vec![
        cookie(ACCESS_COOKIE, "", "/", 0),
        cookie(REFRESH_COOKIE, "", REFRESH_PATH, 0),
        cookie(DEVICE_COOKIE, "", "/", 0),
    ]
}

pub fn challenge(id: &str, ttl_secs: u64) -> String {
    cookie(CHALLENGE_COOKIE, id, "/", ttl_secs)
}

pub fn cleared_challenge() -> String {
    cookie(CHALLENGE_COOKIE, "", "/", 0)
}

/// The one value of cookie `name`; `None` when absent or when two copies
/// disagree (a cookie planted beside ours is not picked by chance).
pub fn read<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    // Bytes, pair by pair: one cookie that is not ASCII (`lang=café`) must not hide ours.
    single_value(
        headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
        name,
    )
    .ok()
    .flatten()
}

/// Most copies of a cookie [`candidates`] returns.
const MAX_CANDIDATES: usize = 4;

/// The distinct non-empty values of cookie `name`, at most four: for the
/// refresh cookie, which cannot be `__Host-` (it is scoped to its path), so a
/// sibling site may set another beside ours with `Domain=`; each is tried,
/// and one planted there neither wins nor signs the browser out.
pub fn candidates<'a>(headers: &'a HeaderMap, name: &'a str) -> Vec<&'a str> {
    let mut found: Vec<&str> = Vec::new();
    for v in values(
        headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
        name,
    ) {
        if !v.is_empty() && !found.contains(&v) && found.len() < MAX_CANDIDATES {
            found.push(v);
        }
    }
    found
}
