//! Token verification: header screening, key choice, signature and claims.
//!
//! The order matters for safety: the header is screened before any key is
//! touched (no `alg: none`, no algorithm the provider did not allow, no key
//! material from the token itself), the key is chosen by `kid` *within* the
//! provider's keys of the configured algorithm, so the token's `alg` can never
//! pick a key type (RFC 8725 §3.1), and no claim is believed before the
//! signature over `header.payload` checked out.
//!
//! The header and payload are decoded once (in [`screen`]); the signature is
//! checked by [`crate::signature`]: the host's BoringSSL where it can, else
//! [`authflow_contract::jws`].

use std::cell::Cell;
use std::rc::Rc;

use authflow_contract::jose::{self, CompactParts, JoseHeader};
use authflow_contract::json::borrowed::{Json, Object};
use authflow_contract::{claims, Algorithm, KeySet};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::config::{FilterConfig, IdentityHeaders, Provider};
use crate::deny::DenyReason;
use crate::provider_id::ProviderId;
use crate::signature::SignatureChecker;
use crate::timing::{self, Piece};

/// Most keys tried for a token without `kid`.
const MAX_KEYS_TRIED: usize = 4;
/// Largest decoded header / payload we look at before the signature is checked.
const MAX_UNVERIFIED_JSON: usize = 16 * 1024;
/// Largest signature of the supported algorithms (RSA-4096).
const MAX_SIGNATURE_BYTES: usize = 512;

/// What the screening of an unverified token found; its claims borrow from
/// the decoded payload (the buffer given to [`screen`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Screened<'b> {
    pub provider: ProviderId,
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    typ: Option<String>,
    /// The claims, believed only once the signature checked out.
    payload: Object<'b>,
    signature: Vec<u8>,
    /// Length of `header.payload`, the signed bytes.
    signing_input_len: usize,
}

/// The claims of a verified token that the request path needs, kept in the cache.
///
/// `repr(C)` keeps the declared order: the fields every cache hit reads come
/// first, so they share the allocation's first cache line (a hit on one of
/// thousands of cached tokens usually finds that line cold).
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct VerifiedToken {
    pub expires_at: u64,
    /// The revocation list (its generation) this token was last found clean
    /// in; 0 when never checked. See `RevocationList::check`.
    pub not_revoked_in: Cell<u64>,
    /// The base of that list this token was found clean in (0: none).
    pub clean_in_base: Cell<u64>,
    pub not_before: Option<u64>,
    pub provider: ProviderId,
    /// Every identity header to forward, computed once at verification: a
    /// cached token costs no formatting or allocation per request.
    pub identity_headers: Rc<[(String, String)]>,
    pub dfp: Option<String>,
    pub issuer: String,
    pub subject: Option<String>,
    pub issued_at: Option<u64>,
    pub jti: Option<String>,
    pub sid: Option<String>,
    /// The service account calling: set only for a service-account token
    /// (`sub` = `svc:<client_id>` with that very `client_id`, see
    /// `authflow_contract::claims::is_service_token`); `None` for users.
    pub client_id: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// The key thumbprint a DPoP-bound token is bound to (`cnf.jkt`, RFC 9449 §6.1).
    pub cnf_jkt: Option<String>,
    /// For a bound token, its hash as its DPoP proofs carry it (`ath`, RFC 9449 §4.2).
    pub ath: Option<String>,
    /// The SubjectPublicKeyInfo of the key its signature checked out with
    /// (empty for one built with [`Self::new`]): an open stream ends once
    /// its provider's keys no longer hold that key ([`crate::streams`]).
    pub key: Vec<u8>,
}

impl VerifiedToken {
    /// A token of `issuer` (its provider's) expiring at `expires_at`, with no
    /// other claim: what a verified token is built from, and a whole token
    /// for tests and fuzzing (`VerifiedToken { jti, ..VerifiedToken::new(…) }`).
    pub fn new(provider: ProviderId, issuer: String, expires_at: u64) -> Self {
        VerifiedToken {
            expires_at,
            not_revoked_in: Cell::new(0),
            clean_in_base: Cell::new(0),
            not_before: None,
            provider,
            identity_headers: Rc::from(Vec::new()),
            dfp: None,
            issuer,
            subject: None,
            issued_at: None,
            jti: None,
            sid: None,
            client_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            cnf_jkt: None,
            ath: None,
            key: Vec::new(),
        }
    }
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

/// A token [`screen`] refused: why, and the provider it names when its
/// issuer is one of ours (then it is ours, refused: see `Allowed::refused_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unscreened {
    pub reason: DenyReason,
    pub provider: Option<ProviderId>,
}

