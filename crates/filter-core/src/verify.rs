//! Token verification: header screening, key choice, signature and claims.
//!
//! The order matters for safety: the header is screened before any key is
//! touched (no `alg: none`, no algorithm the provider did not allow, no key
//! material from the token itself), and the key is chosen by `kid` *within*
//! the provider's keys of the configured algorithm, so the token's `alg` can
//! never pick a key type (RFC 8725 §3.1).

use std::collections::HashSet;
use std::rc::Rc;

use authflow_contract::{claims, Algorithm, KeySet};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::{Duration, JWTClaims, UnixTimeStamp, VerificationOptions};
use jwt_simple::JWTError;
use serde_json::{Map, Value};

use crate::config::{FilterConfig, IdentityHeaders, Provider};
use crate::deny::DenyReason;

/// Most keys tried for a token without `kid`.
const MAX_KEYS_TRIED: usize = 4;
/// Largest decoded header / payload we look at before the signature is checked.
const MAX_UNVERIFIED_JSON: usize = 16 * 1024;

/// What the screening of an unverified token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened {
    pub provider: usize,
    pub algorithm: Algorithm,
    pub kid: Option<String>,
}

/// The claims of a verified token that the request path needs, kept in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub provider: usize,
    pub issuer: String,
    pub subject: Option<String>,
    pub expires_at: u64,
    pub not_before: Option<u64>,
    pub issued_at: Option<u64>,
    pub jti: Option<String>,
    pub sid: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub dfp: Option<String>,
    /// Every identity header to forward, computed once at verification: a
    /// cached token costs no formatting or allocation per request.
    pub identity_headers: Rc<[(String, String)]>,
}

/// Why a token could not be verified with the keys at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    Deny(DenyReason),
    /// The `kid` is not among the provider's keys: worth one early refetch.
    UnknownKid,
}

impl From<DenyReason> for VerifyError {
    fn from(r: DenyReason) -> Self {
        VerifyError::Deny(r)
    }
}

/// Checks the token's shape and header and finds its provider, without keys.
pub fn screen(token: &str, config: &FilterConfig) -> Result<Screened, DenyReason> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(DenyReason::Malformed);
    };
    let b64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if header_b64.is_empty() || payload_b64.is_empty() || !b64url(header_b64) || !b64url(payload_b64) || !b64url(sig_b64) {
        return Err(DenyReason::Malformed);
    }
    let header = decode_json(header_b64)?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or(DenyReason::Malformed)?;
    // Keys come from configuration only; `crit` names extensions we do not implement (RFC 7515 §4.1.11).
    if ["jwk", "jku", "x5u", "x5c", "crit"].iter().any(|k| header.contains_key(*k)) {
        return Err(DenyReason::KeyInHeader);
    }
    if sig_b64.is_empty() {
        // `alg: none` and friends: an unsigned token is never accepted.
        return Err(DenyReason::AlgorithmNotAllowed);
    }
    let payload = decode_json(payload_b64)?;
    let issuer = payload.get("iss").and_then(Value::as_str).ok_or(DenyReason::MissingClaim)?;
    let provider = config.provider_for_issuer(issuer).ok_or(DenyReason::UnknownIssuer)?;
    let algorithm = Algorithm::parse(alg)
        .filter(|a| config.providers[provider].algorithms.contains(a))
        .ok_or(DenyReason::AlgorithmNotAllowed)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if k.len() <= 256 => Some(k.clone()),
        Some(_) => return Err(DenyReason::Malformed),
    };
    Ok(Screened { provider, algorithm, kid })
}

fn decode_json(part: &str) -> Result<Map<String, Value>, DenyReason> {
    if part.len() > MAX_UNVERIFIED_JSON * 4 / 3 + 4 {
        return Err(DenyReason::TokenTooLarge);
    }
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| DenyReason::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| DenyReason::Malformed)
}

/// Verifies signature and claims with the provider's current keys.
pub fn verify(
    token: &str,
    screened: &Screened,
    keys: &KeySet,
    config: &FilterConfig,
    now: u64,
) -> Result<VerifiedToken, VerifyError> {
    let provider = &config.providers[screened.provider];
    let kid = screened.kid.as_deref();
    if let Some(kid) = kid {
        if !keys.has_kid(kid) {
            return Err(VerifyError::UnknownKid);
        }
    }
    let options = options_for(provider, config, now);
    let mut last = DenyReason::UnknownKey;
    for key in keys.candidates(screened.algorithm, kid).take(MAX_KEYS_TRIED) {
        match key.verify::<Map<String, Value>>(token, &options) {
            Ok(claims) => return finish(claims, screened.provider, provider, config, now),
            Err(e) => {
                last = map_error(&e);
                // Only a signature mismatch is worth trying the next key on; any
                // other failure (expired, audience …) is the token's own and final.
                if last != DenyReason::BadSignature {
                    break;
                }
            }
        }
    }
    Err(VerifyError::Deny(last))
}

fn options_for(provider: &Provider, config: &FilterConfig, now: u64) -> VerificationOptions {
    VerificationOptions {
        allowed_issuers: Some(HashSet::from([provider.issuer.clone()])),
        allowed_audiences: (!provider.audiences.is_empty()).then(|| provider.audiences.iter().cloned().collect()),
        time_tolerance: Some(Duration::from_secs(config.clock_skew_secs)),
        required_signature_type: provider.token_type.clone(),
        max_token_length: Some(config.max_token_bytes),
        max_header_length: Some(MAX_UNVERIFIED_JSON),
        // The proxy's clock, not the Wasm runtime's: one time source for every check.
        artificial_time: Some(UnixTimeStamp::from_secs(now)),
        ..VerificationOptions::default()
    }
}

