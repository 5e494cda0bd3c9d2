//! Request extractors whose rejections use the one error shape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;

use authflow_contract::claims::is_service_token;
use authflow_contract::dpop::DpopError;

use crate::clock::now;
use crate::dpop;
use crate::error::ApiError;
use crate::state::AppState;
use crate::tokens::{self, Verified};

/// `axum::Json` with errors in the service's shape.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::BytesRejection(r))
                if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::PayloadTooLarge)
            }
            Err(e) => Err(ApiError::BadRequest(json_refused_text(&e))),
        }
    }
}

/// What a refused JSON body is told. Never serde's text for a body that
/// parsed but does not fit: it quotes what it could not take (`invalid
/// type: integer `…``, `string "…"`, `unknown field `…``), so a password,
/// a second-factor code or a token sent as the wrong type, or kilobytes of
/// a made-up field name, would come back in the answer (and reach whatever
/// logs or shows answers).
/// A missing field is named (the name is this service's, not the client's).
fn json_refused_text(rejection: &JsonRejection) -> String {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            let missing = text
                .split_once("missing field `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(name, _)| name)
                .filter(|name| {
                    name.len() <= 64 && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                });
            match missing {
                Some(name) => format!("the JSON body lacks the field `{name}`"),
                None => "the JSON body does not fit this request: a field is unknown or given \
                         twice, or a value has the wrong type"
                    .into(),
            }
        }
        // Syntax errors (and the body's own) name a line and column, no input.
        other => other.body_text(),
    }
}

/// `axum::extract::Query` with errors in the service's shape.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            // Not axum's text: it quotes an unknown parameter's name and a
            // value it could not take (see `json_refused_text`).
            .map_err(|_: QueryRejection| {
                ApiError::BadRequest(
                    "the query does not fit this request: a parameter is unknown or given \
                     twice, or a value has the wrong type"
                        .into(),
                )
            })
    }
}

/// `axum::extract::Path` with errors in the service's shape (a segment
/// that does not decode to UTF-8 is a 400 `invalid_request`, not plain text).
pub struct PathParam<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            // Not axum's text, which may quote the segment.
            .map_err(|_: PathRejection| {
                ApiError::BadRequest("a path segment is not valid here".into())
            })
    }
}

/// Who is calling from where: for audit, throttling and the fingerprint.
#[derive(Clone, Debug)]
pub struct Client {
    /// The client address (see `tokens::client_address`); empty when unknown.
    pub ip: String,
    pub peer: Option<SocketAddr>,
    /// `server.xff_num_trusted_hops` for this peer (0 for one that is not
    /// among `server.trusted_proxies`).
    pub trusted_hops: u32,
    pub user_agent: String,
    pub headers: HeaderMap,
}

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let trusted_hops = state.config.server.trusted_hops_for(peer);
        let ip = tokens::client_address(&parts.headers, peer, trusted_hops);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect())
            .unwrap_or_default();
        Ok(Self {
            ip,
            peer,
            trusted_hops,
            user_agent,
            headers: parts.headers.clone(),
        })
    }
}

impl Client {
    /// The bucket this client counts in for every per-address limit
    /// (`throttle::address_bucket`).
    pub fn bucket(&self, state: &AppState) -> String {
        crate::throttle::address_bucket(&self.ip, state.config.throttle.ipv6_prefix_len)
    }

    pub fn fingerprint(&self, state: &AppState, secret: &str) -> String {
        tokens::fingerprint(
            &state.config.tokens.fingerprint_attributes,
            self.trusted_hops,
            secret,
            &self.headers,
            self.peer,
        )
    }
}

/// How an access token is presented in `Authorization`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    /// RFC 9449 §7.1: with a `DPoP` proof header.
    Dpop,
}

/// The access token of `headers` and its scheme, if any. None too when
/// another `Authorization` copy carries another token (as the filter reads
/// one: a `Bearer` or `DPoP` scheme followed by any whitespace, or a value
/// that is not text): the filter refuses that request, and behind
/// `ext_authz` a backend reading the other copy would take its token,
/// never checked, as the caller's.
pub fn access_token(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let mut copies = headers.get_all(header::AUTHORIZATION).iter();
    let first = copies.next()?;
    if copies.any(|other| other != first && carries_token(other)) {
        return None;
    }
    // UTF-8, not `to_str`'s visible ASCII: the filter reads `Bearer<NBSP>t` too.
    let value = std::str::from_utf8(first.as_bytes()).ok()?;
    // The filter's reading: the scheme ends at any whitespace (`Bearer<TAB>t`).
    let (scheme, token) = authflow_contract::authorization::split_authorization(value);
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case(authflow_contract::dpop::AUTH_SCHEME) {
        Scheme::Dpop
    } else {
        return None;
    };
    Some((scheme, token)).filter(|(_, t)| !t.is_empty())
}

