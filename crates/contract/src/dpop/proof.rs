//! Parsing a DPoP proof (RFC 9449 §4.2) and checking it against a request (§4.3).

use crate::json::borrowed::{Json, Object};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::{htu, nonce, thumbprint, DpopError, NonceKey};
use super::{
    MAX_HTM_LEN, MAX_HTU_LEN, MAX_JTI_LEN, MAX_NONCE_LEN, MAX_PROOF_BYTES, PROOF_TYPE,
    SUPPORTED_ALGORITHMS,
};
use crate::jose::{decode_object, CompactParts, JoseHeader};
use crate::jwk::{self, Algorithm, PublicKey};

/// The claims of a proof, each within its bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofClaims {
    pub jti: String,
    pub htm: String,
    pub htu: String,
    pub iat: u64,
    pub ath: Option<String>,
    pub nonce: Option<String>,
}

/// A well-formed proof, not yet checked: its signature is unverified.
#[derive(Clone, Debug)]
pub struct Proof {
    pub algorithm: Algorithm,
    /// The public key from the header's `jwk` (on its curve, of `algorithm`).
    pub key: PublicKey,
    pub claims: ProofClaims,
    /// `header.payload`, the bytes the signature covers.
    signing_input: String,
    signature: Vec<u8>,
}

/// How a proof's `nonce` is judged.
#[derive(Clone, Copy)]
pub enum NonceCheck<'a> {
    /// Nonces are not required (one sent anyway is ignored).
    NotRequired,
    /// A nonce issued by [`nonce::issue`] with this key at most `window_secs` ago.
    Stateless { key: &'a NonceKey, window_secs: u64 },
    /// The caller's own judgement of a nonce.
    Custom(&'a dyn Fn(&str) -> bool),
}

/// What the request the proof comes with is, and the policy to apply.
#[derive(Clone, Copy)]
pub struct Expectations<'a> {
    /// The request method (`htm` must equal it, case-sensitively).
    pub method: &'a str,
    /// The request URI as the client addressed it (see [`htu::request_uri`]); query ignored.
    pub uri: &'a str,
    /// Now, in seconds since the Unix epoch.
    pub now: u64,
    /// `iat` may be at most this many seconds in the past…
    pub max_age_secs: u64,
    /// …and at most this many in the future.
    pub future_skew_secs: u64,
    /// The algorithms allowed here (a subset of [`SUPPORTED_ALGORITHMS`]).
    pub algorithms: &'a [Algorithm],
    /// The hash of the access token presented with the proof
    /// ([`access_token_hash`](super::access_token_hash)): then `ath` must be
    /// it. A hash, so that a verifier that keeps tokens computes it once per token.
    pub access_token_hash: Option<&'a str>,
    /// The thumbprint the access token is bound to (`cnf.jkt`): then the proof's key must have it.
    pub bound_jkt: Option<&'a str>,
    pub nonce: NonceCheck<'a>,
}

/// What a checked proof establishes; the caller still has to refuse a
/// `jti` it has seen within the proof's window (replay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedProof {
    /// The RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    pub jti: String,
    pub iat: u64,
}

/// How a proof's public key is handled: checked on its curve, its RFC 7638
/// thumbprint taken, signatures verified with it. [`FreshKeys`] does each
/// from scratch; a resource server, which sees a client's one key on every
/// request, may keep keys prepared (the filter does), with the same results.
pub trait ProofKeys {
    /// Whether the key is a point of its curve (an Ed25519 key: one that decompresses).
    fn on_curve(&self, key: &PublicKey) -> bool;
    /// [`thumbprint::jwk_thumbprint`] of the key.
    fn thumbprint(&self, key: &PublicKey) -> String;
    /// Whether `signature` signs `signing_input` under the key (one [`on_curve`](Self::on_curve) accepted).
    fn verify(&self, key: &PublicKey, signing_input: &[u8], signature: &[u8]) -> bool;
    /// The key of a header part read before with [`remember_header`](Self::remember_header)
    /// (every proof of a client repeats its header, byte for byte); `None`:
    /// read it.
    fn known_header(&self, _header: &str) -> Option<PublicKey> {
        None
    }
    /// `header` (the base64url part) was read and names `key`, which is on its
    /// curve and of the header's `alg`: the same text always reads the same.
    fn remember_header(&self, _header: &str, _key: &PublicKey) {}
}

