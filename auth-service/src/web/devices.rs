//! "Your devices": the signed-in user's live sessions, with log out of one
//! (this device marked) and log out everywhere.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use authflow_contract::browser::SIGNIN_PATH;

use super::templates::{self, DeviceRow, Form};
use super::{cookies, csrf_token, failed, see_other, utc, MaybeSignedIn, Page, Posted, SignedIn};
use crate::audit;
use crate::clock::now;
use crate::error::ApiResult;
use crate::extract::Client;
use crate::sessions;
use crate::state::AppState;
use crate::store::{PageRequest, Session};

#[derive(Deserialize)]
pub struct DeviceForm {
    #[serde(default)]
    session: String,
}

/// Sessions the page reads: the newest, so that a user with thousands
/// (an account signed in by a script) still gets a page of bounded size.
const DEVICES_READ: u32 = 200;

/// The user's sessions that can still be used, newest first.
async fn live_sessions(state: &AppState, user_id: &str) -> ApiResult<Vec<Session>> {
    let now = now();
    let newest = state.store.sessions_of(user_id, &PageRequest::first(DEVICES_READ)).await?;
    Ok(newest.into_iter().filter(|s| s.revoked_at.is_none() && s.expires_at > now).collect())
}

pub async fn list(State(state): State<Arc<AppState>>, client: Client, SignedIn(v): SignedIn) -> Response {
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
            user_agent: s.user_agent.clone().filter(|ua| !ua.is_empty()).unwrap_or_else(|| "Unknown device".into()),
            created: utc(s.created_at),
            last_used: utc(s.last_seen_at),
            this_device: s.id == v.claims.sid,
        })
        .collect();
    let (csrf, cookie) = csrf_token(&state, &client.headers);
    Page::ok("Your devices", templates::devices(&Form { csrf: &csrf, error: None }, &user.email, &rows)).with_cookie(cookie).into_response()
}

/// Logs out one of the user's own sessions (another user's id does nothing).
pub async fn logout_one(State(state): State<Arc<AppState>>, client: Client, MaybeSignedIn(user): MaybeSignedIn, Posted(f): Posted<DeviceForm>) -> Response {
    let Some(v) = user else {
        return see_other(SIGNIN_PATH, &cookies::cleared_session());
    };
    let owned = match live_sessions(&state, &v.sub).await {
        Ok(live) => live.iter().any(|s| s.id == f.session),
        Err(e) => return failed("Your devices", &e),
    };
    if owned {
        if let Err(e) = sessions::revoke_session(&state, &f.session, "logout_device").await {
            return failed("Your devices", &e);
        }
        audit::record(&state, Some(&client), "logout_device", "success", Some(&v.sub), None).await;
    }
    if f.session == v.claims.sid {
        see_other(SIGNIN_PATH, &cookies::cleared_session())
    } else {
        see_other("/auth/devices", &[])
    }
}
