//! An issuer withdraws its signing keys: the key set it serves next (a `200`
//! that is a key set, even one with no usable key) replaces the keys held,
//! drops the tokens verified with them from the cache, and their tokens are
//! refused as signed with an unknown key (401) — not as "no keys yet" (503):
//! keys were loaded, and withdrawn. An answer that is no key set keeps them.
//! A stream a withdrawn key's token opened ends at the next sweep.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_contract::revocation::RevocationFeed;
use authflow_contract::KeySet;
use authflow_filter_core::deny::DenyReason;
use authflow_filter_core::engine::{Engine, Outcome};
use authflow_filter_core::fetch::{jwks_answer, Answer, FeedBody};
use authflow_filter_core::{FilterConfig, ProviderId};
use jwt_simple::prelude::*;
use serde_json::json;
use support::{bearer, ISS};

const NOW: u64 = 1_900_000_000;
const NOW_MS: u64 = NOW * 1000;

fn engine() -> Engine {
    let config = json!({"providers": [{"name": "p", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
        "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
        "revocations": {"cluster": "auth", "path": "/v1/revocations"}}]});
    let mut engine = Engine::new(
        FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
        NOW_MS,
    );
    let empty = RevocationFeed {
        issuer: ISS.into(),
        cursor: "0".into(),
        snapshot: true,
        ..Default::default()
    };
    engine
        .apply_feed(ProviderId::FIRST, FeedBody::Json(empty), NOW_MS)
        .unwrap();
    engine
}

fn token(kp: &Ed25519KeyPair) -> String {
    support::user_token(kp, None, NOW - 10, NOW + 890)
}

/// The key set a `200` answer with `body` installs; `None` when the answer keeps the keys held.
fn served(status: u32, body: &str) -> Option<KeySet> {
    let bytes = body.as_bytes().to_vec();
    match jwks_answer(status, bytes.len(), |_| Some(bytes)) {
        Answer::Fresh(set, _) => Some(set),
        _ => None,
    }
}

