//! Why a request is refused, and the one place that turns it into an HTTP
//! answer (RFC 6750 §3, RFC 9449 §7 for DPoP). Descriptions help a client
//! fix its request and never carry token contents, key material or internals.

use authflow_contract::dpop::{algs_parameter, DpopError};
use authflow_contract::Algorithm;

use crate::config::{DpopMode, DpopPolicy};
use crate::json_text;

/// A refusal. `label()` names the stats counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    MissingToken,
    /// Several tokens, or an `Authorization: Bearer` header with nothing usable.
    InvalidRequest,
    /// A path some server could read as one under a stronger route rule (see `crate::path`).
    AmbiguousPath,
    TokenTooLarge,
    Malformed,
    AlgorithmNotAllowed,
    /// `jwk`, `jku`, `x5u`, `x5c` or `crit` in the header: we never take keys from the token.
    KeyInHeader,
    UnknownIssuer,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    WrongAudience,
    LifetimeTooLong,
    WrongType,
    MissingClaim,
    TokenRevoked,
    SessionRevoked,
    SubjectBanned,
    DeviceMismatch,
    DeviceFingerprintMissing,
    InsufficientRole,
    InsufficientScope,
    /// A route for users (`user`, `roles_any`) and a service-account token.
    UserRequired,
    /// A route for named service accounts (`client_ids_any`) and a token of another caller.
    ClientNotAllowed,
    /// A route for tokens of named providers (`providers`) and a token of another.
    ProviderNotAllowed,
    /// No key was ever loaded for the token's issuer (fail closed).
    KeysUnavailable,
    /// The revocation list is older than allowed and the policy says deny.
    RevocationStale,
    /// A DPoP proof or binding failure (RFC 9449 §7).
    Dpop(DpopError),
}