/// Every key prepared anew, with the contract's own verifiers (a token
/// endpoint sees a key once).
pub struct FreshKeys;

impl ProofKeys for FreshKeys {
    fn on_curve(&self, key: &PublicKey) -> bool {
        is_on_curve(key)
    }

    fn thumbprint(&self, key: &PublicKey) -> String {
        thumbprint::jwk_thumbprint(key)
    }

    fn verify(&self, key: &PublicKey, signing_input: &[u8], signature: &[u8]) -> bool {
        verify_signature(key, signing_input, signature)
    }
}

/// Reads a `DPoP` header value; checks its shape, header and key, not its signature.
pub fn parse_proof(compact: &str) -> Result<Proof, DpopError> {
    parse_proof_with(compact, &FreshKeys)
}

/// [`parse_proof`] with the key checked on its curve by `keys`.
pub fn parse_proof_with(compact: &str, keys: &dyn ProofKeys) -> Result<Proof, DpopError> {
    if compact.len() > MAX_PROOF_BYTES {
        return Err(DpopError::TooLarge);
    }
    let parts = CompactParts::split(compact).ok_or(DpopError::Malformed)?;
    let key = match keys.known_header(parts.header) {
        Some(key) => key,
        None => {
            let key = read_header(parts.header, keys)?;
            keys.remember_header(parts.header, &key);
            key
        }
    };
    let claims = proof_claims(
        &decode_object(parts.payload, &mut Vec::new()).map_err(|_| DpopError::Malformed)?,
    )?;
    let signature = URL_SAFE_NO_PAD
        .decode(parts.signature)
        .map_err(|_| DpopError::Malformed)?;
    // Both algorithms sign with 64 bytes (ES256 r ‖ s, Ed25519 R ‖ S).
    if signature.len() != 64 {
        return Err(DpopError::BadSignature);
    }
    let signing_input = compact
        .get(..parts.signing_input_len())
        .ok_or(DpopError::Malformed)?
        .to_owned();
    Ok(Proof {
        algorithm: key.algorithm(),
        key,
        claims,
        signing_input,
        signature,
    })
}

/// A proof's header part: `typ`, no critical extension, a supported `alg`
/// and the public `jwk` of that algorithm, on its curve.
fn read_header(part: &str, keys: &dyn ProofKeys) -> Result<PublicKey, DpopError> {
    let mut buffer = Vec::new();
    let header = JoseHeader::decode(part, &mut buffer).map_err(|_| DpopError::Malformed)?;
    if header.typ().and_then(Json::as_str) != Some(PROOF_TYPE) {
        return Err(DpopError::WrongType);
    }
    // No extension is understood, so none may be critical (RFC 7515 §4.1.11).
    if header.has_critical() {
        return Err(DpopError::Malformed);
    }
    let algorithm = header
        .alg()
        .and_then(Json::as_str)
        .and_then(Algorithm::parse)
        .filter(|a| SUPPORTED_ALGORITHMS.contains(a))
        .ok_or(DpopError::UnsupportedAlgorithm)?;
    let key = header
        .jwk()
        .and_then(Json::as_object)
        .and_then(jwk::public_signature_key)
        .filter(|key| keys.on_curve(key))
        .ok_or(DpopError::InvalidKey)?;
    if key.algorithm() != algorithm {
        return Err(DpopError::InvalidKey);
    }
    Ok(key)
}

/// Whether a public EC P-256 or Ed25519 key is on its curve (an RSA key never is a proof key).
pub fn is_on_curve(key: &PublicKey) -> bool {
    match key {
        PublicKey::ES256 { x, y } => crate::p256_verify::is_curve_point(x, y),
        PublicKey::EdDSA(x) => crate::ed25519_verify::is_point(x),
        PublicKey::RS256 { .. } => false,
    }
}

