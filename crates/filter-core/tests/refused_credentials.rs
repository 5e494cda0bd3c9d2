//! What the filter keeps from a public route's backend and lets a backend set:
//! a refused token of ours from any source, other spellings of the token
//! cookie, a nameless `Set-Cookie` that comes back as a credential cookie;
//! and claims rendered into headers as integers only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_filter_core::engine::{Engine, Outcome};
use authflow_filter_core::forward::{credential_edits, sets_credential_cookie, HeaderEdit};
use authflow_filter_core::{FilterConfig, Request};
use jwt_simple::prelude::*;
use serde_json::json;

use support::ISS;
const NOW: u64 = 1_900_000_000;

fn config() -> FilterConfig {
    let c = json!({
        "providers": [{
            "name": "test", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations"}
        }],
        "token_sources": {"authorization_bearer": true, "cookies": ["access_token"], "headers": ["x-token"]},
        "routes": [
            {"match": {"prefix": "/public"}, "policy": "public"},
            {"match": {"prefix": "/v1/auth/"}, "policy": "public", "forward_credentials": true}
        ],
        "identity_headers": {"subject": "x-auth-user", "claims": {"num": "x-auth-num"}}
    });
    FilterConfig::from_json(c.to_string().as_bytes()).unwrap()
}

struct Fixture {
    kp: Ed25519KeyPair,
    engine: Engine,
}

fn fixture() -> Fixture {
    let kp = Ed25519KeyPair::generate().with_key_id("k1");
    let engine = support::ready_engine(config(), &kp.public_key().to_jwk(), NOW * 1000);
    Fixture { kp, engine }
}

fn request(path: &str, headers: &[(&str, &str)]) -> Request {
    let mut h = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "api".to_string()),
    ];
    h.extend(headers.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    Request::from_headers(h, None)
}

fn expired_token(f: &Fixture) -> String {
    let mut c = Claims::with_custom_claims(json!({"sub": "u-1"}), Duration::from_mins(5))
        .with_issuer(ISS)
        .with_audience("api");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW - 900));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 600));
    f.kp.sign(c).unwrap()
}

/// The edits the glue applies on a public route for this request.
fn edits_on_public(f: &mut Fixture, req: &Request) -> Vec<HeaderEdit> {
    match f.engine.evaluate(req, NOW * 1000 + 500, true) {
        Outcome::Allow(a) => {
            assert!(a.verified_by.is_none());
            credential_edits(&f.engine.config, req, a.verified_by, a.refused_token)
        }
        other => panic!("a public route: {other:?}"),
    }
}

fn removes_authorization(edits: &[HeaderEdit]) -> bool {
    edits.contains(&HeaderEdit::Remove("authorization".into()))
}

// ---------------------------------------------------------------- 1: Set-Cookie

/// RFC 6265bis §5.6 step 3: `Set-Cookie: =access_token=forged` is a cookie
/// with an empty name and the value `access_token=forged`; browsers send a
/// nameless cookie back as its value alone: `Cookie: access_token=forged`.
/// (Only `__Host-`/`__Secure-` values are refused that way by 6265bis, so a
/// configured token cookie without a prefix is planted.)
#[test]
fn a_nameless_set_cookie_holding_a_token_cookie_is_dropped() {
    let c = config();
    for line in [
        "=access_token=forged; Path=/",
        " = access_token=forged",
        "=Access_Token=forged",
    ] {
        assert!(sets_credential_cookie(&c, line.as_bytes()), "{line:?} kept");
    }
}

// ---------------------------------------------------------------- 2: refused tokens

/// Sanity: an expired token of ours alone is marked and removed.
#[test]
fn an_expired_token_of_ours_alone_is_removed_on_a_public_route() {
    let mut f = fixture();
    let t = expired_token(&f);
    let req = request("/public", &[("authorization", &format!("Bearer {t}"))]);
    assert!(removes_authorization(&edits_on_public(&mut f, &req)));
}

