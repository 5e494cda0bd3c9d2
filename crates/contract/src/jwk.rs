//! JWKS (RFC 7517) → verification keys, for the algorithms authflow accepts.
//!
//! Walks a key set, picks the type from `kty`/`crv`/`alg`, enforces the key
//! policy (signature keys only, no private members, RSA 2048–4096 bits with
//! e = 65537, points on their curve) and skips the rest, so one odd key from
//! an identity provider never hides the good ones. Parsed with serde_json and
//! base64 only: the filter links no JOSE library.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use crate::json::borrowed::{Json, Object};

use crate::jws::SignatureKey;

/// Largest JWKS document accepted, and most keys kept from it.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
pub const MAX_KEYS: usize = 32;
pub const MIN_RSA_BITS: usize = 2048;
pub const MAX_RSA_BITS: usize = 4096;

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

/// The public key material of one usable JWK, typed by the one algorithm it
/// may verify. RSA keys always have e = 65537 (the policy), so only `n` is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// The 32-byte compressed Edwards point (RFC 8037 `x`).
    EdDSA([u8; 32]),
    /// Affine coordinates, big-endian, 32 bytes each.
    ES256 { x: [u8; 32], y: [u8; 32] },
    /// The modulus, big-endian, without leading zero bytes.
    RS256 { n: Vec<u8> },
}

/// The only RSA public exponent accepted (65537, JWK `"AQAB"`).
pub const RSA_EXPONENT: [u8; 3] = [1, 0, 1];

impl PublicKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::EdDSA(_) => Algorithm::EdDSA,
            Self::ES256 { .. } => Algorithm::ES256,
            Self::RS256 { .. } => Algorithm::RS256,
        }
    }

    /// SEC1 uncompressed encoding of an ES256 key (0x04 ‖ x ‖ y).
    pub fn sec1_uncompressed(x: &[u8; 32], y: &[u8; 32]) -> [u8; 65] {
        let mut out = [0u8; 65];
        for (slot, byte) in out.iter_mut().zip([0x04].iter().chain(x).chain(y)) {
            *slot = *byte;
        }
        out
    }
}

/// One usable key of a key set: its id, its public material, the same key
/// prepared for [`SignatureKey::verify`], and as DER for a host verifier.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub kid: Option<String>,
    pub public: PublicKey,
    pub signature: SignatureKey,
    /// SubjectPublicKeyInfo ([`crate::der`]), built once with the key.
    pub spki: Vec<u8>,
}

impl KeyEntry {
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }
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
    NoUsableKey {
        skipped: usize,
    },
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(n) => {
                write!(f, "JWKS is {n} bytes, over the {MAX_JWKS_BYTES}-byte limit")
            }
            Self::NotJson(e) => write!(f, "JWKS is not valid JSON: {e}"),
            Self::NoKeysMember => write!(f, "JWKS has no `keys` array"),
            Self::NoUsableKey { skipped } => {
                write!(
                    f,
                    "JWKS has no usable EdDSA/ES256/RS256 signature key ({skipped} skipped)"
                )
            }
        }
    }
}

impl KeySet {
    /// A key set that must hold a usable key (a configuration's, a client's
    /// registration): one without is [`JwksError::NoUsableKey`].
    pub fn parse(document: &[u8]) -> Result<Self, JwksError> {
        Self::parse_published(document)?.with_usable_key()
    }

