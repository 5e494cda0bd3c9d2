//! `private_key_jwt` client authentication (RFC 7523 §2.2, §3; OpenID
//! Connect Core §9): a service account registers a public JWK and proves
//! itself at the token endpoint with a short JWT it signed, instead of
//! sending a secret. This module checks the key at registration and the
//! assertion's signature and claims; the single use of its `jti` is the
//! store's (it must hold across instances).

use std::collections::HashSet;

use authflow_contract::jwk::{KeySet, PublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::Value;

/// The only `client_assertion_type` (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The longest an assertion may live, counted from now: it is made for one
/// request, and its `jti` is remembered until it expires (and a little
/// longer: [`JTI_RETENTION_PAST_EXP_SECS`]).
pub const MAX_LIFETIME_SECS: u64 = 300;
/// Clock difference tolerated between the client and this service: an
/// assertion is accepted until `exp` + this, by the checking instance's clock.
pub const CLOCK_SKEW_SECS: u64 = 30;
pub use crate::clock::INSTANCE_CLOCK_MARGIN_SECS;
/// How long past its `exp` a used `jti` is remembered (its row's
/// `expires_at`, pruned once the pruning instance's clock reaches it): as
/// long as any instance could still accept the assertion.
pub const JTI_RETENTION_PAST_EXP_SECS: u64 = CLOCK_SKEW_SECS + INSTANCE_CLOCK_MARGIN_SECS;
/// Longest assertion and `jti` looked at.
pub const MAX_ASSERTION_BYTES: usize = 4096;
pub const MAX_JTI_LEN: usize = 256;
/// Longest registered JWK document.
pub const MAX_JWK_BYTES: usize = 2048;

/// A registered client key: ES256 (P-256) or EdDSA (Ed25519), public only.
pub enum ClientKey {
    Es256(ES256PublicKey),
    EdDsa(Ed25519PublicKey),
}

impl ClientKey {
    /// The key of a JWK as registered by an admin; refuses private keys,
    /// other types and malformed points with a reason for the admin. The
    /// JWK rules are the contract's (the same the filter applies to a JWKS).
    pub fn from_jwk(jwk: &Value) -> Result<Self, &'static str> {
        let document = serde_json::json!({ "keys": [jwk] }).to_string();
        if document.len() > MAX_JWK_BYTES {
            return Err("the JWK is too large");
        }
        let set = KeySet::parse(document.as_bytes()).map_err(|_| {
            "not a usable public signature JWK (EC P-256 or OKP Ed25519, public members only)"
        })?;
        match set.keys.first().map(|k| &k.public) {
            Some(PublicKey::ES256 { x, y }) => {
                ES256PublicKey::from_bytes(&PublicKey::sec1_uncompressed(x, y))
                    .map(Self::Es256)
                    .map_err(|_| "the EC point is not on P-256")
            }
            Some(PublicKey::EdDSA(x)) => Ed25519PublicKey::from_bytes(x)
                .map(Self::EdDsa)
                .map_err(|_| "not an Ed25519 key"),
            _ => Err("only ES256 (EC P-256) and EdDSA (OKP Ed25519) keys are accepted"),
        }
    }

    /// A key stored by [`Self::from_jwk`], read back for a token request: the
    /// policy again, but without preparing the point for the contract's own
    /// verifiers (jwt-simple checks the signature here), which would cost more
    /// than the check itself on every request.
    pub fn from_registered(jwk: &Value) -> Option<Self> {
        // The contract reads JWKs as JSON text (its reader refuses a member named twice).
        let text = jwk.to_string();
        let object = authflow_contract::json::borrowed::Object::read(text.as_bytes()).ok()?;
        match authflow_contract::jwk::public_signature_key(&object)? {
            PublicKey::ES256 { x, y } => {
                ES256PublicKey::from_bytes(&PublicKey::sec1_uncompressed(&x, &y))
                    .ok()
                    .map(Self::Es256)
            }
            PublicKey::EdDSA(x) => Ed25519PublicKey::from_bytes(&x).ok().map(Self::EdDsa),
            _ => None,
        }
    }

    fn verify(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Option<JWTClaims<NoCustomClaims>> {
        match self {
            Self::Es256(k) => k.verify_token::<NoCustomClaims>(token, Some(options)).ok(),
            Self::EdDsa(k) => k.verify_token::<NoCustomClaims>(token, Some(options)).ok(),
        }
    }
}

impl ClientKey {
    /// Whether `assertion` names this key's algorithm (jwt-simple takes
    /// `Ed25519` for `EdDSA`). One that names another is checked against a
    /// decoy instead: refused by the key, it would be refused before any
    /// signature work, faster than an unknown client's — telling which client
    /// ids exist and their key types.
    pub fn takes(&self, assertion: &str) -> bool {
        matches!(
            (self, header_alg(assertion).as_deref()),
            (Self::Es256(_), Some("ES256")) | (Self::EdDsa(_), Some("EdDSA" | "Ed25519"))
        )
    }

    /// A key no client holds, of the algorithm `assertion` names: checking an
    /// assertion of an unknown, disabled or key-less client against it costs
    /// the same signature check as a forged one, so the refusal's timing does
    /// not tell which client ids exist. It can never verify (its private half
    /// is dropped at creation).
    pub fn decoy_for(assertion: &str) -> &'static ClientKey {
        static ES256_DECOY: std::sync::OnceLock<ClientKey> = std::sync::OnceLock::new();
        static EDDSA_DECOY: std::sync::OnceLock<ClientKey> = std::sync::OnceLock::new();
        if matches!(header_alg(assertion).as_deref(), Some("EdDSA" | "Ed25519")) {
            EDDSA_DECOY.get_or_init(|| ClientKey::EdDsa(Ed25519KeyPair::generate().public_key()))
        } else {
            ES256_DECOY.get_or_init(|| ClientKey::Es256(ES256KeyPair::generate().public_key()))
        }
    }
}

