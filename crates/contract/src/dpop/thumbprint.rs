//! JWK SHA-256 thumbprints (RFC 7638), the `jkt` a DPoP-bound token carries
//! in `cnf` (RFC 9449 §6.1), and the access-token hash `ath` (§4.2).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::jwk::{PublicKey, RSA_EXPONENT};

/// The key as the JSON object RFC 7638 §3.2 hashes: only the required
/// members, in lexicographic order, no whitespace. It is also a valid public
/// JWK of the key (base64url values contain nothing JSON must escape).
pub fn canonical_jwk(key: &PublicKey) -> String {
    match key {
        PublicKey::EdDSA(x) => format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x)
        ),
        PublicKey::ES256 { x, y } => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x),
            URL_SAFE_NO_PAD.encode(y)
        ),
        PublicKey::RS256 { n } => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(RSA_EXPONENT),
            URL_SAFE_NO_PAD.encode(n)
        ),
    }
}

/// base64url(SHA-256(canonical JWK)): the key's `jkt`.
pub fn jwk_thumbprint(key: &PublicKey) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical_jwk(key).as_bytes()))
}

/// base64url(SHA-256(access token)): the `ath` a proof sent with the token carries.
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}