fn proof_claims(payload: &Object<'_>) -> Result<ProofClaims, DpopError> {
    let bounded = |name: &str, max: usize| -> Result<Option<String>, DpopError> {
        match payload.get(name) {
            None => Ok(None),
            Some(Json::String(s)) if !s.is_empty() && s.len() <= max => Ok(Some(s.to_string())),
            Some(_) => Err(DpopError::Malformed),
        }
    };
    let required = |name: &str, max: usize| bounded(name, max)?.ok_or(DpopError::Malformed);
    Ok(ProofClaims {
        jti: required("jti", MAX_JTI_LEN)?,
        htm: required("htm", MAX_HTM_LEN)?,
        htu: required("htu", MAX_HTU_LEN)?,
        // An integer number of seconds (a fraction or a string is refused).
        iat: payload
            .get("iat")
            .and_then(Json::as_u64)
            .ok_or(DpopError::Malformed)?,
        // A SHA-256 hash in base64url is 43 characters.
        ath: bounded("ath", 43)?,
        nonce: bounded("nonce", MAX_NONCE_LEN)?,
    })
}

impl Proof {
    /// RFC 9449 §4.3 with the contract's own verifiers.
    pub fn check(&self, expect: &Expectations<'_>) -> Result<CheckedProof, DpopError> {
        self.check_with(expect, &FreshKeys)
    }

    /// [`Self::check`] with the key's thumbprint and signature from `keys`
    /// (e.g. a host's native verifier, keys kept prepared). The signature is
    /// verified only when every other claim but the nonce holds.
    pub fn check_with(
        &self,
        expect: &Expectations<'_>,
        keys: &dyn ProofKeys,
    ) -> Result<CheckedProof, DpopError> {
        let claims = &self.claims;
        if !expect.algorithms.contains(&self.algorithm) {
            return Err(DpopError::UnsupportedAlgorithm);
        }
        if claims.htm != expect.method {
            return Err(DpopError::MethodMismatch);
        }
        match (htu::normalize(&claims.htu), htu::normalize(expect.uri)) {
            (Some(proof_uri), Some(request_uri)) if proof_uri == request_uri => {}
            _ => return Err(DpopError::UriMismatch),
        }
        if claims.iat.saturating_add(expect.max_age_secs) < expect.now {
            return Err(DpopError::Stale);
        }
        if claims.iat > expect.now.saturating_add(expect.future_skew_secs) {
            return Err(DpopError::IssuedInFuture);
        }
        if let Some(expected) = expect.access_token_hash {
            if !claims
                .ath
                .as_deref()
                .is_some_and(|ath| bool::from(ath.as_bytes().ct_eq(expected.as_bytes())))
            {
                return Err(DpopError::AccessTokenHashMismatch);
            }
        }
        let jkt = keys.thumbprint(&self.key);
        if expect
            .bound_jkt
            .is_some_and(|bound| !bool::from(bound.as_bytes().ct_eq(jkt.as_bytes())))
        {
            return Err(DpopError::KeyMismatch);
        }
        if !keys.verify(&self.key, self.signing_input.as_bytes(), &self.signature) {
            return Err(DpopError::BadSignature);
        }
        let nonce_ok = |judge: &dyn Fn(&str) -> bool| match &claims.nonce {
            None => Err(DpopError::NonceMissing),
            Some(n) if judge(n) => Ok(()),
            Some(_) => Err(DpopError::NonceInvalid),
        };
        match expect.nonce {
            NonceCheck::NotRequired => {}
            NonceCheck::Stateless { key, window_secs } => {
                nonce_ok(&|n| nonce::check(key, n, expect.now, window_secs))?
            }
            NonceCheck::Custom(judge) => nonce_ok(judge)?,
        }
        Ok(CheckedProof {
            jkt,
            jti: claims.jti.clone(),
            iat: claims.iat,
        })
    }

    /// The bytes the signature covers (`header.payload`).
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The raw signature (64 bytes).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// The contract's verifiers, for a key used once.
pub fn verify_signature(key: &PublicKey, signing_input: &[u8], signature: &[u8]) -> bool {
    crate::jws::verify_once(key, signing_input, signature)
}
