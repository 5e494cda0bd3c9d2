//! JWKS (RFC 7517) → verification keys, for the algorithms authflow accepts.
//!
//! jwt-simple parses one JWK at a time into the key type it describes; this
//! module walks a key set, picks the type from `kty`/`crv`/`alg`, enforces our
//! own rules (RSA ≥ 2048 bits, signature keys only) and skips the rest, so one
//! odd key from an identity provider never hides the good ones.

use jwt_simple::prelude::*;
use serde::Deserialize;

use crate::jws::SignatureKey;
use serde_json::Value;

/// Largest JWKS document accepted, and most keys kept from it.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
pub const MAX_KEYS: usize = 32;
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub enum Algorithm {
    EdDSA,
    ES256,
    RS256,
}

impl Algorithm {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }
}

/// A public key, typed by the one algorithm it may verify.
// A key set holds a handful of keys: boxing the larger variants would save nothing worth an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum VerifyingKey {
    EdDSA(Ed25519PublicKey),
    ES256(ES256PublicKey),
    RS256(RS256PublicKey),
}

impl VerifyingKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::EdDSA(_) => Algorithm::EdDSA,
            Self::ES256(_) => Algorithm::ES256,
            Self::RS256(_) => Algorithm::RS256,
        }
    }

    /// Verifies signature and the registered claims per `options`.
    pub fn verify<C>(&self, token: &str, options: &VerificationOptions) -> Result<JWTClaims<C>, jwt_simple::Error>
    where
        C: serde::Serialize + serde::de::DeserializeOwned,
    {
        let options = Some(options.clone());
        match self {
            Self::EdDSA(k) => k.verify_token::<C>(token, options),
            Self::ES256(k) => k.verify_token::<C>(token, options),
            Self::RS256(k) => k.verify_token::<C>(token, options),
        }
    }
}

/// One usable key of a key set: the jwt-simple key (the reference, used by
/// the service) and the same key prepared for the filter's fast path.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub kid: Option<String>,
    pub key: VerifyingKey,
    pub signature: SignatureKey,
}

/// The usable keys of one JWKS document.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    pub keys: Vec<KeyEntry>,
    /// Keys present in the document but not usable (other type, too weak,
    /// encryption keys, malformed); reported, never fatal on their own.
    pub skipped: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum JwksError {
    TooLarge(usize),
    NotJson(String),
    NoKeysMember,
    /// The document parsed but held no key authflow can use.
    NoUsableKey { skipped: usize },
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(n) => write!(f, "JWKS is {n} bytes, over the {MAX_JWKS_BYTES}-byte limit"),
            Self::NotJson(e) => write!(f, "JWKS is not valid JSON: {e}"),
            Self::NoKeysMember => write!(f, "JWKS has no `keys` array"),
            Self::NoUsableKey { skipped } => {
                write!(f, "JWKS has no usable EdDSA/ES256/RS256 signature key ({skipped} skipped)")
            }
        }
    }
}

impl KeySet {
    pub fn parse(document: &[u8]) -> Result<Self, JwksError> {
        if document.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge(document.len()));
        }
        let doc: Value = serde_json::from_slice(document).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let keys = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::NoKeysMember)?;
        let mut set = KeySet::default();
        for jwk in keys {
            match (set.keys.len() < MAX_KEYS).then(|| parse_key(jwk)).flatten() {
                Some(entry) => set.keys.push(entry),
                None => set.skipped += 1,
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKey { skipped: set.skipped });
        }
        Ok(set)
    }

    /// Keys that may verify a token of `alg` with this `kid`. With a `kid`,
    /// only keys with that id; without one, every key of the algorithm.
    pub fn entries<'a>(&'a self, alg: Algorithm, kid: Option<&'a str>) -> impl Iterator<Item = &'a KeyEntry> + 'a {
        self.keys.iter().filter(move |e| e.key.algorithm() == alg && (kid.is_none() || e.kid.as_deref() == kid))
    }

    /// [`Self::entries`] as jwt-simple keys (the reference path the service uses).
    pub fn candidates<'a>(&'a self, alg: Algorithm, kid: Option<&'a str>) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.entries(alg, kid).map(|e| &e.key)
    }

    /// [`Self::entries`] prepared for [`SignatureKey::verify`] (the filter's path).
    pub fn signature_candidates<'a>(&'a self, alg: Algorithm, kid: Option<&'a str>) -> impl Iterator<Item = &'a SignatureKey> + 'a {
        self.entries(alg, kid).map(|e| &e.signature)
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|e| e.kid.as_deref() == Some(kid))
    }
}

