//! "Your devices": the signed-in user's live sessions, with log out of one
//! (this device marked) and log out everywhere.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use authflow_contract::browser::{REFRESH_PATH, SIGNIN_PATH};

use super::return_target::with_return_to;
use super::templates::{self, DeviceRow, Form};
use super::{cookies, csrf_token, failed, see_other, utc, MaybeSignedIn, Page, Posted, SignedIn};
use crate::audit;
use crate::clock::now;
use crate::error::ApiResult;
use crate::extract::Client;
use crate::sessions;
use crate::state::AppState;
use crate::store::Session;

#[derive(Deserialize)]
pub struct DeviceForm {
    #[serde(default)]
    session: String,
}

/// Live sessions the page lists: the newest, so that a user with thousands
/// (an account signed in by a script) still gets a page of bounded size.
/// Each of the others can still be ended on its own (by id), or all at once.
const DEVICES_LISTED: u32 = 200;

/// The user's sessions that can still be used, newest first.
async fn live_sessions(state: &AppState, user_id: &str) -> ApiResult<Vec<Session>> {
    Ok(state
        .store
        .live_sessions_of(user_id, now(), DEVICES_LISTED)
        .await?)
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    client: Client,
    SignedIn(v): SignedIn,
) -> Response {
    let user = match state.store.user_by_id(&v.sub).await {
        Ok(Some(user)) => user,
        Ok(None) => return see_other(SIGNIN_PATH, &cookies::cleared_session()),
        Err(e) => return failed("Your devices", &e.into()),
    };
    let sessions = match live_sessions(&state, &user.id).await {
        Ok(s) => s,
        Err(e) => return failed("Your devices", &e),
    };
    let rows: Vec<DeviceRow> = sessions
        .iter()
        .map(|s| DeviceRow {
            session_id: s.id.clone(),
            user_agent: s
                .user_agent
                .clone()
                .filter(|ua| !ua.is_empty())
                .unwrap_or_else(|| "Unknown device".into()),
            created: utc(s.created_at),
            last_used: utc(s.last_seen_at),
            this_device: s.id == v.claims.sid,
        })
        .collect();
    let (csrf, cookie) = csrf_token(&state, &client.headers);
    Page::ok(
        "Your devices",
        templates::devices(
            &Form {
                csrf: &csrf,
                error: None,
            },
            &user.email,
            &rows,
        ),
    )
    .with_cookie(cookie)
    .into_response()
}

/// Logs out one of the user's own sessions (another user's id does nothing).
pub async fn logout_one(
    State(state): State<Arc<AppState>>,
    client: Client,
    MaybeSignedIn(user): MaybeSignedIn,
    Posted(f): Posted<DeviceForm>,
) -> Response {
    let Some(v) = user else {
        // The access cookie expired while the page was open: clearing the
        // cookies would end neither session (and leave this one with no
        // cookie to end it by). Through the refresh endpoint back to the
        // list, where the click is made again.
        return see_other(&with_return_to(REFRESH_PATH, DEVICES_PATH), &[]);
    };
    // Looked up by id, not in the list shown: a session past the listed
    // ones is the user's to end too.
    let owned = match state.store.session(&f.session).await {
        Ok(session) => session.is_some_and(|s| s.user_id == v.sub),
        Err(e) => return failed("Your devices", &e.into()),
    };
    if owned {
        if let Err(e) = sessions::revoke_session(&state, &f.session, "logout_device").await {
            return failed("Your devices", &e);
        }
        audit::record_with(
            &state,
            Some(&client),
            ("logout_device", "success"),
            (Some(&v.sub), None),
            Some(format!("session {} by session {}", f.session, v.claims.sid)),
        )
        .await;
    }
    if f.session == v.claims.sid {
        see_other(SIGNIN_PATH, &cookies::cleared_session())
    } else {
        see_other(DEVICES_PATH, &[])
    }
}

/// The devices page.
const DEVICES_PATH: &str = "/auth/devices";
