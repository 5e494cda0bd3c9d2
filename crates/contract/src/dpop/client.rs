//! A DPoP client's side, for tests and benchmarks only (feature
//! `test-support`, never in the filter): a proof key and the proofs it signs
//! (RFC 9449 §4.2), made the way a client makes them — p256's ECDSA and
//! ed25519-dalek signers, the header's `jwk` in RFC 7638 order.
//!
//! ```ignore
//! let key = ProofKey::es256(&[7; 32]);
//! let proof = key.proof("GET", "https://api.example.com/v1/items", Some(&access_token));
//! let with_nonce = key.proof_with("GET", url, Some(&access_token), |claims| claims["nonce"] = nonce.into());
//! ```

// Test support: a key that cannot be made from its seed is the caller's bug,
// and the claims indexed are the JSON object made here.
#![allow(clippy::expect_used, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use serde_json::{json, Value};

use super::{access_token_hash, canonical_jwk, jwk_thumbprint, PROOF_TYPE};
use crate::jwk::{Algorithm, PublicKey};

/// A client's proof key (in a browser: a non-extractable WebCrypto key).
#[derive(Clone)]
pub enum ProofKey {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
}

impl ProofKey {
    /// A P-256 key from 32 seed bytes (any bytes but zero or ≥ the group order).
    pub fn es256(seed: &[u8; 32]) -> ProofKey {
        ProofKey::Es256(p256::ecdsa::SigningKey::from_slice(seed).expect("a P-256 scalar"))
    }

    /// An Ed25519 key from 32 seed bytes.
    pub fn ed25519(seed: &[u8; 32]) -> ProofKey {
        ProofKey::EdDsa(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            ProofKey::Es256(_) => Algorithm::ES256,
            ProofKey::EdDsa(_) => Algorithm::EdDSA,
        }
    }

    pub fn public(&self) -> PublicKey {
        match self {
            ProofKey::Es256(k) => {
                let point = k.verifying_key().to_sec1_point(false);
                let xy = point
                    .as_bytes()
                    .get(1..65)
                    .expect("an uncompressed P-256 point");
                let (x, y) = xy.split_at(32);
                PublicKey::ES256 {
                    x: x.try_into().expect("32 bytes"),
                    y: y.try_into().expect("32 bytes"),
                }
            }
            ProofKey::EdDsa(k) => PublicKey::EdDSA(k.verifying_key().to_bytes()),
        }
    }

    /// The RFC 7638 thumbprint: what a token bound to this key carries as `cnf.jkt`.
    pub fn jkt(&self) -> String {
        jwk_thumbprint(&self.public())
    }

    /// The JOSE header of this key's proofs: `typ`, `alg` and the public `jwk`.
    pub fn header(&self) -> Value {
        let jwk: Value = serde_json::from_str(&canonical_jwk(&self.public()))
            .expect("the contract's JWK is JSON");
        json!({"typ": PROOF_TYPE, "alg": self.algorithm().as_str(), "jwk": jwk})
    }

    /// A fresh proof's claims: a new `jti`, `iat` now, `ath` when a token is given.
    pub fn claims(method: &str, htu: &str, access_token: Option<&str>) -> Value {
        let mut claims = json!({"jti": fresh_jti(), "htm": method, "htu": htu, "iat": unix_now()});
        if let Some(token) = access_token {
            claims["ath"] = access_token_hash(token).into();
        }
        claims
    }

    /// A fresh proof for `method` `htu`, with `ath` of `access_token` if any.
    pub fn proof(&self, method: &str, htu: &str, access_token: Option<&str>) -> String {
        self.proof_with(method, htu, access_token, |_| {})
    }

    /// [`Self::proof`] with its claims changed by `edit` before signing (a
    /// `nonce`, another `iat`, a wrong `ath`, …).
    pub fn proof_with(
        &self,
        method: &str,
        htu: &str,
        access_token: Option<&str>,
        edit: impl FnOnce(&mut Value),
    ) -> String {
        let mut claims = Self::claims(method, htu, access_token);
        edit(&mut claims);
        self.sign(&self.header(), &claims)
    }

    /// A compact JWS of exactly this header and these claims, signed with this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_text(&header.to_string(), &claims.to_string())
    }

    /// A compact JWS of this header and these claims as JSON text, signed with
    /// this key: for texts no JSON value can hold (a member named twice).
    pub fn sign_text(&self, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = match self {
            ProofKey::Es256(k) => {
                let s: p256::ecdsa::Signature = k.sign(input.as_bytes());
                s.to_bytes().to_vec()
            }
            ProofKey::EdDsa(k) => ed25519_dalek::Signer::sign(k, input.as_bytes())
                .to_bytes()
                .to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 128 bits that no other proof of this process (or, by the clock and a
/// random per-process value, of another) carries.
fn fresh_jti() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut raw = hasher.finish().to_be_bytes().to_vec();
    raw.extend_from_slice(&nanos.to_be_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::super::{parse_proof, Expectations, NonceCheck};
    use super::*;

    #[test]
    fn its_proofs_pass_the_contracts_checks() {
        for key in [ProofKey::es256(&[3; 32]), ProofKey::ed25519(&[4; 32])] {
            let url = "https://api.example.com/v1/items";
            let proof = key.proof("GET", url, Some("a.b.c"));
            let expect = Expectations {
                method: "GET",
                uri: url,
                now: unix_now(),
                max_age_secs: 60,
                future_skew_secs: 5,
                algorithms: &[Algorithm::ES256, Algorithm::EdDSA],
                access_token_hash: Some(&super::access_token_hash("a.b.c")),
                bound_jkt: Some(&key.jkt()),
                nonce: NonceCheck::NotRequired,
            };
            let checked = parse_proof(&proof).unwrap().check(&expect).unwrap();
            assert_eq!(checked.jkt, key.jkt());
            assert_ne!(
                parse_proof(&key.proof("GET", url, None))
                    .unwrap()
                    .claims
                    .jti,
                checked.jti,
                "a new jti each time"
            );
        }
    }
}
