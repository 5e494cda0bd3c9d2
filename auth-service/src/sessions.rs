//! Sessions: started after the second factor, refreshed with rotation and
//! reuse detection, ended by logout, logout-all, password reset or an admin.
//! The HTTP routes (`routes/tokens.rs`, `routes/auth.rs`, `routes/admin.rs`)
//! and the CLI (`token mint`) all go through here.

use crate::audit;
use crate::clock::now;
use crate::domain::secret::hashes_match;
use crate::domain::{hash_secret, random_id, random_secret, Secret};
use crate::dpop::PendingProof;
use crate::error::{ApiError, ApiResult};
use crate::extract::Client;
use crate::metrics::inc;
use crate::refresh_tokens;
use crate::state::AppState;
use crate::store::{
    RefreshLimit, RefreshRecord, Rotation, Session, SessionCap, SignedInWith, User,
};
use crate::tokens::{self, IssuedAccess};

/// What a client receives when a session starts or its refresh token rotates.
pub struct SessionTokens {
    pub access: IssuedAccess,
    pub refresh: Secret,
    /// The device secret the session is bound to.
    pub device_secret: String,
    pub session_id: String,
}

/// Where a session was started from: (client address, user agent).
pub type Origin = (Option<String>, Option<String>);

/// How long (seconds) after its rotation a refresh token sent again from
/// its own device is only refused, not taken for reuse: the client's own
/// requests racing (parallel refreshes, browser tabs sharing cookies, a
/// retry after a lost answer), not a second holder. Past it, reuse revokes
/// the session.
pub const REFRESH_REUSE_GRACE_SECS: i64 = 10;

/// The window of the per-session refresh limit (`throttle.refresh_max_per_hour`).
pub const REFRESH_LIMIT_WINDOW_SECS: i64 = 3600;

/// The `error_description` of a refresh refused within that grace (401
/// `invalid_grant`); the browser refresh page tells it apart.
pub const JUST_ROTATED: &str = "refresh token was just rotated";

/// The `error_description` of a refresh token the service does not know,
/// or that was sent without its device.
const UNKNOWN_REFRESH_TOKEN: &str = "unknown refresh token";

/// Most sessions [`end_replaced`] looks at on one device: one device secret
/// belongs to one sign-in, so more than one live session is never expected.
const REPLACED_LISTED: u32 = 8;

/// Whether a refresh token rotated (`used_at`) is, at `now`, still within
/// [`REFRESH_REUSE_GRACE_SECS`]. A rotation stamped ahead of `now` by less
/// than the clock difference allowed between instances counts as just
/// rotated; one stamped further ahead (a clock stepped forward) does not:
/// it would hide the owner's reuse, and leave the session to whoever
/// rotated, for as long as the stamp is ahead.
pub fn within_reuse_grace(used_at: i64, now: i64) -> bool {
    let ahead = i64::try_from(crate::clock::INSTANCE_CLOCK_MARGIN_SECS).unwrap_or(i64::MAX);
    (-ahead..REFRESH_REUSE_GRACE_SECS).contains(&now.saturating_sub(used_at))
}

pub fn feed_expiry(state: &AppState, now: i64) -> i64 {
    // The last access token of a session revoked now expires at the latest
    // one access-token lifetime from now.
    now + i64::try_from(state.config.tokens.access_ttl.as_secs()).unwrap_or(900)
}

/// After a revoking write: refresh the in-memory feed head (and revocation
/// set) before the caller gets its answer.
pub async fn feed_changed(state: &AppState) {
    if let Err(e) = state
        .feed
        .sync_after_write(state.store.as_ref(), crate::clock::forget_now())
        .await
    {
        tracing::warn!(error = %e, "feed sync after write failed");
    }
}

