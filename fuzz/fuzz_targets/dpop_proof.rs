//! DPoP proofs (RFC 9449) into the contract's `parse_proof` and
//! `Proof::check`, shared by filter and service. Two kinds of input: raw
//! header values (seeds: genuine proofs), checked against a request made
//! from their own claims so that most reach the signature; and proofs signed
//! here with fixed keys over fuzzer-chosen header members and claims,
//! checked against a fuzzer-chosen request. Besides never panicking: whatever
//! parses is within the bounds; whatever checks was signed by its `jwk`
//! (decided again by the reference verifiers, p256 and ed25519-dalek), meets
//! every expectation taken one by one, has the thumbprint of its key, and
//! re-serializes consistently (canonical base64url segments, the key's
//! canonical JWK parses back to the same key, parsing again gives the same claims),
//! and names no member twice, at any depth (a member repeated before signing is refused).
//! The filter's reading (its proof keys kept prepared and their headers
//! remembered, across every input of the run) decides each input exactly as
//! the contract's fresh one does.
#![no_main]

use arbitrary::Arbitrary;
use authflow_contract::dpop::{
    access_token_hash, canonical_jwk, htu, jwk_thumbprint, nonce, parse_proof, Expectations, NonceCheck, NonceKey,
    Proof, MAX_HTM_LEN, MAX_HTU_LEN, MAX_JTI_LEN, MAX_NONCE_LEN, MAX_PROOF_BYTES, SUPPORTED_ALGORITHMS,
};
use authflow_contract::dpop::{parse_proof_with, DpopError};
use authflow_contract::json::borrowed::Object;
use authflow_contract::jwk::{public_signature_key, Algorithm, PublicKey};
use authflow_filter_core::signature::SignatureChecker;
use authflow_fuzz::json_names::{member_names, names_a_member_twice};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use serde_json::{json, Value};

const NOW: u64 = 1_764_547_200;
const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln";

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Raw(&'a str),
    Signed(Signed<'a>),
}

#[derive(Arbitrary, Debug)]
struct Signed<'a> {
    eddsa: bool,
    /// Header members set over the genuine ones (`typ`, `alg`, `jwk`, `jwk.<member>`), as JSON text.
    header_edits: Vec<(&'a str, &'a str)>,
    jti: &'a str,
    htm: &'a str,
    htu: &'a str,
    iat_offset: i16,
    ath: Option<&'a str>,
    /// Use the hash of the token as `ath`.
    genuine_ath: bool,
    nonce_age: Option<u16>,
    /// The request: method, URI, whether a token and a nonce are required.
    method: &'a str,
    uri: &'a str,
    with_token: bool,
    require_nonce: bool,
    bind_to_key: bool,
    /// A member written once more at the start of the header or the claims, before signing.
    repeat: Option<Repeat<'a>>,
}

#[derive(Arbitrary, Debug)]
struct Repeat<'a> {
    in_claims: bool,
    /// Which of the object's members is written again (by position).
    member: u8,
    /// Its second value: this JSON text, or this text as a JSON string.
    value: &'a str,
}

fn es_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap()
}

fn ed_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

fn public_of(eddsa: bool) -> PublicKey {
    if eddsa {
        PublicKey::EdDSA(ed_key().verifying_key().to_bytes())
    } else {
        let point = es_key().verifying_key().to_sec1_point(false);
        let b = point.as_bytes();
        PublicKey::ES256 { x: b[1..33].try_into().unwrap(), y: b[33..].try_into().unwrap() }
    }
}

fn nonce_key() -> NonceKey {
    NonceKey::new(&[5u8; 32]).unwrap()
}

/// The reference verifiers' decision on a proof's signature.
fn reference_verifies(proof: &Proof) -> bool {
    match &proof.key {
        PublicKey::EdDSA(x) => {
            let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(x) else { return false };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(proof.signature()) else { return false };
            key.verify_strict(proof.signing_input(), &sig).is_ok()
        }
        PublicKey::ES256 { x, y } => {
            let sec1 = PublicKey::sec1_uncompressed(x, y);
            let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1) else { return false };
            let Ok(sig) = p256::ecdsa::Signature::from_slice(proof.signature()) else { return false };
            key.verify(proof.signing_input(), &sig).is_ok()
        }
        PublicKey::RS256 { .. } => false,
    }
}