    /// A key set as its issuer publishes it: a document within the size
    /// limit, JSON (each member once) with a `keys` array. Such a document is
    /// the issuer's word on its keys even when none of them is usable here
    /// (none left, or only other types): it is then an empty set, which
    /// withdraws every key held before. Only a document that is no key set
    /// is an error.
    /// Whether `other` holds the same keys, in the same order: the same
    /// `kid`s and public material (what a token is verified with), the
    /// latter compared as its SubjectPublicKeyInfo: one encoding per key.
    pub fn same_keys(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|(a, b)| a.kid == b.kid && a.spki == b.spki)
    }

    pub fn parse_published(document: &[u8]) -> Result<Self, JwksError> {
        if document.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge(document.len()));
        }
        let doc: Json<'_> =
            crate::json::from_slice(document).map_err(|e| JwksError::NotJson(e.to_string()))?;
        Self::read(&doc)
    }

    /// A JWKS already read as JSON (e.g. inline in the filter's
    /// configuration); like [`Self::parse`], it must hold a usable key.
    pub fn from_document(doc: &Json<'_>) -> Result<Self, JwksError> {
        Self::read(doc)?.with_usable_key()
    }

    fn read(doc: &Json<'_>) -> Result<Self, JwksError> {
        let keys = doc
            .get("keys")
            .and_then(Json::as_array)
            .ok_or(JwksError::NoKeysMember)?;
        let mut set = KeySet::default();
        for jwk in keys {
            match (set.keys.len() < MAX_KEYS)
                .then(|| parse_key(jwk))
                .flatten()
            {
                Some(entry) => set.keys.push(entry),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    fn with_usable_key(self) -> Result<Self, JwksError> {
        if self.keys.is_empty() {
            return Err(JwksError::NoUsableKey {
                skipped: self.skipped,
            });
        }
        Ok(self)
    }

    /// Keys that may verify a token of `alg` with this `kid`. With a `kid`,
    /// only keys with that id; without one, every key of the algorithm.
    pub fn entries<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a KeyEntry> + 'a {
        self.keys
            .iter()
            .filter(move |e| e.algorithm() == alg && (kid.is_none() || e.kid.as_deref() == kid))
    }

    /// [`Self::entries`] prepared for [`SignatureKey::verify`] (the filter's path).
    pub fn signature_candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a SignatureKey> + 'a {
        self.entries(alg, kid).map(|e| &e.signature)
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|e| e.kid.as_deref() == Some(kid))
    }
}

/// Members that carry key material; a public signature key may hold only its own public ones.
const MATERIAL_MEMBERS: [&str; 15] = [
    "crv", "x", "y", "d", "n", "e", "p", "q", "dp", "dq", "qi", "oth", "k", "pub", "priv",
];

fn parse_key(jwk: &Json<'_>) -> Option<KeyEntry> {
    let obj = jwk.as_object()?;
    let kid = match obj.get("kid") {
        None => None,
        Some(Json::String(k)) => Some(k.to_string()),
        Some(_) => return None,
    };
    let public = public_signature_key(obj)?;
    let signature = SignatureKey::from_public(&public)?;
    let spki = crate::der::subject_public_key_info(&public);
    Some(KeyEntry {
        kid,
        public,
        signature,
        spki,
    })
}

/// The public key material of one JWK object under the key policy (signature
/// use only, a known type and curve, a consistent `alg`, no private member nor
/// another type's material). Points are not checked against their curve here:
/// preparing the key ([`SignatureKey::from_public`]) does that.
pub fn public_signature_key(obj: &Object<'_>) -> Option<PublicKey> {
    let text = |k: &str| obj.get(k).and_then(Json::as_str);
    if !is_public_signature_key(obj) {
        return None;
    }
    let (public, own_members): (PublicKey, &[&str]) = match (text("kty")?, text("crv"), text("alg"))
    {
        ("OKP", Some("Ed25519"), None | Some("EdDSA") | Some("Ed25519")) => {
            (PublicKey::EdDSA(fixed_b64(text("x")?)?), &["crv", "x"])
        }
        ("EC", Some("P-256"), None | Some("ES256")) => (
            PublicKey::ES256 {
                x: fixed_b64(text("x")?)?,
                y: fixed_b64(text("y")?)?,
            },
            &["crv", "x", "y"],
        ),
        ("RSA", None, None | Some("RS256")) => {
            if text("e")? != "AQAB" {
                return None;
            }
            (
                PublicKey::RS256 {
                    n: rsa_modulus(text("n")?)?,
                },
                &["n", "e"],
            )
        }
        _ => return None,
    };
    // Material of another key type, or a private member, makes the key suspect: skipped.
    if obj
        .names()
        .any(|name| MATERIAL_MEMBERS.contains(&name) && !own_members.contains(&name))
    {
        return None;
    }
    Some(public)
}

