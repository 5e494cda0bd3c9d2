//! Access tokens: issue (RFC 9068 profile, the contract's claims) and verify
//! (this service's own tokens, with the contract's key types, the in-memory
//! revocation set and the device fingerprint).

use std::collections::HashSet;
use std::net::SocketAddr;

use authflow_contract::claims::service_subject;
use authflow_contract::fingerprint::{self, DeviceAttribute, FingerprintInput};
use authflow_contract::jwk::Algorithm;
use authflow_contract::{AccessClaims, Confirmation};
use axum::http::HeaderMap;
use jwt_simple::prelude::*;

use crate::domain::random_id;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{IssuedToken, ServiceAccount, User};

/// Longest bearer token accepted (ours are well under 1 KiB).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Clock skew tolerated when checking `exp` / `nbf` / `iat`.
pub const TIME_TOLERANCE_SECS: u64 = 30;

pub struct IssuedAccess {
    pub token: String,
    pub jti: String,
    pub expires_in: u64,
    /// Bound to a DPoP key (`cnf.jkt`, RFC 9449 §6).
    pub dpop_bound: bool,
}

impl IssuedAccess {
    /// The `token_type` of the token answer: `DPoP` for a bound token (RFC 9449 §5).
    pub fn token_type(&self) -> &'static str {
        if self.dpop_bound {
            authflow_contract::dpop::AUTH_SCHEME
        } else {
            "Bearer"
        }
    }
}

fn confirmation(jkt: Option<String>) -> Option<Confirmation> {
    jkt.map(|jkt| Confirmation { jkt })
}

/// Signs an access token for `user` in session `sid` (bound to the DPoP key
/// thumbprint `jkt`, if any) and records its jti.
pub async fn issue(
    state: &AppState,
    user: &User,
    sid: &str,
    dfp: Option<String>,
    jkt: Option<String>,
    now: i64,
) -> Result<IssuedAccess, ApiError> {
    let (issued, record) = sign_for_session(state, user, sid, dfp, jkt, (now, i64::MAX))?;
    state.store.record_access_token(&record).await?;
    Ok(counted(state, issued))
}

/// Signs an access token for `user` in session `sid` like [`issue`], but
/// leaves recording it to the caller (a refresh records it in the same
/// transaction as the rotation); pass the token through [`counted`] once
/// recorded. It expires when the session does, if that comes first: the
/// last refresh must not stretch the session's end by an access lifetime.
pub fn sign_for_session(
    state: &AppState,
    user: &User,
    sid: &str,
    dfp: Option<String>,
    jkt: Option<String>,
    (now, session_ends): (i64, i64),
) -> Result<(IssuedAccess, IssuedToken), ApiError> {
    let custom = AccessClaims {
        sid: sid.to_owned(),
        roles: user.roles.clone(),
        scope: user.scope.clone(),
        dfp,
        client_id: None,
        cnf: confirmation(jkt),
    };
    sign(state, &user.id, custom, now, session_ends)
}

/// Signs an access token for a service account (client-credentials grant):
/// `sub` is its service subject, no session, no device binding, no roles;
/// bound to the DPoP key thumbprint `jkt`, if any. 401 `invalid_client` when
/// the account was disabled, or its credentials changed, since `account`
/// was read: the token is recorded only while the account is live under
/// those credentials, so a disable (or a rotation revoking tokens) covers
/// every token that was handed out.
pub async fn issue_for_service(
    state: &AppState,
    account: &ServiceAccount,
    scope: &str,
    jkt: Option<String>,
    now: i64,
) -> Result<IssuedAccess, ApiError> {
    let client_id = account.client_id.as_str();
    let custom = AccessClaims {
        sid: String::new(),
        roles: Vec::new(),
        scope: scope.to_owned(),
        dfp: None,
        client_id: Some(client_id.to_owned()),
        cnf: confirmation(jkt),
    };
    // Never issued before its credentials' `rotated_at`: a rotation that
    // killed the account's tokens moved it past the ban's last second.
    let at = now.max(account.rotated_at);
    let (issued, record) = sign(state, &service_subject(client_id), custom, at, i64::MAX)?;
    // Only under the credentials the request was authenticated with: a
    // rotation that committed meanwhile refuses it.
    if !state
        .store
        .record_service_token(&record, client_id, account.rotated_at)
        .await?
    {
        return Err(ApiError::InvalidClient);
    }
    Ok(counted(state, issued))
}