/// `count` sessions were revoked by the store (alone, or with more in one
/// transaction, as a password reset does): the metrics, and the in-memory
/// feed before the caller answers.
pub async fn revoked_by_store(state: &AppState, count: usize) {
    for _ in 0..count {
        inc(&state.metrics.sessions_revoked);
    }
    feed_changed(state).await;
}

/// Ends one session (it enters the revocation feed); false if it already had ended.
pub async fn revoke_session(state: &AppState, session_id: &str, reason: &str) -> ApiResult<bool> {
    let now = now();
    let revoked = state
        .store
        .revoke_session(session_id, reason, now, feed_expiry(state, now))
        .await?;
    if revoked {
        inc(&state.metrics.sessions_revoked);
        feed_changed(state).await;
    }
    Ok(revoked)
}

/// Ends every live session of a user; returns how many.
pub async fn revoke_all_sessions(
    state: &AppState,
    user_id: &str,
    reason: &str,
) -> ApiResult<usize> {
    let now = now();
    let ids = state
        .store
        .revoke_user_sessions(user_id, reason, now, feed_expiry(state, now))
        .await?;
    revoked_by_store(state, ids.len()).await;
    Ok(ids.len())
}

/// Ends the session a browser held before it signed in again, as the same
/// user or as another (found by the device cookie it still sends: each
/// sign-in makes its own device secret), all but `kept`, the new one.
/// Otherwise the old session lives on until it expires, its refresh token in
/// nobody's hands but a copy's (a thief's). Returns how many ended.
pub async fn end_replaced(state: &AppState, client: &Client, kept: &str) -> ApiResult<usize> {
    end_on_device(state, client, Some(kept), "signed_in_again").await
}

/// Ends every live session of the browser's device (its device cookie),
/// whoever's they are: for a page that clears the browser's session cookies
/// for another reason than ending that session (a password reset of some
/// account), so that no session outlives the cookies that held it.
pub async fn end_this_device(state: &AppState, client: &Client, reason: &str) -> ApiResult<usize> {
    end_on_device(state, client, None, reason).await
}

async fn end_on_device(
    state: &AppState,
    client: &Client,
    kept: Option<&str>,
    reason: &str,
) -> ApiResult<usize> {
    let Some(device) = tokens::device_secret(&client.headers) else {
        return Ok(0);
    };
    let live = state
        .store
        .live_sessions_on_device(&hash_secret(&device), now(), REPLACED_LISTED)
        .await?;
    let mut ended = 0;
    for session in live {
        if Some(session.id.as_str()) != kept && revoke_session(state, &session.id, reason).await? {
            ended += 1;
        }
    }
    Ok(ended)
}

