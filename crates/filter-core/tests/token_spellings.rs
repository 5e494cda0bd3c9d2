//! Other spellings of a token, and header tricks, against the whole
//! per-request decision. Each test states what an attacker sends and what
//! must happen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_contract::revocation::{RevocationFeed, RevokedToken};
use authflow_contract::AccessClaims;
use authflow_filter_core::deny::DenyReason;
use authflow_filter_core::engine::{Engine, Outcome};
use authflow_filter_core::fetch::FeedBody;
use authflow_filter_core::{FilterConfig, ProviderId, Request};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::json;

use support::ISS;
const NOW: u64 = 1_900_000_000;

/// P-256 group order n, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn config(algorithms: &[&str]) -> FilterConfig {
    let c = json!({
        "providers": [{
            "name": "test", "issuer": ISS, "audiences": ["api"], "algorithms": algorithms,
            "token_type": "at+jwt",
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations"}
        }],
        "routes": [{"match": {"prefix": "/"}, "policy": "authenticated"}]
    });
    FilterConfig::from_json(c.to_string().as_bytes()).unwrap()
}

fn engine(algorithms: &[&str], jwk: String) -> Engine {
    support::ready_engine(config(algorithms), &jwk, NOW * 1000)
}

fn claims() -> JWTClaims<AccessClaims> {
    let mut c = Claims::with_custom_claims(AccessClaims::default(), Duration::from_mins(15))
        .with_issuer(ISS)
        .with_subject("user-1")
        .with_audience("api")
        .with_jwt_id("jti-1");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW - 10));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 890));
    c
}

fn eval(engine: &mut Engine, token: &str) -> Outcome {
    let h = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), "/api".to_string()),
        (":authority".to_string(), "api".to_string()),
        ("authorization".to_string(), format!("Bearer {token}")),
    ];
    engine.evaluate(
        &Request::from_headers(h, Some("203.0.113.9:4000".into())),
        NOW * 1000 + 500,
        true,
    )
}