/// What holds for every proof that parses.
fn parsed_invariants(compact: &str, proof: &Proof) {
    assert!(compact.len() <= MAX_PROOF_BYTES);
    // No member is named twice, at any depth: no other reader can see another key, algorithm or claim.
    for part in compact.split('.').take(2) {
        let json = URL_SAFE_NO_PAD.decode(part).unwrap();
        assert!(member_names(&json).is_some(), "a parsed part is a JSON object");
        assert!(!names_a_member_twice(&json), "a proof with a member named twice parsed: {:?}", member_names(&json));
    }
    let c = &proof.claims;
    assert!(!c.jti.is_empty() && c.jti.len() <= MAX_JTI_LEN);
    assert!(!c.htm.is_empty() && c.htm.len() <= MAX_HTM_LEN);
    assert!(!c.htu.is_empty() && c.htu.len() <= MAX_HTU_LEN);
    assert!(c.nonce.as_ref().is_none_or(|n| n.len() <= MAX_NONCE_LEN));
    assert!(SUPPORTED_ALGORITHMS.contains(&proof.algorithm));
    assert_eq!(proof.key.algorithm(), proof.algorithm);
    assert_eq!(proof.signature().len(), 64);
}

/// What holds for every proof that checks.
fn checked_invariants(compact: &str, proof: &Proof, expect: &Expectations<'_>, jkt: &str) {
    assert!(reference_verifies(proof), "a proof checked that its key did not sign");
    let c = &proof.claims;
    assert_eq!(c.htm, expect.method);
    assert!(htu::normalize(&c.htu).is_some());
    assert_eq!(htu::normalize(&c.htu), htu::normalize(expect.uri));
    assert!(c.iat.saturating_add(expect.max_age_secs) >= expect.now && c.iat <= expect.now.saturating_add(expect.future_skew_secs));
    if let Some(hash) = expect.access_token_hash {
        assert_eq!(c.ath.as_deref(), Some(hash));
        assert_eq!(hash, access_token_hash(TOKEN), "the only token these proofs are sent with");
    }
    if let Some(bound) = expect.bound_jkt {
        assert_eq!(bound, jkt);
    }
    if let NonceCheck::Stateless { key, window_secs } = expect.nonce {
        assert!(nonce::check(key, c.nonce.as_deref().unwrap_or_default(), expect.now, window_secs));
    }
    // Re-serialization: the thumbprint is the key's, its canonical JWK is the same key,
    // the segments are canonical base64url, and parsing again gives the same proof.
    assert_eq!(jkt, jwk_thumbprint(&proof.key));
    let jwk_text = canonical_jwk(&proof.key);
    let jwk = Object::read(jwk_text.as_bytes()).unwrap();
    assert_eq!(public_signature_key(&jwk).as_ref(), Some(&proof.key));
    for segment in compact.split('.') {
        assert_eq!(URL_SAFE_NO_PAD.encode(URL_SAFE_NO_PAD.decode(segment).unwrap()), segment);
    }
    let again = parse_proof(compact).unwrap();
    assert_eq!(again.claims, proof.claims);
    assert_eq!(again.key, proof.key);
}

thread_local! {
    /// The filter's keys, kept for the whole run: headers remembered from one input serve the next.
    static KEPT: SignatureChecker = SignatureChecker::own_only();
}