/// Checks the token's shape and header and finds its provider, without keys.
/// The payload is decoded into `payload` (its previous content dropped),
/// which the claims then borrow from.
pub fn screen<'b>(
    token: &str,
    config: &FilterConfig,
    payload: &'b mut Vec<u8>,
) -> Result<Screened<'b>, Unscreened> {
    let _span = timing::span(Piece::Screen);
    let not_ours = |reason| Unscreened {
        reason,
        provider: None,
    };
    let parts = CompactParts::split(token).ok_or(not_ours(DenyReason::Malformed))?;
    // The header is read and judged once the issuer is known (still before
    // any key is touched): a token of ours refused on its header (`alg:
    // none`, a key in it, a name twice) is ours, refused, and goes no further
    // than one forged otherwise (see `Allowed::refused_token`).
    let payload = decode_json(parts.payload, payload).map_err(not_ours)?;
    let issuer = payload
        .get("iss")
        .and_then(Json::as_str)
        .ok_or(not_ours(DenyReason::MissingClaim))?;
    let provider = config
        .provider_for_issuer(issuer)
        .ok_or(not_ours(DenyReason::UnknownIssuer))?;
    let mut header_bytes = Vec::new();
    decode_json(parts.header, &mut header_bytes)
        .and_then(|header| screen_ours(config, provider, &header.into(), &parts, payload))
        .map_err(|reason| Unscreened {
            reason,
            provider: Some(provider),
        })
}

/// The rest of [`screen`], for a token naming `provider`'s issuer.
fn screen_ours<'b>(
    config: &FilterConfig,
    provider: ProviderId,
    header: &JoseHeader<'_>,
    parts: &CompactParts<'_>,
    payload: Object<'b>,
) -> Result<Screened<'b>, DenyReason> {
    let alg = header
        .alg()
        .and_then(Json::as_str)
        .ok_or(DenyReason::Malformed)?;
    // Keys come from configuration only; `crit` names extensions we do not implement (RFC 7515 §4.1.11).
    if header.has_key_or_extension() {
        return Err(DenyReason::KeyInHeader);
    }
    if parts.signature.is_empty() {
        // `alg: none` and friends: an unsigned token is never accepted.
        return Err(DenyReason::AlgorithmNotAllowed);
    }
    let algorithm = Algorithm::parse(alg)
        .filter(|a| {
            config
                .provider(provider)
                .is_some_and(|p| p.algorithms.contains(a))
        })
        .ok_or(DenyReason::AlgorithmNotAllowed)?;
    let text = |member: Option<&Json<'_>>| match member {
        None => Ok(None),
        Some(Json::String(k)) if k.len() <= 256 => Ok(Some(k.to_string())),
        Some(_) => Err(DenyReason::Malformed),
    };
    if parts.signature.len() > MAX_SIGNATURE_BYTES * 4 / 3 + 4 {
        return Err(DenyReason::TokenTooLarge);
    }
    // The decoder refuses any character outside base64url, as it does in the header and payload.
    let signature = URL_SAFE_NO_PAD
        .decode(parts.signature)
        .map_err(|_| DenyReason::Malformed)?;
    Ok(Screened {
        provider,
        algorithm,
        kid: text(header.kid())?,
        typ: text(header.typ())?,
        payload,
        signature,
        signing_input_len: parts.signing_input_len(),
    })
}

/// A header or payload part, bounded before it is decoded (into `buffer`).
fn decode_json<'b>(part: &str, buffer: &'b mut Vec<u8>) -> Result<Object<'b>, DenyReason> {
    if part.len() > MAX_UNVERIFIED_JSON * 4 / 3 + 4 {
        return Err(DenyReason::TokenTooLarge);
    }
    jose::decode_object(part, buffer).map_err(|_| DenyReason::Malformed)
}

