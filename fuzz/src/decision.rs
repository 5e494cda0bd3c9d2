//! The world the `request_decision` target decides in: a realistic
//! configuration (two providers, public/role/scope routes, three token
//! sources, device binding, identity headers, a revocation list), the keys
//! that sign its tokens, and a handful of valid seed tokens.

use authflow_contract::fingerprint::FingerprintInput;
use authflow_contract::revocation::{BannedSubject, RevocationFeed, RevokedSession, RevokedToken};
use authflow_contract::KeySet;
use authflow_filter_core::engine::{Engine, Outcome};
use authflow_filter_core::{FilterConfig, ProviderId, Request};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::Signer as _;
use serde_json::{json, Value};

pub const ISSUER: &str = "https://auth.test";
pub const PARTNER_ISSUER: &str = "https://partner.test";
/// The fixed "now" every input is decided at (plus the input's offset).
pub const NOW: u64 = 1_900_000_000;
pub const DEVICE_SECRET: &str = "device-secret-0123456789abcdefghijklmnopqrstu";
pub const USER_AGENT: &str = "fuzz-agent/1.0";
pub const CLIENT_ADDRESS: &str = "203.0.113.9:40000";
pub const ED_KID: &str = "ed-1";
pub const ES_KID: &str = "es-1";
pub const PARTNER_KID: &str = "partner-1";

/// Route prefixes of [`config_json`], for building paths that hit them.
pub const ROUTE_PATHS: &[&str] = &["/public", "/healthz", "/admin", "/write", "/api", "/", "/app"];
/// Where browsers refused on `/app` (a `browser_redirect` route) are sent.
pub const REFRESH_PATH: &str = "/auth/refresh";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Keys with fixed secrets: never used outside this fuzzing crate.
pub struct Keys {
    pub ed: ed25519_dalek::SigningKey,
    pub es: p256::ecdsa::SigningKey,
    pub partner: p256::ecdsa::SigningKey,
}

impl Keys {
    pub fn new() -> Option<Keys> {
        Some(Keys {
            ed: ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
            es: p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).ok()?,
            partner: p256::ecdsa::SigningKey::from_slice(&[11u8; 32]).ok()?,
        })
    }

    fn ed_jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": ED_KID, "use": "sig", "x": b64(self.ed.verifying_key().as_bytes())})
    }

    fn es_jwk(key: &p256::ecdsa::SigningKey, kid: &str) -> Value {
        let point = key.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&bytes[1..33]), "y": b64(&bytes[33..65])})
    }

    /// The remote key set of the main provider (installed as if fetched).
    pub fn main_jwks(&self) -> String {
        json!({"keys": [self.ed_jwk(), Self::es_jwk(&self.es, ES_KID)]}).to_string()
    }

    /// `header.payload.signature` with EdDSA over whatever bytes are given.
    pub fn sign_ed(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let sig = self.ed.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }

    pub fn sign_es(key: &p256::ecdsa::SigningKey, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }
}

