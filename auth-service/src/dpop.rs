//! DPoP (RFC 9449) at this service: proofs on token requests (the issued
//! tokens are then bound to the proof's key) and on the service's own
//! endpoints that take access tokens. The proof itself is checked by the
//! contract (`authflow_contract::dpop`, the same code as the filter's);
//! what needs this service's state is here:
//!
//! - `htu` is the endpoint's public URL, the configured `issuer` followed by
//!   the path, or one of `dpop.origins` (a proxy in front, whose filter
//!   checks the same proof against the origin the client used) followed by
//!   it: never built from the client's `Host` header.
//! - A proof is accepted once: its key thumbprint and `jti`, hashed, go into
//!   the database (`dpop_proofs`), so every instance refuses a replay.
//! - Server nonces (§8) are stateless: an HMAC over the time with a key
//!   derived from the KEK, so any instance checks any other's nonces.

use authflow_contract::dpop::{
    self as contract, nonce, CheckedProof, DpopError, Expectations, NonceCheck, NonceKey,
};
use axum::http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::metrics::inc;
use crate::state::AppState;

/// Response header carrying a server nonce.
pub const NONCE_HEADER: &str = contract::NONCE_HEADER;
/// How long a server nonce is accepted after it was issued: this minute
/// and the one before (nonces are issued in 10-second steps).
pub const NONCE_WINDOW_SECS: u64 = 120;
/// `iat` window of a proof: at most this old…
pub const PROOF_MAX_AGE_SECS: u64 = contract::DEFAULT_MAX_AGE_SECS;
/// …and at most this far ahead of our clock.
pub const PROOF_FUTURE_SKEW_SECS: u64 = contract::DEFAULT_FUTURE_SKEW_SECS;

/// What a proof must match besides its own validity.
pub struct ProofRequest<'a> {
    /// The HTTP method (`htm`).
    pub method: &'a str,
    /// The endpoint's path; `htu` must be the issuer followed by it.
    pub path: &'a str,
    /// The access token the proof comes with (`ath`), if any.
    pub access_token: Option<&'a str>,
    /// The thumbprint the access token is bound to (`cnf.jkt`), if any.
    pub bound_jkt: Option<&'a str>,
    /// Whether a server nonce is required.
    pub require_nonce: bool,
}

/// The public URL of this service's endpoint at `path` (what `htu` names).
pub fn endpoint_url(state: &AppState, path: &str) -> String {
    format!("{}{path}", state.config.tokens.issuer)
}

/// The URL of the endpoint at `path` a proof naming `htu` is checked
/// against: at the configured origin it names, else at the issuer (which
/// then refuses it as naming another URL).
fn expected_url(state: &AppState, path: &str, htu: &str) -> String {
    let named = contract::htu::normalize(htu);
    state
        .config
        .dpop
        .origins
        .iter()
        .map(|origin| format!("{origin}{path}"))
        .find(|url| named.is_some() && contract::htu::normalize(url) == named)
        .unwrap_or_else(|| endpoint_url(state, path))
}

/// The request's `DPoP` header: `Ok(None)` when there is none; an error
/// when there are several or it is not text (RFC 9449 §4.3 step 1).
pub fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, DpopError> {
    let mut copies = headers.get_all(contract::PROOF_HEADER).iter();
    match (copies.next(), copies.next()) {
        (None, _) => Ok(None),
        (Some(one), None) => one.to_str().map(Some).map_err(|_| DpopError::Malformed),
        (Some(_), Some(_)) => Err(DpopError::Malformed),
    }
}

fn nonce_key(state: &AppState) -> Result<NonceKey, DpopError> {
    // The derived key is 32 bytes, the contract's minimum.
    NonceKey::new(state.dpop_nonce_keys.current()).ok_or(DpopError::NonceInvalid)
}