/// Verifies signature and claims with the provider's current keys.
pub fn verify(
    token: &str,
    screened: &Screened<'_>,
    keys: &KeySet,
    signatures: &SignatureChecker,
    config: &FilterConfig,
    now: u64,
) -> Result<VerifiedToken, VerifyError> {
    let provider = config
        .provider(screened.provider)
        .ok_or(DenyReason::UnknownIssuer)?;
    let kid = screened.kid.as_deref();
    if let Some(kid) = kid {
        if !keys.has_kid(kid) {
            return Err(VerifyError::UnknownKid);
        }
    }
    let signing_input = token
        .as_bytes()
        .get(..screened.signing_input_len)
        .ok_or(DenyReason::Malformed)?;
    let mut candidates = keys
        .entries(screened.algorithm, kid)
        .take(MAX_KEYS_TRIED)
        .peekable();
    if candidates.peek().is_none() {
        return Err(DenyReason::UnknownKey.into());
    }
    let Some(key) =
        candidates.find(|key| signatures.verify(key, signing_input, &screened.signature))
    else {
        return Err(DenyReason::BadSignature.into());
    };
    if let Some(wanted) = &provider.token_type {
        if !type_matches(screened.typ.as_deref(), wanted) {
            return Err(DenyReason::WrongType.into());
        }
    }
    finish(
        token,
        &key.spki,
        &screened.payload,
        screened.provider,
        provider,
        config,
        now,
    )
}

/// `typ` is compared case-insensitively, with or without `application/` (RFC 7515 §4.1.9).
fn type_matches(typ: Option<&str>, wanted: &str) -> bool {
    let bare = |t: &str| {
        let lower = t.to_ascii_lowercase();
        lower
            .strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(lower)
    };
    typ.is_some_and(|t| bare(t) == bare(wanted))
}

/// A NumericDate claim (RFC 7519 §2): absent, or a non-negative number.
fn numeric_date(payload: &Object<'_>, name: &str) -> Result<Option<u64>, DenyReason> {
    match payload.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or(DenyReason::Malformed),
        Some(_) => Err(DenyReason::Malformed),
    }
}

