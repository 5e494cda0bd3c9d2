//! DPoP (RFC 9449): proofs of possession of a client key, checked the same
//! way by the auth service (token requests) and the filter (resource
//! requests).
//!
//! - [`parse_proof`] reads a `DPoP` header value: the JOSE header (`typ`
//!   `dpop+jwt`, an asymmetric `alg`, the public `jwk`) and the claims
//!   (`jti htm htu iat`, optional `ath nonce`), every size bounded.
//! - [`Proof::check`] applies RFC 9449 §4.3 against what the request is:
//!   method, URI ([`htu`]), time window, access-token hash, the key the
//!   token is bound to (`cnf.jkt`, [`thumbprint`]) and a server nonce
//!   ([`nonce`]). The signature is verified last but one, so garbage costs
//!   little; a missing or stale nonce is reported last, as `use_dpop_nonce`.
//! - Replay (a `jti` seen twice) needs state, so it is the caller's: the
//!   checked proof hands back its `jti`, `iat` and key thumbprint.
//!
//! Parsed with serde_json and base64 only, like [`crate::jwk`]: the filter
//! links no JOSE library.

#[cfg(any(test, feature = "test-support"))]
pub mod client;
pub mod htu;
pub mod nonce;
mod proof;
pub mod thumbprint;

pub use nonce::NonceKey;
pub use proof::{
    is_on_curve, parse_proof, parse_proof_with, verify_signature, CheckedProof, Expectations,
    FreshKeys, NonceCheck, Proof, ProofClaims, ProofKeys,
};
pub use thumbprint::{access_token_hash, canonical_jwk, jwk_thumbprint};

use crate::jwk::Algorithm;

/// JOSE `typ` of a DPoP proof (RFC 9449 §4.2).
pub const PROOF_TYPE: &str = "dpop+jwt";
/// `Authorization` scheme of a DPoP-bound access token (RFC 9449 §7.1).
pub const AUTH_SCHEME: &str = "DPoP";
/// Request header carrying the proof, and response header carrying a nonce.
pub const PROOF_HEADER: &str = "dpop";
pub const NONCE_HEADER: &str = "dpop-nonce";

/// Largest proof accepted (the whole compact JWS).
pub const MAX_PROOF_BYTES: usize = 4096;
/// Longest `jti`: RFC 9449 asks for ≥ 96 random bits; clients send 16–64 characters.
pub const MAX_JTI_LEN: usize = 128;
/// Longest `htm` (method names are short tokens).
pub const MAX_HTM_LEN: usize = 32;
/// Longest `htu`, and longest request URI compared with it.
pub const MAX_HTU_LEN: usize = 2048;
/// Longest `nonce` claim read.
pub const MAX_NONCE_LEN: usize = 256;

/// The algorithms a proof may use: asymmetric, and verified by the contract.
pub const SUPPORTED_ALGORITHMS: [Algorithm; 2] = [Algorithm::ES256, Algorithm::EdDSA];

/// Default age limit of a proof (`iat` at most this many seconds ago).
pub const DEFAULT_MAX_AGE_SECS: u64 = 60;
/// Default tolerance for a client clock ahead of ours: as `clock_skew_secs`'
/// default for an access token's `iat`. A browser's clock a few seconds
/// fast is common, and its every proof would be refused with nothing the
/// client could do; a replay within the longer window is still refused (the
/// replay stores keep a proof for its age limit plus this).
pub const DEFAULT_FUTURE_SKEW_SECS: u64 = 30;