/// A signed token and the record of it (stored by the caller).
fn sign(
    state: &AppState,
    subject: &str,
    custom: AccessClaims,
    now: i64,
    not_after: i64,
) -> Result<(IssuedAccess, IssuedToken), ApiError> {
    let until_end = u64::try_from(not_after.saturating_sub(now)).unwrap_or(0);
    let ttl = state.config.tokens.access_ttl.as_secs().min(until_end);
    let jti = random_id();
    let sid = custom.sid.clone();
    let dpop_bound = custom.cnf.is_some();
    let claims = Claims::with_custom_claims(custom, Duration::from_secs(ttl))
        .with_issuer(&state.config.tokens.issuer)
        .with_subject(subject)
        .with_jwt_id(&jti);
    // One audience is a plain string (the common form); several, an array.
    let mut claims = match state.config.tokens.audiences.as_slice() {
        [one] => claims.with_audience(one),
        many => claims.with_audiences(many.iter().cloned().collect::<HashSet<String>>()),
    };
    // One clock for iat/exp, the ban check and the feed.
    let now_u = u64::try_from(now).unwrap_or(0);
    claims.issued_at = Some(Duration::from_secs(now_u));
    claims.invalid_before = Some(Duration::from_secs(now_u));
    claims.expires_at = Some(Duration::from_secs(now_u + ttl));
    let token = state
        .keys
        .with_signer(now, |signer| signer.sign(claims))
        .ok_or_else(|| ApiError::internal("no signing key"))?
        .map_err(ApiError::internal)?;
    let expires_at = now + i64::try_from(ttl).unwrap_or(0);
    let record = IssuedToken {
        jti: jti.clone(),
        user_id: subject.to_owned(),
        session_id: sid,
        issued_at: now,
        expires_at,
    };
    Ok((
        IssuedAccess {
            token,
            jti,
            expires_in: ttl,
            dpop_bound,
        },
        record,
    ))
}

/// A recorded token, in the metrics.
pub fn counted(state: &AppState, issued: IssuedAccess) -> IssuedAccess {
    crate::metrics::inc(&state.metrics.tokens_issued);
    if issued.dpop_bound {
        crate::metrics::inc(&state.metrics.dpop_bound_tokens);
    }
    issued
}

/// A token that verified.
#[derive(Clone, Debug)]
pub struct Verified {
    pub sub: String,
    pub jti: Option<String>,
    pub claims: AccessClaims,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl Verified {
    pub fn has_role(&self, role: &str) -> bool {
        self.claims.roles.iter().any(|r| r == role)
    }
}

/// 503 with `Retry-After` (try again, on another instance) when no key signs
/// here at `now`: asked before a token request spends anything (a challenge,
/// a refresh token's rotation, an assertion), which a failure to sign after
/// it would waste. An instance left on an older KEK cannot open the key the
/// others rotated to (`KeyRing::reload`).
pub fn ensure_signer(state: &AppState, now: i64) -> ApiResult<()> {
    if state.keys.can_sign(now) {
        return Ok(());
    }
    tracing::error!("no signing key this instance can open is active: token requests are refused");
    Err(ApiError::TemporarilyUnavailable {
        retry_after_secs: 1,
    })
}

/// Why [`verify`] did not accept a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token of ours that holds, or revoked: 401.
    Invalid(&'static str),
    /// Valid, but this process's revocation list is too old to say it is
    /// not revoked (see [`crate::feed::StaleList`]): 503, try again (on
    /// another instance).
    StaleList,
}

impl From<&'static str> for Refusal {
    fn from(why: &'static str) -> Self {
        Self::Invalid(why)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid(why) => ApiError::InvalidToken(why),
            Refusal::StaleList => ApiError::TemporarilyUnavailable {
                retry_after_secs: STALE_LIST_RETRY_AFTER_SECS,
            },
        }
    }
}

/// `Retry-After` of a check refused on a stale list: the follow loop
/// retries the sync every 250 ms; another instance may answer at once.
const STALE_LIST_RETRY_AFTER_SECS: u64 = 1;

/// Signature (key by `kid` among those the JWKS publishes at `now`, algorithm
/// from the key, never from the token),
/// `typ`, iss / aud / exp / nbf, then the revocation set.
pub fn verify(state: &AppState, token: &str, now: i64) -> Result<Verified, Refusal> {
    let verified = verify_signed(state, token, now)?;
    not_revoked(state, &verified, now)?;
    Ok(verified)
}