fn finish(
    token: &str,
    key: &[u8],
    payload: &Object<'_>,
    provider_id: ProviderId,
    provider: &Provider,
    config: &FilterConfig,
    now: u64,
) -> Result<VerifiedToken, VerifyError> {
    let _span = timing::span(Piece::Claims);
    let skew = config.clock_skew_secs;
    let expires_at = numeric_date(payload, "exp")?.ok_or(DenyReason::MissingClaim)?;
    let issued_at = numeric_date(payload, "iat")?;
    let not_before = numeric_date(payload, "nbf")?;
    if now > expires_at.saturating_add(skew) {
        return Err(DenyReason::Expired.into());
    }
    // `nbf` is judged on every request, this one too ([`check_times`]).
    if issued_at.is_some_and(|iat| iat > now.saturating_add(skew).saturating_add(1)) {
        return Err(DenyReason::IssuedInFuture.into());
    }
    if payload.get("iss").and_then(Json::as_str) != Some(provider.issuer.as_str()) {
        return Err(DenyReason::UnknownIssuer.into());
    }
    // RFC 7519 §4.1.3: a string or a non-empty list of strings. Another type
    // is refused, not skipped (`["api", 7]` must not pass on its string).
    let audiences = match payload.get("aud") {
        None => &[][..],
        Some(one @ Json::String(_)) => std::slice::from_ref(one),
        Some(Json::Array(list))
            if !list.is_empty() && list.iter().all(|a| a.as_str().is_some()) =>
        {
            list
        }
        Some(_) => return Err(DenyReason::Malformed.into()),
    };
    if !provider.audiences.is_empty()
        && !audiences
            .iter()
            .filter_map(Json::as_str)
            .any(|a| provider.audiences.iter().any(|x| x == a))
    {
        return Err(DenyReason::WrongAudience.into());
    }
    // Max lifetime: measured from iat (or nbf, or now) to exp, so a token minted
    // for years is refused even while it is young.
    let start = issued_at.or(not_before).unwrap_or(now);
    if expires_at.saturating_sub(start) > config.max_token_lifetime_secs {
        return Err(DenyReason::LifetimeTooLong.into());
    }
    for required in &provider.required_claims {
        if payload.get(required).is_none_or(Json::is_null) {
            return Err(DenyReason::MissingClaim.into());
        }
    }
    // RFC 7519 §4.1: these are strings. Another type would be read as absent (a numeric
    // `sub` as no subject, past a ban listed under its text): refused instead.
    let text = |name: &str| -> Result<Option<String>, VerifyError> {
        match payload.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.to_string())),
            Some(_) => Err(DenyReason::Malformed.into()),
        }
    };
    // A list claim: an array of strings, or one string — split on spaces
    // only for scopes (RFC 9068): a role `Domain Admins` is one role, never
    // `Domain` and `Admins`. An item of another type is refused, not dropped;
    // so is a list longer than kept, never cut short.
    let too_long = |count: usize| {
        if count > claims::MAX_LIST_ITEMS {
            Err(VerifyError::from(DenyReason::TokenTooLarge))
        } else {
            Ok(())
        }
    };
    let string_list =
        |v: Option<&Json<'_>>, space_separated: bool| -> Result<Vec<String>, VerifyError> {
            match v {
                None | Some(Json::Null) => Ok(Vec::new()),
                Some(Json::Array(items)) => {
                    too_long(items.len())?;
                    items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(str::to_owned)
                                .ok_or(DenyReason::Malformed.into())
                        })
                        .collect()
                }
                Some(Json::String(s)) if space_separated => {
                    too_long(claims::scopes(s).count())?;
                    Ok(claims::scopes(s).map(str::to_owned).collect())
                }
                Some(Json::String(s)) => Ok(vec![s.to_string()]),
                Some(_) => Err(DenyReason::Malformed.into()),
            }
        };
    // `scope` is space-separated (RFC 9068); `scp` as an array is common elsewhere.
    let mut scopes = string_list(payload.get(claims::CLAIM_SCOPE), true)?;
    if scopes.is_empty() {
        scopes = string_list(payload.get("scp"), true)?;
    }
    // A `cnf` we cannot read binds the token to something unknown: refused, never treated as unbound.
    let cnf_jkt = match payload.get("cnf") {
        None => None,
        Some(cnf) => match cnf.get("jkt").and_then(Json::as_str) {
            Some(jkt) if !jkt.is_empty() && jkt.len() <= 64 => Some(jkt.to_owned()),
            _ => return Err(DenyReason::Malformed.into()),
        },
    };
    let subject = text("sub")?;
    let client_id = text(claims::CLAIM_CLIENT_ID)?
        .filter(|id| claims::is_service_token(subject.as_deref(), Some(id)));
    let mut token = VerifiedToken {
        subject,
        client_id,
        not_before,
        issued_at,
        jti: text("jti")?,
        sid: text(claims::CLAIM_SESSION)?,
        roles: string_list(payload.get(claims::CLAIM_ROLES), false)?,
        scopes,
        dfp: text(claims::CLAIM_DEVICE_FINGERPRINT)?,
        // Every proof sent with a bound token carries its hash: computed once, here.
        ath: cnf_jkt
            .as_ref()
            .map(|_| authflow_contract::dpop::access_token_hash(token)),
        cnf_jkt,
        key: key.to_vec(),
        ..VerifiedToken::new(provider_id, provider.issuer.clone(), expires_at)
    };
    // A role or scope holding its list's separator would read as two upstream
    // (`user,admin` one role here, two roles to a backend splitting the header);
    // a scope is RFC 6749's scope-token, so no Unicode space (`read\u{a0}admin`) either.
    if token.roles.iter().any(|r| !claims::is_list_item(r))
        || !token.scopes.iter().all(|s| claims::is_scope_token(s))
    {
        return Err(DenyReason::Malformed.into());
    }
    let mut headers = identity_headers(&config.identity, &token)?;
    for (path, header) in &config.identity.claims {
        if let Some(value) = claim_at(payload, path)
            .map(header_value)
            .transpose()?
            .flatten()
        {
            headers.push((header.clone(), value));
        }
    }
    token.identity_headers = headers.into();
    Ok(token)
}