/// A second token beside it (another `Authorization` copy, a token header,
/// or `access_token` in the query) makes extraction refuse the request as
/// `Malformed` before the issuer is read: nothing is marked, and the
/// expired/revoked token of ours goes upstream as sent.
#[test]
fn a_second_token_does_not_carry_a_refused_token_of_ours_upstream() {
    let mut f = fixture();
    let t = expired_token(&f);
    let bearer = format!("Bearer {t}");
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "/public",
            vec![("authorization", &bearer), ("authorization", "Bearer x")],
        ),
        (
            "/public",
            vec![("authorization", &bearer), ("x-token", "x")],
        ),
        ("/public?access_token=x", vec![("authorization", &bearer)]),
    ];
    let mut leaked = Vec::new();
    for (path, headers) in &cases {
        let req = request(path, headers);
        if !removes_authorization(&edits_on_public(&mut f, &req)) {
            leaked.push(format!("{path} {:?}", headers.get(1).map(|h| h.0)));
        }
    }
    assert!(
        leaked.is_empty(),
        "refused token of ours forwarded: {leaked:?}"
    );
}

/// The signature part respelled (base64url padding, which lenient JWT
/// libraries such as PyJWT accept and decode to the same bytes) is refused
/// by `screen` as Malformed after the issuer was read: not marked, so the
/// refused (here expired; equally a revoked) token goes upstream.
#[test]
fn a_respelled_signature_still_marks_a_refused_token_of_ours() {
    let mut f = fixture();
    let t = expired_token(&f);
    let padded = format!("{t}==");
    let req = request("/public", &[("authorization", &format!("Bearer {padded}"))]);
    assert!(
        removes_authorization(&edits_on_public(&mut f, &req)),
        "padded signature of a refused token of ours forwarded"
    );
}

/// A token naming our issuer but signed with an algorithm the provider does
/// not (or no longer) allow is refused in `screen` after the issuer was
/// read: not marked.
#[test]
fn a_token_of_ours_in_an_algorithm_not_allowed_is_marked() {
    let mut f = fixture();
    let es = ES256KeyPair::generate().with_key_id("k1");
    let mut c = Claims::with_custom_claims(json!({"sub": "u-1"}), Duration::from_mins(5))
        .with_issuer(ISS)
        .with_audience("api");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 300));
    let t = es.sign(c).unwrap();
    let req = request("/public", &[("authorization", &format!("Bearer {t}"))]);
    assert!(
        removes_authorization(&edits_on_public(&mut f, &req)),
        "token of a configured issuer refused (alg) forwarded"
    );
}

/// A token naming our issuer that `screen` refuses on its header, before
/// the issuer was read — `alg: none` with no signature, a key or a key URL
/// in the header (`jwk`, `jku`, `x5u`, `x5c`), `crit` — was not marked: on a
/// public route it went upstream as sent, where a backend whose JWT library
/// takes `none` or the header's own key (CVE-2018-0114) reads it as ours.
/// So did a header naming a member twice (a reader keeping the last `alg`
/// takes `none`).
#[test]
fn a_token_of_ours_refused_on_its_header_is_marked() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut f = fixture();
    let payload = URL_SAFE_NO_PAD.encode(
        json!({"iss": ISS, "sub": "admin", "aud": "api", "iat": NOW, "exp": NOW + 300}).to_string(),
    );
    let mut leaked = Vec::new();
    for (header, signature) in [
        (json!({"alg": "none"}), ""),
        (
            json!({"alg": "EdDSA", "kid": "k1", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}),
            "AAAA",
        ),
        (
            json!({"alg": "EdDSA", "jku": "https://evil.test/jwks"}),
            "AAAA",
        ),
        (
            json!({"alg": "EdDSA", "x5u": "https://evil.test/cert"}),
            "AAAA",
        ),
        (json!({"alg": "EdDSA", "crit": ["exp"]}), "AAAA"),
        (json!(r#"{"alg":"EdDSA","alg":"none"}"#), ""),
    ] {
        let header = header
            .as_str()
            .map_or_else(|| header.to_string(), str::to_owned);
        let token = format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode(&header));
        let req = request("/public", &[("authorization", &format!("Bearer {token}"))]);
        if !removes_authorization(&edits_on_public(&mut f, &req)) {
            leaked.push(header);
        }
    }
    assert!(
        leaked.is_empty(),
        "refused tokens of ours forwarded: {leaked:?}"
    );
}