/// The revocation set's answer for a signed token, as this instance's list
/// holds it now (its jti, session, subject and issue time).
pub fn not_revoked(state: &AppState, verified: &Verified, now: i64) -> Result<(), Refusal> {
    let revoked = state.feed.is_revoked(
        verified.jti.as_deref(),
        &verified.claims.sid,
        Some(&verified.sub),
        verified.issued_at,
        now,
    );
    match revoked {
        Ok(false) => Ok(()),
        Ok(true) => Err("token has been revoked".into()),
        Err(crate::feed::StaleList) => Err(Refusal::StaleList),
    }
}

/// [`verify`] up to the revocation set: for a check that judges possession
/// (the device) first, so that a token without it learns nothing of its
/// revocation ([`not_revoked`] after).
pub fn verify_signed(state: &AppState, token: &str, now: i64) -> Result<Verified, &'static str> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("token is too long");
    }
    let meta = Token::decode_metadata(token).map_err(|_| "token is malformed")?;
    if meta.signature_type() != Some(authflow_contract::claims::ACCESS_TOKEN_TYPE) {
        return Err("token is not an access token");
    }
    let kid = meta.key_id().ok_or("token has no key id")?;
    let key = state
        .keys
        .verifier(kid, now)
        .ok_or("token signed by an unknown key")?;
    if Algorithm::parse(meta.algorithm()) != Some(key.algorithm()) {
        return Err("token algorithm does not match its key");
    }
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([state.config.tokens.issuer.clone()])),
        allowed_audiences: Some(state.config.tokens.audiences.iter().cloned().collect()),
        time_tolerance: Some(Duration::from_secs(TIME_TOLERANCE_SECS)),
        max_token_length: Some(MAX_TOKEN_LEN),
        ..VerificationOptions::default()
    };
    let claims = key
        .verify::<AccessClaims>(token, &options)
        .map_err(|_| "token is invalid or expired")?;
    let sub = claims.subject.clone().ok_or("token has no subject")?;
    let secs = |d: Option<Duration>| {
        d.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    };
    Ok(Verified {
        sub,
        jti: claims.jwt_id,
        issued_at: secs(claims.issued_at),
        expires_at: secs(claims.expires_at),
        claims: claims.custom,
    })
}

/// The device secret a request carries: the header, else the cookie.
pub fn device_secret(headers: &HeaderMap) -> Option<String> {
    // The contract's rule, as the filter applies it: every copy of the header, then every cookie header.
    // Each copy as the filter reads it (UTF-8, else U+FFFD), not `to_str()`
    // (visible ASCII only), which dropped a copy the filter counts.
    let copies = headers
        .get_all(fingerprint::DEVICE_HEADER)
        .iter()
        .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or(authflow_contract::cookie::NOT_UTF8));
    let cookies = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .map(|v| v.as_bytes());
    fingerprint::device_secret(copies, cookies).map(str::to_owned)
}

/// The client address of a request: the peer with no trusted hop, else the
/// entry `trusted_hops` from the right of `x-forwarded-for` (the contract's
/// one definition, which the filter's `client-ip-prefix` uses too). Empty
/// when it is unknown: that entry missing or not an address — never the
/// peer, which is then the nearest proxy.
pub fn client_address(headers: &HeaderMap, peer: Option<SocketAddr>, trusted_hops: u32) -> String {
    // Every header line, as raw bytes (a line that is not visible ASCII still
    // holds the entries the proxies appended after it), read from the right.
    let lines: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let peer = peer.map(|p| p.to_string());
    authflow_contract::client_address::client_address_in_lines(lines, peer.as_deref(), trusted_hops)
        .map(|ip| ip.to_string())
        .unwrap_or_default()
}

