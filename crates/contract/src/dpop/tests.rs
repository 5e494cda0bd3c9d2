//! Proofs made with real keys by the proof maker ([`super::client`]: p256's
//! ECDSA and ed25519-dalek signers), then every way RFC 9449 §4.3 refuses one.

use super::client::ProofKey;
use super::*;
use crate::jwk;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

const NOW: u64 = 1_764_547_200;
const URI: &str = "https://api.example.com/v1/items";
const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln";

/// A client key: the proof maker's ([`super::client`]), with these tests' shorthands.
struct Signer(ProofKey);

impl Signer {
    fn es(seed: u8) -> Signer {
        Signer(ProofKey::es256(&[seed; 32]))
    }

    fn ed(seed: u8) -> Signer {
        Signer(ProofKey::ed25519(&[seed; 32]))
    }

    fn alg(&self) -> &'static str {
        self.0.algorithm().as_str()
    }

    fn public(&self) -> jwk::PublicKey {
        self.0.public()
    }

    fn jwk(&self) -> Value {
        self.0.header()["jwk"].clone()
    }

    /// A compact proof of `header` and `claims`, signed.
    fn proof_of(&self, header: &Value, claims: &Value) -> String {
        self.0.sign(header, claims)
    }

    fn header(&self) -> Value {
        self.0.header()
    }

    /// A genuine proof for GET `URI` with `TOKEN`, changed by `edit`.
    fn proof(&self, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let mut header = self.header();
        let mut claims = json!({
            "jti": "e1j3V_bKic8-LAEB", "htm": "GET", "htu": URI, "iat": NOW, "ath": access_token_hash(TOKEN),
        });
        edit(&mut header, &mut claims);
        self.proof_of(&header, &claims)
    }
}

/// A named edit of a proof's header or claims, and the refusal it must cause.
type Case = (&'static str, Box<dyn Fn(&mut Value)>, DpopError);

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

static TOKEN_ATH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| access_token_hash(TOKEN));

fn expect<'a>() -> Expectations<'a> {
    Expectations {
        method: "GET",
        uri: URI,
        now: NOW,
        max_age_secs: DEFAULT_MAX_AGE_SECS,
        future_skew_secs: DEFAULT_FUTURE_SKEW_SECS,
        algorithms: &SUPPORTED_ALGORITHMS,
        access_token_hash: Some(TOKEN_ATH.as_str()),
        bound_jkt: None,
        nonce: NonceCheck::NotRequired,
    }
}

fn verdict(proof: &str, expect: &Expectations<'_>) -> Result<CheckedProof, DpopError> {
    parse_proof(proof)?.check(expect)
}

fn signers() -> [Signer; 2] {
    [Signer::es(3), Signer::ed(4)]
}