/// The configuration every request is decided with, as the filter reads it.
pub fn config_json(keys: &Keys) -> String {
    json!({
        "providers": [
            {
                "name": "main", "issuer": ISSUER, "audiences": ["api"], "algorithms": ["EdDSA", "ES256"],
                "jwks": {"remote": {"cluster": "auth", "path": "/.well-known/jwks.json"}},
                "revocations": {"cluster": "auth", "path": "/v1/revocations"}
            },
            {
                "name": "partner", "issuer": PARTNER_ISSUER, "audiences": ["api"], "algorithms": ["ES256"],
                "jwks": {"inline": {"keys": [Keys::es_jwk(&keys.partner, PARTNER_KID)]}}
            }
        ],
        "token_sources": {"authorization_bearer": true, "cookies": ["access_token"], "headers": ["x-token"]},
        "identity_headers": {
            "subject": "x-auth-user", "issuer": "x-auth-issuer", "roles": "x-auth-roles", "scopes": "x-auth-scopes", "session": "x-auth-session",
            "claims": {"org.team": "x-auth-team", "email": "x-auth-email"}
        },
        "routes": [
            {"match": {"prefix": "/public"}, "policy": "public", "providers": ["main", "partner"]},
            {"match": {"exact": "/healthz"}, "policy": "public", "providers": ["main", "partner"]},
            {"match": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}, "providers": ["main"]},
            {"match": {"prefix": "/write", "methods": ["POST", "PUT", "DELETE"]}, "policy": {"scopes_all": ["write"]}, "providers": ["main", "partner"]},
            {"match": {"path_prefix": "/app"}, "policy": "authenticated", "browser_redirect": true, "providers": ["main"]}
        ],
        "default_providers": ["main", "partner"],
        "browser": {"refresh_path": REFRESH_PATH},
        "device_binding": {"mode": "enforce", "attributes": ["user-agent", "client-ip-prefix"], "tokens_without_fingerprint": "allow"},
        "revocation": {"max_staleness_secs": 3600, "on_stale": "deny"}
    })
    .to_string()
}

/// The `dfp` claim a token bound to [`DEVICE_SECRET`], [`USER_AGENT`] and [`CLIENT_ADDRESS`] carries.
pub fn bound_fingerprint() -> String {
    let prefix = authflow_contract::fingerprint::client_ip_prefix(CLIENT_ADDRESS);
    FingerprintInput { secret: DEVICE_SECRET, attributes: vec![("user-agent", USER_AGENT), ("client-ip-prefix", &prefix)] }.hash()
}

pub fn ed_header(kid: &str) -> Vec<u8> {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}).to_string().into_bytes()
}

pub fn es_header(kid: &str) -> Vec<u8> {
    json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string().into_bytes()
}

/// Claims of a main-provider token valid at [`NOW`].
pub fn claims(sub: &str, roles: &[&str], scope: &str, jti: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": sub, "aud": "api", "iat": NOW - 60, "exp": NOW + 840,
        "jti": jti, "sid": format!("sess-{sub}"), "roles": roles, "scope": scope,
        "org": {"team": "blue"}, "email": format!("{sub}@example.test")
    })
}

/// Valid tokens (and a few near-valid ones) the fuzzer starts from.
pub fn seed_tokens(keys: &Keys) -> Vec<String> {
    let ed = |c: Value| keys.sign_ed(&ed_header(ED_KID), c.to_string().as_bytes());
    let mut bound = claims("alice", &["admin", "user"], "read write", "jti-bound");
    bound["dfp"] = bound_fingerprint().into();
    let mut expired = claims("bob", &["user"], "read", "jti-expired");
    expired["exp"] = (NOW - 3600).into();
    let mut partner = claims("carol", &["partner"], "read", "jti-partner");
    partner["iss"] = PARTNER_ISSUER.into();
    vec![
        ed(claims("bob", &["user"], "read", "jti-user")),
        ed(bound),
        Keys::sign_es(&keys.es, &es_header(ES_KID), claims("dave", &["user"], "read write", "jti-es").to_string().as_bytes()),
        ed(expired),
        Keys::sign_es(&keys.partner, &es_header(PARTNER_KID), partner.to_string().as_bytes()),
        keys.sign_ed(&ed_header("unknown-kid"), claims("erin", &["user"], "read", "jti-kid").to_string().as_bytes()),
        ed(claims("mallory", &["admin"], "read", "revoked-jti")),
        ed(claims("banned-user", &["user"], "read", "jti-banned")),
    ]
}