/// `dfp` for `secret` from the configured attributes of this request, with
/// the contract's canonical form (what the filter recomputes).
pub fn fingerprint(
    attributes: &[DeviceAttribute],
    trusted_hops: u32,
    secret: &str,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> String {
    let values: Vec<(String, String)> = attributes
        .iter()
        .map(|a| {
            let value = match a {
                DeviceAttribute::Header(name) => {
                    // Raw UTF-8, not `to_str()` (visible ASCII only): the filter sees
                    // the bytes as a string, so must we; a copy that is not UTF-8 reads
                    // as U+FFFD there. Every copy, combined as the contract says.
                    let copies = headers
                        .get_all(name.as_str())
                        .iter()
                        .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or("\u{FFFD}"));
                    fingerprint::combined_header_value(copies).into_owned()
                }
                DeviceAttribute::ClientIpPrefix => {
                    fingerprint::client_ip_prefix(&client_address(headers, peer, trusted_hops))
                }
            };
            (a.name().to_owned(), value)
        })
        .collect();
    FingerprintInput {
        secret,
        attributes: values
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect(),
    }
    .hash()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn device_secret_from_header_or_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(device_secret(&h), None);
        h.insert(
            "cookie",
            HeaderValue::from_static("a=b; __Host-authflow-device=s3cret; c=d"),
        );
        assert_eq!(device_secret(&h).as_deref(), Some("s3cret"));
        h.insert("x-authflow-device", HeaderValue::from_static("hdr"));
        assert_eq!(device_secret(&h).as_deref(), Some("hdr"));
        // An empty header does not hide the cookie (as in the filter).
        h.insert("x-authflow-device", HeaderValue::from_static(""));
        assert_eq!(device_secret(&h).as_deref(), Some("s3cret"));
    }

    /// Finding: a device header copy that is not visible ASCII was skipped
    /// here (`to_str()`) while the filter counts it: the service (its own
    /// endpoints, ext_authz, refresh) took a secret the filter refuses as
    /// ambiguous, or the cookie where the filter reads the header.
    #[test]
    fn device_secret_reads_every_header_copy_as_the_filter_does() {
        let mut h = HeaderMap::new();
        h.append("x-authflow-device", HeaderValue::from_static("s3cret"));
        h.append(
            "x-authflow-device",
            HeaderValue::from_bytes("s\u{e9}cret".as_bytes()).unwrap(),
        );
        assert_eq!(device_secret(&h), None, "copies that disagree");
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("__Host-authflow-device=s3cret"),
        );
        h.insert(
            "x-authflow-device",
            HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        assert_eq!(
            device_secret(&h).as_deref(),
            Some("\u{FFFD}"),
            "the header wins, as in the filter"
        );
    }

    #[test]
    fn client_address_counts_trusted_hops_over_every_header_line() {
        let mut h = HeaderMap::new();
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(
            client_address(&h, Some(peer), 1),
            "",
            "behind a proxy, no entry: unknown, not the proxy"
        );
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.7, 203.0.113.9"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        assert_eq!(client_address(&h, Some(peer), 0), "10.0.0.1");
        assert_eq!(client_address(&h, Some(peer), 1), "10.0.0.2");
        assert_eq!(client_address(&h, Some(peer), 2), "203.0.113.9");
    }

    /// A dual-stack listener (`listen = "[::]:…"`) sees an IPv4 peer as
    /// `::ffff:a.b.c.d`: the `client-ip-prefix` binding must still tell two
    /// IPv4 networks apart, and agree with the filter (Envoy reports such a
    /// peer as plain IPv4).
    #[test]
    fn ipv4_mapped_peers_fingerprint_as_their_ipv4_network() {
        let attrs = [DeviceAttribute::ClientIpPrefix];
        let dfp = |peer: &str| {
            fingerprint(
                &attrs,
                0,
                "s",
                &HeaderMap::new(),
                Some(peer.parse().unwrap()),
            )
        };
        assert_ne!(
            dfp("[::ffff:203.0.113.5]:5000"),
            dfp("[::ffff:198.51.100.9]:5000"),
            "a token bound to one IPv4 network must not work from another"
        );
        assert_eq!(dfp("[::ffff:203.0.113.5]:5000"), dfp("203.0.113.77:5000"));
    }

    /// A line with bytes that are not visible ASCII, or padded past any
    /// length, still yields the entries appended after it; a missing entry is
    /// an unknown client (empty), never the peer (the proxy).
    #[test]
    fn client_address_reads_raw_lines_and_never_falls_back_to_the_proxy() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff, 192.0.2.90").unwrap(),
        );
        assert_eq!(client_address(&h, Some(peer), 1), "192.0.2.90");
        assert_eq!(client_address(&h, Some(peer), 2), "");
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_str(&format!("{}198.51.100.7, 203.0.113.9", " ".repeat(5000)))
                .unwrap(),
        );
        assert_eq!(client_address(&h, Some(peer), 1), "203.0.113.9");
        assert_eq!(client_address(&HeaderMap::new(), Some(peer), 1), "");
        assert_eq!(client_address(&HeaderMap::new(), Some(peer), 0), "10.0.0.1");
    }
}
