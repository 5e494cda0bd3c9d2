//! The whole per-request decision on the host, with real signed tokens.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_contract::fingerprint::{FingerprintInput, DEVICE_HEADER};
use authflow_contract::revocation::{BannedSubject, RevocationFeed, RevokedToken};
use authflow_contract::{claims, AccessClaims, KeySet};
use authflow_filter_core::deny::DenyReason;
use authflow_filter_core::engine::{Awaited, Decision, Engine, Outcome, ProviderState};
use authflow_filter_core::fetch::{FeedBody, KeyNeed};
use authflow_filter_core::revocation_sync::FreshStamp;
use authflow_filter_core::{FilterConfig, ProviderId, Request};
use jwt_simple::prelude::*;
use serde_json::json;

use support::{load_empty_revocation_list, ISS};
const NOW: u64 = 1_900_000_000;

struct Fixture {
    kp: Ed25519KeyPair,
    engine: Engine,
}

fn config(extra: serde_json::Value) -> FilterConfig {
    FilterConfig::from_json(config_json(extra).to_string().as_bytes()).unwrap()
}

fn config_json(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({
        "providers": [{
            "name": "test", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations"}
        }],
        "routes": [
            {"match": {"prefix": "/public"}, "policy": "public"},
            {"match": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/write"}, "policy": {"scopes_all": ["write"]}}
        ],
        "identity_headers": {"subject": "x-auth-user", "roles": "x-auth-roles", "session": "x-auth-session", "claims": {"org.team": "x-auth-team"}}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn fixture(extra: serde_json::Value) -> Fixture {
    let kp = Ed25519KeyPair::generate().with_key_id("k1");
    let engine = support::ready_engine(config(extra), &kp.public_key().to_jwk(), NOW * 1000);
    Fixture { kp, engine }
}

/// The test provider's keys and revocation list, as the background side holds them.
fn first_provider(engine: &mut Engine) -> &mut ProviderState {
    engine.provider_mut(ProviderId::FIRST).unwrap()
}

fn claims(custom: AccessClaims) -> JWTClaims<AccessClaims> {
    let mut c = Claims::with_custom_claims(custom, Duration::from_mins(15))
        .with_issuer(ISS)
        .with_subject("user-1")
        .with_audience("api")
        .with_jwt_id("jti-1");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW - 10));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 890));
    c
}

fn default_claims() -> AccessClaims {
    AccessClaims {
        sid: "sess-1".into(),
        roles: vec!["user".into()],
        scope: "read".into(),
        dfp: None,
        client_id: None,
        cnf: None,
    }
}

impl Fixture {
    fn sign(&self, c: JWTClaims<AccessClaims>) -> String {
        self.kp.sign(c).unwrap()
    }
    fn token(&self) -> String {
        self.sign(claims(default_claims()))
    }
    /// The verified token a request with the default token was let through with.
    fn let_through(&mut self) -> std::rc::Rc<authflow_filter_core::verify::VerifiedToken> {
        let bearer = format!("Bearer {}", self.token());
        let Outcome::Allow(allowed) = self.eval("/api", &[("authorization", &bearer)]) else {
            panic!("allowed");
        };
        allowed.token.expect("the token that verified")
    }
    fn eval(&mut self, path: &str, headers: &[(&str, &str)]) -> Outcome {
        let mut h = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), "api".to_string()),
        ];
        h.extend(headers.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        self.engine.evaluate(
            &Request::from_headers(h, Some("203.0.113.9:4000".into())),
            NOW * 1000 + 500,
            true,
        )
    }
}

fn denied(o: &Outcome) -> (DenyReason, u32) {
    match o {
        Outcome::Deny(d) => (d.reason, d.response.status),
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn header<'a>(o: &'a Outcome, name: &str) -> Option<&'a str> {
    match o {
        Outcome::Allow(a) => a
            .identity_headers()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str()),
        other => panic!("expected allow, got {other:?}"),
    }
}

#[test]
fn valid_token_is_allowed_with_identity_and_cached() {
    let mut f = fixture(json!({}));
    let t = f.token();
    let bearer = format!("Bearer {t}");
    let o = f.eval("/api", &[("authorization", &bearer)]);
    assert_eq!(header(&o, "x-auth-user"), Some("user-1"));
    assert_eq!(header(&o, "x-auth-roles"), Some("user"));
    assert_eq!(header(&o, "x-auth-session"), Some("sess-1"));
    let Outcome::Allow(a) = f.eval("/api", &[("authorization", &bearer)]) else {
        panic!()
    };
    assert!(a.notes.cache_hit);
}

#[test]
fn nested_claims_map_to_headers() {
    #[derive(Serialize, Deserialize)]
    struct WithOrg {
        sid: String,
        org: serde_json::Value,
    }
    let mut f = fixture(json!({}));
    let mut c = Claims::with_custom_claims(
        WithOrg {
            sid: "s".into(),
            org: json!({"team": "blue"}),
        },
        Duration::from_mins(5),
    )
    .with_issuer(ISS)
    .with_subject("u")
    .with_audience("api");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 300));
    let t = f.kp.sign(c).unwrap();
    let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(header(&o, "x-auth-team"), Some("blue"));
}

#[test]
fn missing_token_and_public_routes() {
    let mut f = fixture(json!({}));
    assert_eq!(
        denied(&f.eval("/api", &[])),
        (DenyReason::MissingToken, 401)
    );
    assert!(matches!(f.eval("/public/x", &[]), Outcome::Allow(_)));
    let t = f.token();
    let o = f.eval("/public/x", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(
        header(&o, "x-auth-user"),
        Some("user-1"),
        "a valid token on a public route still yields identity"
    );
    let o = f.eval("/public/x", &[("authorization", "Bearer garbage")]);
    assert_eq!(header(&o, "x-auth-user"), None);
}

#[test]
fn time_and_audience_checks() {
    let mut f = fixture(json!({}));
    let mut c = claims(default_claims());
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 100));
    let t = f.sign(c);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {t}"))])).0,
        DenyReason::Expired
    );
    let mut c = claims(default_claims());
    c.invalid_before = Some(UnixTimeStamp::from_secs(NOW + 100));
    let t = f.sign(c);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {t}"))])).0,
        DenyReason::NotYetValid
    );
    let mut c = claims(default_claims());
    c.audiences = Some(Audiences::AsString("other".into()));
    let t = f.sign(c);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {t}"))])).0,
        DenyReason::WrongAudience
    );
    let mut c = claims(default_claims());
    c.expires_at = None;
    let t = f.sign(c);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {t}"))])).0,
        DenyReason::MissingClaim
    );
    let mut c = claims(default_claims());
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 3 * 86400));
    let t = f.sign(c);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {t}"))])).0,
        DenyReason::LifetimeTooLong
    );
}

#[test]
fn cached_token_still_expires() {
    let mut f = fixture(json!({}));
    let mut c = claims(default_claims());
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 1));
    let t = f.sign(c);
    let bearer = format!("Bearer {t}");
    assert!(matches!(
        f.eval("/api", &[("authorization", &bearer)]),
        Outcome::Allow(_)
    ));
    let h = vec![
        (":path".to_string(), "/api".to_string()),
        ("authorization".to_string(), bearer),
    ];
    let later = f
        .engine
        .evaluate(&Request::from_headers(h, None), (NOW + 120) * 1000, true);
    assert_eq!(denied(&later).0, DenyReason::Expired);
}

/// Finding: an `aud` list was searched for the provider's audience among
/// its strings only, so `["api", 7]` passed. RFC 7519 §4.1.3: `aud` is a
/// string or a list of strings; any other type is refused, as the other
/// claims' wrong types are, and not read as absent.
#[test]
fn an_audience_of_another_type_is_refused_not_skipped() {
    let mut f = fixture(json!({}));
    let sign = |f: &Fixture, aud: serde_json::Value| {
        let mut c = Claims::with_custom_claims(
            json!({"aud": aud, "sid": "sess-1", "roles": ["user"]}),
            Duration::from_mins(15),
        )
        .with_issuer(ISS)
        .with_subject("user-1");
        c.issued_at = Some(UnixTimeStamp::from_secs(NOW - 10));
        c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 890));
        f.kp.sign(c).unwrap()
    };
    for aud in [
        json!(["api", 7]),
        json!(["api", {"x": 1}]),
        json!(["api", null]),
        json!([]),
        json!(7),
        json!({"api": true}),
    ] {
        let t = sign(&f, aud.clone());
        assert_eq!(
            denied(&f.eval("/api", &[("authorization", &format!("Bearer {t}"))])),
            (DenyReason::Malformed, 401),
            "{aud}"
        );
    }
    let t = sign(&f, json!(["other", "api"]));
    assert!(matches!(
        f.eval("/api", &[("authorization", &format!("Bearer {t}"))]),
        Outcome::Allow(_)
    ));
}

#[test]
fn header_attacks_are_refused() {
    let mut f = fixture(json!({}));
    let b64 = |s: &str| base64_url(s.as_bytes());
    let payload = b64(&json!({"iss": ISS, "sub": "x", "aud": "api", "exp": NOW + 100}).to_string());
    let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), payload);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {none}"))])).0,
        DenyReason::AlgorithmNotAllowed
    );
    let hs = format!("{}.{}.c2ln", b64(r#"{"alg":"HS256"}"#), payload);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {hs}"))])).0,
        DenyReason::AlgorithmNotAllowed
    );
    let jwk = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"EdDSA","jwk":{"kty":"OKP"}}"#),
        payload
    );
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {jwk}"))])).0,
        DenyReason::KeyInHeader
    );
    let null_jwk = format!("{}.{}.c2ln", b64(r#"{"alg":"EdDSA","jwk":null}"#), payload);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {null_jwk}"))])).0,
        DenyReason::KeyInHeader
    );
    // A header member named twice: refused before any key is looked at (RFC 7515 §4).
    for twice in [
        r#"{"alg":"EdDSA","alg":"EdDSA"}"#,
        r#"{"alg":"EdDSA","kid":"a","kid":"b"}"#,
        r#"{"alg":"EdDSA","typ":"JWT","typ":"at+jwt"}"#,
    ] {
        let token = format!("{}.{}.c2ln", b64(twice), payload);
        assert_eq!(
            denied(&f.eval("/api", &[("authorization", &format!("Bearer {token}"))])),
            (DenyReason::Malformed, 401),
            "{twice}"
        );
    }
    // And a claim named twice (RFC 7519 §4): no reader may take another `sub` than the filter did.
    let header = f.token().split('.').next().unwrap().to_owned();
    let twice = b64(&format!(
        r#"{{"iss":"{ISS}","sub":"x","aud":"api","exp":{},"sub":"admin"}}"#,
        NOW + 100
    ));
    let token = format!("{header}.{twice}.c2ln");
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {token}"))])),
        (DenyReason::Malformed, 401)
    );
    let t = f.token();
    let mut parts: Vec<&str> = t.split('.').collect();
    let forged_payload = b64(
        &json!({"iss": ISS, "sub": "admin", "aud": "api", "exp": NOW + 100, "sid": "s"})
            .to_string(),
    );
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {forged}"))])).0,
        DenyReason::BadSignature
    );
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", "Bearer not-a-jwt")])),
        (DenyReason::Malformed, 401)
    );
    for empty_part in [
        format!(".{payload}.c2ln"),
        format!("{}..c2ln", b64(r#"{"alg":"EdDSA"}"#)),
    ] {
        assert_eq!(
            denied(&f.eval(
                "/api",
                &[("authorization", &format!("Bearer {empty_part}"))]
            )),
            (DenyReason::Malformed, 401),
            "{empty_part}"
        );
    }
    let huge = "a".repeat(9000);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {huge}"))])).0,
        DenyReason::TokenTooLarge
    );
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn unknown_kid_and_no_keys_wait_then_fail() {
    let mut f = fixture(json!({}));
    let other = Ed25519KeyPair::generate().with_key_id("k2");
    let t = other.sign(claims(default_claims())).unwrap();
    let bearer = format!("Bearer {t}");
    assert_eq!(
        f.eval("/api", &[("authorization", &bearer)]),
        Outcome::AwaitKeys {
            provider: ProviderId::FIRST,
            unknown_kid: true
        }
    );
    let h = vec![
        (":path".to_string(), "/api".to_string()),
        ("authorization".to_string(), bearer),
    ];
    assert_eq!(
        denied(
            &f.engine
                .evaluate(&Request::from_headers(h, None), NOW * 1000, false)
        )
        .0,
        DenyReason::UnknownKey
    );

    let mut cold = Engine::new(config(json!({})), NOW * 1000);
    let t = f.token();
    let h = vec![
        (":path".to_string(), "/api".to_string()),
        ("authorization".to_string(), format!("Bearer {t}")),
    ];
    let req = Request::from_headers(h, None);
    assert_eq!(
        cold.evaluate(&req, NOW * 1000, true),
        Outcome::AwaitKeys {
            provider: ProviderId::FIRST,
            unknown_kid: false
        }
    );
    assert_eq!(
        denied(&cold.evaluate(&req, NOW * 1000, false)),
        (DenyReason::KeysUnavailable, 503)
    );
}

#[test]
fn a_wait_names_the_provider_and_what_it_lacks_and_decide_now_never_waits() {
    let mut f = fixture(json!({}));
    let other = Ed25519KeyPair::generate().with_key_id("k2");
    let unknown_kid = Request::from_headers(
        vec![
            (":path".to_string(), "/api".to_string()),
            (
                "authorization".to_string(),
                format!("Bearer {}", other.sign(claims(default_claims())).unwrap()),
            ),
        ],
        None,
    );
    let awaited = f.engine.evaluate(&unknown_kid, NOW * 1000, true).settled();
    assert_eq!(
        awaited,
        Err(Awaited::Keys {
            provider: ProviderId::FIRST,
            need: KeyNeed::UnknownKid
        })
    );
    let Decision::Deny(d) = f.engine.decide_now(&unknown_kid, NOW * 1000) else {
        panic!("an unknown key is refused")
    };
    assert_eq!(d.reason, DenyReason::UnknownKey);

    let mut cold = Engine::new(config(json!({})), NOW * 1000);
    let req = Request::from_headers(
        vec![
            (":path".to_string(), "/api".to_string()),
            ("authorization".to_string(), format!("Bearer {}", f.token())),
        ],
        None,
    );
    let awaited = cold.evaluate(&req, NOW * 1000, true).settled();
    assert_eq!(
        awaited,
        Err(Awaited::Keys {
            provider: ProviderId::FIRST,
            need: KeyNeed::NotLoaded
        })
    );
    let Decision::Deny(d) = cold.decide_now(&req, NOW * 1000) else {
        panic!("no keys: refused, not let through")
    };
    assert_eq!(
        (d.reason, d.response.status),
        (DenyReason::KeysUnavailable, 503)
    );

    let Decision::Allow(a) = f.engine.decide_now(&req, NOW * 1000) else {
        panic!("the keys are there")
    };
    assert_eq!(a.verified_by, Some(ProviderId::FIRST));
}

#[test]
fn roles_and_scopes() {
    let mut f = fixture(json!({}));
    let t = f.token();
    let bearer = format!("Bearer {t}");
    assert_eq!(
        denied(&f.eval("/admin", &[("authorization", &bearer)])),
        (DenyReason::InsufficientRole, 403)
    );
    assert_eq!(
        denied(&f.eval("/write", &[("authorization", &bearer)])),
        (DenyReason::InsufficientScope, 403)
    );
    let admin = f.sign(claims(AccessClaims {
        roles: vec!["admin".into()],
        scope: "read write".into(),
        ..default_claims()
    }));
    let bearer = format!("Bearer {admin}");
    assert!(matches!(
        f.eval("/admin", &[("authorization", &bearer)]),
        Outcome::Allow(_)
    ));
    assert!(matches!(
        f.eval("/write", &[("authorization", &bearer)]),
        Outcome::Allow(_)
    ));
}

/// The feed revokes the token `jti-1` (every test token's id).
fn revoke_jti_1(f: &mut Fixture) {
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
    first_provider(&mut f.engine)
        .revocations
        .apply(feed, ISS, 100, 30, NOW)
        .unwrap();
}

#[test]
fn revocations_apply_to_cached_tokens() {
    let mut f = fixture(json!({}));
    let t = f.token();
    let bearer = format!("Bearer {t}");
    assert!(matches!(
        f.eval("/api", &[("authorization", &bearer)]),
        Outcome::Allow(_)
    ));
    revoke_jti_1(&mut f);
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &bearer)])).0,
        DenyReason::TokenRevoked
    );

    let mut f = fixture(json!({}));
    let feed = RevocationFeed {
        issuer: ISS.into(),
        cursor: "1".into(),
        snapshot: true,
        banned_subjects: vec![BannedSubject {
            sub: "user-1".into(),
            not_before: NOW,
            expires_at: NOW + 900,
        }],
        ..Default::default()
    };
    first_provider(&mut f.engine)
        .revocations
        .apply(feed, ISS, 100, 30, NOW)
        .unwrap();
    let t = f.token();
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {t}"))])).0,
        DenyReason::SubjectBanned
    );
}