/// `use`, if present, is `sig`; `key_ops`, if present, is exactly `["verify"]`
/// (an empty list permits no operation, RFC 7517 §4.3).
fn is_public_signature_key(obj: &Object<'_>) -> bool {
    let use_ok = match obj.get("use") {
        None => true,
        Some(v) => v.as_str() == Some("sig"),
    };
    let ops_ok = match obj.get("key_ops") {
        None => true,
        Some(Json::Array(ops)) => matches!(ops.as_slice(), [op] if op.as_str() == Some("verify")),
        Some(_) => false,
    };
    use_ok && ops_ok
}

/// Exactly `N` bytes in canonical unpadded base64url.
fn fixed_b64<const N: usize>(b64: &str) -> Option<[u8; N]> {
    if b64.len() != (N * 4).div_ceil(3) {
        return None;
    }
    URL_SAFE_NO_PAD.decode(b64).ok()?.try_into().ok()
}

/// An RSA modulus (RFC 7518 §6.3.1.1): big-endian, one leading zero byte
/// tolerated before a high top bit; odd and 2048–4096 bits long.
fn rsa_modulus(b64: &str) -> Option<Vec<u8>> {
    if b64.len() > (MAX_RSA_BITS / 8 + 1) * 4 / 3 + 4 {
        return None;
    }
    let mut n = URL_SAFE_NO_PAD.decode(b64).ok()?;
    if n.len() >= 2 && n.first() == Some(&0) && n.get(1).is_some_and(|top| top & 0x80 != 0) {
        n.remove(0);
    }
    let top = *n.first()?;
    if top == 0 || n.last().is_none_or(|low| low & 1 == 0) {
        return None;
    }
    let bits = n.len() * 8 - top.leading_zeros() as usize;
    (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::*;
    use serde_json::Value;

    fn eddsa_jwks(kid: &str) -> (Ed25519KeyPair, String) {
        let kp = Ed25519KeyPair::generate().with_key_id(kid);
        let jwks = format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk());
        (kp, jwks)
    }

    /// Whether a key of `set` verifies the token, on the filter's path.
    fn verifies(set: &KeySet, alg: Algorithm, kid: Option<&str>, token: &str) -> bool {
        let dot = token.rfind('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(&token[dot + 1..]).unwrap();
        set.signature_candidates(alg, kid)
            .any(|k| k.verify(&token.as_bytes()[..dot], &sig))
    }

    #[test]
    fn round_trips_an_eddsa_key_and_verifies() {
        let (kp, jwks) = eddsa_jwks("k1");
        let set = KeySet::parse(jwks.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("k1"));
        assert_eq!(
            set.keys[0].public,
            PublicKey::EdDSA(kp.public_key().to_bytes().try_into().unwrap())
        );
        let token = kp.sign(Claims::create(Duration::from_mins(5))).unwrap();
        assert!(verifies(&set, Algorithm::EdDSA, Some("k1"), &token));
        assert!(set.entries(Algorithm::ES256, Some("k1")).next().is_none());
        assert!(set.entries(Algorithm::EdDSA, Some("k2")).next().is_none());
    }

    #[test]
    fn es256_and_rsa_keys_parse_and_verify() {
        let es = ES256KeyPair::generate().with_key_id("e");
        let rs = RS256KeyPair::generate(2048).unwrap().with_key_id("r");
        let jwks = format!(
            r#"{{"keys":[{},{}]}}"#,
            es.public_key().to_jwk(),
            rs.public_key().to_jwk()
        );
        let set = KeySet::parse(jwks.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 2);
        let claims = || Claims::create(Duration::from_mins(5));
        assert!(verifies(
            &set,
            Algorithm::ES256,
            Some("e"),
            &es.sign(claims()).unwrap()
        ));
        assert!(verifies(
            &set,
            Algorithm::RS256,
            Some("r"),
            &rs.sign(claims()).unwrap()
        ));
        assert!(!verifies(
            &set,
            Algorithm::RS256,
            Some("e"),
            &es.sign(claims()).unwrap()
        ));
        assert_eq!(
            set.entries(Algorithm::RS256, None).next().unwrap().public,
            PublicKey::RS256 {
                n: rs.public_key().to_components().n
            }
        );
    }

    #[test]
    fn weak_rsa_and_encryption_keys_are_skipped() {
        // A 1024-bit modulus (jwt-simple will not even generate one).
        let weak = serde_json::json!({"kty": "RSA", "e": "AQAB", "n": "u".repeat(171) + "w"});
        let (_, good) = eddsa_jwks("k1");
        let good: Value = serde_json::from_str(&good).unwrap();
        let mut enc: Value =
            serde_json::from_str(&ES256KeyPair::generate().public_key().to_jwk()).unwrap();
        enc["use"] = "enc".into();
        let doc = serde_json::json!({"keys": [weak, enc, good["keys"][0]]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.skipped, 2);
    }

    /// Each rule of the key policy, broken on an otherwise good key, skips that key
    /// (the same rules jwt-simple's JWK import applies).
    #[test]
    fn keys_breaking_the_policy_are_skipped() {
        let ed: Value =
            serde_json::from_str(&Ed25519KeyPair::generate().public_key().to_jwk()).unwrap();
        let es: Value =
            serde_json::from_str(&ES256KeyPair::generate().public_key().to_jwk()).unwrap();
        let rs: Value =
            serde_json::from_str(&RS256KeyPair::generate(2048).unwrap().public_key().to_jwk())
                .unwrap();
        let with = |base: &Value, member: &str, value: Value| {
            let mut k = base.clone();
            k[member] = value;
            k
        };
        let without = |base: &Value, member: &str| {
            let mut k = base.clone();
            k.as_object_mut().unwrap().remove(member);
            k
        };
        let padded_x = format!("{}=", ed["x"].as_str().unwrap());
        let broken = [
            with(&ed, "d", "AAAA".into()),                     // a private member
            with(&es, "n", "AAAA".into()),                     // another key type's material
            with(&ed, "key_ops", serde_json::json!(["sign"])), // not a verification key
            with(&ed, "key_ops", serde_json::json!(["verify", "verify"])),
            with(&ed, "key_ops", serde_json::json!([])), // permits no operation (RFC 7517 §4.3)
            with(&ed, "alg", "ES256".into()),            // alg of another type
            with(&ed, "x", padded_x.into()),             // non-canonical base64url
            with(&ed, "x", "AAAA".into()),               // wrong length
            with(&ed, "kid", 7.into()),                  // kid not a string
            with(&es, "y", es["x"].clone()),             // point not on the curve
            with(&es, "crv", "P-384".into()),
            with(&rs, "e", "AAEAAQ".into()), // 65537 with a leading zero
            with(&rs, "e", "Aw".into()),     // e = 3
            with(&rs, "crv", "P-256".into()),
            without(&es, "y"),
            without(&rs, "n"),
        ];
        for (i, key) in broken.iter().enumerate() {
            let doc = serde_json::json!({"keys": [key]});
            assert_eq!(
                KeySet::parse(doc.to_string().as_bytes()).unwrap_err(),
                JwksError::NoUsableKey { skipped: 1 },
                "case {i}: {key}"
            );
        }
        for good in [
            &ed,
            &es,
            &rs,
            &with(&ed, "key_ops", serde_json::json!(["verify"])),
        ] {
            assert!(
                KeySet::parse(serde_json::json!({"keys": [good]}).to_string().as_bytes()).is_ok(),
                "{good}"
            );
        }
    }

    /// A small-order Ed25519 key verifies nothing with the own verifier, yet
    /// it was kept in the set: a host verifier (BoringSSL checks no key
    /// order) took `R = [s]B` with any `s` as its signature of any token.
    #[test]
    fn a_small_order_ed25519_key_is_skipped() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // y = p − 1: the point of order 2.
        let mut order_two = [0xffu8; 32];
        order_two[0] = 0xec;
        order_two[31] = 0x7f;
        // y = 0: a point of order 4.
        for x in [identity, order_two, [0u8; 32]] {
            let doc = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(x)}]});
            assert_eq!(
                KeySet::parse(doc.to_string().as_bytes()).unwrap_err(),
                JwksError::NoUsableKey { skipped: 1 },
                "{doc}"
            );
        }
    }

    #[test]
    fn rsa_modulus_bounds() {
        let odd = |bytes: usize, top: u8| {
            let mut n = vec![0xffu8; bytes];
            n[0] = top;
            URL_SAFE_NO_PAD.encode(n)
        };
        assert!(rsa_modulus(&odd(256, 0x80)).is_some(), "2048 bits");
        assert!(rsa_modulus(&odd(256, 0x7f)).is_none(), "2047 bits");
        assert!(rsa_modulus(&odd(512, 0xff)).is_some(), "4096 bits");
        assert!(rsa_modulus(&odd(513, 0x01)).is_none(), "4097 bits");
        let mut zero_led = vec![0u8];
        zero_led.extend(vec![0xffu8; 256]);
        assert_eq!(
            rsa_modulus(&URL_SAFE_NO_PAD.encode(&zero_led))
                .unwrap()
                .len(),
            256,
            "one sign byte tolerated"
        );
        let mut even = vec![0xffu8; 256];
        even[255] = 0xfe;
        assert!(
            rsa_modulus(&URL_SAFE_NO_PAD.encode(even)).is_none(),
            "even modulus"
        );
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(matches!(KeySet::parse(b"nope"), Err(JwksError::NotJson(_))));
        assert_eq!(KeySet::parse(b"{}").unwrap_err(), JwksError::NoKeysMember);
        assert_eq!(
            KeySet::parse(br#"{"keys":[]}"#).unwrap_err(),
            JwksError::NoUsableKey { skipped: 0 }
        );
        assert_eq!(
            KeySet::parse(br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#).unwrap_err(),
            JwksError::NoUsableKey { skipped: 1 }
        );
        let huge = vec![b' '; MAX_JWKS_BYTES + 1];
        assert!(matches!(KeySet::parse(&huge), Err(JwksError::TooLarge(_))));
        // RFC 7517 §4: a member named twice is refused, not read as its last
        // copy (another reader could use the first `x`).
        let ed = Ed25519KeyPair::generate().public_key().to_jwk();
        let twice = ed.replacen("\"x\":", "\"x\":\"AAAA\",\"x\":", 1);
        assert!(KeySet::parse(format!(r#"{{"keys":[{ed}]}}"#).as_bytes()).is_ok());
        assert!(
            matches!(KeySet::parse(format!(r#"{{"keys":[{twice}]}}"#).as_bytes()), Err(JwksError::NotJson(e)) if e.contains("twice"))
        );
        assert!(matches!(
            KeySet::parse(format!(r#"{{"keys":[{ed}],"keys":[]}}"#).as_bytes()),
            Err(JwksError::NotJson(_))
        ));
    }

    /// What an issuer publishes is its word on its keys: a key set with no
    /// usable key (none left, only other types) is an empty set, not an
    /// error; a document that is no key set still is one.
    #[test]
    fn a_published_set_without_usable_keys_is_empty() {
        let p384 = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-384","x":"{0}","y":"{0}"}}]}}"#,
            "A".repeat(64)
        );
        for (doc, skipped) in [
            (r#"{"keys":[]}"#, 0),
            (p384.as_str(), 1),
            (r#"{"keys":[null,{"kty":"oct","k":"AAAA"}]}"#, 2),
        ] {
            let set = KeySet::parse_published(doc.as_bytes()).unwrap();
            assert!(set.keys.is_empty() && !set.has_kid("k1"), "{doc}");
            assert_eq!(set.skipped, skipped, "{doc}");
            assert_eq!(
                KeySet::parse(doc.as_bytes()).unwrap_err(),
                JwksError::NoUsableKey { skipped },
                "{doc}: a set that must hold a key"
            );
        }
        let (_, good) = eddsa_jwks("k1");
        assert!(KeySet::parse_published(good.as_bytes())
            .unwrap()
            .has_kid("k1"));
        assert!(matches!(
            KeySet::parse_published(b"nope"),
            Err(JwksError::NotJson(_))
        ));
        assert!(matches!(
            KeySet::parse_published(br#"{"keys":[],"keys":[]}"#),
            Err(JwksError::NotJson(_))
        ));
        assert_eq!(
            KeySet::parse_published(b"{}").unwrap_err(),
            JwksError::NoKeysMember
        );
        assert_eq!(
            KeySet::parse_published(br#"{"keys":{}}"#).unwrap_err(),
            JwksError::NoKeysMember
        );
        assert!(matches!(
            KeySet::parse_published(&vec![b' '; MAX_JWKS_BYTES + 1]),
            Err(JwksError::TooLarge(_))
        ));
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