fn map_error(e: &jwt_simple::Error) -> DenyReason {
    match e.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature) => DenyReason::BadSignature,
        Some(JWTError::TokenHasExpired) => DenyReason::Expired,
        Some(JWTError::TokenNotValidYet) => DenyReason::NotYetValid,
        Some(JWTError::ClockDrift) => DenyReason::IssuedInFuture,
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => DenyReason::UnknownIssuer,
        Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => DenyReason::WrongAudience,
        Some(JWTError::RequiredSignatureTypeMismatch) => DenyReason::WrongType,
        Some(JWTError::TokenTooLong | JWTError::HeaderTooLarge) => DenyReason::TokenTooLarge,
        Some(JWTError::AlgorithmMismatch) => DenyReason::AlgorithmNotAllowed,
        Some(JWTError::KeyIdentifierMismatch) => DenyReason::UnknownKey,
        _ => DenyReason::Malformed,
    }
}

fn finish(
    claims: JWTClaims<Map<String, Value>>,
    provider_index: usize,
    provider: &Provider,
    config: &FilterConfig,
    now: u64,
) -> Result<VerifiedToken, VerifyError> {
    let expires_at = claims.expires_at.ok_or(DenyReason::MissingClaim)?.as_secs();
    let issued_at = claims.issued_at.map(|t| t.as_secs());
    let not_before = claims.invalid_before.map(|t| t.as_secs());
    // Max lifetime: measured from iat (or nbf, or now) to exp, so a token minted
    // for years is refused even while it is young.
    let start = issued_at.or(not_before).unwrap_or(now);
    if expires_at.saturating_sub(start) > config.max_token_lifetime_secs {
        return Err(DenyReason::LifetimeTooLong.into());
    }
    let custom = &claims.custom;
    for required in &provider.required_claims {
        let present = match required.as_str() {
            "iss" => claims.issuer.is_some(),
            "sub" => claims.subject.is_some(),
            "aud" => claims.audiences.is_some(),
            "exp" => true,
            "iat" => issued_at.is_some(),
            "nbf" => not_before.is_some(),
            "jti" => claims.jwt_id.is_some(),
            other => custom.get(other).is_some_and(|v| !v.is_null()),
        };
        if !present {
            return Err(DenyReason::MissingClaim.into());
        }
    }
    let string_list = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).take(64).collect(),
            Some(Value::String(s)) => claims::scopes(s).map(str::to_owned).take(64).collect(),
            _ => Vec::new(),
        }
    };
    // `scope` is space-separated (RFC 9068); `scp` as an array is common elsewhere.
    let mut scopes = string_list(custom.get(claims::CLAIM_SCOPE));
    if scopes.is_empty() {
        scopes = string_list(custom.get("scp"));
    }
    let text = |name: &str| custom.get(name).and_then(Value::as_str).map(str::to_owned);
    let mut token = VerifiedToken {
        provider: provider_index,
        issuer: provider.issuer.clone(),
        subject: claims.subject.clone(),
        expires_at,
        not_before,
        issued_at,
        jti: claims.jwt_id.clone(),
        sid: text(claims::CLAIM_SESSION),
        roles: string_list(custom.get(claims::CLAIM_ROLES)),
        scopes,
        dfp: text(claims::CLAIM_DEVICE_FINGERPRINT),
        identity_headers: Rc::from(Vec::new()),
    };
    let mapped = config.identity.claims.iter().filter_map(|(path, header)| {
        let value = claim_at(&claims, custom, path)?;
        Some((header.clone(), header_value(&value)?))
    });
    token.identity_headers = identity_headers(&config.identity, &token).chain(mapped).collect();
    Ok(token)
}

fn identity_headers<'a>(id: &'a IdentityHeaders, t: &VerifiedToken) -> impl Iterator<Item = (String, String)> + 'a {
    [
        (&id.subject, t.subject.clone()),
        (&id.issuer, Some(t.issuer.clone())),
        (&id.roles, Some(t.roles.join(","))),
        (&id.scopes, Some(t.scopes.join(" "))),
        (&id.session, t.sid.clone()),
    ]
    .into_iter()
    .filter_map(|(header, value)| Some((header.clone()?, value?)))
    .filter(|(_, v)| safe_header_value(v))
}

/// A claim by dotted path; registered claims are reachable by their JWT names too.
fn claim_at(claims: &JWTClaims<Map<String, Value>>, custom: &Map<String, Value>, path: &[String]) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    let root = match first.as_str() {
        "sub" => claims.subject.clone().map(Value::String),
        "iss" => claims.issuer.clone().map(Value::String),
        "jti" => claims.jwt_id.clone().map(Value::String),
        other => custom.get(other).cloned(),
    }?;
    rest.iter().try_fold(root, |v, key| v.get(key).cloned())
}

/// Renders a claim as a header value: strings as-is, arrays comma-joined,
/// numbers and booleans as text. Anything with control characters is dropped
/// rather than forwarded, so a claim can never inject a header line.
fn header_value(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => return None,
    };
    safe_header_value(&s).then_some(s)
}

pub(crate) fn safe_header_value(s: &str) -> bool {
    s.len() <= 4096 && !s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// The time checks that must run on every request, cached token or not.
pub fn check_times(t: &VerifiedToken, skew: u64, now: u64) -> Result<(), DenyReason> {
    if now > t.expires_at.saturating_add(skew) {
        return Err(DenyReason::Expired);
    }
    if t.not_before.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(DenyReason::NotYetValid);
    }
    Ok(())
}