/// A stream let through stays open while its token is good: a WebSocket or
/// an event stream must not outlive a logout or a ban, nor its token's
/// expiry. The open streams are judged again every `SWEEP_EVERY_MS`, once
/// seen open for `MIN_AGE_MS`: a request still in flight when its token is
/// revoked (the logout request itself) is not cut off.
#[test]
fn an_open_stream_ends_with_its_tokens_revocation_or_expiry() {
    use authflow_filter_core::streams::{OpenStreams, MIN_AGE_MS, SWEEP_EVERY_MS};
    let mut f = fixture(json!({"clock_skew_secs": 0}));
    let mut streams = OpenStreams::default();
    let seen_ms = NOW * 1000;
    let token = f.let_through();
    streams.opened(7, token.clone());
    streams.opened(8, f.let_through());
    streams.closed(8);
    assert_eq!(streams.sweep(&f.engine, seen_ms), [], "first seen");
    let mut now_ms = seen_ms + MIN_AGE_MS;
    assert_eq!(streams.sweep(&f.engine, now_ms), [], "still good");
    revoke_jti_1(&mut f);
    // A request let through just now with the token revoked since (the logout).
    streams.opened(10, token);
    assert_eq!(
        streams.sweep(&f.engine, now_ms + 1),
        [],
        "not due before SWEEP_EVERY_MS"
    );
    now_ms += SWEEP_EVERY_MS;
    assert_eq!(
        streams.sweep(&f.engine, now_ms),
        [(7, DenyReason::TokenRevoked)],
        "the closed stream 8 is not named, the young stream 10 not judged yet"
    );
    now_ms += MIN_AGE_MS;
    assert_eq!(
        streams.sweep(&f.engine, now_ms),
        [(10, DenyReason::TokenRevoked)],
        "judged once open for MIN_AGE_MS"
    );
    assert!(streams.is_empty());

    // Expiry: good through `exp`, ended the second after (no skew here).
    let mut f = fixture(json!({"clock_skew_secs": 0}));
    let token = f.let_through();
    streams.opened(9, token.clone());
    assert_eq!(
        streams.sweep(&f.engine, (NOW + 889) * 1000),
        [],
        "first seen"
    );
    assert_eq!(streams.sweep(&f.engine, (NOW + 890) * 1000), []);
    assert_eq!(
        streams.sweep(&f.engine, (NOW + 891) * 1000),
        [(9, DenyReason::Expired)]
    );
    // First seen by a clock that then stepped back: taken as seen at the earlier reading.
    streams.opened(11, token);
    assert_eq!(streams.sweep(&f.engine, (NOW + 5_000) * 1000), []);
    assert_eq!(streams.sweep(&f.engine, (NOW + 892) * 1000), []);
    assert_eq!(
        streams.sweep(&f.engine, (NOW + 893) * 1000),
        [(11, DenyReason::Expired)]
    );

    // An anonymous request on a public route brings no token to watch.
    let Outcome::Allow(anonymous) = f.eval("/public", &[]) else {
        panic!("allowed");
    };
    assert!(anonymous.token.is_none());
}

#[test]
fn stale_revocation_list_follows_policy() {
    let mut f = fixture(json!({"revocation": {"max_staleness_secs": 10}}));
    let t = f.token();
    let h = vec![
        (":path".to_string(), "/api".to_string()),
        ("authorization".to_string(), format!("Bearer {t}")),
    ];
    let req = Request::from_headers(h, None);
    assert!(matches!(
        f.engine.evaluate(&req, NOW * 1000 + 5_000, true),
        Outcome::Allow(_)
    ));
    assert_eq!(
        denied(&f.engine.evaluate(&req, NOW * 1000 + 11_000, true)),
        (DenyReason::RevocationStale, 503)
    );

    let mut f = fixture(json!({"revocation": {"max_staleness_secs": 10, "on_stale": "allow"}}));
    let t = f.token();
    let h = vec![
        (":path".to_string(), "/api".to_string()),
        ("authorization".to_string(), format!("Bearer {t}")),
    ];
    let req = Request::from_headers(h, None);
    let Outcome::Allow(a) = f.engine.evaluate(&req, NOW * 1000 + 11_000, true) else {
        panic!()
    };
    assert!(a.notes.stale_revocations);
}

#[test]
fn no_token_passes_before_the_first_revocation_list() {
    // A VM that just started knows no revocation: a banned user's token
    // waits for the list, and is never judged by an empty one.
    let f = fixture(json!({}));
    let mut cold = Engine::new(config(json!({})), NOW * 1000);
    let jwks = format!(r#"{{"keys":[{}]}}"#, f.kp.public_key().to_jwk());
    cold.set_keys(ProviderId::FIRST, KeySet::parse(jwks.as_bytes()).unwrap());
    let request = |path: &str| {
        Request::from_headers(
            vec![
                (":path".into(), path.into()),
                ("authorization".into(), format!("Bearer {}", f.token())),
            ],
            None,
        )
    };
    let (api, public) = (request("/api"), request("/public"));

    assert_eq!(
        cold.evaluate(&api, NOW * 1000 + 500, true).settled(),
        Err(Awaited::RevocationList {
            provider: ProviderId::FIRST
        })
    );
    // A list that has not come within `key_wait_ms` of the VM's start is not
    // about to: no more waits, the staleness policy answers at once.
    assert_eq!(
        denied(&cold.evaluate(&api, NOW * 1000 + 3_000, true)),
        (DenyReason::RevocationStale, 503)
    );
    // The wait ended with no list: stale, whatever time the engine started at.
    let Decision::Deny(d) = cold.decide_now(&api, NOW * 1000 + 500) else {
        panic!("no list: refused")
    };
    assert_eq!(
        (d.reason, d.response.status),
        (DenyReason::RevocationStale, 503)
    );
    // A public route stays open, anonymously.
    let Decision::Allow(a) = cold.decide_now(&public, NOW * 1000 + 500) else {
        panic!("public stays open")
    };
    assert_eq!((a.verified_by, a.identity_headers().len()), (None, 0));
    // `allow` lets it through, counted as stale.
    let mut lenient = Engine::new(
        config(json!({"revocation": {"on_stale": "allow"}})),
        NOW * 1000,
    );
    lenient.set_keys(ProviderId::FIRST, KeySet::parse(jwks.as_bytes()).unwrap());
    let Decision::Allow(a) = lenient.decide_now(&api, NOW * 1000 + 500) else {
        panic!("on_stale: allow")
    };
    assert!(a.notes.stale_revocations);

    // Once the list lands, the token is judged by it.
    let ban = RevocationFeed {
        issuer: ISS.into(),
        cursor: "1".into(),
        snapshot: true,
        banned_subjects: vec![BannedSubject {
            sub: "user-1".into(),
            not_before: NOW,
            expires_at: NOW + 900,
        }],
        ..Default::default()
    };
    cold.apply_feed(ProviderId::FIRST, FeedBody::Json(ban), NOW * 1000 + 600)
        .unwrap();
    assert_eq!(
        denied(&cold.evaluate(&api, NOW * 1000 + 700, true)).0,
        DenyReason::SubjectBanned
    );

    // A list emptied to take another worker's copy is no list, even when
    // that worker says the list is current.
    cold.clear_revocations(ProviderId::FIRST);
    cold.revocations_current_at(
        ProviderId::FIRST,
        &FreshStamp {
            at_ms: NOW * 1000 + 800,
            forgot_secs: NOW,
            cursor: "1".into(),
        },
        NOW * 1000 + 900,
    );
    let Decision::Deny(d) = cold.decide_now(&api, NOW * 1000 + 900) else {
        panic!("emptied: refused")
    };
    assert_eq!(d.reason, DenyReason::RevocationStale);
}

/// A staleness bound so large that it saturates in milliseconds (someone
/// meaning "never stale") once let a list that never came pass as fresh; no
/// such bound is taken now (at most an hour).
#[test]
fn a_staleness_bound_meaning_never_is_refused() {
    let c =
        config_json(json!({"revocation": {"max_staleness_secs": u64::MAX, "on_stale": "deny"}}));
    let e = FilterConfig::from_json(c.to_string().as_bytes()).unwrap_err();
    assert!(e.0.contains("max_staleness_secs"), "{e}");
}

/// A worker VM started after the feed became unreachable takes the list the
/// others share, and that list is as old as the shared stamp says: not as
/// fresh as the VM's start (which let tokens revoked meanwhile through for
/// `max_staleness_secs` after every configuration push).
#[test]
fn a_vm_started_later_judges_a_shared_list_by_its_shared_age() {
    let hour_ago_ms = (NOW - 3_600) * 1000;
    let mut fetcher = Engine::new(config(json!({})), hour_ago_ms);
    let kp = Ed25519KeyPair::generate().with_key_id("k1");
    let jwks =
        KeySet::parse(format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk()).as_bytes()).unwrap();
    fetcher.set_keys(ProviderId::FIRST, jwks.clone());
    load_empty_revocation_list(&mut fetcher, hour_ago_ms);
    let (base, _) = fetcher
        .revocation_blobs(ProviderId::FIRST)
        .map(|(b, o)| (b.to_vec(), o.to_vec()))
        .unwrap();

    // The feed has not answered since. A VM starts now and takes what is shared.
    let mut late = Engine::new(config(json!({})), NOW * 1000);
    late.set_keys(ProviderId::FIRST, jwks);
    assert!(late.adopt_revocation_base(ProviderId::FIRST, base, NOW * 1000));
    late.revocations_current_at(
        ProviderId::FIRST,
        &fetcher.fresh_stamp(ProviderId::FIRST, hour_ago_ms).unwrap(),
        NOW * 1000,
    );
    let t = kp.sign(claims(default_claims())).unwrap();
    let api = Request::from_headers(
        vec![
            (":path".into(), "/api".into()),
            ("authorization".into(), format!("Bearer {t}")),
        ],
        None,
    );
    assert_eq!(
        denied(&fetcher.evaluate(&api, NOW * 1000 + 500, true)).0,
        DenyReason::RevocationStale,
        "the VM that fetched it"
    );
    assert_eq!(
        denied(&late.evaluate(&api, NOW * 1000 + 500, true)).0,
        DenyReason::RevocationStale,
        "the same list in a VM started later"
    );
    // A stamp from just now makes it current.
    late.revocations_current_at(
        ProviderId::FIRST,
        &fetcher.fresh_stamp(ProviderId::FIRST, NOW * 1000).unwrap(),
        NOW * 1000,
    );
    assert!(matches!(
        late.evaluate(&api, NOW * 1000 + 500, true),
        Outcome::Allow(_)
    ));
}