/// The identity headers the configuration names, each exactly its claim: a
/// value a header cannot carry (control characters, over 4 KiB) refuses the
/// token — dropped, the backend would see the rest of the identity without it
/// (roles without the subject they belong to).
fn identity_headers(
    id: &IdentityHeaders,
    t: &VerifiedToken,
) -> Result<Vec<(String, String)>, VerifyError> {
    let mut headers = Vec::new();
    for (header, value) in [
        (&id.subject, t.subject.clone()),
        (&id.issuer, Some(t.issuer.clone())),
        // Roles are a user's (`policy::authorize` refuses a service token on
        // every roles rule): a service token's `roles` claim goes nowhere.
        (&id.roles, t.client_id.is_none().then(|| t.roles.join(","))),
        (&id.scopes, Some(t.scopes.join(" "))),
        (&id.session, t.sid.clone()),
        (&id.client_id, t.client_id.clone()),
    ] {
        let (Some(header), Some(value)) = (header, value) else {
            continue;
        };
        if !claims::is_header_value(&value) {
            return Err(DenyReason::Malformed.into());
        }
        headers.push((header.clone(), value));
    }
    Ok(headers)
}

/// A claim by dotted path (`org.team`).
fn claim_at<'a, 'b>(payload: &'a Object<'b>, path: &[String]) -> Option<&'a Json<'b>> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(payload.get(first)?, |v, key| v.get(key))
}

/// Renders a claim as a header value: strings as-is, arrays (of strings and
/// numbers only) comma-joined, numbers and booleans as text; `None` for what has no header form (an
/// object, null). A value that would not arrive as it is — control
/// characters (a header line injected), over 4 KiB, an array item holding a
/// comma — refuses the token rather than being dropped or split.
fn header_value(v: &Json<'_>) -> Result<Option<String>, VerifyError> {
    let s = match v {
        Json::String(s) => s.to_string(),
        Json::Number(n) => number_text(n)?,
        Json::Bool(b) => b.to_string(),
        // Every item or none: an item left out would shorten the list upstream.
        Json::Array(items) => {
            let items = items
                .iter()
                .map(|i| match i {
                    Json::String(s) => Ok(s.to_string()),
                    Json::Number(n) => number_text(n),
                    _ => Err(VerifyError::from(DenyReason::Malformed)),
                })
                .collect::<Result<Vec<String>, VerifyError>>()?;
            if items.iter().any(|i| !claims::is_list_item(i)) {
                return Err(DenyReason::Malformed.into());
            }
            items.join(",")
        }
        _ => return Ok(None),
    };
    if !claims::is_header_value(&s) {
        return Err(DenyReason::Malformed.into());
    }
    Ok(Some(s))
}

/// A number as a header value: an integer, in decimal. An integer beyond
/// 64 bits was read as a float: its text would be rounded (`2^64` and
/// `2^64 + 1` both `1.8446744073709552e+19`), two ids one header value;
/// refused instead. So is any number written as a float (`3.0`, `1e3`,
/// `0.5`): its text differs between writers, and a backend comparing it
/// would not know which it got. (Printing floats would also link a float
/// formatter into the module.)
fn number_text(n: &serde_json::Number) -> Result<String, VerifyError> {
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => Ok(u.to_string()),
        (None, Some(i)) => Ok(i.to_string()),
        _ => Err(DenyReason::Malformed.into()),
    }
}

/// The time checks that must run on every request, cached token or not.
pub fn check_times(t: &VerifiedToken, skew: u64, now: u64) -> Result<(), DenyReason> {
    if now > t.expires_at.saturating_add(skew) {
        return Err(DenyReason::Expired);
    }
    // `now` is the glue's last tick reading in whole seconds: a tick old,
    // more on a starved worker. A token minted since may carry the next
    // second in `nbf` and `iat`, and is not from the future for it (with
    // `clock_skew_secs` 0 too).
    if t.not_before
        .is_some_and(|nbf| nbf > now.saturating_add(skew).saturating_add(1))
    {
        return Err(DenyReason::NotYetValid);
    }
    Ok(())
}