fn reason(o: &Outcome) -> Option<DenyReason> {
    match o {
        Outcome::Deny(d) => Some(d.reason),
        Outcome::Allow(_) => None,
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// n − s, big-endian (s in [1, n − 1]).
fn negate_mod_n(s: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(ORDER[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = (d + if d < 0 { 256 } else { 0 }) as u8;
    }
    out
}

fn with_signature(token: &str, sig: &[u8]) -> String {
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An attacker holding one ES256 token makes a second, different token
/// string for the same claims: (r, n − s). ES256 accepts high-S (as JWS and
/// the p256 crate do), so the variant is accepted; what matters is that it
/// is the *same* token for everything keyed on claims: a `jti` revocation
/// kills both spellings, cached or fresh.
#[test]
fn es256_high_s_twin_is_accepted_but_revoked_with_its_jti() {
    let kp = ES256KeyPair::generate().with_key_id("e1");
    let mut engine = engine(&["ES256"], kp.public_key().to_jwk());
    let token = kp
        .sign_with_options(
            claims(),
            &HeaderOptions {
                signature_type: Some("at+jwt".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let sig = URL_SAFE_NO_PAD
        .decode(token.rsplit_once('.').unwrap().1)
        .unwrap();
    let mut twin_sig = sig[..32].to_vec();
    twin_sig.extend(negate_mod_n(&sig[32..]));
    let twin = with_signature(&token, &twin_sig);
    assert_ne!(twin, token);
    assert_eq!(reason(&eval(&mut engine, &token)), None);
    assert_eq!(reason(&eval(&mut engine, &twin)), None, "high-S accepted");
    assert_eq!(engine.cache_len(), 2, "two cache entries, one token");
    let feed = RevocationFeed {
        issuer: ISS.into(),
        cursor: "1".into(),
        snapshot: true,
        revoked_tokens: vec![RevokedToken {
            jti: "jti-1".into(),
            expires_at: NOW + 900,
        }],
        ..Default::default()
    };
    engine
        .apply_feed(ProviderId::FIRST, FeedBody::Json(feed), NOW * 1000 + 100)
        .unwrap();
    for t in [&token, &twin] {
        assert_eq!(
            reason(&eval(&mut engine, t)),
            Some(DenyReason::TokenRevoked)
        );
    }
    // r or s out of range, or zero, never verify.
    for (r, s) in [
        (sig[..32].to_vec(), vec![0u8; 32]),
        (vec![0u8; 32], sig[32..].to_vec()),
        (sig[..32].to_vec(), ORDER.to_vec()),
        (ORDER.to_vec(), sig[32..].to_vec()),
    ] {
        let mut bad = r.clone();
        bad.extend(s);
        assert_eq!(
            reason(&eval(&mut engine, &with_signature(&token, &bad))),
            Some(DenyReason::BadSignature)
        );
    }
}

/// The same signature bytes spelled differently in base64url (padding,
/// non-zero trailing bits, standard alphabet) are refused before any key is
/// touched, so no second spelling of a token gets a cache entry of its own.
#[test]
fn a_signature_spelled_another_way_is_refused() {
    let kp = Ed25519KeyPair::generate().with_key_id("k1");
    let mut engine = engine(&["EdDSA"], kp.public_key().to_jwk());
    let token = kp
        .sign_with_options(
            claims(),
            &HeaderOptions {
                signature_type: Some("at+jwt".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(reason(&eval(&mut engine, &token)), None);
    let (input, sig) = token.rsplit_once('.').unwrap();
    // 64 bytes = 86 characters, the last one carrying 2 unused bits.
    let last = sig.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let v = alphabet.find(last).unwrap();
    let mut spellings = vec![format!("{sig}=="), format!("{sig}=")];
    for extra in 1..4 {
        let c = alphabet.chars().nth(v | extra).unwrap();
        spellings.push(format!("{}{c}", &sig[..sig.len() - 1]));
    }
    for s in spellings {
        let t = format!("{input}.{s}");
        assert_eq!(
            reason(&eval(&mut engine, &t)),
            Some(DenyReason::Malformed),
            "{s}"
        );
    }
    assert_eq!(engine.cache_len(), 1);
}

/// Header tricks on an otherwise validly signed token shape: a key in the
/// header, `crit`, `none`, HS256, an alg of another key type, a `kid` of
/// another key type's key.
#[test]
fn header_tricks_are_refused() {
    let kp = Ed25519KeyPair::generate().with_key_id("k1");
    let mut engine = engine(&["EdDSA"], kp.public_key().to_jwk());
    let payload = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(
            &json!({"iss": ISS, "aud": "api", "sub": "u", "exp": NOW + 60, "iat": NOW}),
        )
        .unwrap(),
    );
    let sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
    for (header, expected) in [
        (
            json!({"alg": "none", "typ": "at+jwt"}),
            DenyReason::AlgorithmNotAllowed,
        ),
        (
            json!({"alg": "HS256", "typ": "at+jwt"}),
            DenyReason::AlgorithmNotAllowed,
        ),
        (
            json!({"alg": "ES256", "typ": "at+jwt"}),
            DenyReason::AlgorithmNotAllowed,
        ),
        (
            json!({"alg": "eddsa", "typ": "at+jwt"}),
            DenyReason::AlgorithmNotAllowed,
        ),
        (json!({"alg": "EdDSA", "jwk": {}}), DenyReason::KeyInHeader),
        (
            json!({"alg": "EdDSA", "jku": "https://evil"}),
            DenyReason::KeyInHeader,
        ),
        (
            json!({"alg": "EdDSA", "x5u": "https://evil"}),
            DenyReason::KeyInHeader,
        ),
        (json!({"alg": "EdDSA", "x5c": []}), DenyReason::KeyInHeader),
        (
            json!({"alg": "EdDSA", "crit": ["exp"], "exp": 1}),
            DenyReason::KeyInHeader,
        ),
        (
            json!({"alg": "EdDSA", "kid": "k1"}),
            DenyReason::BadSignature,
        ),
    ] {
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        let t = format!("{h}.{payload}.{sig}");
        assert_eq!(reason(&eval(&mut engine, &t)), Some(expected), "{header}");
    }
    // Unsigned (`alg: none` with an empty signature).
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"at+jwt"}"#);
    assert_eq!(
        reason(&eval(&mut engine, &format!("{h}.{payload}."))),
        Some(DenyReason::AlgorithmNotAllowed)
    );
    // A header member spelled with an escape is the same member, and twice is refused.
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","\u0061lg":"none"}"#);
    assert_eq!(
        reason(&eval(&mut engine, &format!("{h}.{payload}.{sig}"))),
        Some(DenyReason::Malformed)
    );
}