/// Whether an `Authorization` value may carry an access token to some
/// reader: a token scheme before the first whitespace of any kind, or bytes
/// that are not UTF-8 (a Latin-1 reader splits them at its own spaces).
fn carries_token(value: &HeaderValue) -> bool {
    use authflow_contract::authorization::{is_token_scheme, split_authorization};
    let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
        return true;
    };
    is_token_scheme(split_authorization(value).0)
}

/// Why [`access_token`] found none, as the filter answers (RFC 6750 §3.1):
/// no credentials at all is a challenge without an error code; a token
/// scheme with nothing usable, or several tokens, is `invalid_request`.
pub fn no_token(headers: &HeaderMap) -> ApiError {
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .any(carries_token)
    {
        ApiError::UnusableToken
    } else {
        ApiError::MissingToken
    }
}

/// The bearer token of `headers`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    access_token(headers).and_then(|(scheme, token)| (scheme == Scheme::Bearer).then_some(token))
}

/// A user with a valid access token, checked like the filter does:
/// signature and claims, revocation state, the device fingerprint, and for
/// a DPoP-bound token the `DPoP` scheme with a proof for this request
/// (`htu` the issuer + this path); a bound token sent as `Bearer` is refused.
/// A service account's token is refused (`403`): it has no session, device or
/// second factor for these endpoints to act on.
pub struct Caller(pub Verified);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (scheme, token) =
            access_token(&parts.headers).ok_or_else(|| no_token(&parts.headers))?;
        let verified = verify_user_token(state, parts, scheme, token).await;
        match scheme {
            Scheme::Bearer => verified.map(Self),
            Scheme::Dpop => verified
                .map(Self)
                .map_err(|e| dpop::in_dpop_scheme(state, e)),
        }
    }
}

impl Caller {
    /// A handler's refusal of this caller, in the scheme its token came in
    /// (RFC 9449 §7.1): a bound token is only ever accepted as `DPoP`, so a
    /// `Bearer` challenge would name a scheme the client cannot use.
    pub fn refusal_in_its_scheme(&self, state: &AppState, refusal: ApiError) -> ApiError {
        match self.0.claims.cnf {
            Some(_) => dpop::in_dpop_scheme(state, refusal),
            None => refusal,
        }
    }
}

/// The checks of [`Caller`] on an access token presented with `scheme` (the
/// pages take it from the access cookie, as `Bearer`).
pub async fn verify_user_token(
    state: &AppState,
    parts: &Parts,
    scheme: Scheme,
    token: &str,
) -> Result<Verified, ApiError> {
    let now = now();
    // The revocation set after the device, as the filter judges: a token
    // without its device learns nothing from the answer, not even whether
    // its session ended.
    let verified = tokens::verify_signed(state, token, now).map_err(ApiError::InvalidToken)?;
    // Every check that writes nothing comes first, possession (the device,
    // the proof) before the revocation list: a proof is recorded as used
    // (below) only by a request that otherwise passes. A service account's
    // token too (it has no device; a bound one needs its proof).
    check_device(state, parts, &verified).map_err(ApiError::InvalidToken)?;
    let proof = match (scheme, verified.claims.cnf.as_ref()) {
        (Scheme::Bearer, None) => None,
        (Scheme::Bearer, Some(_)) => {
            return Err(dpop::resource_error(state, DpopError::BearerDowngrade, now))
        }
        (Scheme::Dpop, None) => {
            return Err(dpop::resource_error(state, DpopError::TokenNotBound, now))
        }
        (Scheme::Dpop, Some(cnf)) => {
            let (method, path) = (parts.method.as_str(), parts.uri.path());
            Some(dpop::check_resource_request(
                state,
                &parts.headers,
                method,
                path,
                token,
                &cnf.jkt,
                now,
            )?)
        }
    };
    tokens::not_revoked(state, &verified, now)?;
    if is_service_token(Some(&verified.sub), verified.claims.client_id.as_deref()) {
        return Err(ApiError::Forbidden(
            "a service account cannot act as a user here",
        ));
    }
    session_still_live(state, &verified, now).await?;
    if let Some(proof) = proof {
        dpop::remember_resource_proof(state, proof, now).await?;
    }
    Ok(verified)
}