#[test]
fn rfc7638_thumbprint_example() {
    // RFC 7638 §3.1: the RSA key of RFC 7517 Appendix A.1.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let key = jwk::PublicKey::RS256 {
        n: URL_SAFE_NO_PAD.decode(n).unwrap(),
    };
    assert_eq!(
        jwk_thumbprint(&key),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn rfc9449_examples() {
    // §4.2's proof key and §6.1's `jkt` for it.
    let x = URL_SAFE_NO_PAD
        .decode("l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs")
        .unwrap();
    let y = URL_SAFE_NO_PAD
        .decode("9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA")
        .unwrap();
    let key = jwk::PublicKey::ES256 {
        x: x.try_into().unwrap(),
        y: y.try_into().unwrap(),
    };
    assert_eq!(
        jwk_thumbprint(&key),
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    );
    // §7.1's access token and its `ath`.
    assert_eq!(
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

#[test]
fn genuine_proofs_check() {
    for signer in signers() {
        let proof = signer.proof(|_, _| {});
        let jkt = jwk_thumbprint(&signer.public());
        let checked = verdict(
            &proof,
            &Expectations {
                bound_jkt: Some(&jkt),
                ..expect()
            },
        )
        .unwrap();
        assert_eq!(
            checked,
            CheckedProof {
                jkt: jkt.clone(),
                jti: "e1j3V_bKic8-LAEB".into(),
                iat: NOW
            }
        );
        // The thumbprint does not depend on member order or extra public members in the proof's jwk.
        let reordered = signer.proof(|h, _| {
            let mut jwk = h["jwk"].as_object().unwrap().clone();
            jwk.insert("kid".into(), "k".into());
            jwk.insert("use".into(), "sig".into());
            h["jwk"] = Value::Object(jwk.into_iter().rev().collect());
        });
        assert_eq!(verdict(&reordered, &expect()).unwrap().jkt, jkt);
        // At the token endpoint no access token comes with the proof: no `ath` needed.
        let without_ath = signer.proof(|_, c| {
            c.as_object_mut().unwrap().remove("ath");
        });
        assert!(verdict(
            &without_ath,
            &Expectations {
                access_token_hash: None,
                ..expect()
            }
        )
        .is_ok());
    }
}

#[test]
fn htu_is_compared_after_normalization() {
    let signer = Signer::es(5);
    for htu in [
        "HTTPS://API.Example.COM:443/v1/items",
        "https://api.example.com/v1/items?x=1",
        "https://api.example.com/v1/./items#f",
    ] {
        let proof = signer.proof(|_, c| c["htu"] = htu.into());
        assert!(verdict(&proof, &expect()).is_ok(), "{htu}");
    }
    let proof = signer.proof(|_, _| {});
    for uri in [
        "https://api.example.com:443/v1/items?page=2",
        "HTTPS://api.EXAMPLE.com/v1/%69tems",
    ] {
        assert!(
            verdict(&proof, &Expectations { uri, ..expect() }).is_ok(),
            "{uri}"
        );
    }
    for uri in [
        "http://api.example.com/v1/items",
        "https://api.example.com/v1/items/",
        "https://api.example.com:8443/v1/items",
        "https://other.example.com/v1/items",
        "https://api.example.com/v1/other",
    ] {
        assert_eq!(
            verdict(&proof, &Expectations { uri, ..expect() }),
            Err(DpopError::UriMismatch),
            "{uri}"
        );
    }
}

#[test]
fn header_refusals() {
    let es = Signer::es(6);
    let cases: Vec<Case> = vec![
        (
            "typ JWT",
            Box::new(|h| h["typ"] = "JWT".into()),
            DpopError::WrongType,
        ),
        (
            "typ upper case",
            Box::new(|h| h["typ"] = "DPOP+JWT".into()),
            DpopError::WrongType,
        ),
        (
            "no typ",
            Box::new(|h| drop(h.as_object_mut().unwrap().remove("typ"))),
            DpopError::WrongType,
        ),
        (
            "alg none",
            Box::new(|h| h["alg"] = "none".into()),
            DpopError::UnsupportedAlgorithm,
        ),
        (
            "alg HS256",
            Box::new(|h| h["alg"] = "HS256".into()),
            DpopError::UnsupportedAlgorithm,
        ),
        (
            "alg RS256",
            Box::new(|h| h["alg"] = "RS256".into()),
            DpopError::UnsupportedAlgorithm,
        ),
        (
            "alg of another key type",
            Box::new(|h| h["alg"] = "EdDSA".into()),
            DpopError::InvalidKey,
        ),
        (
            "private jwk",
            Box::new(|h| h["jwk"]["d"] = URL_SAFE_NO_PAD.encode([3u8; 32]).into()),
            DpopError::InvalidKey,
        ),
        (
            "symmetric jwk",
            Box::new(|h| h["jwk"] = json!({"kty": "oct", "k": "AAAA"})),
            DpopError::InvalidKey,
        ),
        (
            "unknown curve",
            Box::new(|h| h["jwk"]["crv"] = "P-384".into()),
            DpopError::InvalidKey,
        ),
        (
            "unknown kty",
            Box::new(|h| h["jwk"]["kty"] = "XYZ".into()),
            DpopError::InvalidKey,
        ),
        (
            "off the curve",
            Box::new(|h| h["jwk"]["y"] = h["jwk"]["x"].clone()),
            DpopError::InvalidKey,
        ),
        (
            "no jwk",
            Box::new(|h| drop(h.as_object_mut().unwrap().remove("jwk"))),
            DpopError::InvalidKey,
        ),
        (
            "jwk for encryption",
            Box::new(|h| h["jwk"]["use"] = "enc".into()),
            DpopError::InvalidKey,
        ),
        (
            "critical extension",
            Box::new(|h| h["crit"] = json!(["b64"])),
            DpopError::Malformed,
        ),
    ];
    for (name, edit, expected) in cases {
        let proof = es.proof(|h, _| edit(h));
        assert_eq!(verdict(&proof, &expect()).unwrap_err(), expected, "{name}");
    }
    let ed = Signer::ed(7);
    let private = ed.proof(|h, _| h["jwk"]["d"] = URL_SAFE_NO_PAD.encode([7u8; 32]).into());
    assert_eq!(
        verdict(&private, &expect()).unwrap_err(),
        DpopError::InvalidKey
    );
    let rsa =
        ed.proof(|h, _| h["jwk"] = json!({"kty": "RSA", "e": "AQAB", "n": "u".repeat(342) + "w"}));
    assert_eq!(verdict(&rsa, &expect()).unwrap_err(), DpopError::InvalidKey);
}

#[test]
fn claim_refusals() {
    for signer in signers() {
        let cases: Vec<Case> = vec![
            (
                "other method",
                Box::new(|c| c["htm"] = "POST".into()),
                DpopError::MethodMismatch,
            ),
            (
                "method case",
                Box::new(|c| c["htm"] = "get".into()),
                DpopError::MethodMismatch,
            ),
            (
                "other URL",
                Box::new(|c| c["htu"] = "https://api.example.com/v1/admin".into()),
                DpopError::UriMismatch,
            ),
            (
                "relative htu",
                Box::new(|c| c["htu"] = "/v1/items".into()),
                DpopError::UriMismatch,
            ),
            (
                "stale",
                Box::new(|c| c["iat"] = (NOW - DEFAULT_MAX_AGE_SECS - 1).into()),
                DpopError::Stale,
            ),
            (
                "future",
                Box::new(|c| c["iat"] = (NOW + DEFAULT_FUTURE_SKEW_SECS + 1).into()),
                DpopError::IssuedInFuture,
            ),
            (
                "wrong ath",
                Box::new(|c| c["ath"] = access_token_hash("another token").into()),
                DpopError::AccessTokenHashMismatch,
            ),
            (
                "no ath",
                Box::new(|c| drop(c.as_object_mut().unwrap().remove("ath"))),
                DpopError::AccessTokenHashMismatch,
            ),
            (
                "no jti",
                Box::new(|c| drop(c.as_object_mut().unwrap().remove("jti"))),
                DpopError::Malformed,
            ),
            (
                "empty jti",
                Box::new(|c| c["jti"] = "".into()),
                DpopError::Malformed,
            ),
            (
                "long jti",
                Box::new(|c| c["jti"] = "j".repeat(MAX_JTI_LEN + 1).into()),
                DpopError::Malformed,
            ),
            (
                "no htm",
                Box::new(|c| drop(c.as_object_mut().unwrap().remove("htm"))),
                DpopError::Malformed,
            ),
            (
                "no htu",
                Box::new(|c| drop(c.as_object_mut().unwrap().remove("htu"))),
                DpopError::Malformed,
            ),
            (
                "no iat",
                Box::new(|c| drop(c.as_object_mut().unwrap().remove("iat"))),
                DpopError::Malformed,
            ),
            (
                "fractional iat",
                Box::new(|c| c["iat"] = (NOW as f64 + 0.5).into()),
                DpopError::Malformed,
            ),
            (
                "string iat",
                Box::new(|c| c["iat"] = NOW.to_string().into()),
                DpopError::Malformed,
            ),
            (
                "negative iat",
                Box::new(|c| c["iat"] = (-1).into()),
                DpopError::Malformed,
            ),
            (
                "numeric jti",
                Box::new(|c| c["jti"] = 7.into()),
                DpopError::Malformed,
            ),
        ];
        for (name, edit, expected) in cases {
            let proof = signer.proof(|_, c| edit(c));
            assert_eq!(
                verdict(&proof, &expect()).unwrap_err(),
                expected,
                "{} {name}",
                signer.alg()
            );
        }
        // The window's edges are inside it.
        for iat in [NOW - DEFAULT_MAX_AGE_SECS, NOW + DEFAULT_FUTURE_SKEW_SECS] {
            assert!(verdict(&signer.proof(|_, c| c["iat"] = iat.into()), &expect()).is_ok());
        }
        // A client clock 20 s fast (a browser's `Date.now()` is the machine's,
        // seldom synced to the second) made every proof of that client
        // `issued_in_future`, at sign-in and on every request, and nothing
        // it could do would help: tolerated, as an access token's `iat` is.
        assert!(verdict(
            &signer.proof(|_, c| c["iat"] = (NOW + 20).into()),
            &expect()
        )
        .is_ok());
    }
}

#[test]
fn signature_and_binding_refusals() {
    for signer in signers() {
        let proof = signer.proof(|_, _| {});
        // A bit flipped in the signature, or claims changed after signing.
        let (input, signature) = proof.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
        sig[10] ^= 1;
        let flipped = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(
            verdict(&flipped, &expect()).unwrap_err(),
            DpopError::BadSignature
        );
        let (header, _) = input.split_once('.').unwrap();
        let swapped_claims = json!({"jti": "other", "htm": "GET", "htu": URI, "iat": NOW, "ath": access_token_hash(TOKEN)});
        let swapped = format!("{header}.{}.{signature}", b64(&swapped_claims));
        assert_eq!(
            verdict(&swapped, &expect()).unwrap_err(),
            DpopError::BadSignature
        );
        // Signed by another key than the one in the header (a stolen token's proof made with the thief's key, claiming the victim's).
        let thief = if signer.alg() == "ES256" {
            Signer::es(99)
        } else {
            Signer::ed(99)
        };
        let mut header = signer.header();
        let claims = json!({"jti": "x", "htm": "GET", "htu": URI, "iat": NOW, "ath": access_token_hash(TOKEN)});
        let forged = thief.proof_of(&header, &claims);
        assert_eq!(
            verdict(&forged, &expect()).unwrap_err(),
            DpopError::BadSignature
        );
        // The thief's own key signs fine, but the token is bound to the victim's key.
        header["jwk"] = thief.jwk();
        let thiefs = thief.proof_of(&header, &claims);
        let victim_jkt = jwk_thumbprint(&signer.public());
        assert_eq!(
            verdict(
                &thiefs,
                &Expectations {
                    bound_jkt: Some(&victim_jkt),
                    ..expect()
                }
            )
            .unwrap_err(),
            DpopError::KeyMismatch
        );
        // An algorithm this deployment does not allow.
        let only_other = [if signer.alg() == "ES256" {
            jwk::Algorithm::EdDSA
        } else {
            jwk::Algorithm::ES256
        }];
        assert_eq!(
            verdict(
                &proof,
                &Expectations {
                    algorithms: &only_other,
                    ..expect()
                }
            )
            .unwrap_err(),
            DpopError::UnsupportedAlgorithm
        );
    }
}

#[test]
fn nonces_when_required() {
    let key = NonceKey::new(&[8u8; 32]).unwrap();
    let required = NonceCheck::Stateless {
        key: &key,
        window_secs: 300,
    };
    let with_nonce = || Expectations {
        nonce: required,
        ..expect()
    };
    for signer in signers() {
        let missing = signer.proof(|_, _| {});
        assert_eq!(
            verdict(&missing, &with_nonce()).unwrap_err(),
            DpopError::NonceMissing
        );
        let fresh = nonce::issue(&key, NOW - 20);
        let good = signer.proof(|_, c| c["nonce"] = fresh.clone().into());
        assert!(verdict(&good, &with_nonce()).is_ok());
        let expired = nonce::issue(&key, NOW - 400);
        let old = signer.proof(|_, c| c["nonce"] = expired.into());
        assert_eq!(
            verdict(&old, &with_nonce()).unwrap_err(),
            DpopError::NonceInvalid
        );
        let foreign = nonce::issue(&NonceKey::new(&[9u8; 32]).unwrap(), NOW);
        let forged = signer.proof(|_, c| c["nonce"] = foreign.into());
        assert_eq!(
            verdict(&forged, &with_nonce()).unwrap_err(),
            DpopError::NonceInvalid
        );
        // Not required: a nonce is ignored; a custom judge sees it.
        assert!(verdict(&forged, &expect()).is_ok());
        let judge = |n: &str| n == fresh;
        assert!(verdict(
            &good,
            &Expectations {
                nonce: NonceCheck::Custom(&judge),
                ..expect()
            }
        )
        .is_ok());
        // A bad signature is reported before a missing nonce.
        let (input, _) = missing.rsplit_once('.').unwrap();
        let unsigned = format!("{input}.{}", URL_SAFE_NO_PAD.encode([1u8; 64]));
        assert_eq!(
            verdict(&unsigned, &with_nonce()).unwrap_err(),
            DpopError::BadSignature
        );
    }
}

#[test]
fn malformed_and_oversized_inputs() {
    let good = Signer::ed(10).proof(|_, _| {});
    let (input, sig) = good.rsplit_once('.').unwrap();
    for bad in [
        "",
        "a.b",
        "a.b.c.d",
        &format!("{good}.x"),
        &format!("{input}.{sig}="),
        &format!("{input}.{}", &sig[..sig.len() - 2]),
        &format!("!!.{}", good.split_once('.').unwrap().1),
    ] {
        assert!(parse_proof(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        parse_proof(&format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 63]))).unwrap_err(),
        DpopError::BadSignature
    );
    let huge = Signer::ed(10).proof(|_, c| c["pad"] = "p".repeat(MAX_PROOF_BYTES).into());
    assert_eq!(parse_proof(&huge).unwrap_err(), DpopError::TooLarge);
    let not_json = format!(
        "{}.{}.{sig}",
        URL_SAFE_NO_PAD.encode("{"),
        URL_SAFE_NO_PAD.encode("{}")
    );
    assert_eq!(parse_proof(&not_json).unwrap_err(), DpopError::Malformed);
}

#[test]
fn a_member_named_twice_or_null_is_refused_though_signed() {
    for signer in signers() {
        let header = signer.header().to_string();
        let claims = json!({"jti": "j", "htm": "GET", "htu": URI, "iat": NOW, "ath": access_token_hash(TOKEN)}).to_string();
        let thief_jwk = (if signer.alg() == "ES256" {
            Signer::es(98)
        } else {
            Signer::ed(98)
        })
        .jwk();
        // Inside the `jwk`, the first `x` is another key's: the same choice one level down.
        let own_x = format!("\"x\":{}", signer.jwk()["x"]);
        assert!(
            header.contains(&own_x) && thief_jwk["x"] != signer.jwk()["x"],
            "{header}"
        );
        let thief_x = header.replacen(&own_x, &format!("\"x\":{},{own_x}", thief_jwk["x"]), 1);
        let cases = [
            // The first `jwk` is another key: a reader keeping the first would see another key than one keeping the last.
            (
                header.replacen('{', &format!("{{\"jwk\":{thief_jwk},"), 1),
                claims.clone(),
            ),
            (thief_x, claims.clone()),
            (
                header.replacen('{', "{\"alg\":\"none\",", 1),
                claims.clone(),
            ),
            (
                header.clone(),
                claims.replacen('{', "{\"htu\":\"https://evil.example/\",", 1),
            ),
            (
                header.clone(),
                claims.replacen('{', "{\"jti\":\"other\",", 1),
            ),
            (header.clone(), claims.replacen('{', "{\"nonce\":null,", 1)),
            (
                header.clone(),
                claims.replace(
                    &format!("\"ath\":\"{}\"", access_token_hash(TOKEN)),
                    "\"ath\":null",
                ),
            ),
        ];
        for (header, claims) in cases {
            let proof = signer.0.sign_text(&header, &claims);
            assert_eq!(
                parse_proof(&proof).unwrap_err(),
                DpopError::Malformed,
                "{header} {claims}"
            );
        }
        // The same texts without the repetition pass: only the repetition is refused.
        assert!(verdict(&signer.0.sign_text(&header, &claims), &expect()).is_ok());
    }
}

#[test]
fn errors_map_to_rfc9449_codes_without_detail() {
    for e in DpopError::ALL {
        let code = e.error_code();
        assert!(["invalid_dpop_proof", "use_dpop_nonce", "invalid_token"].contains(&code));
        let text = e.to_string();
        assert!(!text.contains(e.reason()), "{text}");
    }
    assert_eq!(DpopError::NonceMissing.error_code(), "use_dpop_nonce");
    assert_eq!(DpopError::BearerDowngrade.error_code(), "invalid_token");
    assert_eq!(DpopError::KeyMismatch.error_code(), "invalid_dpop_proof");
    let reasons: std::collections::HashSet<_> = DpopError::ALL.iter().map(|e| e.reason()).collect();
    assert_eq!(reasons.len(), DpopError::ALL.len());
    assert_eq!(algs_parameter(&SUPPORTED_ALGORITHMS), "ES256 EdDSA");
    assert_eq!(
        algs_parameter(&[jwk::Algorithm::EdDSA, jwk::Algorithm::RS256]),
        "EdDSA"
    );
}

#[test]
fn canonical_jwk_parses_back_to_the_same_key() {
    for signer in signers() {
        let text = canonical_jwk(&signer.public());
        let obj = crate::json::borrowed::Object::read(text.as_bytes()).unwrap();
        assert_eq!(jwk::public_signature_key(&obj), Some(signer.public()));
    }
}