fn parse_key(jwk: &Value) -> Option<KeyEntry> {
    let obj = jwk.as_object()?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let kid = text("kid").map(str::to_owned);
    // Re-serialise just this key: jwt-simple's parser is strict about its input.
    let json = serde_json::to_string(jwk).ok()?;
    let key = match (text("kty")?, text("crv"), text("alg")) {
        ("OKP", Some("Ed25519"), None | Some("EdDSA") | Some("Ed25519")) => {
            VerifyingKey::EdDSA(Ed25519PublicKey::from_jwk(&json).ok()?)
        }
        ("EC", Some("P-256"), None | Some("ES256")) => VerifyingKey::ES256(ES256PublicKey::from_jwk(&json).ok()?),
        ("RSA", _, None | Some("RS256")) => {
            let key = RS256PublicKey::from_jwk(&json).ok()?;
            let modulus_bits = key.to_components().n.len() * 8;
            if modulus_bits < MIN_RSA_BITS {
                return None;
            }
            VerifyingKey::RS256(key)
        }
        _ => return None,
    };
    let signature = SignatureKey::from_key(&key)?;
    Some(KeyEntry { kid, key, signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eddsa_jwks(kid: &str) -> (Ed25519KeyPair, String) {
        let kp = Ed25519KeyPair::generate().with_key_id(kid);
        let jwks = format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk());
        (kp, jwks)
    }

    #[test]
    fn round_trips_an_eddsa_key_and_verifies() {
        let (kp, jwks) = eddsa_jwks("k1");
        let set = KeySet::parse(jwks.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("k1"));
        let token = kp.sign(Claims::create(Duration::from_mins(5))).unwrap();
        let key = set.candidates(Algorithm::EdDSA, Some("k1")).next().unwrap();
        key.verify::<NoCustomClaims>(&token, &VerificationOptions::default()).unwrap();
        assert!(set.candidates(Algorithm::ES256, Some("k1")).next().is_none());
        assert!(set.candidates(Algorithm::EdDSA, Some("k2")).next().is_none());
    }

    #[test]
    fn es256_and_rsa_keys_parse() {
        let es = ES256KeyPair::generate().with_key_id("e");
        let rs = RS256KeyPair::generate(2048).unwrap().with_key_id("r");
        let jwks = format!(r#"{{"keys":[{},{}]}}"#, es.public_key().to_jwk(), rs.public_key().to_jwk());
        let set = KeySet::parse(jwks.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 2);
        assert!(set.candidates(Algorithm::ES256, None).next().is_some());
        assert!(set.candidates(Algorithm::RS256, None).next().is_some());
    }

    #[test]
    fn weak_rsa_and_encryption_keys_are_skipped() {
        // A 1024-bit modulus (jwt-simple will not even generate one).
        let weak = serde_json::json!({"kty": "RSA", "e": "AQAB", "n": "u".repeat(171) + "w"});
        let (_, good) = eddsa_jwks("k1");
        let good: Value = serde_json::from_str(&good).unwrap();
        let mut enc: Value = serde_json::from_str(&ES256KeyPair::generate().public_key().to_jwk()).unwrap();
        enc["use"] = "enc".into();
        let doc = serde_json::json!({"keys": [weak, enc, good["keys"][0]]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.skipped, 2);
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(matches!(KeySet::parse(b"nope"), Err(JwksError::NotJson(_))));
        assert_eq!(KeySet::parse(b"{}").unwrap_err(), JwksError::NoKeysMember);
        assert_eq!(KeySet::parse(br#"{"keys":[]}"#).unwrap_err(), JwksError::NoUsableKey { skipped: 0 });
        assert_eq!(KeySet::parse(br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#).unwrap_err(), JwksError::NoUsableKey { skipped: 1 });
        let huge = vec![b' '; MAX_JWKS_BYTES + 1];
        assert!(matches!(KeySet::parse(&huge), Err(JwksError::TooLarge(_))));
    }

    #[test]
    fn envoy_conformance_jwks_parse() {
        // Envoy's own jwt_authn test data (envoyproxy/envoy, Apache-2.0), embedded so it also runs as wasm32.
        let text = include_str!("../../../tests/fixtures/envoy-jwt-authn-vectors.json");
        let doc: Value = serde_json::from_str(text).unwrap();
        let rs = KeySet::parse(doc["jwks_rs256"].to_string().as_bytes()).unwrap();
        assert_eq!(rs.keys.len(), 3);
        let es = KeySet::parse(doc["jwks_es256"].to_string().as_bytes()).unwrap();
        assert_eq!(es.keys.len(), 1);
    }
}