/// A fresh engine at [`NOW`] with the main provider's keys installed and a
/// revocation list applied (one `jti`, one session, one banned subject).
pub fn engine(config: &FilterConfig, keys: &KeySet) -> Engine {
    let mut engine = Engine::new(config.clone(), NOW * 1000);
    engine.set_keys(ProviderId::FIRST, keys.clone());
    let feed = RevocationFeed {
        issuer: ISSUER.into(),
        cursor: "1".into(),
        snapshot: true,
        revoked_tokens: vec![RevokedToken { jti: "revoked-jti".into(), expires_at: NOW + 900 }],
        revoked_sessions: vec![RevokedSession { sid: "sess-revoked".into(), expires_at: NOW + 900 }],
        banned_subjects: vec![BannedSubject { sub: "banned-user".into(), not_before: NOW, expires_at: NOW + 900 }],
    };
    if let Some(p) = engine.provider_mut(ProviderId::FIRST) {
        // The feed matches the configured issuer and is tiny: it always applies.
        let _ = p.revocations.apply(feed, ISSUER, 1000, config.clock_skew_secs, NOW);
        // Fetched just now: current (a list is fresh only when a feed says so).
        p.revocations_fresh_at_ms = NOW * 1000;
    }
    engine
}

/// Decides one request with `token` as a bearer at [`NOW`]; with `bound`, from the bound device.
fn decide(config: &FilterConfig, keys: &KeySet, token: &str, path: &str, bound: bool) -> Outcome {
    let mut engine = engine(config, keys);
    let mut headers = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), "api.test".to_owned()),
        ("authorization".to_owned(), format!("Bearer {token}")),
    ];
    if bound {
        headers.push(("x-authflow-device".to_owned(), DEVICE_SECRET.to_owned()));
        headers.push(("user-agent".to_owned(), USER_AGENT.to_owned()));
    }
    engine.evaluate(&Request::from_headers(headers, Some(CLIENT_ADDRESS.to_owned())), NOW * 1000, false)
}

/// Checks that the seeds decide as named, so a change elsewhere (config
/// format, claims rules) cannot quietly turn every seed into a refusal and
/// leave the target fuzzing only the refusal paths. Called when the target
/// starts; `Err` names the first seed that decided otherwise.
pub fn check_seeds(config: &FilterConfig, keys: &KeySet, seeds: &[String]) -> Result<(), String> {
    let expectations: [(usize, &str, bool, bool, &str); 10] = [
        (0, "/api", false, true, "user token"),
        (0, "/admin", false, false, "user token on the admin area"),
        (1, "/admin", true, true, "bound admin token with its device"),
        (1, "/admin", false, false, "bound admin token without its device"),
        (2, "/api", false, true, "ES256 token"),
        (3, "/api", false, false, "expired token"),
        (4, "/api", false, true, "partner token"),
        (5, "/api", false, false, "unknown kid"),
        (6, "/api", false, false, "revoked jti"),
        (7, "/api", false, false, "banned subject"),
    ];
    for (seed, path, bound, allow, name) in expectations {
        let token = seeds.get(seed).ok_or_else(|| format!("no seed {seed}"))?;
        let outcome = decide(config, keys, token, path, bound);
        let allowed = matches!(&outcome, Outcome::Allow(a) if a.notes.authenticated);
        if allowed != allow {
            return Err(format!("seed {seed} ({name}) on {path}: {outcome:?}"));
        }
    }
    // A browser on /app with the expired seed is sent to sign in: the redirect path is reachable.
    let expired = seeds.get(3).ok_or("no seed 3")?;
    let navigation = [(":method", "GET"), (":path", "/app/x"), (":authority", "api.test"), ("accept", "text/html"), ("cookie", &format!("access_token={expired}"))];
    let req = Request::from_headers(navigation.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(), None);
    match engine(config, keys).evaluate(&req, NOW * 1000, false) {
        Outcome::Deny(d) if d.response.status == 302 => Ok(()),
        other => Err(format!("a browser with the expired seed on /app: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_decide_as_named() {
        let keys = Keys::new().unwrap();
        let config = FilterConfig::from_json(config_json(&keys).as_bytes()).unwrap();
        let key_set = KeySet::parse(keys.main_jwks().as_bytes()).unwrap();
        check_seeds(&config, &key_set, &seed_tokens(&keys)).unwrap();
    }
}