/// A fresh server nonce.
pub fn fresh_nonce(state: &AppState, now: i64) -> Option<String> {
    let key = nonce_key(state).ok()?;
    Some(nonce::issue(&key, u64::try_from(now).unwrap_or(0)))
}

/// The `DPoP-Nonce` header every token answer carries when nonces are required.
pub fn nonce_header(state: &AppState, now: i64) -> Option<(&'static str, HeaderValue)> {
    if !state.config.dpop.require_nonce {
        return None;
    }
    let value = HeaderValue::from_str(&fresh_nonce(state, now)?).ok()?;
    Some((NONCE_HEADER, value))
}

/// RFC 9449 §4.3 for `compact` (by the contract), then the replay check
/// (§11.1) across every instance. Returns the thumbprint of the proof's key.
pub async fn check_proof(
    state: &AppState,
    compact: &str,
    request: &ProofRequest<'_>,
    now: i64,
) -> Result<String, ProofFailure> {
    let checked = check_statelessly(state, compact, request, now)?;
    remember(state, &checked).await?;
    Ok(checked.jkt)
}

/// Records the proof as used (§11.1): `Replayed` when it already was.
async fn remember(state: &AppState, checked: &CheckedProof) -> Result<(), ProofFailure> {
    // Kept until the proof is too old anyway, with the skew allowed both ways, on
    // any instance: one whose clock is behind would still accept it.
    let forget_at = checked.iat.saturating_add(
        PROOF_MAX_AGE_SECS + PROOF_FUTURE_SKEW_SECS + crate::clock::INSTANCE_CLOCK_MARGIN_SECS,
    );
    let first_time = state
        .store
        .remember_dpop_proof(
            &replay_id(&checked.jkt, &checked.jti),
            i64::try_from(forget_at).unwrap_or(i64::MAX),
        )
        .await
        .map_err(|e| ProofFailure::Store(e.into()))?;
    if !first_time {
        return Err(DpopError::Replayed.into());
    }
    Ok(())
}

/// Everything but the replay check, by the contract.
fn check_statelessly(
    state: &AppState,
    compact: &str,
    request: &ProofRequest<'_>,
    now: i64,
) -> Result<CheckedProof, DpopError> {
    let now_u = u64::try_from(now).unwrap_or(0);
    let proof = contract::parse_proof(compact)?;
    let uri = expected_url(state, request.path, &proof.claims.htu);
    // The current KEK's key, then those of `kek.previous`: during a rolling
    // KEK rotation an instance not yet rotated hands out nonces under the
    // old KEK, and a client going from it to this one must not be refused
    // (nor, going back and forth, be refused for ever).
    let keys: Vec<NonceKey> = state
        .dpop_nonce_keys
        .accepted()
        .filter_map(|k| NonceKey::new(k))
        .collect();
    let accepted = |candidate: &str| {
        keys.iter()
            .any(|k| nonce::check(k, candidate, now_u, NONCE_WINDOW_SECS))
    };
    let nonce = if request.require_nonce {
        NonceCheck::Custom(&accepted)
    } else {
        NonceCheck::NotRequired
    };
    let access_token_hash = request.access_token.map(contract::access_token_hash);
    let expectations = Expectations {
        method: request.method,
        uri: &uri,
        now: now_u,
        max_age_secs: PROOF_MAX_AGE_SECS,
        future_skew_secs: PROOF_FUTURE_SKEW_SECS,
        algorithms: &state.config.dpop.algorithms,
        access_token_hash: access_token_hash.as_deref(),
        bound_jkt: request.bound_jkt,
        nonce,
    };
    proof.check(&expectations)
}

/// The `jti` is unique per key (RFC 9449 §11.1): both, hashed to a fixed size.
fn replay_id(jkt: &str, jti: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(jkt.as_bytes());
    hash.update(b"\0");
    hash.update(jti.as_bytes());
    hex::encode(hash.finalize())
}

/// Why a proof was not accepted: the proof (an RFC 9449 answer), or the
/// store (a 500).
#[derive(Debug)]
pub enum ProofFailure {
    Proof(DpopError),
    Store(ApiError),
}