/// A list that was once full takes new revocations after its entries
/// expired: dead entries do not count against `max_entries` (they did, and
/// every delta was refused while the list looked current).
#[test]
fn a_list_once_full_still_takes_revocations_after_its_entries_expired() {
    let hour_ago_ms = (NOW - 3_600) * 1000;
    let mut f = fixture(json!({"revocation": {"max_entries": 100}}));
    let old: Vec<_> = (0..100)
        .map(|i| RevokedToken {
            jti: format!("old{i}"),
            expires_at: NOW - 3_500,
        })
        .collect();
    let full = RevocationFeed {
        issuer: ISS.into(),
        cursor: "1".into(),
        snapshot: true,
        revoked_tokens: old,
        ..Default::default()
    };
    f.engine.revocation_poll(ProviderId::FIRST);
    f.engine
        .apply_feed(ProviderId::FIRST, FeedBody::Json(full), hour_ago_ms)
        .unwrap();
    let delta = RevocationFeed {
        issuer: ISS.into(),
        cursor: "2".into(),
        revoked_tokens: vec![RevokedToken {
            jti: "jti-1".into(),
            expires_at: NOW + 900,
        }],
        ..Default::default()
    };
    f.engine.revocation_poll(ProviderId::FIRST);
    f.engine
        .apply_feed(ProviderId::FIRST, FeedBody::Json(delta), NOW * 1000)
        .unwrap();
    let t = f.token();
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {t}"))])).0,
        DenyReason::TokenRevoked
    );
}

/// Possession comes before the revocation list: a stolen device-bound
/// token without its device learns nothing from the answer, not even
/// whether its session was revoked. Its owner's device still hears it.
#[test]
fn a_stolen_bound_token_does_not_learn_it_was_revoked() {
    let secret = "device-secret-1";
    let dfp = FingerprintInput {
        secret,
        attributes: vec![("user-agent", "curl/8"), ("accept-language", "")],
    }
    .hash();
    let mut f = fixture(json!({"device_binding": {"mode": "enforce"}}));
    let t = f.sign(claims(AccessClaims {
        dfp: Some(dfp),
        ..default_claims()
    }));
    revoke_jti_1(&mut f);
    let bearer = format!("Bearer {t}");
    let from = |device| {
        [
            ("authorization", bearer.as_str()),
            (DEVICE_HEADER, device),
            ("user-agent", "curl/8"),
        ]
    };
    assert_eq!(
        denied(&f.eval("/api", &from("another device"))).0,
        DenyReason::DeviceMismatch
    );
    let owner = from(secret);
    assert_eq!(denied(&f.eval("/api", &owner)).0, DenyReason::TokenRevoked);
}

#[test]
fn device_binding_modes() {
    let secret = "device-secret-1";
    let dfp = FingerprintInput {
        secret,
        attributes: vec![("user-agent", "curl/8"), ("accept-language", "")],
    }
    .hash();
    for (mode, expect_allow_on_mismatch) in [("enforce", false), ("report", true)] {
        let mut f = fixture(json!({"device_binding": {"mode": mode}}));
        let t = f.sign(claims(AccessClaims {
            dfp: Some(dfp.clone()),
            ..default_claims()
        }));
        let bearer = format!("Bearer {t}");
        let ok = f.eval(
            "/api",
            &[
                ("authorization", &bearer),
                (DEVICE_HEADER, secret),
                ("user-agent", "curl/8"),
            ],
        );
        assert!(
            matches!(ok, Outcome::Allow(_)),
            "{mode}: same device passes"
        );
        let stolen = f.eval(
            "/api",
            &[
                ("authorization", &bearer),
                (DEVICE_HEADER, "other"),
                ("user-agent", "curl/8"),
            ],
        );
        let other_ua = f.eval(
            "/api",
            &[
                ("authorization", &bearer),
                (DEVICE_HEADER, secret),
                ("user-agent", "python"),
            ],
        );
        let no_secret = f.eval(
            "/api",
            &[("authorization", &bearer), ("user-agent", "curl/8")],
        );
        for o in [stolen, other_ua, no_secret] {
            if expect_allow_on_mismatch {
                let Outcome::Allow(a) = o else {
                    panic!("report mode allows")
                };
                assert!(a.notes.device_reported.is_some());
            } else {
                assert_eq!(denied(&o), (DenyReason::DeviceMismatch, 401));
            }
        }
    }
    let mut f = fixture(
        json!({"device_binding": {"mode": "enforce", "tokens_without_fingerprint": "deny"}}),
    );
    let t = f.token();
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &format!("Bearer {t}"))])).0,
        DenyReason::DeviceFingerprintMissing
    );
}

#[test]
fn forged_identity_header_values_never_come_from_the_request() {
    let mut f = fixture(json!({}));
    let t = f.token();
    let o = f.eval(
        "/api",
        &[
            ("authorization", &format!("Bearer {t}")),
            ("x-auth-user", "admin"),
        ],
    );
    assert_eq!(header(&o, "x-auth-user"), Some("user-1"));
}

/// The filter reads from the proxy only the headers `HeaderReads` names (one
/// host call each). Deciding on those alone must give exactly the decision
/// made on every header, for every kind of configuration.
#[test]
fn decisions_on_the_headers_read_equal_decisions_on_all_headers() {
    use authflow_filter_core::request::{HeaderBlock, HeaderReads};
    let secret = "device-secret-1";
    let dfp = FingerprintInput {
        secret,
        attributes: vec![("user-agent", "curl/8"), ("accept-language", "en")],
    }
    .hash();
    let configs = [
        json!({}),
        json!({"routes": []}),
        json!({"token_sources": {"authorization_bearer": true, "cookies": ["at"]}}),
        json!({"routes": [{"match": {"prefix": "/", "host": "api.example", "methods": ["GET"]}, "policy": "authenticated"}, {"match": {"prefix": "/"}, "policy": "public"}]}),
        json!({"device_binding": {"mode": "enforce"}}),
        json!({"token_sources": {"authorization_bearer": false, "headers": ["x-token"]}}),
        // Headers read by name, a rule on a method: a method override must be read too.
        json!({"forward_device_secret": true, "routes": [{"match": {"prefix": "/admin", "methods": ["DELETE"]}, "policy": {"roles_any": ["admin"]}}]}),
    ];
    for extra in configs {
        let mut f = fixture(extra.clone());
        let reads = HeaderReads::for_config(&f.engine.config);
        let token = f.sign(claims(AccessClaims {
            dfp: Some(dfp.clone()),
            ..default_claims()
        }));
        let other = f.sign(claims(default_claims()).with_subject("user-2"));
        let bearer = format!("Bearer {token}");
        let noise = [
            ("x-auth-user", "forged"),
            ("accept", "*/*"),
            ("x-request-id", "r-1"),
        ];
        let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
            ("/api", vec![("authorization", bearer.clone())]),
            ("/public/x", vec![]),
            ("/admin/x", vec![("authorization", bearer.clone())]),
            ("/api", vec![("cookie", format!("a=1; at={token}"))]),
            ("/api", vec![("x-token", token.clone())]),
            (
                "/api",
                vec![("x-token", token.clone()), ("x-token", other.clone())],
            ),
            (
                "/api",
                vec![
                    ("authorization", bearer.clone()),
                    (DEVICE_HEADER, secret.into()),
                    ("user-agent", "curl/8".into()),
                    ("accept-language", "en".into()),
                ],
            ),
            (
                "/api",
                vec![
                    ("authorization", bearer.clone()),
                    (DEVICE_HEADER, secret.into()),
                    ("user-agent", "python".into()),
                ],
            ),
            ("/api", vec![("authorization", "Basic dTpw".into())]),
            (
                "/admin/x",
                vec![
                    ("authorization", bearer.clone()),
                    ("x-http-method-override", "DELETE".into()),
                ],
            ),
            // A second copy of a header naming another path or host.
            (
                "/public/x",
                vec![
                    ("authorization", bearer.clone()),
                    ("x-original-url", "/public/y".into()),
                    ("x-original-url", "/admin/x".into()),
                    ("x-forwarded-host", "other".into()),
                    ("x-forwarded-host", "api.example".into()),
                ],
            ),
        ];
        for (host, (path, headers)) in ["api.example:443", "other"]
            .into_iter()
            .flat_map(|h| cases.iter().map(move |c| (h, c)))
        {
            let mut all = vec![
                (":method".to_string(), "GET".to_string()),
                (":path".to_string(), format!("{path}?q=1")),
                (":authority".to_string(), host.to_string()),
            ];
            all.extend(noise.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.clone())));
            let read: Vec<(String, String)> = match &reads {
                HeaderReads::All => all.clone(),
                // What the proxy answers a read by name: the first copy.
                HeaderReads::Only(names) => names
                    .iter()
                    .filter_map(|n| all.iter().find(|(a, _)| a == n).cloned())
                    .collect(),
            };
            let client = Some("203.0.113.9:4000".to_string());
            // The second decision may hit the token cache the first one filled: not a difference.
            let no_cache_note = |o: Outcome| match o {
                Outcome::Allow(mut a) => {
                    a.notes.cache_hit = false;
                    Outcome::Allow(a)
                }
                other => other,
            };
            let full = f.engine.evaluate(
                &Request::from_headers(all.clone(), client.clone()),
                NOW * 1000 + 500,
                false,
            );
            let partial = f.engine.evaluate(
                &Request::new(HeaderBlock::from_pairs(&read), client),
                NOW * 1000 + 500,
                false,
            );
            assert_eq!(
                no_cache_note(full),
                no_cache_note(partial),
                "config {extra}, {host}{path}, headers {headers:?}"
            );
        }
    }
}

/// A token passes until `exp` + `clock_skew_secs` (30 s by default), so its
/// revocation must last as long — also when the next delta arrives after
/// `exp` and the list is pruned.
#[test]
fn revocations_outlive_their_tokens_by_the_clock_skew() {
    use authflow_contract::revocation::RevokedSession;
    let exp = NOW + 890;
    for (what, revoke) in [
        (
            "jti",
            RevocationFeed {
                revoked_tokens: vec![RevokedToken {
                    jti: "jti-1".into(),
                    expires_at: exp,
                }],
                ..Default::default()
            },
        ),
        (
            "sid",
            RevocationFeed {
                revoked_sessions: vec![RevokedSession {
                    sid: "sess-1".into(),
                    expires_at: exp,
                }],
                ..Default::default()
            },
        ),
        (
            "ban",
            RevocationFeed {
                banned_subjects: vec![BannedSubject {
                    sub: "user-1".into(),
                    not_before: NOW,
                    expires_at: exp,
                }],
                ..Default::default()
            },
        ),
    ] {
        let mut f = fixture(json!({}));
        let bearer = format!("Bearer {}", f.token());
        let at = |secs: u64| {
            let h = vec![
                (":path".to_string(), "/api".to_string()),
                ("authorization".to_string(), bearer.clone()),
            ];
            (Request::from_headers(h, None), secs * 1000)
        };
        first_provider(&mut f.engine)
            .revocations
            .apply(
                RevocationFeed {
                    issuer: ISS.into(),
                    cursor: "1".into(),
                    snapshot: true,
                    ..revoke
                },
                ISS,
                100,
                30,
                NOW,
            )
            .unwrap();
        for later in [exp + 1, exp + 15, exp + 30] {
            // The next feed change (an unrelated revocation) arrives and prunes the list.
            let other = RevocationFeed {
                issuer: ISS.into(),
                cursor: later.to_string(),
                revoked_tokens: vec![RevokedToken {
                    jti: format!("other-{later}"),
                    expires_at: later + 900,
                }],
                ..Default::default()
            };
            first_provider(&mut f.engine)
                .revocations
                .apply(other, ISS, 100, 30, later)
                .unwrap();
            first_provider(&mut f.engine).revocations_fresh_at_ms = later * 1000;
            let (req, now_ms) = at(later);
            let o = f.engine.evaluate(&req, now_ms, true);
            assert!(
                matches!(o, Outcome::Deny(_)),
                "{what}: revoked token at exp+{}: {o:?}",
                later - exp
            );
            assert_ne!(
                denied(&o).0,
                DenyReason::Expired,
                "{what}: still within the skew at exp+{}",
                later - exp
            );
        }
        let (req, now_ms) = at(exp + 31);
        assert_eq!(
            denied(&f.engine.evaluate(&req, now_ms, true)).0,
            DenyReason::Expired,
            "{what}: past the skew it is simply expired"
        );
    }
}

/// A public route stays public when the revocation list is stale: the
/// request passes, but as anonymous — a token whose revocation status is
/// unknown vouches for no one, so no identity header is set. Elsewhere the
/// stale list still answers 503.
#[test]
fn public_routes_pass_anonymously_when_the_revocation_list_is_stale() {
    let mut f = fixture(json!({"revocation": {"max_staleness_secs": 10}}));
    let t = f.token();
    let stale_ms = NOW * 1000 + 11_000;
    let req = |path: &str, token: Option<&str>| {
        let mut h = vec![(":path".to_string(), path.to_string())];
        if let Some(t) = token {
            h.push(("authorization".to_string(), format!("Bearer {t}")));
        }
        Request::from_headers(h, None)
    };
    let Outcome::Allow(a) = f
        .engine
        .evaluate(&req("/public/page", Some(&t)), stale_ms, true)
    else {
        panic!("public route with a token refused on a stale list")
    };
    assert!(
        a.identity_headers().is_empty(),
        "no identity from a token that cannot be trusted: {a:?}"
    );
    assert_eq!(
        a.notes.public_invalid_token,
        Some(DenyReason::RevocationStale)
    );
    assert!(!a.notes.authenticated);
    assert!(matches!(
        f.engine
            .evaluate(&req("/public/page", None), stale_ms, true),
        Outcome::Allow(_)
    ));
    let o = f.engine.evaluate(&req("/api", Some(&t)), stale_ms, true);
    assert_eq!(denied(&o), (DenyReason::RevocationStale, 503));
    let Outcome::Deny(d) = o else { unreachable!() };
    assert!(
        d.response
            .headers
            .iter()
            .any(|(n, v)| n == "retry-after" && v == "5"),
        "{d:?}"
    );
}