fn denied(o: Outcome) -> (DenyReason, u32) {
    match o {
        Outcome::Deny(d) => (d.reason, d.response.status),
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn a_key_set_with_no_usable_key_withdraws_the_keys_held() {
    let kp = Ed25519KeyPair::generate().with_key_id("k1");
    let good = format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk());
    let p384 = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-384","kid":"k1","x":"{0}","y":"{0}"}}]}}"#,
        "A".repeat(64)
    );
    let without_kid = Ed25519KeyPair::generate();
    let good_without_kid = format!(r#"{{"keys":[{}]}}"#, without_kid.public_key().to_jwk());
    for withdrawn in [r#"{"keys":[]}"#, p384.as_str()] {
        let mut e = engine();
        e.set_keys(ProviderId::FIRST, served(200, &good).unwrap());
        let t = token(&kp);
        assert!(matches!(
            e.evaluate(&bearer(&t), NOW_MS, true),
            Outcome::Allow(_)
        ));
        assert_eq!(e.cache_len(), 1);

        // Errors keep the keys: no status but 200, no document but a key set.
        for (status, body) in [
            (410, r#"{"keys":[]}"#),
            (503, ""),
            (200, "{}"),
            (200, "[]"),
            (200, r#"{"keys":[]"#),
        ] {
            assert!(served(status, body).is_none(), "{status} {body}");
        }

        e.set_keys(ProviderId::FIRST, served(200, withdrawn).unwrap());
        assert_eq!(
            e.cache_len(),
            0,
            "{withdrawn}: the token verified with the withdrawn key is not cached any more"
        );
        // Its `kid` is unknown now: it may wait for the early refetch, then it is refused.
        assert_eq!(
            e.evaluate(&bearer(&t), NOW_MS, true),
            Outcome::AwaitKeys {
                provider: ProviderId::FIRST,
                unknown_kid: true
            }
        );
        assert_eq!(
            denied(e.evaluate(&bearer(&t), NOW_MS, false)),
            (DenyReason::UnknownKey, 401),
            "{withdrawn}: not 503, keys were loaded"
        );
        let Outcome::Deny(d) = e.evaluate(&bearer(&t), NOW_MS, false) else {
            unreachable!()
        };
        let challenge = d
            .response
            .headers
            .iter()
            .find(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .unwrap();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{challenge}"
        );

        // A token without `kid` has no key to try either.
        e.set_keys(ProviderId::FIRST, served(200, &good_without_kid).unwrap());
        let t2 = token(&without_kid);
        assert!(matches!(
            e.evaluate(&bearer(&t2), NOW_MS, true),
            Outcome::Allow(_)
        ));
        e.set_keys(ProviderId::FIRST, served(200, withdrawn).unwrap());
        assert_eq!(
            denied(e.evaluate(&bearer(&t2), NOW_MS, true)),
            (DenyReason::UnknownKey, 401)
        );

        // Published again: taken again.
        e.set_keys(ProviderId::FIRST, served(200, &good).unwrap());
        assert!(matches!(
            e.evaluate(&bearer(&t), NOW_MS, true),
            Outcome::Allow(_)
        ));
    }
}

/// The same keys served again (another worker's copy taken, a refresh that
/// could not be conditional) keep the verified tokens: only a set whose
/// keys differ — one removed, added, or replaced under its `kid` — drops them.
#[test]
fn the_same_keys_again_keep_the_cache_and_a_key_replaced_under_its_kid_drops_it() {
    let kp = Ed25519KeyPair::generate().with_key_id("k1");
    let good = format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk());
    let mut e = engine();
    e.set_keys(ProviderId::FIRST, served(200, &good).unwrap());
    let t = token(&kp);
    assert!(matches!(
        e.evaluate(&bearer(&t), NOW_MS, true),
        Outcome::Allow(_)
    ));
    assert_eq!(e.cache_len(), 1);
    e.set_keys(ProviderId::FIRST, served(200, &good).unwrap());
    assert_eq!(
        e.cache_len(),
        1,
        "the same keys: the tokens they verified stay cached"
    );

    let other = Ed25519KeyPair::generate().with_key_id("k1");
    let replaced = format!(r#"{{"keys":[{}]}}"#, other.public_key().to_jwk());
    e.set_keys(ProviderId::FIRST, served(200, &replaced).unwrap());
    assert_eq!(e.cache_len(), 0, "k1 is another key now");
    assert_eq!(
        denied(e.evaluate(&bearer(&t), NOW_MS, false)),
        (DenyReason::BadSignature, 401)
    );
}

/// The stream `kp`'s token opened, once a sweep has seen it (`allowed` and
/// first seen at `NOW_MS`).
fn stream_of(e: &mut Engine, kp: &Ed25519KeyPair) -> authflow_filter_core::streams::OpenStreams {
    let Outcome::Allow(allowed) = e.evaluate(&bearer(&token(kp)), NOW_MS, true) else {
        panic!("allowed")
    };
    let mut streams = authflow_filter_core::streams::OpenStreams::default();
    streams.opened(7, allowed.token.expect("the token that verified"));
    assert_eq!(streams.sweep(e, NOW_MS), [], "first seen");
    streams
}

fn key_set(keys: &[&Ed25519KeyPair]) -> KeySet {
    let jwks: Vec<String> = keys.iter().map(|k| k.public_key().to_jwk()).collect();
    served(200, &format!(r#"{{"keys":[{}]}}"#, jwks.join(","))).unwrap()
}

#[test]
fn an_open_stream_ends_when_the_key_that_signed_its_token_is_withdrawn() {
    use authflow_filter_core::streams::MIN_AGE_MS;
    // With its `kid` and without: a forger holding the leaked key leaves it out.
    for kp in [
        Ed25519KeyPair::generate().with_key_id("k1"),
        Ed25519KeyPair::generate(),
    ] {
        let next = Ed25519KeyPair::generate().with_key_id("k2");
        let mut e = engine();
        e.set_keys(ProviderId::FIRST, key_set(&[&kp]));
        let mut streams = stream_of(&mut e, &kp);
        e.set_keys(ProviderId::FIRST, key_set(&[&next]));
        assert_eq!(
            streams.sweep(&e, NOW_MS + MIN_AGE_MS),
            [(7, DenyReason::UnknownKey)],
            "the stream its withdrawn key's token opened still flows"
        );
    }
}

#[test]
fn an_open_stream_outlives_a_rotation_that_keeps_the_key_that_signed_its_token() {
    use authflow_filter_core::streams::MIN_AGE_MS;
    let kp = Ed25519KeyPair::generate().with_key_id("k1");
    let old = Ed25519KeyPair::generate().with_key_id("k0");
    let next = Ed25519KeyPair::generate().with_key_id("k2");
    let mut e = engine();
    e.set_keys(ProviderId::FIRST, key_set(&[&old, &kp]));
    let mut streams = stream_of(&mut e, &kp);
    // `k2` added, `k0` withdrawn, `k1` kept (moved to the end).
    e.set_keys(ProviderId::FIRST, key_set(&[&next, &kp]));
    assert_eq!(
        streams.sweep(&e, NOW_MS + MIN_AGE_MS),
        [],
        "ended by another key's rotation"
    );
    assert_eq!(streams.len(), 1);
}