/// A refused token of ours with a list after it (`Bearer T,x.y`) was read
/// as one token, refused as Malformed by `screen` before the issuer was
/// read, and so forwarded as not ours on a public route; a backend reading
/// `Authorization` as a list (Flask-JWT-Extended) takes `T` from it. So did
/// a token header's value with a list, and one that is not UTF-8 (a Latin-1
/// reader splits `Bearer<0xA0>T` into `T`). A token is RFC 6750's
/// `b64token`; anything else is refused and goes no further.
#[test]
fn a_token_with_more_after_it_does_not_carry_a_refused_token_of_ours_upstream() {
    use authflow_filter_core::request::NOT_UTF8;
    let mut f = fixture();
    let t = expired_token(&f);
    let cases: [(&str, String); 7] = [
        ("authorization", format!("Bearer {t},x.y")),
        ("authorization", NOT_UTF8.to_string()),
        ("authorization", format!("DPoP {t},x.y")),
        ("authorization", format!("Bearer {t};x")),
        ("x-token", format!("{t}, x.y")),
        ("x-token", format!("Bearer {t},x")),
        ("x-token", NOT_UTF8.to_string()),
    ];
    let mut leaked = Vec::new();
    for (name, value) in &cases {
        let req = request("/public", &[(name, value)]);
        let edits = edits_on_public(&mut f, &req);
        if !edits.contains(&HeaderEdit::Remove((*name).into())) {
            leaked.push(format!("{name}: {value:.12}…"));
        }
    }
    assert!(
        leaked.is_empty(),
        "refused token of ours forwarded: {leaked:?}"
    );
}

/// "Token cookies whenever no token verified are removed" — but only under
/// the exact name: `Access_Token` / `access.token` (which ASP.NET Core /
/// PHP read as `access_token`, and which the filter removes beside a token
/// that verified) reach the backend when no token verified.
#[test]
fn spellings_of_the_token_cookie_go_when_no_token_verified() {
    let mut f = fixture();
    let t = expired_token(&f);
    for name in ["Access_Token", "access.token", "ACCESS_TOKEN"] {
        let cookie = format!("{name}={t}; b=2");
        let req = request("/public", &[("cookie", &cookie)]);
        let edits = edits_on_public(&mut f, &req);
        assert!(
            edits.contains(&HeaderEdit::Set("cookie".into(), "b=2".into())),
            "{name}: {edits:?}"
        );
    }
}

// ---------------------------------------------------------------- 3: numbers

#[test]
fn claim_numbers_render_as_integers_or_refuse() {
    let mut f = fixture();
    let mut render = |num: serde_json::Value| {
        let mut c = Claims::with_custom_claims(json!({"num": num}), Duration::from_mins(5))
            .with_issuer(ISS)
            .with_subject("u")
            .with_audience("api");
        c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
        c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 300));
        let t = f.kp.sign(c).unwrap();
        let req = request("/api", &[("authorization", &format!("Bearer {t}"))]);
        match f.engine.evaluate(&req, NOW * 1000 + 500, true) {
            Outcome::Allow(a) => Some(
                a.identity_headers()
                    .iter()
                    .find(|(n, _)| n == "x-auth-num")
                    .map(|(_, v)| v.clone()),
            ),
            _ => None,
        }
    };
    assert_eq!(render(json!(7)), Some(Some("7".into())));
    assert_eq!(render(json!(-7)), Some(Some("-7".into())));
    assert_eq!(render(json!(u64::MAX)), Some(Some(u64::MAX.to_string())));
    assert_eq!(render(json!([1, 2])), Some(Some("1,2".into())));
    for float in [
        json!(3.0),
        json!(0.5),
        json!(-0.0),
        json!(1e300),
        json!([1, 2.5]),
    ] {
        assert_eq!(render(float.clone()), None, "{float}");
    }
}