impl DenyReason {
    pub const ALL: [DenyReason; 47] = [
        Self::MissingToken,
        Self::InvalidRequest,
        Self::AmbiguousPath,
        Self::TokenTooLarge,
        Self::Malformed,
        Self::AlgorithmNotAllowed,
        Self::KeyInHeader,
        Self::UnknownIssuer,
        Self::UnknownKey,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::IssuedInFuture,
        Self::WrongAudience,
        Self::LifetimeTooLong,
        Self::WrongType,
        Self::MissingClaim,
        Self::TokenRevoked,
        Self::SessionRevoked,
        Self::SubjectBanned,
        Self::DeviceMismatch,
        Self::DeviceFingerprintMissing,
        Self::InsufficientRole,
        Self::InsufficientScope,
        Self::UserRequired,
        Self::ClientNotAllowed,
        Self::ProviderNotAllowed,
        Self::KeysUnavailable,
        Self::RevocationStale,
        Self::Dpop(DpopError::TooLarge),
        Self::Dpop(DpopError::Malformed),
        Self::Dpop(DpopError::WrongType),
        Self::Dpop(DpopError::UnsupportedAlgorithm),
        Self::Dpop(DpopError::InvalidKey),
        Self::Dpop(DpopError::BadSignature),
        Self::Dpop(DpopError::MethodMismatch),
        Self::Dpop(DpopError::UriMismatch),
        Self::Dpop(DpopError::Stale),
        Self::Dpop(DpopError::IssuedInFuture),
        Self::Dpop(DpopError::AccessTokenHashMismatch),
        Self::Dpop(DpopError::KeyMismatch),
        Self::Dpop(DpopError::NonceMissing),
        Self::Dpop(DpopError::NonceInvalid),
        Self::Dpop(DpopError::Replayed),
        Self::Dpop(DpopError::ReplayStoreFull),
        Self::Dpop(DpopError::BearerDowngrade),
        Self::Dpop(DpopError::TokenNotBound),
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidRequest => "invalid_request",
            Self::AmbiguousPath => "ambiguous_path",
            Self::TokenTooLarge => "token_too_large",
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::KeyInHeader => "key_in_header",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::WrongAudience => "wrong_audience",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::WrongType => "wrong_type",
            Self::MissingClaim => "missing_claim",
            Self::TokenRevoked => "token_revoked",
            Self::SessionRevoked => "session_revoked",
            Self::SubjectBanned => "subject_banned",
            Self::DeviceMismatch => "device_mismatch",
            Self::DeviceFingerprintMissing => "device_fingerprint_missing",
            Self::InsufficientRole => "insufficient_role",
            Self::InsufficientScope => "insufficient_scope",
            Self::UserRequired => "user_required",
            Self::ClientNotAllowed => "client_not_allowed",
            Self::ProviderNotAllowed => "provider_not_allowed",
            Self::KeysUnavailable => "keys_unavailable",
            Self::RevocationStale => "revocation_stale",
            Self::Dpop(e) => dpop_label(e),
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::MissingToken => "authentication required",
            Self::InvalidRequest => "more than one token, or a malformed Authorization header",
            Self::AmbiguousPath => "ambiguous request: send the path normalized, the method in capitals, and no override a rule decides otherwise",
            Self::TokenTooLarge => "token too large",
            Self::Malformed => "token is malformed",
            Self::AlgorithmNotAllowed => "token signing algorithm not allowed",
            Self::KeyInHeader => "token header carries key material or unsupported extensions",
            Self::UnknownIssuer => "token issuer not trusted",
            Self::UnknownKey => "token signed with an unknown key",
            Self::BadSignature => "token signature is invalid",
            Self::Expired => "token expired",
            Self::NotYetValid => "token not yet valid",
            Self::IssuedInFuture => "token issued in the future",
            Self::WrongAudience => "token audience not accepted",
            Self::LifetimeTooLong => "token lifetime exceeds the allowed maximum",
            Self::WrongType => "token type not accepted",
            Self::MissingClaim => "token lacks a required claim",
            Self::TokenRevoked => "token revoked",
            Self::SessionRevoked => "session ended",
            Self::SubjectBanned => "account disabled",
            Self::DeviceMismatch => "token is bound to another device",
            Self::DeviceFingerprintMissing => "token is not bound to a device",
            Self::InsufficientRole => "a required role is missing",
            Self::InsufficientScope => "a required scope is missing",
            Self::UserRequired => "this resource is for users, not service accounts",
            Self::ClientNotAllowed => "this resource is not open to the calling client",
            Self::ProviderNotAllowed => "this resource is not open to tokens of this issuer",
            Self::KeysUnavailable => "authentication temporarily unavailable",
            Self::RevocationStale => "authentication temporarily unavailable",
            Self::Dpop(e) => match e.error_code() {
                "use_dpop_nonce" => "a DPoP nonce is required",
                "invalid_token" => "the access token is not valid for this request",
                _ => "the DPoP proof is not valid",
            },
        }
    }

    /// The answer to a DPoP failure (RFC 9449 §7.1): 401 with a `DPoP`
    /// challenge carrying the error and the accepted algorithms, and a plain
    /// `Bearer` challenge too when the provider also takes bearer tokens.
    pub fn dpop_response(error: DpopError, policy: &DpopPolicy) -> DenyResponse {
        let reason = DenyReason::Dpop(error);
        let description = reason.description();
        let code = error.error_code();
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let challenge = |scheme: &str| match scheme {
            "DPoP" => format!(
                "DPoP error=\"{code}\", error_description=\"{description}\", algs=\"{}\"",
                algs_parameter(&policy.algorithms)
            ),
            _ => format!("Bearer error=\"{code}\", error_description=\"{description}\""),
        };
        match policy.mode {
            // DPoP not offered here: a bearer challenge only.
            DpopMode::Off => headers.push(("www-authenticate".to_owned(), challenge("Bearer"))),
            DpopMode::Required => headers.push(("www-authenticate".to_owned(), challenge("DPoP"))),
            DpopMode::Allowed => {
                headers.push(("www-authenticate".to_owned(), challenge("DPoP")));
                headers.push(("www-authenticate".to_owned(), "Bearer".to_owned()));
            }
        }
        let body = json_text::error_body(code, description);
        DenyResponse {
            status: 401,
            headers,
            body,
        }
    }

    /// A request without a token where some of `dpop` (the policies of the
    /// providers the route admits) accept DPoP: a `DPoP` challenge naming
    /// their algorithms (RFC 9449 §7.1), and `Bearer` beside it unless every
    /// one of them requires DPoP. Otherwise [`MissingToken`](Self::MissingToken)'s plain answer.
    pub fn missing_token_response<'a>(
        dpop: impl IntoIterator<Item = &'a DpopPolicy>,
    ) -> DenyResponse {
        let mut algorithms = Vec::new();
        let mut bearer = false;
        for policy in dpop {
            bearer |= policy.mode != DpopMode::Required;
            if policy.mode != DpopMode::Off {
                for a in &policy.algorithms {
                    if !algorithms.contains(a) {
                        algorithms.push(*a);
                    }
                }
            }
        }
        let mut response = Self::MissingToken.response(0, None);
        if algorithms.is_empty() {
            return response;
        }
        response
            .headers
            .retain(|(name, _)| name != "www-authenticate");
        response.headers.push((
            "www-authenticate".to_owned(),
            format!("DPoP algs=\"{}\"", algs_parameter(&algorithms)),
        ));
        if bearer {
            response
                .headers
                .push(("www-authenticate".to_owned(), "Bearer".to_owned()));
        }
        response
    }

    /// `response` for a route every provider of which requires DPoP: its
    /// `Bearer` challenge (a scheme the route refuses) becomes the same
    /// challenge in the `DPoP` scheme, naming `algorithms` (RFC 9449 §7.1,
    /// RFC 7235 §3.1: a challenge that applies).
    pub fn in_dpop_scheme(mut response: DenyResponse, algorithms: &[Algorithm]) -> DenyResponse {
        for (name, value) in &mut response.headers {
            if name != "www-authenticate" {
                continue;
            }
            if let Some(params) = value.strip_prefix("Bearer") {
                let algs = algs_parameter(algorithms);
                *value = match params.strip_prefix(' ') {
                    Some(params) => format!("DPoP {params}, algs=\"{algs}\""),
                    None => format!("DPoP algs=\"{algs}\""),
                };
            }
        }
        response
    }

    /// The HTTP answer. `required_scope` is named in the header for 403 scope denials (RFC 6750 §3).
    pub fn response(self, retry_after_secs: u32, required_scope: Option<&str>) -> DenyResponse {
        if let Self::Dpop(e) = self {
            let policy = DpopPolicy {
                mode: DpopMode::Allowed,
                algorithms: authflow_contract::dpop::SUPPORTED_ALGORITHMS.to_vec(),
                max_age_secs: 0,
                nonce: crate::config::DpopNonce::Off,
                origins: Vec::new(),
            };
            return Self::dpop_response(e, &policy);
        }
        let (status, code) = match self {
            Self::MissingToken => (401, None),
            Self::InvalidRequest | Self::AmbiguousPath => (400, Some("invalid_request")),
            Self::InsufficientRole
            | Self::InsufficientScope
            | Self::UserRequired
            | Self::ClientNotAllowed
            | Self::ProviderNotAllowed => (403, Some("insufficient_scope")),
            Self::KeysUnavailable | Self::RevocationStale => (503, Some("temporarily_unavailable")),
            _ => (401, Some("invalid_token")),
        };
        let description = self.description();
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        match (status, code) {
            (503, _) => headers.push(("retry-after".to_owned(), retry_after_secs.to_string())),
            (_, None) => headers.push(("www-authenticate".to_owned(), "Bearer".to_owned())),
            (_, Some(code)) => {
                let mut challenge =
                    format!("Bearer error=\"{code}\", error_description=\"{description}\"");
                if let (Self::InsufficientScope, Some(scope)) = (self, required_scope) {
                    challenge.push_str(&format!(", scope=\"{scope}\""));
                }
                headers.push(("www-authenticate".to_owned(), challenge));
            }
        }
        let body = json_text::error_body(code.unwrap_or("unauthorized"), description);
        DenyResponse {
            status,
            headers,
            body,
        }
    }
}