/// The database's word on a user's token, which verified against this
/// instance's revocation list: that list takes up to a feed sync to learn
/// of a logout, a session ended from the devices page, a password reset or
/// a ban committed on another instance, and the token must not, meanwhile,
/// act here (end the owner's other sessions, switch on an authenticator).
/// Its session must be live and its account not banned; and a token revoked
/// alone (by `jti`), which only the feed records, is looked for after this
/// instance's list caught up with the feed. The endpoints and pages that
/// take a user's token all change something or show the account: a few
/// reads each (`ext_authz` keeps to memory).
async fn session_still_live(
    state: &AppState,
    verified: &Verified,
    now: i64,
) -> Result<(), ApiError> {
    let session_live = state
        .store
        .session(&verified.claims.sid)
        .await?
        .is_some_and(|s| s.user_id == verified.sub && s.revoked_at.is_none() && s.expires_at > now);
    let not_banned = session_live
        && state
            .store
            .user_by_id(&verified.sub)
            .await?
            .is_some_and(|u| u.banned_at.is_none());
    if !not_banned {
        return Err(ApiError::InvalidToken("token has been revoked"));
    }
    // By the clock every sync forgets by: one ahead of it (a wall clock
    // stepped forward since the start) would make the next sync take it for
    // a clock stepped back, and reload the whole list.
    state
        .feed
        .sync(state.store.as_ref(), crate::clock::forget_now())
        .await?;
    Ok(tokens::not_revoked(state, verified, now)?)
}

/// The device check of a device-bound token (`dfp`), as the filter makes it:
/// the request's device secret and configured attributes must give the
/// token's fingerprint. A token without `dfp` passes.
pub fn check_device(
    state: &AppState,
    parts: &Parts,
    verified: &Verified,
) -> Result<(), &'static str> {
    let Some(claimed) = &verified.claims.dfp else {
        return Ok(());
    };
    let secret = tokens::device_secret(&parts.headers).ok_or("device secret missing")?;
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let hops = state.config.server.trusted_hops_for(peer);
    // An unknown client is no network: it matches no binding (as in the filter).
    let attributes = &state.config.tokens.fingerprint_attributes;
    if attributes.contains(&authflow_contract::fingerprint::DeviceAttribute::ClientIpPrefix)
        && tokens::client_address(&parts.headers, peer, hops).is_empty()
    {
        return Err("token is bound to another device");
    }
    let computed = tokens::fingerprint(attributes, hops, &secret, &parts.headers, peer);
    if !authflow_contract::fingerprint::matches(claimed, &computed) {
        return Err("token is bound to another device");
    }
    Ok(())
}

/// A caller whose token carries the `admin` role.
pub struct Admin(pub Verified);

/// The database's word on an admin's role: its session live and its
/// account not banned were checked with the token ([`session_still_live`]);
/// a role taken away since the token was issued ends its admin powers too.
async fn admin_still_live(state: &AppState, verified: &Verified) -> Result<(), ApiError> {
    let still_admin = state
        .store
        .user_by_id(&verified.sub)
        .await?
        .is_some_and(|u| u.roles.iter().any(|r| r == "admin"));
    if still_admin {
        Ok(())
    } else {
        Err(ApiError::InvalidToken("token has been revoked"))
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let refusal = match Caller::from_request_parts(parts, state).await {
            Ok(Caller(v)) if v.has_role("admin") => match admin_still_live(state, &v).await {
                Ok(()) => return Ok(Self(v)),
                // The role taken away: refused and audited like any other
                // refusal of a valid token (an ex-admin still trying).
                Err(e @ ApiError::InvalidToken(_)) => e,
                Err(e) => return Err(e),
            },
            Ok(_) => ApiError::Forbidden("the admin role is required"),
            Err(e) => e,
        };
        let refusal = match access_token(&parts.headers) {
            Some((Scheme::Dpop, _)) => dpop::in_dpop_scheme(state, refusal),
            _ => refusal,
        };
        // A token of ours that verifies, refused here: without the admin role
        // (in the token, or in the database since), a service account's, or
        // an admin's token from another device or without its DPoP proof (a
        // stolen one?). Audited with who (the
        // token's subject), from where and what it asked for (a path is
        // visible ASCII: hyper admits nothing else). No valid token: nobody
        // to name, and anyone can send those.
        let Some(sub) = access_token(&parts.headers)
            .and_then(|(_, token)| tokens::verify(state, token, now()).ok())
            .map(|v| v.sub)
        else {
            return Err(refusal);
        };
        let client = Client::from_request_parts(parts, state).await?;
        let asked: String = format!("{} {}", parts.method, parts.uri.path())
            .chars()
            .take(256)
            .collect();
        // Any user can repeat this at will with their own token.
        let about = crate::audit::Repeated {
            user_id: Some(&sub),
            email: None,
            // A subject of a token this service signed: an account that exists.
            per_account: true,
        };
        crate::audit::record_repeatable(state, &client, ("admin_denied", &asked), about).await;
        Err(refusal)
    }
}