impl From<DpopError> for ProofFailure {
    fn from(e: DpopError) -> Self {
        Self::Proof(e)
    }
}

/// A token request's proof that passed every check but the replay check.
/// It is recorded as used ([`Self::accept`]) only once the rest of the
/// request has succeeded: a caller without a valid challenge, code or
/// refresh token cannot fill the replay table, nor burn a proof.
#[must_use = "a proof is only bound once accepted"]
pub struct PendingProof(CheckedProof);

impl PendingProof {
    /// The RFC 7638 thumbprint of the proof's key.
    pub fn jkt(&self) -> &str {
        &self.0.jkt
    }

    /// Records the proof as used; a replay is refused (400 `invalid_dpop_proof`).
    /// Returns the key thumbprint the new tokens are bound to.
    pub async fn accept(self, state: &AppState, now: i64) -> ApiResult<String> {
        match remember(state, &self.0).await {
            Ok(()) => Ok(self.0.jkt),
            Err(ProofFailure::Proof(e)) => Err(token_endpoint_error(state, e, now)),
            Err(ProofFailure::Store(e)) => Err(e),
        }
    }
}

/// Records `pending` (if any) as used: the thumbprint to bind to, or `None`.
pub async fn accept(
    state: &AppState,
    pending: Option<PendingProof>,
    now: i64,
) -> ApiResult<Option<String>> {
    match pending {
        Some(proof) => proof.accept(state, now).await.map(Some),
        None => Ok(None),
    }
}

/// The proof of a token request (§5), checked statelessly (nothing is
/// written), or `None` when the request carries no `DPoP` header (then
/// nothing is bound: `Bearer`). Refusals are 400 `invalid_dpop_proof`, or
/// `use_dpop_nonce` with a nonce.
pub fn token_request_proof(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    now: i64,
) -> ApiResult<Option<PendingProof>> {
    let compact = match proof_header(headers) {
        Ok(None) => return Ok(None),
        Ok(Some(compact)) => compact,
        Err(e) => return Err(token_endpoint_error(state, e, now)),
    };
    let request = ProofRequest {
        method: "POST",
        path,
        access_token: None,
        bound_jkt: None,
        require_nonce: state.config.dpop.require_nonce,
    };
    check_statelessly(state, compact, &request, now)
        .map(|checked| Some(PendingProof(checked)))
        .map_err(|e| token_endpoint_error(state, e, now))
}

/// A refused proof at a token endpoint (RFC 9449 §5, §8).
pub fn token_endpoint_error(state: &AppState, e: DpopError, now: i64) -> ApiError {
    inc(&state.metrics.dpop_refused);
    tracing::info!(
        reason = e.reason(),
        "DPoP proof refused at a token endpoint"
    );
    match (e.error_code(), fresh_nonce(state, now)) {
        ("use_dpop_nonce", Some(nonce)) => ApiError::UseDpopNonce(nonce),
        _ => ApiError::InvalidDpopProof(description(e)),
    }
}

/// A refusal at one of this service's own endpoints (RFC 9449 §7.1): 401
/// with a `DPoP` challenge naming the allowed algorithms.
pub fn resource_error(state: &AppState, e: DpopError, now: i64) -> ApiError {
    inc(&state.metrics.dpop_refused);
    let error = e.error_code();
    ApiError::DpopUnauthorized {
        error,
        description: description(e),
        algs: contract::algs_parameter(&state.config.dpop.algorithms),
        nonce: (error == "use_dpop_nonce")
            .then(|| fresh_nonce(state, now))
            .flatten(),
    }
}

