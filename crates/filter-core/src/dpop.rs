//! DPoP at the resource server (RFC 9449 §7): how a verified token was
//! presented, and whether the request's proof holds for it. The proof checks
//! themselves are the contract's ([`authflow_contract::dpop`]), shared with
//! the auth service; this module supplies the request's side: method, the
//! URI as the client addressed it, the access token, the binding, the time.
//!
//! The verified token may come from the cache, the proof never does: each
//! request's proof is new and is checked here every time. Replay (a `jti`
//! used twice) is decided afterwards across every worker ([`crate::replay`]).

use authflow_contract::dpop::{
    htu, nonce, parse_proof_with, DpopError, Expectations, NonceKey, AUTH_SCHEME,
    DEFAULT_FUTURE_SKEW_SECS, PROOF_HEADER,
};
use sha2::{Digest, Sha256};

use crate::config::{DpopMode, DpopNonce, DpopPolicy};
use crate::deny::DenyReason;
use crate::provider_id::ProviderId;
use crate::request::Request;
use crate::signature::SignatureChecker;
use crate::timing::{self, Piece};
use crate::verify::VerifiedToken;

/// A proof accepted on this request, to be recorded once (replay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProofUse {
    /// The first 8 bytes of SHA-256(jkt ‖ NUL ‖ jti): the proof's identity in the replay store.
    pub id: [u8; 8],
    pub iat: u64,
    pub provider: ProviderId,
    /// Its nonce (required here) is past half its window: the response carries a fresh one.
    pub renew_nonce: bool,
    /// The route lets requests through without a token: one whose proof the
    /// replay store refuses goes on anonymously, as any unusable token does
    /// there ([`Engine::proof_refused`](crate::engine::Engine::proof_refused)).
    pub public_route: bool,
}

/// Whether the request's `Authorization` header uses the `DPoP` scheme.
pub fn presented_as_dpop(req: &Request) -> bool {
    // Read as the token's extraction reads it (`DPoP<TAB>token` included).
    req.header_values("authorization").any(|v| {
        let (scheme, token) = crate::extract::split_authorization(v);
        scheme.eq_ignore_ascii_case(AUTH_SCHEME) && !token.is_empty()
    })
}

/// The scheme the request was made with, for `htu`: Envoy's `:scheme` (the
/// downstream connection's, or as the listener is configured to trust).
fn request_scheme(req: &Request) -> &str {
    req.header(":scheme").unwrap_or("http")
}

/// RFC 9449 §7 for one request whose token verified. `Ok(None)`: no proof
/// involved (a bearer token where that is allowed); `Ok(Some(use))`: a proof
/// that holds, still to be recorded against replay. `nonce_key` checks
/// nonces where the provider requires them ([`crate::nonce`]).
pub fn judge(
    policy: &DpopPolicy,
    token: &VerifiedToken,
    as_dpop: bool,
    req: &Request,
    now: u64,
    signatures: &SignatureChecker,
    nonce_key: Option<&NonceKey>,
) -> Result<Option<ProofUse>, DenyReason> {
    let _span = timing::span(Piece::Proof);
    let deny = |e: DpopError| Err(DenyReason::Dpop(e));
    if !as_dpop {
        return match (&token.cnf_jkt, policy.mode) {
            // A bound token without its proof: stolen, or a client that lost its key.
            (Some(_), _) => deny(DpopError::BearerDowngrade),
            (None, DpopMode::Required) => deny(DpopError::TokenNotBound),
            (None, _) => Ok(None),
        };
    }
    if policy.mode == DpopMode::Off {
        // A scheme this provider does not offer: RFC 6750 §3.1 answers an
        // unsupported authentication method as no credentials (401 with the
        // bare `Bearer` challenge). Refused all the same: on a public route
        // the token is removed.
        return Err(DenyReason::MissingToken);
    }
    let Some(jkt) = token.cnf_jkt.as_deref() else {
        return deny(DpopError::TokenNotBound);
    };
    let mut proofs = req.header_values(PROOF_HEADER);
    let proof = match (proofs.next(), proofs.next()) {
        (Some(p), None) => p.trim(),
        // RFC 9449 §4.3 step 1: exactly one (else `invalid_dpop_proof`, §7.1).
        (Some(_), Some(_)) => return deny(DpopError::Malformed),
        (None, _) => return deny(DpopError::Malformed),
    };
    // Kept with the verified token, computed once when it was verified (for
    // every bound token; none would match nothing: refused).
    let ath = token.ath.as_deref().unwrap_or_default();
    // Pieces that would not stay apart once joined match no `htu` (an empty URI never normalizes).
    let uri = htu::request_uri(
        request_scheme(req),
        req.header(":authority").unwrap_or_default(),
        req.header(":path").unwrap_or_default(),
    )
    .unwrap_or_default();
    // Listed origins: the request's must be one (the proof's `htu` is then
    // compared with the request's URI as always).
    if !policy.origins.is_empty() {
        let normalized = htu::normalize(&uri).unwrap_or_default();
        if !policy
            .origins
            .iter()
            .any(|o| normalized.starts_with(o.as_str()))
        {
            return deny(DpopError::UriMismatch);
        }
    }
    let expect = Expectations {
        method: req.method(),
        uri: &uri,
        now,
        max_age_secs: policy.max_age_secs,
        future_skew_secs: DEFAULT_FUTURE_SKEW_SECS,
        algorithms: &policy.algorithms,
        access_token_hash: Some(ath),
        bound_jkt: Some(jkt),
        nonce: crate::nonce::check(policy, nonce_key),
    };
    let proof = timing::timed(Piece::ProofParse, || parse_proof_with(proof, signatures))
        .map_err(DenyReason::Dpop)?;
    let checked = proof
        .check_with(&expect, signatures)
        .map_err(DenyReason::Dpop)?;
    // `htm` and `htu` bind the request a backend runs, which may be the
    // method, path or host an override names (RFC 9449 §11.1: a proof carries
    // nothing but its own request).
    let named = crate::policy::named_methods(req);
    if named
        .iter()
        .any(|m| !m.is_empty() && !m.eq_ignore_ascii_case(req.method()))
    {
        return deny(DpopError::MethodMismatch);
    }
    // And the host: a backend may take another from `X-Forwarded-Host` or `Forwarded`.
    if crate::policy::names_a_path(req) || crate::policy::names_another_host(req) {
        return deny(DpopError::UriMismatch);
    }
    let mut hash = Sha256::new();
    hash.update(checked.jkt.as_bytes());
    hash.update([0]);
    hash.update(checked.jti.as_bytes());
    let digest: [u8; 32] = hash.finalize().into();
    let mut id = [0u8; 8];
    id.iter_mut()
        .zip(digest.iter())
        .for_each(|(slot, byte)| *slot = *byte);
    let renew_nonce = policy.nonce == DpopNonce::Required
        && proof
            .claims
            .nonce
            .as_deref()
            .and_then(nonce::issued_at)
            .is_some_and(|issued| crate::nonce::renewal_due(issued, now));
    Ok(Some(ProofUse {
        id,
        iat: checked.iat,
        provider: token.provider,
        renew_nonce,
        public_route: false,
    }))
}