/// Stores a new session bound to `device` (and to the DPoP key thumbprint
/// `dpop_jkt`, if any), with a fresh first refresh token, and signs its
/// first access token (device binding `dfp`), recorded in the same
/// transaction: a failure leaves no session that nobody holds. The same
/// transaction ends the user's least recently used sessions past
/// `sessions.max_per_user`, so one account cannot pile up live sessions
/// (each an event in the feed once they all end). Returns the
/// session's id, the access token and the refresh token; 403 `account_disabled` when the user is
/// banned by then, and 401 `invalid_code` when their password was replaced
/// since `user` was read (a reset ended this sign-in), whatever `user` says:
/// the store decides against concurrent bans and resets.
pub async fn create_session(
    state: &AppState,
    user: &User,
    device: &Secret,
    now: i64,
    origin: Origin,
    binding: Binding<'_>,
) -> ApiResult<(String, IssuedAccess, Secret)> {
    let session_id = random_id();
    let refresh =
        refresh_tokens::mint(&state.refresh_keys, &session_id, binding.dpop_jkt.is_some());
    let expires_at = now + i64::try_from(state.config.tokens.refresh_ttl.as_secs()).unwrap_or(0);
    let (access, access_record) = tokens::sign_for_session(
        state,
        user,
        &session_id,
        binding.dfp,
        binding.dpop_jkt.clone(),
        (now, expires_at),
    )?;
    let session = Session {
        id: session_id.clone(),
        user_id: user.id.clone(),
        device_secret_hash: device.hash(),
        created_at: now,
        last_seen_at: now,
        expires_at,
        revoked_at: None,
        revoke_reason: None,
        ip: origin.0,
        user_agent: origin.1,
        dpop_jkt: binding.dpop_jkt,
        dpop_bound_at: None,
    };
    let record = RefreshRecord {
        hash: refresh.hash(),
        session_id: session_id.clone(),
        created_at: now,
        expires_at,
        used_at: None,
        dpop_bound: session.dpop_jkt.is_some(),
    };
    let cap = SessionCap {
        max_live: state.config.sessions.max_per_user,
        feed_expires_at: feed_expiry(state, now),
    };
    let created = state
        .store
        .create_session_by(
            &session,
            &record,
            Some(&access_record),
            user.password_version,
            cap,
            binding.second_factor,
        )
        .await?;
    let Some(ended) = created else {
        // Which one refused it, for the answer only (each ends the sign-in).
        let now = state.store.user_by_id(&user.id).await?;
        return Err(match now {
            None => ApiError::AccountDisabled,
            Some(u) if u.banned_at.is_some() => ApiError::AccountDisabled,
            Some(u)
                if binding.second_factor == SignedInWith::MailedCode && u.totp_secret.is_some() =>
            {
                ApiError::InvalidCode(
                    "an authenticator was set up meanwhile; sign in again with its code",
                )
            }
            Some(u)
                if matches!(binding.second_factor, SignedInWith::Authenticator(proven)
                    if u.totp_secret.as_deref() != Some(proven)) =>
            {
                ApiError::InvalidCode(
                    "the authenticator was removed or replaced meanwhile; sign in again",
                )
            }
            Some(_) => ApiError::InvalidCode("the password was changed; sign in again"),
        });
    };
    if !ended.is_empty() {
        revoked_by_store(state, ended.len()).await;
    }
    Ok((session_id, tokens::counted(state, access), refresh))
}

/// What a session's tokens are bound to besides its device secret.
pub struct Binding<'a> {
    /// The device fingerprint claim (`dfp`) of its access tokens.
    pub dfp: Option<String>,
    /// The thumbprint of the DPoP key the session is bound to.
    pub dpop_jkt: Option<String>,
    /// The second factor it was signed in with: a mailed code is stored only
    /// while the user has no authenticator (one confirmed meanwhile ends the
    /// sign-in), a TOTP code only while its secret is still the account's
    /// (one removed or replaced meanwhile ends it).
    pub second_factor: SignedInWith<'a>,
}

/// A signed-in user (second factor passed): a session bound to a fresh device
/// secret (and to the key of the request's DPoP proof, `dpop_jkt`), and its
/// first tokens.
pub async fn start(
    state: &AppState,
    user: &User,
    client: &Client,
    dpop_jkt: Option<String>,
    now: i64,
) -> ApiResult<SessionTokens> {
    start_signed_in(
        state,
        user,
        client,
        (dpop_jkt, SignedInWith::Unchecked),
        now,
    )
    .await
}