/// A token presented in the `DPoP` scheme and refused, as a token (bad,
/// expired, revoked, another device's) or for what it may do: RFC 9449 §7.1
/// answers with a `DPoP` challenge, the scheme the client used, not a
/// `Bearer` one.
pub fn in_dpop_scheme(state: &AppState, refusal: ApiError) -> ApiError {
    let algs = || contract::algs_parameter(&state.config.dpop.algorithms);
    match refusal {
        ApiError::InvalidToken(description) => ApiError::DpopUnauthorized {
            error: "invalid_token",
            description,
            algs: algs(),
            nonce: None,
        },
        ApiError::Forbidden(description) => ApiError::DpopForbidden {
            description,
            algs: algs(),
        },
        ApiError::SignInAgain {
            description,
            max_age_secs,
            dpop_algs: None,
        } => ApiError::SignInAgain {
            description,
            max_age_secs,
            dpop_algs: Some(algs()),
        },
        other => other,
    }
}

/// Fixed texts a client can act on, saying no more than the error code.
fn description(e: DpopError) -> &'static str {
    match e {
        DpopError::BearerDowngrade => {
            "this token is DPoP-bound: send it as `Authorization: DPoP` with a DPoP proof"
        }
        DpopError::TokenNotBound => {
            "this token is not DPoP-bound: send it as `Authorization: Bearer`"
        }
        DpopError::Replayed => "the DPoP proof was already used; sign a new one",
        DpopError::KeyMismatch => "the DPoP proof is not signed with the key the token is bound to",
        DpopError::NonceMissing | DpopError::NonceInvalid => {
            "use the server nonce in the DPoP-Nonce header"
        }
        _ => "the DPoP proof is missing or not valid for this request",
    }
}

/// Checks the proof of a request to one of this service's endpoints that
/// carries `token` under the `DPoP` scheme, bound to `bound_jkt`, statelessly
/// (nothing is written): possession is judged before the revocation list, and
/// the proof is recorded ([`remember_resource_proof`]) only once the request
/// otherwise passes.
pub fn check_resource_request(
    state: &AppState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    token: &str,
    bound_jkt: &str,
    now: i64,
) -> ApiResult<PendingProof> {
    let compact = match proof_header(headers) {
        Ok(Some(compact)) => compact,
        Ok(None) => return Err(resource_error(state, DpopError::Malformed, now)),
        Err(e) => return Err(resource_error(state, e, now)),
    };
    // Server nonces are asked for at the token endpoints only (§8).
    let request = ProofRequest {
        method,
        path,
        access_token: Some(token),
        bound_jkt: Some(bound_jkt),
        require_nonce: false,
    };
    check_statelessly(state, compact, &request, now)
        .map(PendingProof)
        .map_err(|e| resource_error(state, e, now))
}

/// Records a resource request's proof as used; a replay is refused (401).
pub async fn remember_resource_proof(
    state: &AppState,
    proof: PendingProof,
    now: i64,
) -> ApiResult<()> {
    match remember(state, &proof.0).await {
        Ok(()) => Ok(()),
        Err(ProofFailure::Proof(e)) => Err(resource_error(state, e, now)),
        Err(ProofFailure::Store(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_ids_are_per_key_and_fixed_size() {
        let a = replay_id("key-a", "jti-1");
        assert_eq!(a.len(), 64);
        assert_ne!(
            a,
            replay_id("key-b", "jti-1"),
            "the same jti under another key is another proof"
        );
        assert_ne!(
            replay_id("key-a", "jti-1"),
            replay_id("key-aj", "ti-1"),
            "the separator keeps the parts apart"
        );
        assert_eq!(a, replay_id("key-a", "jti-1"));
    }

    #[test]
    fn one_dpop_header_at_most() {
        let mut h = HeaderMap::new();
        assert_eq!(proof_header(&h), Ok(None));
        h.append("dpop", HeaderValue::from_static("a.b.c"));
        assert_eq!(proof_header(&h), Ok(Some("a.b.c")));
        h.append("dpop", HeaderValue::from_static("d.e.f"));
        assert_eq!(proof_header(&h), Err(DpopError::Malformed));
    }
}