/// The filter's reading of `compact` gives what the contract's fresh one gave,
/// and so does its check against `expect`.
fn kept_reads_alike(compact: &str, fresh: &Result<Proof, DpopError>, expect: Option<&Expectations<'_>>) {
    KEPT.with(|kept| {
        let again = parse_proof_with(compact, kept);
        match (fresh, &again) {
            (Ok(a), Ok(b)) => {
                assert_eq!((a.algorithm, &a.key, &a.claims), (b.algorithm, &b.key, &b.claims));
                assert_eq!((a.signing_input(), a.signature()), (b.signing_input(), b.signature()));
                if let Some(expect) = expect {
                    assert_eq!(a.check(expect), b.check_with(expect, kept), "kept keys decided a proof otherwise");
                }
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("kept keys read a proof otherwise: {fresh:?} / {again:?}"),
        }
    });
}

fn raw(compact: &str) {
    let fresh = parse_proof(compact);
    let Ok(proof) = fresh else {
        kept_reads_alike(compact, &fresh, None);
        return;
    };
    parsed_invariants(compact, &proof);
    // A request made from the proof's own claims: what is left to decide is mostly the signature.
    let token_hash = access_token_hash(TOKEN);
    let expect = Expectations {
        method: &proof.claims.htm,
        uri: &proof.claims.htu,
        now: proof.claims.iat,
        max_age_secs: 60,
        future_skew_secs: 5,
        algorithms: &SUPPORTED_ALGORITHMS,
        access_token_hash: proof.claims.ath.is_some().then_some(token_hash.as_str()),
        bound_jkt: None,
        nonce: NonceCheck::NotRequired,
    };
    kept_reads_alike(compact, &Ok(proof.clone()), Some(&expect));
    if let Ok(checked) = proof.check(&expect) {
        checked_invariants(compact, &proof, &expect, &checked.jkt);
    } else {
        let unsigned = Expectations { access_token_hash: None, ..expect };
        if proof.check(&unsigned).is_err() && htu::normalize(&proof.claims.htu).is_some() {
            assert!(!reference_verifies(&proof), "a genuine proof for its own request was refused");
        }
    }
}

fn signed(input: &Signed<'_>) {
    let public = public_of(input.eddsa);
    let mut header = json!({"typ": "dpop+jwt", "alg": if input.eddsa { "EdDSA" } else { "ES256" }, "jwk": serde_json::from_str::<Value>(&canonical_jwk(&public)).unwrap()});
    for (name, value) in input.header_edits.iter().take(4) {
        let Ok(value) = serde_json::from_str::<Value>(value) else { continue };
        match name.strip_prefix("jwk.") {
            Some(member) => header["jwk"][member] = value,
            None => header[*name] = value,
        }
    }
    let mut claims = json!({"jti": input.jti, "htm": input.htm, "htu": input.htu, "iat": NOW.saturating_add_signed(input.iat_offset.into())});
    if input.genuine_ath {
        claims["ath"] = access_token_hash(TOKEN).into();
    } else if let Some(ath) = input.ath {
        claims["ath"] = ath.into();
    }
    let nonce_key = nonce_key();
    if let Some(age) = input.nonce_age {
        claims["nonce"] = nonce::issue(&nonce_key, NOW.saturating_sub(age.into())).into();
    }
    let (mut header_text, mut claims_text) = (header.to_string(), claims.to_string());
    let mut repeated = false;
    if let Some(r) = &input.repeat {
        let (object, text) = if r.in_claims { (&claims, &mut claims_text) } else { (&header, &mut header_text) };
        let names: Vec<&String> = object.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        if let Some(name) = names.get(usize::from(r.member) % names.len().max(1)) {
            let value = serde_json::from_str::<Value>(r.value).unwrap_or_else(|_| Value::from(r.value));
            *text = text.replacen('{', &format!("{{{}:{value},", Value::from(name.as_str())), 1);
            repeated = true;
        }
    }
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(&header_text), URL_SAFE_NO_PAD.encode(&claims_text));
    let signature = if input.eddsa {
        ed25519_dalek::Signer::sign(&ed_key(), signing_input.as_bytes()).to_bytes().to_vec()
    } else {
        let s: p256::ecdsa::Signature = es_key().sign(signing_input.as_bytes());
        s.to_bytes().to_vec()
    };
    let compact = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let fresh = parse_proof(&compact);
    let Ok(proof) = fresh else {
        kept_reads_alike(&compact, &fresh, None);
        return;
    };
    assert!(!repeated, "a proof signed with a member named twice parsed");
    parsed_invariants(&compact, &proof);
    let jkt = jwk_thumbprint(&public_of(input.eddsa));
    let token_hash = access_token_hash(TOKEN);
    let expect = Expectations {
        method: input.method,
        uri: input.uri,
        now: NOW,
        max_age_secs: 60,
        future_skew_secs: 5,
        algorithms: &SUPPORTED_ALGORITHMS,
        access_token_hash: input.with_token.then_some(token_hash.as_str()),
        bound_jkt: input.bind_to_key.then_some(jkt.as_str()),
        nonce: if input.require_nonce { NonceCheck::Stateless { key: &nonce_key, window_secs: 300 } } else { NonceCheck::NotRequired },
    };
    kept_reads_alike(&compact, &Ok(proof.clone()), Some(&expect));
    if let Ok(checked) = proof.check(&expect) {
        checked_invariants(&compact, &proof, &expect, &checked.jkt);
        // Our key signed it, so the key in the header must be ours.
        assert_eq!(checked.jkt, jkt);
        assert!(matches!(proof.algorithm, Algorithm::ES256 | Algorithm::EdDSA));
    }
}

fuzz_target!(|input: Input<'_>| {
    match input {
        Input::Raw(compact) => raw(compact),
        Input::Signed(s) => signed(&s),
    }
});