/// [`start`] for a sign-in whose second factor was `second_factor` (see
/// [`Binding::second_factor`]).
pub async fn start_signed_in(
    state: &AppState,
    user: &User,
    client: &Client,
    (dpop_jkt, second_factor): (Option<String>, SignedInWith<'_>),
    now: i64,
) -> ApiResult<SessionTokens> {
    let device = random_secret();
    let origin = (Some(client.ip.clone()), Some(client.user_agent.clone()));
    let binding = Binding {
        dfp: Some(client.fingerprint(state, device.expose())),
        dpop_jkt,
        second_factor,
    };
    let (session_id, access, refresh) =
        create_session(state, user, &device, now, origin, binding).await?;
    Ok(SessionTokens {
        access,
        refresh,
        device_secret: device.expose().to_owned(),
        session_id,
    })
}

/// Rotates the refresh token. A refresh token that was already used, sent
/// again from its device once [`REFRESH_REUSE_GRACE_SECS`] have passed since
/// its rotation, means two parties hold it: the whole session is revoked
/// (OAuth 2.0 Security BCP §4.14) and shows up in the revocation feed.
/// Within the grace it is refused ([`JUST_ROTATED`]) and nothing changes:
/// that is the client's own requests racing, and whoever won holds the new
/// token.
///
/// What proves the caller is the session's device comes first: the device
/// secret, and for a session bound to a DPoP key a proof from that key
/// (RFC 9449 §5). A request without them is refused and changes nothing —
/// it neither rotates the token nor counts as reuse, since whoever holds a
/// refresh token (current or rotated out) without the device can do nothing
/// with it, and must not be able to end the owner's session either.
///
/// `proof` is the request's DPoP proof, checked but not yet recorded: it is
/// recorded as used only when everything else holds, just before rotation
/// (or just before a reuse ends the session: a replayed proof ends nothing),
/// so an unknown or ended refresh token burns no proof and writes nothing.
/// The new access token is bound to the proof's key; a bound session stays
/// bound.
pub async fn refresh(
    state: &AppState,
    client: &Client,
    refresh_token: &Secret,
    proof: Option<PendingProof>,
    now: i64,
) -> ApiResult<SessionTokens> {
    tokens::ensure_signer(state, now)?;
    let device = tokens::device_secret(&client.headers)
        .ok_or(ApiError::InvalidGrant("the device secret is missing"))?;
    let old_hash = refresh_token.hash();
    let record = state.store.refresh_token(&old_hash).await?;
    let (session_id, dpop_bound) = match &record {
        Some(record) => (record.session_id.as_str(), record.dpop_bound),
        // Pushed out of the session's history by later rotations, yet known
        // by its tag as this session's: judged below, like any rotated one.
        None => refresh_tokens::session_of(&state.refresh_keys, refresh_token.expose())
            .map(|minted| (minted.session_id, minted.dpop_bound))
            .ok_or(ApiError::InvalidGrant(UNKNOWN_REFRESH_TOKEN))?,
    };
    let session = state
        .store
        .session(session_id)
        .await?
        .ok_or(ApiError::InvalidGrant(UNKNOWN_REFRESH_TOKEN))?;
    if !hashes_match(&hash_secret(&device), &session.device_secret_hash) {
        record_refused(state, client, "wrong_device", &session.user_id).await;
        // Answered as an unknown token: whoever holds a refresh token but
        // not its device learns nothing about it (the audit row says).
        return Err(ApiError::InvalidGrant(UNKNOWN_REFRESH_TOKEN));
    }
    if let Some(bound) = &session.dpop_jkt {
        let with_its_key = proof.as_ref().map(PendingProof::jkt) == Some(bound.as_str());
        let used = record.as_ref().is_none_or(|r| r.used_at.is_some());
        if !with_its_key && !rotated_out_before_binding(&session, used, dpop_bound) {
            inc(&state.metrics.dpop_refused);
            let outcome = if proof.is_some() {
                "wrong_dpop_key"
            } else {
                "dpop_proof_missing"
            };
            record_refused(state, client, outcome, &session.user_id).await;
            return Err(ApiError::InvalidDpopProof(
                "this refresh token needs a DPoP proof signed with the key it is bound to",
            ));
        }
    }
    let token_expired = record.as_ref().is_some_and(|r| r.expires_at <= now);
    if session.revoked_at.is_some() || token_expired || session.expires_at <= now {
        return Err(ApiError::InvalidGrant("the session has ended"));
    }
    match record.as_ref().map(|r| r.used_at) {
        Some(Some(used_at)) => {
            return Err(used_again(state, client, &session, used_at, now, proof).await);
        }
        Some(None) => {}
        // Pushed out of the history: at least `ROTATED_REFRESH_TOKENS_KEPT`
        // rotations ago, which the per-session limit spreads over more than
        // an hour, so long past the grace. Taken for reuse like any other.
        None => return Err(reuse_detected(state, client, &session, proof, now).await),
    }
    let user = state
        .store
        .user_by_id(&session.user_id)
        .await?
        .ok_or(ApiError::InvalidGrant(UNKNOWN_REFRESH_TOKEN))?;
    if user.banned_at.is_some() {
        return Err(ApiError::AccountDisabled);
    }
    let dpop_jkt = crate::dpop::accept(state, proof, now).await?;
    // RFC 9449 §5: a refresh with a proof binds a session not bound yet; its
    // refresh tokens from then on work only with proofs from that key.
    let bind_to = dpop_jkt.clone().filter(|_| session.dpop_jkt.is_none());
    let dpop_bound = session.dpop_jkt.is_some() || bind_to.is_some();
    let next = refresh_tokens::mint(&state.refresh_keys, &session.id, dpop_bound);
    let next_record = RefreshRecord {
        hash: next.hash(),
        session_id: session.id.clone(),
        created_at: now,
        expires_at: session.expires_at,
        used_at: None,
        dpop_bound,
    };
    // Signed before the rotation and recorded in its transaction: nothing that
    // can fail comes between the rotation's commit and the answer.
    let dfp = client.fingerprint(state, &device);
    let (access, access_record) = tokens::sign_for_session(
        state,
        &user,
        &session.id,
        Some(dfp),
        dpop_jkt,
        (now, session.expires_at),
    )?;
    let limit = RefreshLimit {
        max_per_window: state.config.throttle.refresh_max_per_hour,
        window_secs: REFRESH_LIMIT_WINDOW_SECS,
    };
    match state
        .store
        .rotate_refresh(
            &old_hash,
            &next_record,
            &access_record,
            now,
            limit,
            bind_to.as_deref(),
        )
        .await?
    {
        Rotation::Rotated => {}
        // The session rotated `throttle.refresh_max_per_hour` times this hour
        // (a client, or a second holder, refreshing in a loop): refused, the
        // token left unused.
        Rotation::Throttled(until) => {
            inc(&state.metrics.refresh_throttled);
            audit::record_throttled(state, client, "refresh", Some(&user.id), None).await;
            return Err(ApiError::TooManyRequests {
                retry_after_secs: u64::try_from(until.saturating_sub(now)).unwrap_or(1).max(1),
            });
        }
        // A logout (or expiry) committed since the session was read.
        Rotation::SessionEnded => return Err(ApiError::InvalidGrant("the session has ended")),
        Rotation::AlreadyUsed => {
            // Another use of the same token rotated it since this request read
            // it unused: the two were in flight together, a race (two tabs, a
            // retry), whatever time the other instance's clock stamped it
            // with. Judged by that stamp, an instance whose clock is behind
            // this one's by more than the grace made the race look like reuse
            // and ended the session.
            // The proof was recorded as used just before the rotation.
            return Err(used_again(state, client, &session, now, now, None).await);
        }
    }
    inc(&state.metrics.refresh_ok);
    let access = tokens::counted(state, access);
    audit::record(
        state,
        Some(client),
        "refresh",
        "success",
        Some(&user.id),
        None,
    )
    .await;
    Ok(SessionTokens {
        access,
        refresh: next,
        device_secret: device,
        session_id: session.id,
    })
}

/// Whether a refresh token is one rotated out of a session that a later refresh bound to a DPoP key
/// (`dpop_bound_at`), and issued before that (`dpop_bound` false): sent
/// again from its device it is judged as any rotated-out token (reuse past
/// the grace), with or without a proof. Otherwise whoever stole a session's
/// refresh token and device secret could refresh first with a key of their
/// own, and the owner's old token, sent without that key, would be refused
/// without ending the session: the thief's binding would hide the reuse.
/// A token issued once bound still needs the key: without it, it ends
/// nothing, pushed out of the history too (its tag says it was bound).
/// `used`: rotated out (or pushed out of the history).
fn rotated_out_before_binding(session: &Session, used: bool, dpop_bound: bool) -> bool {
    // Bound at its start (`dpop_bound_at` unset): every token it ever had needs the key.
    session.dpop_bound_at.is_some() && used && !dpop_bound
}

/// Audits a refused refresh that changes nothing, which whoever holds the
/// token can repeat at will (from another device, without the bound key,
/// within the grace): one row a minute per client address and account. A
/// row per request would let one token grow the log in a loop, and the write
/// would set a refusal from another device apart from an unknown token's.
async fn record_refused(state: &AppState, client: &Client, outcome: &str, user_id: &str) {
    let about = audit::Repeated {
        user_id: Some(user_id),
        email: None,
        per_account: true,
    };
    audit::record_repeatable(state, client, ("refresh", outcome), about).await;
}

/// A rotated-out refresh token sent again from its device (rotated at
/// `used_at`): refused within the grace, reuse past it.
async fn used_again(
    state: &AppState,
    client: &Client,
    session: &Session,
    used_at: i64,
    now: i64,
    proof: Option<PendingProof>,
) -> ApiError {
    if within_reuse_grace(used_at, now) {
        record_refused(state, client, "just_rotated", &session.user_id).await;
        return ApiError::InvalidGrant(JUST_ROTATED);
    }
    reuse_detected(state, client, session, proof, now).await
}

/// Revokes the session whose refresh token was reused; the error to answer with.
///
/// The request's DPoP proof (not yet recorded) is recorded first: for a
/// bound session it is what let the token be judged at all, and a replayed
/// one (a copy of an earlier request of the owner's, seen in a log or a
/// proxy, within the proof's age) proves no key. Refused as a replay, it
/// ends nothing, as a request without the key ends nothing.
async fn reuse_detected(
    state: &AppState,
    client: &Client,
    session: &Session,
    proof: Option<PendingProof>,
    now: i64,
) -> ApiError {
    if let Err(e) = crate::dpop::accept(state, proof, now).await {
        // A copy of the owner's request: its sender holds the token and the device secret.
        if matches!(e, ApiError::InvalidDpopProof(_)) {
            record_refused(state, client, "replayed_dpop_proof", &session.user_id).await;
        }
        return e;
    }
    inc(&state.metrics.refresh_reuse);
    if let Err(e) = revoke_session(state, &session.id, "refresh_token_reuse").await {
        return e;
    }
    audit::record_with(
        state,
        Some(client),
        ("refresh", "reuse_detected_session_revoked"),
        (Some(&session.user_id), None),
        Some(format!("session {}", session.id)),
    )
    .await;
    ApiError::InvalidGrant("refresh token reuse detected; the session is revoked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reuse_grace_ends_after_its_last_second() {
        let rotated = 1_900_000_000;
        assert!(within_reuse_grace(rotated, rotated));
        assert!(within_reuse_grace(
            rotated,
            rotated + REFRESH_REUSE_GRACE_SECS - 1
        ));
        assert!(!within_reuse_grace(
            rotated,
            rotated + REFRESH_REUSE_GRACE_SECS
        ));
        assert!(
            within_reuse_grace(rotated, rotated - 5),
            "stamped by an instance whose clock is ahead"
        );
        let margin = crate::clock::INSTANCE_CLOCK_MARGIN_SECS as i64;
        assert!(within_reuse_grace(rotated, rotated - margin));
        assert!(
            !within_reuse_grace(rotated, rotated - margin - 1),
            "stamped by a clock stepped forward, past what instances may differ by"
        );
        assert!(!within_reuse_grace(i64::MAX, i64::MIN));
    }
}