/// Routes for service accounts and for users, with the client-id header owned.
fn service_fixture(extra: serde_json::Value) -> Fixture {
    let mut c = json!({
        "routes": [
            {"match": {"path_prefix": "/internal/billing"}, "policy": {"client_ids_any": ["billing", "payroll"]}},
            {"match": {"path_prefix": "/me"}, "policy": "user"},
            {"match": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
            {"match": {"prefix": "/write"}, "policy": {"scopes_all": ["write"]}}
        ],
        "identity_headers": {"subject": "x-auth-user", "roles": "x-auth-roles", "client_id": "x-auth-client-id"}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    fixture(c)
}

/// A token as the service issues it to a service account: `sub` =
/// `svc:<client_id>`, `client_id`, no session, no device binding.
fn service_token(f: &Fixture, client_id: &str, roles: &[&str]) -> String {
    let custom = AccessClaims {
        sid: String::new(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        scope: "write".into(),
        dfp: None,
        client_id: Some(client_id.into()),
        cnf: None,
    };
    f.sign(claims(custom).with_subject(authflow_contract::claims::service_subject(client_id)))
}

fn allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allow(_))
}

#[test]
fn client_ids_any_admits_only_the_named_service_accounts() {
    let mut f = service_fixture(json!({}));
    let billing = format!("Bearer {}", service_token(&f, "billing", &[]));
    let o = f.eval("/internal/billing/invoices", &[("authorization", &billing)]);
    assert_eq!(header(&o, "x-auth-client-id"), Some("billing"));
    assert_eq!(header(&o, "x-auth-user"), Some("svc:billing"));
    let reports = format!("Bearer {}", service_token(&f, "reports", &[]));
    assert_eq!(
        denied(&f.eval("/internal/billing/invoices", &[("authorization", &reports)])),
        (DenyReason::ClientNotAllowed, 403)
    );
    // A user is not a service account, whatever client its token names.
    let user = format!("Bearer {}", f.token());
    assert_eq!(
        denied(&f.eval("/internal/billing", &[("authorization", &user)])),
        (DenyReason::ClientNotAllowed, 403)
    );
    let not_svc = f.sign(claims(AccessClaims {
        client_id: Some("billing".into()),
        ..default_claims()
    }));
    let o = f.eval(
        "/internal/billing",
        &[("authorization", &format!("Bearer {not_svc}"))],
    );
    assert_eq!(
        denied(&o),
        (DenyReason::ClientNotAllowed, 403),
        "client_id without the service subject is a user token"
    );
    let o = f.eval("/api", &[("authorization", &format!("Bearer {not_svc}"))]);
    assert_eq!(
        header(&o, "x-auth-client-id"),
        None,
        "only a service token names a client"
    );
    // Scopes are for both kinds of caller.
    assert!(allowed(&f.eval("/write", &[("authorization", &billing)])));
}

#[test]
fn user_routes_refuse_service_tokens_even_with_a_role_claim() {
    let mut f = service_fixture(json!({}));
    let svc_admin = format!("Bearer {}", service_token(&f, "billing", &["admin"]));
    assert_eq!(
        denied(&f.eval("/me", &[("authorization", &svc_admin)])),
        (DenyReason::UserRequired, 403)
    );
    assert_eq!(
        denied(&f.eval("/admin/users", &[("authorization", &svc_admin)])),
        (DenyReason::UserRequired, 403)
    );
    let user = format!("Bearer {}", f.token());
    assert!(allowed(&f.eval("/me", &[("authorization", &user)])));
    let admin = f.sign(claims(AccessClaims {
        roles: vec!["admin".into()],
        ..default_claims()
    }));
    assert!(allowed(&f.eval(
        "/admin/users",
        &[("authorization", &format!("Bearer {admin}"))]
    )));
}

#[test]
fn service_tokens_need_no_device_binding_but_user_tokens_still_do() {
    let mut f = service_fixture(
        json!({"device_binding": {"mode": "enforce", "tokens_without_fingerprint": "deny"}}),
    );
    let billing = format!("Bearer {}", service_token(&f, "billing", &[]));
    assert!(
        allowed(&f.eval("/internal/billing", &[("authorization", &billing)])),
        "a service token has no device"
    );
    let user = format!("Bearer {}", f.token());
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &user)])),
        (DenyReason::DeviceFingerprintMissing, 401)
    );
    // `svc:` in `sub` is not enough: the client id must be that very account's.
    let mut c = claims(AccessClaims {
        client_id: Some("other".into()),
        ..default_claims()
    });
    c.subject = Some("svc:billing".into());
    let posing = format!("Bearer {}", f.sign(c));
    assert_eq!(
        denied(&f.eval("/api", &[("authorization", &posing)])),
        (DenyReason::DeviceFingerprintMissing, 401)
    );
}

fn request(method: &str, authority: &str, path: &str, headers: &[(&str, &str)]) -> Request {
    let mut h = vec![
        (":method", method),
        (":path", path),
        (":authority", authority),
    ];
    h.extend_from_slice(headers);
    Request::from_headers(
        h.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        None,
    )
}

fn admin_token(f: &Fixture) -> String {
    format!(
        "Bearer {}",
        f.sign(claims(AccessClaims {
            roles: vec!["admin".into()],
            ..default_claims()
        }))
    )
}

#[test]
fn an_exact_route_is_not_dodged_with_a_trailing_slash() {
    let mut f = fixture(json!({"routes": [
        {"match": {"exact": "/api/export"}, "policy": {"roles_any": ["admin"]}},
        {"match": {"exact": "/healthz"}, "policy": "public"},
        {"match": {"prefix": "/docs/"}, "policy": "public"}
    ]}));
    let user = format!("Bearer {}", f.token());
    assert_eq!(
        denied(&f.eval("/api/export", &[("authorization", &user)])),
        (DenyReason::InsufficientRole, 403)
    );
    // Many frameworks serve `/api/export/` with the `/api/export` handler.
    assert_eq!(
        denied(&f.eval("/api/export/", &[("authorization", &user)])),
        (DenyReason::AmbiguousPath, 400)
    );
    assert_eq!(
        denied(&f.eval("/healthz/", &[])),
        (DenyReason::MissingToken, 401),
        "a public exact rule lends nothing"
    );
    assert!(allowed(&f.eval("/docs/", &[])));
}

#[test]
fn method_rules_match_any_case_and_head_as_get() {
    let mut f = fixture(json!({"routes": [
        {"match": {"path_prefix": "/api/items", "methods": ["DELETE"]}, "policy": {"roles_any": ["admin"]}},
        {"match": {"path_prefix": "/api/reports", "methods": ["GET"]}, "policy": {"roles_any": ["admin"]}}
    ]}));
    let user = format!("Bearer {}", f.token());
    let admin = admin_token(&f);
    let mut eval = |method: &str, path: &str, auth: &str| {
        f.engine.evaluate(
            &request(method, "api", path, &[("authorization", auth)]),
            NOW * 1000 + 500,
            true,
        )
    };
    assert_eq!(
        denied(&eval("delete", "/api/items/1", &user)),
        (DenyReason::InsufficientRole, 403)
    );
    assert!(allowed(&eval("delete", "/api/items/1", &admin)));
    assert_eq!(
        denied(&eval("HEAD", "/api/reports/q1", &user)),
        (DenyReason::InsufficientRole, 403)
    );
    assert!(allowed(&eval("HEAD", "/api/reports/q1", &admin)));
    assert!(
        allowed(&eval("HEAD", "/api/items/1", &user)),
        "HEAD is not DELETE"
    );
}

/// CORS preflights (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) carry no credentials: the README's rule
/// on `OPTIONS` lets them reach the backend's CORS answer, where `jwt_authn`
/// would use `bypass_cors_preflight`. It is no way past the other rules: a
/// `POST` naming `OPTIONS` in a method override is judged as a `POST` too,
/// and a token a preflight carries anyway goes no further.
#[test]
fn an_options_rule_lets_cors_preflights_through_and_nothing_else() {
    let mut f = fixture(json!({"routes": [
        {"match": {"prefix": "/", "methods": ["OPTIONS"]}, "policy": "public"},
        {"match": {"path_prefix": "/api"}, "policy": "authenticated"}
    ]}));
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "DELETE"),
        ("access-control-request-headers", "authorization"),
    ];
    let mut eval = |method: &str, headers: &[(&str, &str)]| {
        f.engine.evaluate(
            &request(method, "api", "/api/items/1", headers),
            NOW * 1000 + 500,
            true,
        )
    };
    match eval("OPTIONS", &preflight) {
        Outcome::Allow(a) => assert!(a.identity_headers().is_empty() && a.verified_by.is_none()),
        other => panic!("a preflight is refused: {other:?}"),
    }
    assert_eq!(
        denied(&eval("POST", &[("x-http-method-override", "OPTIONS")])),
        (DenyReason::MissingToken, 401),
        "an override naming OPTIONS is no way past the POST's rule"
    );
    assert_eq!(
        denied(&eval("DELETE", &preflight)),
        (DenyReason::MissingToken, 401),
        "CORS headers on another method lend nothing"
    );
}