/// The `alg` of an assertion's header, when it has a readable one.
fn header_alg(assertion: &str) -> Option<String> {
    let header = assertion
        .get(..assertion.len().min(MAX_ASSERTION_BYTES))?
        .split('.')
        .next()?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

/// What a valid assertion leaves to check: its `jti` is single use until `expires_at`.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub jti: String,
    pub expires_at: i64,
}

/// The client an assertion names (`sub`), read before any signature check
/// only to find the key to check it with.
pub fn claimed_client(assertion: &str) -> Option<String> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return None;
    }
    let payload = assertion.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

/// Checks an assertion from `client_id` with its key: the signature, `iss`
/// = `sub` = `client_id`, `aud` exactly `issuer` (this service's issuer
/// identifier) as a single string, `exp` present and at most
/// [`MAX_LIFETIME_SECS`] ahead, not expired, `jti` present. `None` for any
/// failure: the caller answers one `invalid_client` whatever went wrong.
///
/// The audience is as draft-ietf-oauth-rfc7523bis requires: the issuer
/// identifier as the sole value, not the token endpoint's URL (which RFC
/// 7523 §3 allowed) nor an array. A client talking to several authorization
/// servers can be made, by one that lies about its token endpoint in its
/// metadata, to sign an assertion for another's token endpoint URL; the
/// issuer it cannot be made to sign for (RFC 8414 §3.3 has the client check
/// it), and an array would let one assertion be good at several servers.
pub fn verify(
    assertion: &str,
    client_id: &str,
    key: &ClientKey,
    issuer: &str,
    now: i64,
) -> Option<Accepted> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return None;
    }
    let now_secs = u64::try_from(now).ok()?;
    let options = VerificationOptions {
        required_subject: Some(client_id.to_owned()),
        allowed_issuers: Some(HashSet::from([client_id.to_owned()])),
        allowed_audiences: Some(HashSet::from([issuer.to_owned()])),
        time_tolerance: Some(Duration::from_secs(CLOCK_SKEW_SECS)),
        max_token_length: Some(MAX_ASSERTION_BYTES),
        artificial_time: Some(UnixTimeStamp::from_secs(now_secs)),
        ..VerificationOptions::default()
    };
    let claims = key.verify(assertion, options)?;
    // jwt-simple accepts the audience also inside an array: here only as the string.
    if !matches!(&claims.audiences, Some(Audiences::AsString(aud)) if aud == issuer) {
        return None;
    }
    // jwt-simple checks `exp` only when present: here it is required, and short.
    let exp = claims.expires_at?.as_secs();
    if exp > now_secs + MAX_LIFETIME_SECS + CLOCK_SKEW_SECS {
        return None;
    }
    let jti = claims
        .jwt_id
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)?;
    // Remembered until no instance's clock could still take the assertion as unexpired.
    let expires_at = i64::try_from(exp + JTI_RETENTION_PAST_EXP_SECS).ok()?;
    Some(Accepted { jti, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_900_000_000;
    /// The issuer identifier: the one audience.
    const AUD: &str = "https://auth.example";

    fn assertion(
        kp: &ES256KeyPair,
        iss: &str,
        sub: &str,
        aud: &str,
        exp_in: Option<u64>,
        jti: Option<&str>,
    ) -> String {
        assertion_for(
            kp,
            iss,
            sub,
            Claims::create(Duration::from_secs(60)).with_audience(aud),
            exp_in,
            jti,
        )
    }

    /// An assertion with the audience already in `c`.
    fn assertion_for(
        kp: &ES256KeyPair,
        iss: &str,
        sub: &str,
        c: JWTClaims<NoCustomClaims>,
        exp_in: Option<u64>,
        jti: Option<&str>,
    ) -> String {
        let mut c = c.with_issuer(iss).with_subject(sub);
        c.issued_at = Some(UnixTimeStamp::from_secs(NOW as u64));
        c.invalid_before = None;
        c.expires_at = exp_in.map(|s| UnixTimeStamp::from_secs(NOW as u64 + s));
        c.jwt_id = jti.map(str::to_owned);
        kp.sign(c).unwrap()
    }

    /// The JWK an admin registers for this key pair.
    pub fn es256_jwk(kp: &ES256KeyPair) -> Value {
        let point = kp.public_key().public_key().to_bytes_uncompressed();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})
    }

    fn key_of(kp: &ES256KeyPair) -> ClientKey {
        ClientKey::from_jwk(&es256_jwk(kp)).unwrap()
    }

    #[test]
    fn a_valid_assertion_is_accepted_once_its_claims_check_out() {
        let kp = ES256KeyPair::generate();
        let key = key_of(&kp);
        let aud = AUD;
        let ok = assertion(&kp, "billing", "billing", AUD, Some(60), Some("j1"));
        assert_eq!(claimed_client(&ok).as_deref(), Some("billing"));
        assert_eq!(
            verify(&ok, "billing", &key, aud, NOW),
            Some(Accepted {
                jti: "j1".into(),
                expires_at: NOW + 60 + 30 + 60
            })
        );
        let token_endpoint = format!("{AUD}/v1/oauth/token");
        let array = |auds: &[&str]| {
            Claims::create(Duration::from_secs(60))
                .with_audiences(auds.iter().copied().collect::<HashSet<_>>())
        };
        for (why, bad) in [
            (
                "another client",
                assertion(&kp, "billing", "billing", AUD, Some(60), Some("j")),
            ),
            (
                "iss is not sub",
                assertion(&kp, "other", "billing", AUD, Some(60), Some("j")),
            ),
            (
                "another audience",
                assertion(
                    &kp,
                    "billing",
                    "billing",
                    "https://elsewhere",
                    Some(60),
                    Some("j"),
                ),
            ),
            (
                "the token endpoint",
                assertion(
                    &kp,
                    "billing",
                    "billing",
                    &token_endpoint,
                    Some(60),
                    Some("j"),
                ),
            ),
            (
                "the issuer in an array",
                assertion_for(
                    &kp,
                    "billing",
                    "billing",
                    array(&[AUD]),
                    Some(60),
                    Some("j"),
                ),
            ),
            (
                "the issuer and more",
                assertion_for(
                    &kp,
                    "billing",
                    "billing",
                    array(&[AUD, &token_endpoint]),
                    Some(60),
                    Some("j"),
                ),
            ),
            (
                "no audience",
                assertion_for(
                    &kp,
                    "billing",
                    "billing",
                    Claims::create(Duration::from_secs(60)),
                    Some(60),
                    Some("j"),
                ),
            ),
            (
                "no exp",
                assertion(&kp, "billing", "billing", AUD, None, Some("j")),
            ),
            (
                "exp too far ahead",
                assertion(&kp, "billing", "billing", AUD, Some(3600), Some("j")),
            ),
            (
                "no jti",
                assertion(&kp, "billing", "billing", AUD, Some(60), None),
            ),
        ] {
            let client = if why == "another client" {
                "payroll"
            } else {
                "billing"
            };
            assert_eq!(verify(&bad, client, &key, aud, NOW), None, "{why}");
        }
        assert_eq!(
            verify(&ok, "billing", &key, aud, NOW + 60 + 31),
            None,
            "expired"
        );
        let other = key_of(&ES256KeyPair::generate());
        assert_eq!(
            verify(&ok, "billing", &other, aud, NOW),
            None,
            "signed with another key"
        );
    }

    /// Its `jti` is remembered past the last second any instance accepts the
    /// assertion, by the margin between instances' clocks (a row is pruned
    /// once the pruning instance's clock reaches `expires_at`).
    #[test]
    fn a_used_jti_outlives_the_last_second_its_assertion_is_accepted() {
        let kp = ES256KeyPair::generate();
        let key = key_of(&kp);
        let a = assertion(&kp, "billing", "billing", AUD, Some(60), Some("j1"));
        let last = NOW + 60 + i64::try_from(CLOCK_SKEW_SECS).unwrap();
        let accepted = verify(&a, "billing", &key, AUD, last)
            .expect("accepted in the last second of the skew");
        assert_eq!(verify(&a, "billing", &key, AUD, last + 1), None);
        assert!(
            accepted.expires_at > last,
            "kept while the checking instance accepts it"
        );
        assert_eq!(
            accepted.expires_at,
            last + i64::try_from(INSTANCE_CLOCK_MARGIN_SECS).unwrap(),
            "and while one behind by less than the margin does"
        );
    }

    #[test]
    fn only_public_es256_and_eddsa_keys_register() {
        let ed = Ed25519KeyPair::generate();
        let x = URL_SAFE_NO_PAD.encode(ed.public_key().to_bytes());
        assert!(
            ClientKey::from_jwk(&serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x}))
                .is_ok()
        );
        let private = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "d": x});
        assert!(
            ClientKey::from_jwk(&private).is_err(),
            "a private key is refused"
        );
        assert!(ClientKey::from_jwk(&serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})).is_err());
        assert!(ClientKey::from_jwk(&serde_json::json!("not a jwk")).is_err());
        // A well-formed 2048-bit modulus: usable in a JWKS, not for a client.
        let mut n = vec![0xC1u8; 256];
        n[255] = 0x01;
        let jwk = serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"});
        assert!(
            ClientKey::from_jwk(&jwk).is_err(),
            "RS256 is not offered for clients"
        );
    }

    #[test]
    fn the_decoy_matches_the_assertions_algorithm_and_verifies_nothing() {
        let es = ES256KeyPair::generate();
        let a = assertion(&es, "billing", "billing", AUD, Some(60), Some("j"));
        assert!(matches!(ClientKey::decoy_for(&a), ClientKey::Es256(_)));
        assert_eq!(
            verify(&a, "billing", ClientKey::decoy_for(&a), AUD, NOW),
            None
        );
        let ed = Ed25519KeyPair::generate();
        let claims = Claims::create(Duration::from_secs(60))
            .with_issuer("billing")
            .with_subject("billing")
            .with_audience(AUD);
        let a = ed.sign(claims).unwrap();
        assert!(matches!(ClientKey::decoy_for(&a), ClientKey::EdDsa(_)));
        assert!(matches!(
            ClientKey::decoy_for("not a jwt"),
            ClientKey::Es256(_)
        ));
    }

    /// A registered key checks only assertions naming its algorithm; for
    /// another the decoy of that algorithm does the same work an unknown
    /// client's assertion costs (never a refusal before any signature check).
    #[test]
    fn a_key_takes_only_assertions_of_its_algorithm() {
        let es = ES256KeyPair::generate();
        let ed = Ed25519KeyPair::generate();
        let es_key = ClientKey::Es256(es.public_key());
        let ed_key = ClientKey::EdDsa(ed.public_key());
        let by_es = assertion(&es, "billing", "billing", AUD, Some(60), Some("j"));
        let by_ed = ed
            .sign(
                Claims::create(Duration::from_secs(60))
                    .with_issuer("billing")
                    .with_subject("billing")
                    .with_audience(AUD),
            )
            .unwrap();
        assert!(es_key.takes(&by_es) && !es_key.takes(&by_ed));
        assert!(ed_key.takes(&by_ed) && !ed_key.takes(&by_es));
        // jwt-simple's other name for EdDSA: the EdDSA decoy, like an EdDSA key.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"Ed25519","typ":"JWT"}"#);
        let renamed = format!("{header}.{}", by_ed.split_once('.').unwrap().1);
        assert!(
            ed_key.takes(&renamed) && matches!(ClientKey::decoy_for(&renamed), ClientKey::EdDsa(_))
        );
        assert!(!es_key.takes("not a jwt"));
    }
}