/// Why a proof (or the way a bound token was presented) is refused. Each maps
/// to an RFC 9449 §7 error code ([`Self::error_code`]) and to a stable label
/// for statistics ([`Self::reason`]); neither, nor `Display`, says more than
/// the code does, so a refusal leaks nothing about the check that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DpopError {
    /// Over [`MAX_PROOF_BYTES`].
    TooLarge,
    /// Not a compact JWS, not JSON, a claim missing, of the wrong type or too long.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    WrongType,
    /// `alg` is not an allowed asymmetric algorithm (`none`, `HS256`, …).
    UnsupportedAlgorithm,
    /// The `jwk` is private, of an unknown type or curve, off its curve, or of another algorithm.
    InvalidKey,
    BadSignature,
    /// `htm` is not the request's method.
    MethodMismatch,
    /// `htu` is not the request's URI (after normalization).
    UriMismatch,
    /// `iat` older than the allowed age.
    Stale,
    /// `iat` ahead of the clock by more than the allowed skew.
    IssuedInFuture,
    /// `ath` missing or not the hash of the presented access token.
    AccessTokenHashMismatch,
    /// The proof's key is not the one the access token is bound to (`cnf.jkt`).
    KeyMismatch,
    /// The proof carries no nonce where one is required.
    NonceMissing,
    /// The nonce is not one we issued, or has expired.
    NonceInvalid,
    /// The proof's `jti` was already used (found by the caller's replay store).
    Replayed,
    /// The replay store is full: the proof cannot be recorded, so it is refused.
    ReplayStoreFull,
    /// A DPoP-bound token presented as `Bearer`.
    BearerDowngrade,
    /// A token without `cnf.jkt` presented with the `DPoP` scheme, or a bound
    /// token where DPoP is off.
    TokenNotBound,
}

impl DpopError {
    /// The RFC 9449 §7 / RFC 6750 §3.1 error code for `WWW-Authenticate`.
    pub fn error_code(self) -> &'static str {
        match self {
            Self::NonceMissing | Self::NonceInvalid => "use_dpop_nonce",
            Self::BearerDowngrade | Self::TokenNotBound => "invalid_token",
            _ => "invalid_dpop_proof",
        }
    }

    /// A stable snake_case label for statistics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::WrongType => "wrong_type",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::InvalidKey => "invalid_key",
            Self::BadSignature => "bad_signature",
            Self::MethodMismatch => "method_mismatch",
            Self::UriMismatch => "uri_mismatch",
            Self::Stale => "stale",
            Self::IssuedInFuture => "issued_in_future",
            Self::AccessTokenHashMismatch => "ath_mismatch",
            Self::KeyMismatch => "key_mismatch",
            Self::NonceMissing => "nonce_missing",
            Self::NonceInvalid => "nonce_invalid",
            Self::Replayed => "replayed",
            Self::ReplayStoreFull => "replay_store_full",
            Self::BearerDowngrade => "bearer_downgrade",
            Self::TokenNotBound => "token_not_bound",
        }
    }

    /// Every variant, for statistics tables and tests.
    pub const ALL: [DpopError; 18] = [
        Self::TooLarge,
        Self::Malformed,
        Self::WrongType,
        Self::UnsupportedAlgorithm,
        Self::InvalidKey,
        Self::BadSignature,
        Self::MethodMismatch,
        Self::UriMismatch,
        Self::Stale,
        Self::IssuedInFuture,
        Self::AccessTokenHashMismatch,
        Self::KeyMismatch,
        Self::NonceMissing,
        Self::NonceInvalid,
        Self::Replayed,
        Self::ReplayStoreFull,
        Self::BearerDowngrade,
        Self::TokenNotBound,
    ];
}

impl std::fmt::Display for DpopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.error_code() {
            "use_dpop_nonce" => "a DPoP nonce is required",
            "invalid_token" => "the access token is not valid for this request",
            _ => "the DPoP proof is not valid",
        })
    }
}

/// The `algs` parameter of a DPoP challenge: the allowed algorithms, space-separated.
pub fn algs_parameter(allowed: &[Algorithm]) -> String {
    let names: Vec<&str> = allowed
        .iter()
        .filter(|a| SUPPORTED_ALGORITHMS.contains(a))
        .map(|a| a.as_str())
        .collect();
    names.join(" ")
}

#[cfg(test)]
mod tests;