#[test]
fn a_host_route_is_not_dodged_with_a_trailing_dot() {
    let mut f = fixture(
        json!({"routes": [{"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}}]}),
    );
    let user = format!("Bearer {}", f.token());
    let admin = admin_token(&f);
    for authority in ["admin.example", "admin.example.", "Admin.Example.:443"] {
        let o = f.engine.evaluate(
            &request("GET", authority, "/x", &[("authorization", &user)]),
            NOW * 1000 + 500,
            true,
        );
        assert_eq!(
            denied(&o),
            (DenyReason::InsufficientRole, 403),
            "{authority}"
        );
        assert!(allowed(&f.engine.evaluate(
            &request("GET", authority, "/x", &[("authorization", &admin)]),
            NOW * 1000 + 500,
            true
        )));
    }
}

/// The provider of `fixture`, with `forward_token`, and the token also read from the `at` cookie.
fn forwarding_fixture(forward_token: bool) -> Fixture {
    fixture(json!({
        "providers": [{
            "name": "test", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"], "forward_token": forward_token,
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations"}
        }],
        "token_sources": {"authorization_bearer": true, "cookies": ["at"]}
    }))
}

#[test]
fn no_unverified_second_token_reaches_the_upstream() {
    use authflow_filter_core::forward::{credential_edits, HeaderEdit};
    let mut f = forwarding_fixture(true);
    let good = f.token();
    // `forward_token`: the verified `Authorization` token goes; the cookie beside it was never checked.
    let req = request(
        "GET",
        "api",
        "/api",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("cookie", "a=1; at=someone-elses"),
        ],
    );
    let Outcome::Allow(a) = f.engine.evaluate(&req, NOW * 1000 + 500, true) else {
        panic!("the bearer token is valid")
    };
    assert_eq!(
        credential_edits(&f.engine.config, &req, a.verified_by, false),
        vec![HeaderEdit::Set("cookie".into(), "a=1".into())]
    );
    // The cookie that verified is the token forwarded.
    let req = request(
        "GET",
        "api",
        "/api",
        &[("cookie", &format!("a=1; at={good}"))],
    );
    let Outcome::Allow(a) = f.engine.evaluate(&req, NOW * 1000 + 500, true) else {
        panic!("the cookie token is valid")
    };
    assert_eq!(
        credential_edits(&f.engine.config, &req, a.verified_by, false),
        vec![]
    );

    // `Bearer<TAB>token` is a token to backends that split on whitespace: it is the one checked.
    let mut f = forwarding_fixture(false);
    let good = f.token();
    let o = f.eval(
        "/api",
        &[
            ("authorization", "Bearer\tsomeone-elses"),
            ("cookie", &format!("at={good}")),
        ],
    );
    assert_eq!(
        denied(&o).1,
        401,
        "the tab-separated token is the token, and it is not valid"
    );
    let req = request(
        "GET",
        "api",
        "/api",
        &[("authorization", &format!("Bearer\t{good}"))],
    );
    let Outcome::Allow(a) = f.engine.evaluate(&req, NOW * 1000 + 500, true) else {
        panic!("the token is valid")
    };
    assert_eq!(
        credential_edits(&f.engine.config, &req, a.verified_by, false),
        vec![HeaderEdit::Remove("authorization".into())]
    );
}

/// Two issuers, one trusted for everything, a partner only for its own
/// routes: the partner's `admin` role opens nothing of the main issuer's.
#[test]
fn a_route_for_named_providers_refuses_another_issuers_token_whatever_it_claims() {
    const PARTNER: &str = "https://partner.test";
    let main_key = Ed25519KeyPair::generate().with_key_id("main");
    let partner_key = Ed25519KeyPair::generate().with_key_id("partner");
    let inline = |kp: &Ed25519KeyPair| {
        serde_json::from_str::<serde_json::Value>(&format!(
            r#"{{"keys":[{}]}}"#,
            kp.public_key().to_jwk()
        ))
        .unwrap()
    };
    let config = json!({
        "providers": [
            {"name": "main", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": {"inline": inline(&main_key)}},
            {"name": "partner", "issuer": PARTNER, "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": {"inline": inline(&partner_key)}}
        ],
        "routes": [
            {"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}, "providers": ["main"]},
            {"match": {"path_prefix": "/partner"}, "policy": "authenticated", "providers": ["partner", "main"]},
            {"match": {"path_prefix": "/internal"}, "policy": "authenticated", "providers": ["main"]}
        ],
        "default_providers": ["main", "partner"],
        "identity_headers": {"subject": "x-auth-user", "issuer": "x-auth-issuer", "roles": "x-auth-roles"}
    });
    let mut engine = Engine::new(
        FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
        NOW * 1000,
    );
    let admin = AccessClaims {
        roles: vec!["admin".into()],
        ..default_claims()
    };
    let from_main = main_key.sign(claims(admin.clone())).unwrap();
    let from_partner = partner_key
        .sign(claims(admin).with_issuer(PARTNER))
        .unwrap();
    let mut eval = |path: &str, token: &str| {
        let h = vec![
            (":method".into(), "GET".into()),
            (":path".into(), path.into()),
            ("authorization".into(), format!("Bearer {token}")),
        ];
        engine.evaluate(&Request::from_headers(h, None), NOW * 1000 + 500, true)
    };
    assert!(matches!(
        eval("/admin/users", &from_main),
        Outcome::Allow(_)
    ));
    assert_eq!(
        denied(&eval("/admin/users", &from_partner)),
        (DenyReason::ProviderNotAllowed, 403)
    );
    assert_eq!(
        denied(&eval("/internal/x", &from_partner)),
        (DenyReason::ProviderNotAllowed, 403)
    );
    assert!(matches!(
        eval("/partner/x", &from_partner),
        Outcome::Allow(_)
    ));
    assert!(matches!(eval("/partner/x", &from_main), Outcome::Allow(_)));
    // Unlisted routes (the default policy) take the tokens of `default_providers`.
    assert!(matches!(
        eval("/elsewhere", &from_partner),
        Outcome::Allow(_)
    ));
    // Another spelling of a restricted path is no way around the
    // restriction, even where the policy alone is the same.
    assert_eq!(denied(&eval("/ADMIN/users", &from_partner)).1, 400);
    assert_eq!(
        denied(&eval("/INTERNAL/x", &from_partner)),
        (DenyReason::AmbiguousPath, 400)
    );
    assert_eq!(
        denied(&eval("/INTERNAL/x", &from_main)),
        (DenyReason::AmbiguousPath, 400)
    );
}

const PARTNER: &str = "https://partner.test";
const PARTNER2: &str = "https://partner2.test";

fn inline_jwks(kp: &Ed25519KeyPair) -> serde_json::Value {
    serde_json::from_str(&format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk())).unwrap()
}

fn provider_json(name: &str, issuer: &str, jwks: serde_json::Value) -> serde_json::Value {
    json!({"name": name, "issuer": issuer, "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": jwks})
}

/// `b64(header).b64(payload).AAAA`: signed by no one.
fn forged(issuer: &str) -> String {
    format!(
        "{}.{}.AAAA",
        base64_url(br#"{"alg":"EdDSA"}"#),
        base64_url(format!(r#"{{"iss":"{issuer}"}}"#).as_bytes())
    )
}

fn bearer_request(path: &str, token: &str) -> Request {
    request(
        "GET",
        "api",
        path,
        &[("authorization", &format!("Bearer {token}"))],
    )
}

/// `failure_mode: fail_open` with two providers holding their (inline) keys
/// and a third whose key set never loaded: a token naming the third is not
/// let through unverified, and never onto a route that does not admit it.
#[test]
fn fail_open_is_no_way_past_a_route_while_other_providers_hold_keys() {
    let main_key = Ed25519KeyPair::generate().with_key_id("main");
    let partner_key = Ed25519KeyPair::generate().with_key_id("partner");
    let config = json!({
        "providers": [
            provider_json("main", ISS, json!({"inline": inline_jwks(&main_key)})),
            provider_json("partner", PARTNER, json!({"inline": inline_jwks(&partner_key)})),
            provider_json("partner2", PARTNER2, json!({"remote": {"cluster": "partner2", "path": "/jwks"}}))
        ],
        "failure_mode": "fail_open",
        "routes": [
            {"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}, "providers": ["main"]},
            {"match": {"path_prefix": "/api"}, "policy": "authenticated", "providers": ["main", "partner", "partner2"]}
        ],
        "default_providers": ["main"],
        "identity_headers": {"subject": "x-auth-user", "issuer": "x-auth-issuer", "roles": "x-auth-roles"}
    });
    let mut engine = Engine::new(
        FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
        NOW * 1000,
    );
    let mut decide = |path: &str, token: &str, may_wait: bool| {
        engine.evaluate(&bearer_request(path, token), NOW * 1000 + 500, may_wait)
    };
    assert_eq!(
        denied(&decide("/admin", &forged(ISS), false)),
        (DenyReason::BadSignature, 401)
    );
    // The route admits `main` only: the issuer the token names settles it, keys or not.
    assert_eq!(
        denied(&decide("/admin", &forged(PARTNER2), false)),
        (DenyReason::ProviderNotAllowed, 403)
    );
    assert_eq!(
        denied(&decide("/admin", &forged(PARTNER2), true)),
        (DenyReason::ProviderNotAllowed, 403)
    );
    // A route for `partner2`: its keys are missing while the others' are there, so the
    // filter is not down — the token waits for its keys, then is answered as without them.
    assert!(matches!(
        decide("/api", &forged(PARTNER2), true),
        Outcome::AwaitKeys {
            unknown_kid: false,
            ..
        }
    ));
    assert_eq!(
        denied(&decide("/api", &forged(PARTNER2), false)),
        (DenyReason::KeysUnavailable, 503)
    );
    let Decision::Deny(d) =
        engine.decide_now(&bearer_request("/api", &forged(PARTNER2)), NOW * 1000 + 500)
    else {
        panic!("not let through")
    };
    assert_eq!(d.response.status, 503);
}

/// `failure_mode: fail_open` when no provider ever loaded keys (the auth
/// system is down at start): only routes that need no more than a caller
/// pass, anonymously; roles, scopes and client ids cannot be read from an
/// unverified token, so those routes answer 503 as under `fail_closed`.
#[test]
fn fail_open_with_no_keys_anywhere_passes_only_routes_that_need_no_claim() {
    let config = json!({
        "providers": [
            provider_json("main", ISS, json!({"remote": {"cluster": "auth", "path": "/jwks"}})),
            provider_json("partner2", PARTNER2, json!({"remote": {"cluster": "partner2", "path": "/jwks"}}))
        ],
        "failure_mode": "fail_open",
        "routes": [
            {"match": {"path_prefix": "/public"}, "policy": "public", "providers": ["main"]},
            {"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}, "providers": ["main"]},
            {"match": {"path_prefix": "/billing"}, "policy": {"client_ids_any": ["billing"]}, "providers": ["main"]},
            {"match": {"path_prefix": "/write"}, "policy": {"scopes_all": ["write"]}, "providers": ["main"]},
            {"match": {"path_prefix": "/me"}, "policy": "user", "providers": ["main"]},
            {"match": {"path_prefix": "/api"}, "policy": "authenticated", "providers": ["main"]}
        ],
        "default_providers": ["main"],
        "identity_headers": {"subject": "x-auth-user", "issuer": "x-auth-issuer", "roles": "x-auth-roles"}
    });
    let mut engine = Engine::new(
        FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
        NOW * 1000,
    );
    let mut decide = |path: &str, token: &str| {
        engine.evaluate(&bearer_request(path, token), NOW * 1000 + 500, false)
    };
    let open = |o: &Outcome| match o {
        Outcome::Allow(a) => {
            a.notes.failed_open
                && !a.notes.authenticated
                && a.identity_headers().is_empty()
                && a.verified_by.is_none()
        }
        _ => false,
    };
    for path in ["/api/x", "/me"] {
        assert!(open(&decide(path, &forged(ISS))), "{path}");
    }
    for path in ["/admin", "/billing", "/write"] {
        assert_eq!(
            denied(&decide(path, &forged(ISS))),
            (DenyReason::KeysUnavailable, 503),
            "{path}"
        );
    }
    assert_eq!(
        denied(&decide("/api/x", &forged(PARTNER2))),
        (DenyReason::ProviderNotAllowed, 403)
    );
    assert!(allowed(&decide("/public", &forged(PARTNER2))));
    assert_eq!(
        denied(&decide("/api/x", "not-a-token")).1,
        401,
        "a token that names no provider is refused"
    );
    let no_token = engine.evaluate(
        &request("GET", "api", "/api/x", &[]),
        NOW * 1000 + 500,
        false,
    );
    assert_eq!(denied(&no_token), (DenyReason::MissingToken, 401));
}

/// With several providers, a non-public route (or default) that does not
/// say whose tokens it takes is refused at load, and the issuer always goes
/// upstream: a partner's `sub: u-alice` with `roles: [admin]` would
/// otherwise pass as the main issuer's alice.
#[test]
fn several_providers_must_say_whose_tokens_each_route_takes() {
    let main_key = Ed25519KeyPair::generate().with_key_id("main");
    let partner_key = Ed25519KeyPair::generate().with_key_id("partner");
    let providers = json!([
        provider_json("main", ISS, json!({"inline": inline_jwks(&main_key)})),
        provider_json(
            "partner",
            PARTNER,
            json!({"inline": inline_jwks(&partner_key)})
        )
    ]);
    let load = |extra: serde_json::Value| {
        let mut c = json!({"providers": providers.clone()});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        FilterConfig::from_json(c.to_string().as_bytes())
    };
    let e = load(json!({"routes": [{"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}}], "default_policy": "public"})).unwrap_err();
    assert!(
        e.0.contains("`routes[0]`.providers") && e.0.contains("several providers"),
        "{e}"
    );
    let e = load(json!({"routes": [{"match": {"path_prefix": "/billing"}, "policy": {"client_ids_any": ["billing"]}}], "default_policy": "public"})).unwrap_err();
    assert!(e.0.contains("`routes[0]`.providers"), "{e}");
    let e = load(json!({"routes": [{"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}, "providers": ["main"]}]})).unwrap_err();
    assert!(
        e.0.contains("`default_providers`") && e.0.contains("several providers"),
        "{e}"
    );
    let e = load(json!({"default_providers": ["nobody"]})).unwrap_err();
    assert!(
        e.0.contains("`default_providers`") && e.0.contains("no provider is named `nobody`"),
        "{e}"
    );
    assert!(load(json!({"default_providers": ["main", "partner"]})).is_ok());
    // Public routes and a public default too: their backends get the identity.
    let e = load(json!({"default_policy": "public"})).unwrap_err();
    assert!(
        e.0.contains("`default_providers`") && e.0.contains("several providers"),
        "{e}"
    );
    let e = load(json!({"default_policy": "public", "default_providers": ["main"], "routes": [{"match": {"prefix": "/p"}, "policy": "public"}]})).unwrap_err();
    assert!(
        e.0.contains("`routes[0]`.providers") && e.0.contains("several providers"),
        "{e}"
    );
    assert!(load(json!({"default_policy": "public", "default_providers": ["main"], "routes": [{"match": {"prefix": "/p"}, "policy": "public", "providers": ["partner"]}]})).is_ok());
    // The issuer always goes upstream: `x-auth-issuer` unless another header is named.
    let issuer = |identity: serde_json::Value| {
        load(json!({"default_policy": "public", "default_providers": ["main"], "identity_headers": identity})).unwrap().identity.issuer
    };
    assert_eq!(
        load(json!({"default_policy": "public", "default_providers": ["main"]}))
            .unwrap()
            .identity
            .issuer
            .as_deref(),
        Some("x-auth-issuer")
    );
    assert_eq!(
        issuer(json!({"subject": "x-auth-user", "roles": "x-auth-roles"})).as_deref(),
        Some("x-auth-issuer")
    );
    assert_eq!(
        issuer(json!({"subject": "x-auth-user", "issuer": "x-iss"})).as_deref(),
        Some("x-iss")
    );
    // One provider: nothing to tell apart, nothing changes.
    let one = FilterConfig::from_json(json!({"providers": [providers[0].clone()], "routes": [{"match": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}}]}).to_string().as_bytes()).unwrap();
    assert_eq!(one.identity.issuer, None);
}

/// A partner's tokens never pass as your own users or service accounts:
/// the routes say whose tokens they take, and the issuer goes upstream.
#[test]
fn a_partner_token_is_not_your_user_nor_your_service_account() {
    let main_key = Ed25519KeyPair::generate().with_key_id("main");
    let partner_key = Ed25519KeyPair::generate().with_key_id("partner");
    let config = json!({
        "providers": [
            provider_json("main", ISS, json!({"inline": inline_jwks(&main_key)})),
            provider_json("partner", PARTNER, json!({"inline": inline_jwks(&partner_key)}))
        ],
        "routes": [
            {"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}, "providers": ["main"]},
            {"match": {"path_prefix": "/internal/billing"}, "policy": {"client_ids_any": ["billing"]}, "providers": ["main"]},
            {"match": {"path_prefix": "/partner"}, "policy": "authenticated", "providers": ["partner", "main"]}
        ],
        "default_providers": ["main"]
    });
    let mut engine = Engine::new(
        FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
        NOW * 1000,
    );
    let alice = AccessClaims {
        roles: vec!["user".into(), "admin".into()],
        ..default_claims()
    };
    let ours = main_key
        .sign(claims(alice.clone()).with_subject("u-alice"))
        .unwrap();
    let theirs = partner_key
        .sign(claims(alice).with_subject("u-alice").with_issuer(PARTNER))
        .unwrap();
    let svc = AccessClaims {
        sid: String::new(),
        client_id: Some("billing".into()),
        ..default_claims()
    };
    let their_billing = partner_key
        .sign(claims(svc).with_subject("svc:billing").with_issuer(PARTNER))
        .unwrap();
    let mut decide = |path: &str, token: &str| {
        engine.evaluate(&bearer_request(path, token), NOW * 1000 + 500, true)
    };
    let o = decide("/admin/users", &ours);
    assert_eq!(
        (header(&o, "x-auth-user"), header(&o, "x-auth-issuer")),
        (Some("u-alice"), Some(ISS))
    );
    assert_eq!(header(&o, "x-auth-roles"), Some("user,admin"));
    assert_eq!(
        denied(&decide("/admin/users", &theirs)),
        (DenyReason::ProviderNotAllowed, 403)
    );
    assert_eq!(
        denied(&decide("/elsewhere", &theirs)),
        (DenyReason::ProviderNotAllowed, 403)
    );
    assert_eq!(
        denied(&decide("/internal/billing", &their_billing)),
        (DenyReason::ProviderNotAllowed, 403)
    );
    // Where the partner is admitted, its u-alice arrives as the partner's, not as yours.
    let o = decide("/partner/x", &theirs);
    assert_eq!(
        (header(&o, "x-auth-user"), header(&o, "x-auth-issuer")),
        (Some("u-alice"), Some(PARTNER))
    );
    // Your ban of u-alice is yours: the partner's u-alice is another person, told apart upstream.
    let ban = RevocationFeed {
        issuer: ISS.into(),
        cursor: "1".into(),
        snapshot: true,
        banned_subjects: vec![BannedSubject {
            sub: "u-alice".into(),
            not_before: NOW,
            expires_at: NOW + 900,
        }],
        ..Default::default()
    };
    first_provider(&mut engine)
        .revocations
        .apply(ban, ISS, 100, 30, NOW)
        .unwrap();
    let mut decide = |path: &str, token: &str| {
        engine.evaluate(&bearer_request(path, token), NOW * 1000 + 500, true)
    };
    assert_eq!(
        denied(&decide("/admin/users", &ours)),
        (DenyReason::SubjectBanned, 401)
    );
    assert_eq!(
        denied(&decide("/partner/x", &ours)),
        (DenyReason::SubjectBanned, 401)
    );
    assert_eq!(
        header(&decide("/partner/x", &theirs), "x-auth-issuer"),
        Some(PARTNER)
    );
    assert_eq!(
        denied(&decide("/admin/users", &theirs)),
        (DenyReason::ProviderNotAllowed, 403)
    );
}

/// A public route names its providers too: another provider's token is
/// anonymous there (the request passes, no identity reaches the backend),
/// also when that provider has no keys.
#[test]
fn on_a_public_route_another_providers_token_is_anonymous() {
    let main_key = Ed25519KeyPair::generate().with_key_id("main");
    let partner_key = Ed25519KeyPair::generate().with_key_id("partner");
    let config = json!({
        "providers": [
            provider_json("main", ISS, json!({"inline": inline_jwks(&main_key)})),
            provider_json("partner", PARTNER, json!({"inline": inline_jwks(&partner_key)})),
            provider_json("keyless", "https://keyless.example", json!({"remote": {"cluster": "k", "path": "/jwks"}}))
        ],
        "routes": [{"match": {"path_prefix": "/home"}, "policy": "public", "providers": ["main"]}],
        "default_providers": ["main"]
    });
    let mut engine = Engine::new(
        FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
        NOW * 1000,
    );
    let alice = AccessClaims {
        roles: vec!["user".into(), "admin".into()],
        ..default_claims()
    };
    let ours = main_key
        .sign(claims(alice.clone()).with_subject("u-alice"))
        .unwrap();
    let theirs = partner_key
        .sign(
            claims(alice.clone())
                .with_subject("u-alice")
                .with_issuer(PARTNER),
        )
        .unwrap();
    let keyless = partner_key
        .sign(
            claims(alice)
                .with_subject("u-alice")
                .with_issuer("https://keyless.example"),
        )
        .unwrap();
    let mut decide =
        |token: &str| engine.evaluate(&bearer_request("/home", token), NOW * 1000 + 500, true);
    let o = decide(&ours);
    assert_eq!(
        (header(&o, "x-auth-user"), header(&o, "x-auth-roles")),
        (Some("u-alice"), Some("user,admin"))
    );
    for (token, which) in [
        (&theirs, "the partner's"),
        (&keyless, "a provider without keys"),
    ] {
        match decide(token) {
            Outcome::Allow(a) => {
                assert!(a.headers.is_none(), "{which}: identity forwarded");
                assert_eq!(
                    a.notes.public_invalid_token,
                    Some(DenyReason::ProviderNotAllowed),
                    "{which}"
                );
            }
            other => panic!("{which}: {other:?}"),
        }
    }
}

/// A token whose claims (besides iss, aud, iat, exp) are `custom`, as given.
fn token_with(f: &Fixture, custom: serde_json::Value) -> String {
    let mut c = Claims::with_custom_claims(custom, Duration::from_mins(5))
        .with_issuer(ISS)
        .with_audience("api");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 300));
    f.kp.sign(c).unwrap()
}

/// Every identity header arrives exactly as its claim, or the token is
/// refused: a role holding the list's separator would be two roles to a
/// backend that splits the header (one of them `admin`), and a value a
/// header cannot carry would have been dropped, leaving roles without the
/// subject they belong to.
#[test]
fn claims_an_identity_header_cannot_carry_as_they_are_refuse_the_token() {
    let mut f = fixture(json!({}));
    let long = "u".repeat(5000);
    for (custom, why) in [
        (
            json!({"sub": "u-1", "roles": ["user,admin"]}),
            "a comma inside a role",
        ),
        (
            json!({"sub": "u-1", "roles": ["user", " admin"]}),
            "a role a reader trims",
        ),
        (json!({"sub": "u-1", "roles": [""]}), "an empty role"),
        (
            json!({"sub": "u-1", "scp": ["read write"]}),
            "a space inside a scope",
        ),
        (
            json!({"sub": long, "roles": ["user"]}),
            "a subject over 4 KiB",
        ),
        (
            json!({"sub": "u-1\r\nx-auth-roles: admin", "roles": ["user"]}),
            "CR LF in the subject",
        ),
        (
            json!({"sub": "u-1", "sid": "s\u{0}1", "roles": ["user"]}),
            "NUL in the session",
        ),
        (
            json!({"sub": 42, "roles": ["user"]}),
            "a subject that is not a string",
        ),
        (
            json!({"sub": "u-1", "jti": ["j"], "roles": ["user"]}),
            "a jti that is not a string",
        ),
        (
            json!({"sub": "u-1", "org": {"team": "blue\nred"}}),
            "a mapped claim with a line break",
        ),
        (
            json!({"sub": "u-1", "org": {"team": ["blue,red", "green"]}}),
            "a mapped list item holding a comma",
        ),
        (
            json!({"sub": "u-1", "roles": ["user", 7]}),
            "a role that is not a string",
        ),
        (
            json!({"sub": "u-1", "roles": {"admin": true}}),
            "roles that are neither a list nor a string",
        ),
        (
            json!({"sub": "u-1", "scope": ["read", null]}),
            "a scope that is not a string",
        ),
        (
            json!({"sub": "u-1", "scope": "read\u{a0}admin"}),
            "a Unicode space inside a scope",
        ),
        (
            json!({"sub": "u-1", "scp": ["read\"admin"]}),
            "a scope character RFC 6749 does not allow",
        ),
    ] {
        let t = token_with(&f, custom);
        let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
        assert_eq!(denied(&o), (DenyReason::Malformed, 401), "{why}");
    }
    // The same shapes, representable, pass as they are.
    let t = token_with(
        &f,
        json!({"sub": "u-1", "sid": "s-1", "roles": ["user", "Billing Admin"], "scp": ["read", "write"], "org": {"team": ["blue", "red"]}}),
    );
    let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(header(&o, "x-auth-user"), Some("u-1"));
    assert_eq!(header(&o, "x-auth-roles"), Some("user,Billing Admin"));
    assert_eq!(header(&o, "x-auth-team"), Some("blue,red"));
    // Roles as one string are one role (some issuers send a single role so):
    // `Domain Admins` is never `Domain` and `Admins`.
    let t = token_with(&f, json!({"sub": "u-1", "roles": "Domain Admins"}));
    let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(header(&o, "x-auth-roles"), Some("Domain Admins"));
    // A mapped claim with no header form (an object) is left out, as an absent one is.
    let t = token_with(&f, json!({"sub": "u-1", "org": {"team": {"name": "blue"}}}));
    let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(
        (header(&o, "x-auth-user"), header(&o, "x-auth-team")),
        (Some("u-1"), None)
    );
}

/// A list claim longer than the filter keeps is refused, never cut short: the
/// roles past the cut would be missing upstream (a backend denying `suspended`
/// would not see it), and a route's scope check would judge part of the list.
#[test]
fn a_list_claim_longer_than_the_filter_keeps_refuses_the_token() {
    let mut f = fixture(json!({}));
    let many = |last: &str| {
        let mut items: Vec<String> = (0..claims::MAX_LIST_ITEMS)
            .map(|i| format!("r{i}"))
            .collect();
        items.push(last.to_owned());
        items
    };
    for (custom, why) in [
        (json!({"sub": "u-1", "roles": many("suspended")}), "roles"),
        (
            json!({"sub": "u-1", "scp": many("admin")}),
            "scopes as a list",
        ),
        (
            json!({"sub": "u-1", "scope": many("admin").join(" ")}),
            "scopes as one string",
        ),
        (
            json!({"sub": "u-1", "roles": many("x").into_iter().map(serde_json::Value::from).chain([serde_json::Value::from(7)]).collect::<Vec<_>>()}),
            "an item past the cut of another type",
        ),
    ] {
        let t = token_with(&f, custom);
        let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
        assert_eq!(denied(&o), (DenyReason::TokenTooLarge, 401), "{why}");
    }
    // Exactly as many as kept pass, every one forwarded.
    let full: Vec<String> = (0..claims::MAX_LIST_ITEMS)
        .map(|i| format!("r{i}"))
        .collect();
    let t = token_with(&f, json!({"sub": "u-1", "roles": full}));
    let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(
        header(&o, "x-auth-roles").map(|r| r.split(',').count()),
        Some(claims::MAX_LIST_ITEMS)
    );
}

/// Spellings of the admin area, end to end on the host: a token without the `admin`
/// role must not pass where a backend may serve the admin area. The empty
/// port (`admin.example:`) is the host `admin.example` to Go's
/// `net.SplitHostPort` and the WHATWG URL parser; `%C4%B1` (`ı`) is `i` to
/// Java's `equalsIgnoreCase` and .NET's `OrdinalIgnoreCase`; `%C0%AF` is `/`
/// to decoders that accept overlong UTF-8. Envoy forwards all three as sent.
#[test]
fn a_user_token_does_not_pass_where_a_backend_may_serve_the_admin_area() {
    let mut f = fixture(json!({"routes": [
        {"match": {"prefix": "/public"}, "policy": "public"},
        {"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
        {"match": {"prefix": "/", "host": "admin.example"}, "policy": {"roles_any": ["admin"]}}
    ]}));
    let user = format!("Bearer {}", f.token());
    let mut eval = |authority: &str, path: &str| {
        f.engine.evaluate(
            &request("GET", authority, path, &[("authorization", &user)]),
            NOW * 1000 + 500,
            true,
        )
    };
    assert_eq!(
        denied(&eval("admin.example:", "/x")),
        (DenyReason::InsufficientRole, 403),
        "empty port"
    );
    for path in ["/adm%C4%B1n/users", "/public/..%C0%AF../admin/users"] {
        assert_eq!(
            denied(&eval("api", path)),
            (DenyReason::AmbiguousPath, 400),
            "{path}"
        );
    }
}

/// The wall clock steps back (an NTP correction of a clock that ran an hour
/// ahead) just after the last good poll, and the feed stops answering. The
/// list is then as old as the time that passed since that poll, not
/// "fresh until the clock catches up with the old reading": otherwise
/// `max_staleness_secs` is stretched by the size of the step, and tokens
/// revoked meanwhile pass for up to an hour.
#[test]
fn a_clock_step_back_does_not_keep_a_stale_list_fresh() {
    let mut f = fixture(json!({"revocation": {"max_staleness_secs": 10}}));
    // The last good poll, read on the clock before the step.
    f.engine.revocation_poll(ProviderId::FIRST);
    let empty = RevocationFeed {
        issuer: ISS.into(),
        cursor: "0".into(),
        ..Default::default()
    };
    f.engine
        .apply_feed(ProviderId::FIRST, FeedBody::Json(empty), NOW * 1000)
        .unwrap();
    // The clock steps back an hour; the issuer's clock too (same NTP).
    let stepped = NOW - 3_600;
    let mut c = claims(default_claims());
    c.issued_at = Some(UnixTimeStamp::from_secs(stepped - 10));
    c.expires_at = Some(UnixTimeStamp::from_secs(stepped + 890));
    let t = f.sign(c);
    let api = Request::from_headers(
        vec![
            (":path".into(), "/api".into()),
            ("authorization".into(), format!("Bearer {t}")),
        ],
        None,
    );
    // 11 s pass with no answer from the feed: over the 10 s bound.
    assert_eq!(
        denied(&f.engine.evaluate(&api, stepped * 1000 + 11_000, true)),
        (DenyReason::RevocationStale, 503),
        "stale 11 s after the last good poll, whatever the clock read then"
    );
    // The next good poll marks it current on the stepped clock.
    f.engine.revocation_poll(ProviderId::FIRST);
    assert!(f
        .engine
        .revocations_unchanged(ProviderId::FIRST, stepped * 1000 + 12_000));
    assert!(matches!(
        f.engine.evaluate(&api, stepped * 1000 + 13_000, true),
        Outcome::Allow(_)
    ));
    // A worker that took the same list before the step is made current by
    // the lease VM's stamp from after it, not by one from before.
    let mut worker = Engine::new(
        config(json!({"revocation": {"max_staleness_secs": 10}})),
        NOW * 1000,
    );
    worker.set_keys(
        ProviderId::FIRST,
        f.engine
            .provider(ProviderId::FIRST)
            .unwrap()
            .keys
            .clone()
            .unwrap(),
    );
    let (base, _) = f
        .engine
        .revocation_blobs(ProviderId::FIRST)
        .map(|(b, o)| (b.to_vec(), o.to_vec()))
        .unwrap();
    assert!(worker.adopt_revocation_base(ProviderId::FIRST, base, NOW * 1000));
    let before = FreshStamp {
        at_ms: NOW * 1000,
        forgot_secs: NOW,
        cursor: "0".into(),
    };
    worker.revocations_current_at(ProviderId::FIRST, &before, NOW * 1000);
    worker.revocations_current_at(ProviderId::FIRST, &before, stepped * 1000 + 12_500);
    assert_eq!(
        denied(&worker.evaluate(&api, stepped * 1000 + 12_500, true)).0,
        DenyReason::RevocationStale,
        "a stamp read on the clock before the step vouches for nothing after it"
    );
    let after = f
        .engine
        .fresh_stamp(ProviderId::FIRST, stepped * 1000 + 12_000)
        .unwrap();
    worker.revocations_current_at(ProviderId::FIRST, &after, stepped * 1000 + 12_500);
    assert!(matches!(
        worker.evaluate(&api, stepped * 1000 + 13_000, true),
        Outcome::Allow(_)
    ));
}

/// A VM that started just before the wall clock stepped back an hour does
/// not keep pausing every request for its first revocation list for that
/// hour: the first-list wait is over once it reads further away than `key_wait_ms`.
#[test]
fn a_clock_step_back_does_not_stretch_the_first_list_wait() {
    let f = fixture(json!({}));
    let mut cold = Engine::new(config(json!({})), NOW * 1000);
    let jwks = format!(r#"{{"keys":[{}]}}"#, f.kp.public_key().to_jwk());
    cold.set_keys(ProviderId::FIRST, KeySet::parse(jwks.as_bytes()).unwrap());
    let stepped = NOW - 3_600;
    let mut c = claims(default_claims());
    c.issued_at = Some(UnixTimeStamp::from_secs(stepped - 10));
    c.expires_at = Some(UnixTimeStamp::from_secs(stepped + 890));
    let api = Request::from_headers(
        vec![
            (":path".into(), "/api".into()),
            ("authorization".into(), format!("Bearer {}", f.sign(c))),
        ],
        None,
    );
    assert_eq!(
        denied(&cold.evaluate(&api, stepped * 1000, true)),
        (DenyReason::RevocationStale, 503)
    );
}

/// The browser's access cookie is ambient: the browser attaches it to any
/// request to the origin, also one another site of the same registrable
/// domain makes (`SameSite=Lax` lets same-site requests of any method carry
/// it: a form POST or a no-preflight `fetch` from `https://evil.example.com`
/// to `https://app.example.com`). A state-changing request that the browser
/// itself marks as coming from another origin (`Sec-Fetch-Site`, `Origin`)
/// must not be authenticated by the cookie alone: the backend only sees the
/// identity headers and cannot tell a cookie from an `Authorization` header.
#[test]
fn a_cross_origin_post_is_not_authenticated_by_the_ambient_cookie() {
    let mut f = fixture(json!({
        "token_sources": {"authorization_bearer": true, "cookies": ["__Host-authflow-access"]}
    }));
    let t = f.token();
    let cookie = format!("__Host-authflow-access={t}");
    let post = |f: &mut Fixture, extra: &[(&str, &str)]| {
        let mut h = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), "/api/transfer".to_string()),
            (":authority".to_string(), "app.example.com".to_string()),
            ("cookie".to_string(), cookie.clone()),
        ];
        h.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        f.engine.evaluate(
            &Request::from_headers(h, Some("203.0.113.9:4000".into())),
            NOW * 1000 + 500,
            true,
        )
    };
    // The page's own request, or a client that sends neither header: allowed.
    assert!(matches!(
        post(
            &mut f,
            &[
                ("origin", "https://app.example.com"),
                ("sec-fetch-site", "same-origin")
            ]
        ),
        Outcome::Allow(_)
    ));
    assert!(matches!(post(&mut f, &[]), Outcome::Allow(_)));
    // A sibling site's form or fetch: not on the cookie.
    for extra in [
        vec![
            ("origin", "https://evil.example.com"),
            ("sec-fetch-site", "same-site"),
        ],
        vec![("sec-fetch-site", "same-site")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("origin", "https://evil.example.com")],
    ] {
        let o = post(&mut f, &extra);
        assert!(
            matches!(o, Outcome::Deny(_)),
            "{extra:?}: a cross-origin POST passed on the cookie: {o:?}"
        );
    }
}

/// A `GET` is safe, so a cookie authenticates it from any site: unless it
/// names another method to run (`?_method=DELETE`, an override header),
/// which Rails, Laravel or Express's `method-override` may honour on a `GET`
/// too. A link on another site would then delete on the victim's cookie.
#[test]
fn a_cross_site_get_naming_another_method_is_not_authenticated_by_the_cookie() {
    let mut f = fixture(json!({
        "token_sources": {"authorization_bearer": true, "cookies": ["__Host-authflow-access"]}
    }));
    let cookie = format!("__Host-authflow-access={}", f.token());
    let get = |f: &mut Fixture, path: &str, extra: &[(&str, &str)]| {
        let mut h = vec![
            ("cookie", cookie.as_str()),
            ("sec-fetch-site", "cross-site"),
        ];
        h.extend_from_slice(extra);
        f.eval(path, &h)
    };
    // A plain link from another site: the cookie authenticates it (an empty
    // override names no method: backends run the request's own).
    assert!(matches!(
        get(&mut f, "/api/items/1?_method=", &[]),
        Outcome::Allow(_)
    ));
    assert!(matches!(
        get(&mut f, "/api/items/1", &[]),
        Outcome::Allow(_)
    ));
    for (path, extra) in [
        ("/api/items/1?_method=DELETE", vec![]),
        ("/api/items/1?a=1&%5Fmethod=delete", vec![]),
        ("/api/items/1", vec![("x-http-method-override", "DELETE")]),
        ("/api/items/1", vec![("x_method_override", "PUT")]),
    ] {
        let o = get(&mut f, path, &extra);
        assert!(
            matches!(o, Outcome::Deny(_)),
            "{path} {extra:?}: a cross-site GET naming another method passed on the cookie: {o:?}"
        );
    }
}

/// Finding: a state-changing request another site makes is not
/// authenticated by the access cookie, but on a `public` route it was then
/// let through anonymously with the victim's valid token still in its
/// `Cookie` header: the cookie was never checked, so `forward` took it for
/// "a token that did not verify" and left it as sent. Any sibling site's
/// form (`SameSite=Lax` sends the cookie same-site) delivered the victim's
/// live token to a public backend that could log or read it, where the same
/// request from the page itself has it removed. It is removed there too.
#[test]
fn a_cookie_withheld_from_a_cross_site_post_does_not_go_upstream_either() {
    use authflow_filter_core::forward::{credential_edits, HeaderEdit};
    let mut f = fixture(json!({
        "token_sources": {"authorization_bearer": true, "cookies": ["__Host-authflow-access"]}
    }));
    let cookie = format!("a=1; __Host-authflow-access={}", f.token());
    for site in ["same-origin", "same-site"] {
        let req = request(
            "POST",
            "app.example.com",
            "/public/feedback",
            &[("cookie", &cookie), ("sec-fetch-site", site)],
        );
        let Outcome::Allow(a) = f.engine.evaluate(&req, NOW * 1000 + 500, true) else {
            panic!("a public route")
        };
        assert_eq!(
            credential_edits(&f.engine.config, &req, a.verified_by, false),
            vec![HeaderEdit::Set("cookie".into(), "a=1".into())],
            "{site}: the victim's token went upstream"
        );
    }
}

/// Finding: a WebSocket handshake is a `GET`, so the cookie authenticated
/// it from any page. But no CORS stands between a page and a socket: a
/// sibling site (`evil.example.com`, same-site to `app.example.com`, so the
/// `SameSite=Lax` cookie goes along) or, without `SameSite`, any site could
/// open the victim's socket and read and write on it (cross-site WebSocket
/// hijacking). A protocol switch (`Upgrade`) is judged as a state-changing
/// request: the cookie counts only from the same origin.
#[test]
fn a_websocket_handshake_from_another_origin_is_not_authenticated_by_the_cookie() {
    let mut f = fixture(json!({
        "token_sources": {"authorization_bearer": true, "cookies": ["__Host-authflow-access"]}
    }));
    let cookie = format!("__Host-authflow-access={}", f.token());
    let handshake = |f: &mut Fixture, extra: &[(&str, &str)]| {
        let mut h = vec![
            ("cookie", cookie.as_str()),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
        ];
        h.extend_from_slice(extra);
        f.eval("/api/socket", &h)
    };
    for extra in [
        vec![
            ("sec-fetch-site", "same-site"),
            ("origin", "https://evil.example.com"),
        ],
        vec![
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ],
        vec![("origin", "https://evil.example.com")],
    ] {
        let o = handshake(&mut f, &extra);
        assert!(
            matches!(o, Outcome::Deny(_)),
            "{extra:?}: a socket opened by another origin passed on the cookie: {o:?}"
        );
    }
    // The application's own page, and a client that is no browser, keep it.
    for extra in [
        vec![("sec-fetch-site", "same-origin"), ("origin", "https://api")],
        vec![("origin", "https://api")],
        vec![],
    ] {
        let o = handshake(&mut f, &extra);
        assert!(matches!(o, Outcome::Allow(_)), "{extra:?}: {o:?}");
    }
}

/// A mapped list claim arrives whole or the token is refused: an item with
/// no header form (null, a boolean, an object, a nested list) was silently
/// left out, so the backend saw a shorter list than the issuer wrote (the
/// README: "never dropped, cut short or split on the way"), just as a role
/// that is not a string is refused rather than dropped.
#[test]
fn a_mapped_list_claim_with_an_item_it_cannot_carry_refuses_the_token() {
    let mut f = fixture(json!({}));
    for (team, why) in [
        (json!(["blue", null]), "a null item"),
        (json!(["blue", true]), "a boolean item"),
        (json!(["blue", {"name": "red"}]), "an object item"),
        (json!(["blue", ["red", "green"]]), "a nested list"),
        (json!([{"name": "red"}]), "nothing but an object"),
    ] {
        let t = token_with(&f, json!({"sub": "u-1", "org": {"team": team}}));
        let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
        assert_eq!(denied(&o), (DenyReason::Malformed, 401), "{why}");
    }
    // Strings and numbers still pass, in order.
    let t = token_with(&f, json!({"sub": "u-1", "org": {"team": ["blue", 7]}}));
    let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(header(&o, "x-auth-team"), Some("blue,7"));
}

/// A mapped number the filter cannot render exactly (an integer beyond
/// 64 bits, read as a float) is refused: rendered, two different ids would
/// reach the backend as the same header value.
#[test]
fn a_mapped_number_that_cannot_be_rendered_exactly_refuses_the_token() {
    let mut f = fixture(json!({}));
    let sign_raw = |f: &Fixture, team: &str| {
        // serde_json's `Value` would itself round the number: write the payload by hand.
        let payload = format!(
            r#"{{"iss":"{ISS}","aud":"api","sub":"u-1","iat":{NOW},"exp":{},"org":{{"team":{team}}}}}"#,
            NOW + 300
        );
        let header = r#"{"alg":"EdDSA","kid":"k1"}"#;
        let input = format!(
            "{}.{}",
            base64_url(header.as_bytes()),
            base64_url(payload.as_bytes())
        );
        let sig = f.kp.key_pair().as_ref().sk.sign(input.as_bytes(), None);
        format!("{input}.{}", base64_url(sig.as_ref()))
    };
    let mut seen = Vec::new();
    for team in ["18446744073709551616", "18446744073709551617"] {
        let t = sign_raw(&f, team);
        let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
        match &o {
            Outcome::Deny(d) => assert_eq!(d.reason, DenyReason::Malformed, "{team}"),
            _ => seen.push(header(&o, "x-auth-team").map(str::to_owned)),
        }
    }
    assert!(
        seen.is_empty(),
        "two different ids reached the backend as {seen:?}"
    );
    // An integer that fits is exact.
    let t = sign_raw(&f, "18446744073709551615");
    let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(header(&o, "x-auth-team"), Some("18446744073709551615"));
    let t = sign_raw(&f, "-9223372036854775808");
    let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(header(&o, "x-auth-team"), Some("-9223372036854775808"));
    // A number written as a float has no one text (`1e3`, `1000.0`, `1000`
    // are one value): refused, alone or in a list.
    for team in ["1000.0", "1e3", "0.5", "-2.5", "[7, 7.0]"] {
        let t = sign_raw(&f, team);
        let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
        assert_eq!(denied(&o), (DenyReason::Malformed, 401), "{team}");
    }
}

/// Roles are a user's: the filter refuses a service token on every roles
/// rule, whatever `roles` claim it carries. Where it lets one through (an
/// `authenticated` or `scopes_all` route), that claim must not reach the
/// backend either: `x-auth-roles: admin` beside `x-auth-client-id` would
/// make the service account an admin to a backend checking the roles header.
#[test]
fn a_service_tokens_role_claim_does_not_reach_the_backend() {
    let mut f = service_fixture(json!({}));
    let svc_admin = format!("Bearer {}", service_token(&f, "billing", &["admin"]));
    for path in ["/write", "/api"] {
        let o = f.eval(path, &[("authorization", &svc_admin)]);
        assert_eq!(header(&o, "x-auth-client-id"), Some("billing"), "{path}");
        assert_eq!(header(&o, "x-auth-roles"), None, "{path}");
    }
}

/// An HTTP reader trims the spaces around a header value (RFC 9110 §5.5):
/// a subject ` u-alice` or `u-alice ` (another user to the issuer and to
/// the filter's bans) would reach the backend, and the rate limiter keyed
/// on it, as `u-alice`. Refused, as a role a reader trims already is.
#[test]
fn an_identity_value_a_reader_trims_refuses_the_token() {
    let mut f = fixture(json!({}));
    for (custom, why) in [
        (json!({"sub": " u-alice"}), "a leading space in the subject"),
        (
            json!({"sub": "u-alice "}),
            "a trailing space in the subject",
        ),
        (
            json!({"sub": "u-1", "sid": "s-1 "}),
            "a trailing space in the session",
        ),
        (
            json!({"sub": "u-1", "org": {"team": " blue"}}),
            "a leading space in a mapped claim",
        ),
    ] {
        let t = token_with(&f, custom);
        let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
        assert_eq!(denied(&o), (DenyReason::Malformed, 401), "{why}");
    }
    // Inner spaces are part of the value.
    let t = token_with(&f, json!({"sub": "u-1", "org": {"team": "blue team"}}));
    let o = f.eval("/api", &[("authorization", &format!("Bearer {t}"))]);
    assert_eq!(header(&o, "x-auth-team"), Some("blue team"));
}

/// A token of a provider the route does not admit is refused (403
/// `provider_not_allowed`) at once: it neither waits for that provider's
/// keys (an unknown `kid`) or first revocation list, nor is answered by that
/// provider's staleness (503), since nothing it could wait for lets it pass.
#[test]
fn a_token_of_a_provider_the_route_does_not_admit_never_waits() {
    let main_key = Ed25519KeyPair::generate().with_key_id("main");
    let partner_key = Ed25519KeyPair::generate().with_key_id("partner");
    let config = json!({
        "providers": [
            provider_json("main", ISS, json!({"inline": inline_jwks(&main_key)})),
            {"name": "partner", "issuer": PARTNER, "audiences": ["api"], "algorithms": ["EdDSA"],
             "jwks": {"remote": {"cluster": "partner", "path": "/jwks"}},
             "revocations": {"cluster": "partner", "path": "/v1/revocations"}}
        ],
        "routes": [
            {"match": {"path_prefix": "/admin"}, "policy": {"roles_any": ["admin"]}, "providers": ["main"]},
            {"match": {"path_prefix": "/public"}, "policy": "public", "providers": ["main"]}
        ],
        "default_providers": ["main", "partner"]
    });
    let mut engine = Engine::new(
        FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
        NOW * 1000,
    );
    let partner = engine
        .config
        .providers
        .find(|p| p.issuer == PARTNER)
        .unwrap();
    let jwks = format!(r#"{{"keys":[{}]}}"#, partner_key.public_key().to_jwk());
    engine.set_keys(partner, KeySet::parse(jwks.as_bytes()).unwrap());
    let admin = AccessClaims {
        roles: vec!["admin".into()],
        ..default_claims()
    };
    // Signed with a key the partner's set does not hold (yet): an unknown `kid`.
    let unknown_kid = Ed25519KeyPair::generate()
        .with_key_id("rotated")
        .sign(claims(admin.clone()).with_issuer(PARTNER))
        .unwrap();
    // Signed with the partner's key; the partner's first revocation list has not come.
    let no_list_yet = partner_key
        .sign(claims(admin).with_issuer(PARTNER))
        .unwrap();
    for token in [&unknown_kid, &no_list_yet] {
        for may_wait in [true, false] {
            let o = engine.evaluate(
                &bearer_request("/admin/x", token),
                NOW * 1000 + 500,
                may_wait,
            );
            assert!(
                matches!(&o, Outcome::Deny(d) if d.reason == DenyReason::ProviderNotAllowed && d.response.status == 403),
                "may_wait {may_wait}: {o:?}"
            );
            let o = engine.evaluate(
                &bearer_request("/public/x", token),
                NOW * 1000 + 500,
                may_wait,
            );
            assert!(
                matches!(&o, Outcome::Allow(a) if a.verified_by.is_none()),
                "may_wait {may_wait}: {o:?}"
            );
        }
    }
}

/// On a public route the request goes on anonymously whatever token it
/// carries; a token naming a configured issuer that the filter refused
/// (expired, forged, revoked, another key's) is marked as such, so that it
/// goes no further (`forward::credential_edits`). A token of another issuer
/// or no token at all is not: a public backend may take its own kind.
#[test]
fn a_refused_token_of_ours_is_marked_on_a_public_route() {
    let mut f = fixture(json!({}));
    let refused_of = |f: &mut Fixture, token: &str| match f
        .eval("/public", &[("authorization", &format!("Bearer {token}"))])
    {
        Outcome::Allow(a) => {
            assert!(a.verified_by.is_none(), "{token}: vouched for");
            a.refused_token
        }
        other => panic!("a public route: {other:?}"),
    };
    let mut expired = Claims::with_custom_claims(json!({"sub": "u-1"}), Duration::from_mins(5))
        .with_issuer(ISS)
        .with_audience("api");
    expired.issued_at = Some(UnixTimeStamp::from_secs(NOW - 900));
    expired.expires_at = Some(UnixTimeStamp::from_secs(NOW - 600));
    let expired = f.kp.sign(expired).unwrap();
    let good = token_with(&f, json!({"sub": "u-1"}));
    let forged = format!("{}.{}", good.rsplit_once('.').unwrap().0, "A".repeat(86));
    let stranger = Ed25519KeyPair::generate().with_key_id("k1");
    let mut other_key = Claims::with_custom_claims(json!({"sub": "u-1"}), Duration::from_mins(5))
        .with_issuer(ISS)
        .with_audience("api");
    other_key.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    let other_key = stranger.sign(other_key).unwrap();
    for (what, token) in [
        ("expired", &expired),
        ("forged", &forged),
        ("another key's", &other_key),
    ] {
        assert!(refused_of(&mut f, token), "{what}");
    }
    let mut elsewhere = Claims::with_custom_claims(json!({"sub": "u-1"}), Duration::from_mins(5))
        .with_issuer("https://elsewhere.test")
        .with_audience("api");
    elsewhere.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    let elsewhere = stranger.sign(elsewhere).unwrap();
    assert!(!refused_of(&mut f, &elsewhere), "another issuer's");
    assert!(
        !refused_of(&mut f, "opaque-token-of-the-backend"),
        "not a JWT"
    );
    // Ours though refused before its signature was read: padded (a lenient
    // reader decodes it alike), or in an algorithm the provider does not allow.
    assert!(
        refused_of(&mut f, &format!("{good}==")),
        "a padded signature"
    );
    let es256 = ES256KeyPair::generate().with_key_id("k1");
    let mut other_alg = Claims::with_custom_claims(json!({"sub": "u-1"}), Duration::from_mins(5))
        .with_issuer(ISS)
        .with_audience("api");
    other_alg.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    let other_alg = es256.sign(other_alg).unwrap();
    assert!(refused_of(&mut f, &other_alg), "an algorithm not allowed");
    // Two tokens at once: which is whose is unknown, and neither goes on.
    match f.eval(
        "/public",
        &[
            ("authorization", &format!("Bearer {expired}")),
            ("authorization", "Bearer x"),
        ],
    ) {
        Outcome::Allow(a) => assert!(a.refused_token),
        other => panic!("a public route: {other:?}"),
    }
    match f.eval("/public", &[("authorization", &format!("Bearer {good}"))]) {
        Outcome::Allow(a) => {
            assert_eq!(a.verified_by, Some(ProviderId::FIRST));
            assert!(!a.refused_token);
        }
        other => panic!("{other:?}"),
    }
}

/// A configuration without routes, cookies or token headers reads its
/// headers by name. A token in the query beside the one in `Authorization`
/// must still be refused there: a backend reading the query first would act
/// on a token the filter never checked (someone else's, revoked, forged).
#[test]
fn a_second_token_in_the_query_is_refused_when_headers_are_read_by_name() {
    use authflow_filter_core::request::{HeaderBlock, HeaderReads};
    let mut f = fixture(json!({"routes": [], "forward_device_secret": true}));
    let reads = HeaderReads::for_config(&f.engine.config);
    assert_ne!(reads, HeaderReads::All, "the case under test");
    let token = f.token();
    let all = [
        (":method".to_string(), "GET".to_string()),
        (
            ":path".to_string(),
            "/api?access_token=forged.token.here".to_string(),
        ),
        (":authority".to_string(), "api".to_string()),
        ("authorization".to_string(), format!("Bearer {token}")),
    ];
    // What the proxy answers a read by name: the first copy.
    let read: Vec<(String, String)> = match &reads {
        HeaderReads::All => all.to_vec(),
        HeaderReads::Only(names) => names
            .iter()
            .filter_map(|n| all.iter().find(|(a, _)| a == n).cloned())
            .collect(),
    };
    let o = f.engine.evaluate(
        &Request::new(HeaderBlock::from_pairs(&read), None),
        NOW * 1000 + 500,
        false,
    );
    assert_eq!(denied(&o), (DenyReason::InvalidRequest, 400));
}

/// Between ticks the glue's clock is the last tick's reading, and a tick can
/// come late on a starved worker: a request let through just before a tick
/// that ran a second late is milliseconds old, not a second. A revocation
/// that tick brings must not reset it (it would hide the backend's answer,
/// the logout's own among them).
#[test]
fn a_request_let_through_before_a_late_tick_is_not_taken_for_an_old_stream() {
    use authflow_filter_core::streams::{OpenStreams, MIN_AGE_MS};
    let mut f = fixture(json!({"clock_skew_secs": 0}));
    let mut streams = OpenStreams::default();
    let last_tick_ms = NOW * 1000;
    streams.opened(7, f.let_through());
    revoke_jti_1(&mut f);
    let late_tick_ms = last_tick_ms + MIN_AGE_MS + 200;
    assert_eq!(streams.sweep(&f.engine, late_tick_ms), [], "first seen now");
    assert_eq!(
        streams.sweep(&f.engine, late_tick_ms + MIN_AGE_MS),
        [(7, DenyReason::TokenRevoked)],
        "judged once seen open for MIN_AGE_MS"
    );
}

/// Between ticks a request is judged with the last tick's clock reading (a
/// second or more behind on a starved worker), while this worker's own poll
/// answer is applied, and the list pruned, at the callout's newer reading.
/// At the largest `clock_skew_secs` a token passes until `exp` + 600 s by
/// the request's clock: the poll answered a moment later must not have
/// forgotten its revocation by then.
#[test]
fn a_revocation_pruned_at_a_callouts_reading_still_covers_a_request_judged_by_the_last_tick() {
    use authflow_contract::revocation::MAX_CLOCK_SKEW_SECS;
    let mut f = fixture(json!({"clock_skew_secs": MAX_CLOCK_SKEW_SECS}));
    let bearer = format!("Bearer {}", f.token());
    let exp = NOW + 890;
    let delta = |cursor: &str, jti: &str, expires_at: u64| {
        FeedBody::Json(RevocationFeed {
            issuer: ISS.into(),
            cursor: cursor.into(),
            revoked_tokens: vec![RevokedToken {
                jti: jti.into(),
                expires_at,
            }],
            ..Default::default()
        })
    };
    f.engine.revocation_poll(ProviderId::FIRST);
    f.engine
        .apply_feed(ProviderId::FIRST, delta("1", "jti-1", exp), NOW * 1000)
        .unwrap();
    // The last tick read exp + 600 s; the next one is a second late. Meanwhile
    // the long poll answers (an unrelated revocation) and the list is pruned
    // at the callout's own reading, past exp + 600 s.
    let last_tick_ms = (exp + MAX_CLOCK_SKEW_SECS) * 1000;
    let callout_ms = last_tick_ms + 1_200;
    f.engine.revocation_poll(ProviderId::FIRST);
    f.engine
        .apply_feed(
            ProviderId::FIRST,
            delta("2", "unrelated", exp + 900),
            callout_ms,
        )
        .unwrap();
    let h = vec![
        (":path".to_string(), "/api".to_string()),
        ("authorization".to_string(), bearer),
    ];
    let o = f
        .engine
        .evaluate(&Request::from_headers(h, None), last_tick_ms + 100, true);
    assert_eq!(
        denied(&o).0,
        DenyReason::TokenRevoked,
        "still within the skew by the request's clock: its revocation holds"
    );
}

/// With `clock_skew_secs` 0 a token minted this second (the service sets
/// `iat` and `nbf` to its whole second) is judged with the last tick's
/// reading, which may still be in the second before (at most a tick old,
/// more on a starved worker): it is not from the future.
#[test]
fn a_token_minted_since_the_last_tick_is_not_taken_as_from_the_future() {
    let mut f = fixture(json!({"clock_skew_secs": 0}));
    let mut c = claims(default_claims());
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    c.invalid_before = Some(UnixTimeStamp::from_secs(NOW));
    let t = f.sign(c);
    let h = vec![
        (":path".to_string(), "/api".to_string()),
        ("authorization".to_string(), format!("Bearer {t}")),
    ];
    // The last tick read NOW - 0.1 s; the token was minted at NOW + 0.05 s.
    let o = f
        .engine
        .evaluate(&Request::from_headers(h, None), NOW * 1000 - 100, true);
    assert!(matches!(o, Outcome::Allow(_)), "{o:?}");
}

/// A user may hold many streams at once on one worker (one HTTP/2
/// connection carries as many as Envoy allows, and Istio lifts the circuit
/// breakers). However many he holds, the stream he opens next must not
/// outlive his ban: a list that stopped watching past a bound (once 65 536)
/// would let him fill it with his own streams first and keep that one
/// flowing after the revocation resets all the others.
#[test]
fn a_stream_opened_after_many_others_still_ends_with_its_tokens_revocation() {
    use authflow_filter_core::streams::{OpenStreams, MIN_AGE_MS};
    let mut f = fixture(json!({"clock_skew_secs": 0}));
    let mut streams = OpenStreams::default();
    let token = f.let_through();
    for id in 0..65_536u32 {
        streams.opened(id, token.clone());
    }
    let kept = 65_536u32;
    streams.opened(kept, token);
    let seen_ms = NOW * 1000;
    assert_eq!(streams.sweep(&f.engine, seen_ms), [], "first seen");
    revoke_jti_1(&mut f);
    let ended = streams.sweep(&f.engine, seen_ms + MIN_AGE_MS);
    assert!(
        ended.iter().any(|(id, _)| *id == kept),
        "the stream opened after 65 536 others lives on after its token's revocation ({} others reset)",
        ended.len()
    );
}

/// What a full list costs a worker: a stream closing scans it (every
/// request, anonymous ones too), a sweep judges every entry.
/// `cargo test -p authflow-filter-core --release --test engine watched_list_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn watched_list_cost() {
    use authflow_filter_core::streams::{OpenStreams, MIN_AGE_MS};
    use std::time::Instant;
    let mut f = fixture(json!({"clock_skew_secs": 0}));
    let mut streams = OpenStreams::default();
    let token = f.let_through();
    for id in 0..65_536u32 {
        streams.opened(id, token.clone());
    }
    let n = 2_000u32;
    let t = Instant::now();
    for i in 0..n {
        streams.closed(1_000_000 + i); // not watched: a full scan
    }
    println!("closed() of an unwatched id: {:?} each", t.elapsed() / n);
    let t = Instant::now();
    for i in 0..n {
        streams.opened(2_000_000 + i, token.clone());
        streams.closed(2_000_000 + i); // a short request let through with a token
    }
    println!(
        "opened() + closed() of a short request: {:?} each",
        t.elapsed() / n
    );
    let seen_ms = NOW * 1000;
    streams.sweep(&f.engine, seen_ms);
    revoke_jti_1(&mut f);
    let t = Instant::now();
    let ended = streams.sweep(&f.engine, seen_ms + MIN_AGE_MS);
    println!("sweep ending {} streams: {:?}", ended.len(), t.elapsed());
}