/// The stats label of a DPoP failure: `dpop_` and the contract's reason.
fn dpop_label(e: DpopError) -> &'static str {
    match e {
        DpopError::TooLarge => "dpop_too_large",
        DpopError::Malformed => "dpop_malformed",
        DpopError::WrongType => "dpop_wrong_type",
        DpopError::UnsupportedAlgorithm => "dpop_unsupported_algorithm",
        DpopError::InvalidKey => "dpop_invalid_key",
        DpopError::BadSignature => "dpop_bad_signature",
        DpopError::MethodMismatch => "dpop_method_mismatch",
        DpopError::UriMismatch => "dpop_uri_mismatch",
        DpopError::Stale => "dpop_stale",
        DpopError::IssuedInFuture => "dpop_issued_in_future",
        DpopError::AccessTokenHashMismatch => "dpop_ath_mismatch",
        DpopError::KeyMismatch => "dpop_key_mismatch",
        DpopError::NonceMissing => "dpop_nonce_missing",
        DpopError::NonceInvalid => "dpop_nonce_invalid",
        DpopError::Replayed => "dpop_replayed",
        DpopError::ReplayStoreFull => "dpop_replay_store_full",
        DpopError::BearerDowngrade => "dpop_bearer_downgrade",
        DpopError::TokenNotBound => "dpop_token_not_bound",
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenyResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a DenyResponse, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn rfc6750_shapes() {
        let r = DenyReason::MissingToken.response(5, None);
        assert_eq!(
            (r.status, header(&r, "www-authenticate")),
            (401, Some("Bearer"))
        );
        let r = DenyReason::Expired.response(5, None);
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer error=\"invalid_token\", error_description=\"token expired\"")
        );
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "invalid_token");
        let r = DenyReason::InsufficientScope.response(5, Some("write"));
        assert_eq!(r.status, 403);
        assert!(header(&r, "www-authenticate")
            .unwrap()
            .contains("scope=\"write\""));
        let r = DenyReason::KeysUnavailable.response(7, None);
        assert_eq!((r.status, header(&r, "retry-after")), (503, Some("7")));
        assert_eq!(DenyReason::InvalidRequest.response(5, None).status, 400);
    }

    #[test]
    fn labels_are_unique() {
        let labels: std::collections::HashSet<_> =
            DenyReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), DenyReason::ALL.len());
        // Every DPoP failure has its counter, named after the contract's reason.
        for e in DpopError::ALL {
            assert!(DenyReason::ALL.contains(&DenyReason::Dpop(e)));
            assert_eq!(dpop_label(e), format!("dpop_{}", e.reason()));
        }
    }

    #[test]
    fn rfc9449_challenges() {
        let both = DpopPolicy {
            mode: DpopMode::Allowed,
            algorithms: vec![
                authflow_contract::Algorithm::ES256,
                authflow_contract::Algorithm::EdDSA,
            ],
            max_age_secs: 60,
            nonce: crate::config::DpopNonce::Off,
            origins: Vec::new(),
        };
        let r = DenyReason::dpop_response(DpopError::Replayed, &both);
        assert_eq!(r.status, 401);
        let challenges: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(challenges, ["DPoP error=\"invalid_dpop_proof\", error_description=\"the DPoP proof is not valid\", algs=\"ES256 EdDSA\"", "Bearer"]);
        let only = DpopPolicy {
            mode: DpopMode::Required,
            algorithms: vec![authflow_contract::Algorithm::EdDSA],
            ..both
        };
        let r = DenyReason::dpop_response(DpopError::TokenNotBound, &only);
        assert_eq!(header(&r, "www-authenticate").unwrap(), "DPoP error=\"invalid_token\", error_description=\"the access token is not valid for this request\", algs=\"EdDSA\"");
        assert_eq!(
            r.headers
                .iter()
                .filter(|(n, _)| n == "www-authenticate")
                .count(),
            1
        );
        let body: serde_json::Value =
            serde_json::from_str(&DenyReason::dpop_response(DpopError::NonceMissing, &only).body)
                .unwrap();
        assert_eq!(body["error"], "use_dpop_nonce");
    }

    /// Where only DPoP is accepted, the bearer challenge keeps its
    /// parameters in the `DPoP` scheme and names the algorithms.
    #[test]
    fn a_bearer_challenge_moves_to_the_dpop_scheme() {
        let only = [Algorithm::EdDSA];
        let r = DenyReason::in_dpop_scheme(
            DenyReason::InsufficientScope.response(5, Some("write")),
            &only,
        );
        assert_eq!(r.status, 403);
        assert_eq!(
            header(&r, "www-authenticate").unwrap(),
            "DPoP error=\"insufficient_scope\", error_description=\"a required scope is missing\", scope=\"write\", algs=\"EdDSA\""
        );
        let r = DenyReason::in_dpop_scheme(DenyReason::MissingToken.response(5, None), &only);
        assert_eq!(
            header(&r, "www-authenticate").unwrap(),
            "DPoP algs=\"EdDSA\""
        );
        let r = DenyReason::in_dpop_scheme(DenyReason::KeysUnavailable.response(7, None), &only);
        assert_eq!(
            header(&r, "www-authenticate"),
            None,
            "a 503 has no challenge"
        );
    }
}
