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

/// The challenge between the password and the code pages (the filter only
/// keeps it from other backends).
pub use authflow_contract::browser::CHALLENGE_COOKIE;

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
            &refresh_value(state, &tokens.device_secret, tokens.refresh.expose()),
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

/// Most copies of the refresh cookie [`refresh_candidates`] tries of each
/// kind (tagged for this browser's device; untagged).
const MAX_CANDIDATES: usize = 4;

/// The refresh cookie's value: the refresh token and a tag binding it to the
/// device secret of this browser (`<token>.<HMAC>`). The refresh cookie
/// cannot be `__Host-` (it is scoped to its path), so a sibling site may set
/// copies beside ours with `Domain=`; without the device secret, which is
/// `__Host-`, it cannot tag them for this browser.
fn refresh_value(state: &AppState, device_secret: &str, refresh: &str) -> String {
    let tag = state.page_keys.tag(&refresh_tagged(device_secret, refresh));
    format!("{refresh}.{tag}")
}

fn refresh_tagged<'a>(device_secret: &'a str, refresh: &'a str) -> [&'a [u8]; 4] {
    [
        b"authflow refresh cookie v1\0",
        device_secret.as_bytes(),
        b"\0",
        refresh.as_bytes(),
    ]
}

/// The refresh tokens of the refresh cookie's copies to try, in order.
pub struct RefreshCandidates {
    pub tokens: Vec<String>,
    /// Whether they are tagged for this browser's device secret: only then
    /// are they known to be this browser's (see [`refresh_candidates`]).
    pub tagged: bool,
}

/// Every distinct copy tagged for this browser's device secret (a planted
/// copy never is, however many there are); only when there is none, the
/// untagged ones (set before the tag existed, or planted by another site of
/// the domain); at most [`MAX_CANDIDATES`]. A browser with a tagged copy
/// holds no untagged one of its own: one beside it is planted, and may be
/// an old refresh token of this very session that its device secret would
/// turn into reuse (the session ended).
pub fn refresh_candidates(state: &AppState, headers: &HeaderMap) -> RefreshCandidates {
    let device = crate::tokens::device_secret(headers).unwrap_or_default();
    let mut tagged: Vec<String> = Vec::new();
    let mut untagged: Vec<String> = Vec::new();
    for v in values(
        headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
        REFRESH_COOKIE,
    ) {
        match v.split_once('.') {
            Some((token, tag)) => {
                // Tagged before a KEK rotation too: browsers stay signed in.
                let ok = !device.is_empty()
                    && state
                        .page_keys
                        .verifies(&refresh_tagged(&device, token), tag);
                if ok && tagged.len() < MAX_CANDIDATES && !tagged.iter().any(|t| t == token) {
                    tagged.push(token.to_owned());
                }
            }
            None if !v.is_empty()
                && untagged.len() < MAX_CANDIDATES
                && !untagged.iter().any(|t| t == v) =>
            {
                untagged.push(v.to_owned());
            }
            None => {}
        }
    }
    if tagged.is_empty() {
        RefreshCandidates {
            tokens: untagged,
            tagged: false,
        }
    } else {
        RefreshCandidates {
            tokens: tagged,
            tagged: true,
        }
    }
}
