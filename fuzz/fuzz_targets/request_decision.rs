//! The whole request decision (`Engine::evaluate`) over arbitrary header
//! blocks, methods and paths, with tokens taken from valid seeds (then
//! edited) or freshly signed over fuzzer-chosen claims with the real key.
//!
//! Beyond "never panics", every outcome is checked for what a user relies on:
//! - an accepted token's signed bytes are bytes we signed (no forgery), and
//!   its header and claims name no member twice (some claims are signed
//!   written twice);
//! - without a token, only a public route lets a request through;
//! - no reading of the path that a lenient backend might act on (every
//!   escape decoded, `\` as `/`, `;` parameters and dot segments dropped,
//!   any case) reaches the admin area without the admin role — checked
//!   with a normalizer written here, independent of the filter's;
//! - identity headers carry no control characters and stay bounded;
//! - a refusal is RFC 6750-shaped (400/401/403/503) and echoes no token,
//!   or it is a browser's `302` to sign in: only for a `GET`/`HEAD` on the
//!   `browser_redirect` route (`/app`), to the refresh page, with a safe
//!   same-origin `return_to` the `Location` carries exactly;
//! - asking again (now from the token cache) gives the same decision.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use authflow_contract::{return_to, KeySet};
use authflow_filter_core::config::Policy;
use authflow_filter_core::engine::Outcome;
use authflow_filter_core::policy::{policy_for, route_for};
use authflow_filter_core::request::HeaderBlock;
use authflow_filter_core::{FilterConfig, Request};
use authflow_fuzz::decision::{self, Keys};
use authflow_fuzz::json_names::{member_names, names_a_member_twice};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

struct World {
    keys: Keys,
    config: FilterConfig,
    key_set: KeySet,
    seeds: Vec<String>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let keys = Keys::new().expect("fixed keys are valid scalars");
        let config = FilterConfig::from_json(decision::config_json(&keys).as_bytes()).expect("the fuzzing config is valid");
        let key_set = KeySet::parse(keys.main_jwks().as_bytes()).expect("the fuzzing JWKS is valid");
        let seeds = decision::seed_tokens(&keys);
        if let Err(e) = decision::check_seeds(&config, &key_set, &seeds) {
            panic!("the seed tokens no longer decide as the target assumes: {e}");
        }
        World { keys, config, key_set, seeds }
    })
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    now_offset_secs: i16,
    requests: Vec<Req<'a>>,
}

#[derive(Arbitrary, Debug)]
struct Req<'a> {
    method: Method<'a>,
    path: Path<'a>,
    authority: Option<&'a [u8]>,
    headers: Vec<(Name<'a>, Value<'a>)>,
    client: Client<'a>,
    may_wait: bool,
}

#[derive(Arbitrary, Debug)]
enum Method<'a> {
    Get,
    Post,
    Delete,
    Options,
    Missing,
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
enum Path<'a> {
    Route { route: u8, suffix: &'a [u8] },
    Raw(&'a [u8]),
    Missing,
}

#[derive(Arbitrary, Debug)]
enum Client<'a> {
    Bound,
    Other,
    Missing,
    Raw(&'a str),
}

#[derive(Arbitrary, Debug)]
enum Name<'a> {
    Authorization,
    Cookie,
    XToken,
    DeviceHeader,
    UserAgent,
    /// An identity header the filter sets: a client must not be able to supply it.
    XAuthUser,
    Accept,
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
enum Value<'a> {
    Raw(&'a [u8]),
    Bearer { scheme: u8, token: Tok<'a> },
    Cookie { name: u8, before: &'a [u8], token: Tok<'a> },
    Token(Tok<'a>),
    DeviceSecret,
    BoundUserAgent,
    /// What a browser sends as `accept` when it loads a page.
    Navigation,
}

#[derive(Arbitrary, Debug)]
struct Tok<'a> {
    source: Source<'a>,
    edits: Vec<Edit<'a>>,
}

#[derive(Arbitrary, Debug)]
enum Source<'a> {
    Seed(u8),
    /// Claims chosen by the fuzzer, signed with the main provider's EdDSA key.
    Signed(Box<Claims<'a>>),
    /// Any header and payload bytes, signed with the same key.
    SignedRaw { header: &'a [u8], payload: &'a [u8] },
}

#[derive(Arbitrary, Debug)]
struct Claims<'a> {
    header: HeaderChoice<'a>,
    iss: Choice<'a>,
    aud: Choice<'a>,
    sub: Option<&'a str>,
    exp_offset: Option<i32>,
    iat_offset: Option<i32>,
    nbf_offset: Option<i32>,
    roles: Vec<&'a str>,
    scope: Option<&'a str>,
    sid: Option<&'a str>,
    jti: Option<&'a str>,
    bound: bool,
    team: Option<&'a str>,
    extra: Option<(&'a str, &'a str)>,
    /// One claim (by position) written again at the start, with this text as its first value.
    repeat: Option<(u8, &'a str)>,
}

#[derive(Arbitrary, Debug)]
enum HeaderChoice<'a> {
    EdDsa,
    NoKid,
    UnknownKid,
    AlgNone,
    AlgEs256,
    AlgHs256,
    Typ(&'a str),
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
enum Choice<'a> {
    Ours,
    Partner,
    Missing,
    Raw(&'a str),
}

#[derive(Arbitrary, Debug)]
enum Edit<'a> {
    Flip { at: u16, bit: u8 },
    Insert { at: u16, byte: u8 },
    Remove { at: u16 },
    Truncate { at: u16 },
    Append(&'a [u8]),
}

const MAX_REQUESTS: usize = 4;
const MAX_HEADERS: usize = 16;

/// A token as placed in the request, and whether it is exactly what was signed.
struct Placed {
    text: Vec<u8>,
    /// `header.payload` of what was signed (edits may or may not have kept it).
    signed_input: String,
}

fn signed_input(token: &str) -> String {
    token.rsplit_once('.').map(|(input, _)| input.to_owned()).unwrap_or_default()
}

fn build_claims(c: &Claims) -> (Vec<u8>, Vec<u8>) {
    let header = match &c.header {
        HeaderChoice::EdDsa => decision::ed_header(decision::ED_KID),
        HeaderChoice::NoKid => json!({"alg": "EdDSA"}).to_string().into_bytes(),
        HeaderChoice::UnknownKid => decision::ed_header("nope"),
        HeaderChoice::AlgNone => json!({"alg": "none", "kid": decision::ED_KID}).to_string().into_bytes(),
        HeaderChoice::AlgEs256 => decision::es_header(decision::ED_KID),
        HeaderChoice::AlgHs256 => json!({"alg": "HS256", "kid": decision::ED_KID}).to_string().into_bytes(),
        HeaderChoice::Typ(t) => json!({"alg": "EdDSA", "kid": decision::ED_KID, "typ": t}).to_string().into_bytes(),
        HeaderChoice::Raw(b) => b.to_vec(),
    };
    let choice = |c: &Choice, ours: &str, partner: &str| match c {
        Choice::Ours => Some(json!(ours)),
        Choice::Partner => Some(json!(partner)),
        Choice::Missing => None,
        Choice::Raw(s) => Some(json!(s)),
    };
    let at = |offset: Option<i32>| offset.map(|o| json!(decision::NOW as i64 + i64::from(o)));
    let mut claims = serde_json::Map::new();
    let mut put = |k: &str, v: Option<serde_json::Value>| {
        if let Some(v) = v {
            claims.insert(k.to_owned(), v);
        }
    };
    put("iss", choice(&c.iss, decision::ISSUER, decision::PARTNER_ISSUER));
    put("aud", choice(&c.aud, "api", "other-api"));
    put("sub", c.sub.map(|s| json!(s)));
    put("exp", at(c.exp_offset));
    put("iat", at(c.iat_offset));
    put("nbf", at(c.nbf_offset));
    put("roles", Some(json!(c.roles)));
    put("scope", c.scope.map(|s| json!(s)));
    put("sid", c.sid.map(|s| json!(s)));
    put("jti", c.jti.map(|s| json!(s)));
    put("dfp", c.bound.then(|| json!(decision::bound_fingerprint())));
    put("org", c.team.map(|t| json!({"team": t})));
    if let Some((k, v)) = c.extra {
        put(k, Some(json!(v)));
    }
    let mut payload = serde_json::Value::Object(claims.clone()).to_string();
    if let Some((at, first)) = c.repeat {
        let names: Vec<&String> = claims.keys().collect();
        if let Some(name) = names.get(usize::from(at) % names.len().max(1)) {
            payload = payload.replacen('{', &format!("{{{}:{},", json!(name), json!(first)), 1);
        }
    }
    (header, payload.into_bytes())
}

fn make_token(w: &World, tok: &Tok) -> Placed {
    let original = match &tok.source {
        Source::Seed(i) => w.seeds[usize::from(*i) % w.seeds.len()].clone(),
        Source::Signed(c) => {
            let (header, payload) = build_claims(c);
            w.keys.sign_ed(&header, &payload)
        }
        Source::SignedRaw { header, payload } => w.keys.sign_ed(header, payload),
    };
    let signed_input = signed_input(&original);
    let mut text = original.into_bytes();
    for edit in tok.edits.iter().take(8) {
        let at = |i: u16| usize::from(i) % (text.len() + 1);
        match *edit {
            Edit::Flip { at: i, bit } => {
                let i = at(i);
                if let Some(b) = text.get_mut(i) {
                    *b ^= 1 << (bit % 8);
                }
            }
            Edit::Insert { at: i, byte } => {
                let i = at(i);
                text.insert(i, byte);
            }
            Edit::Remove { at: i } => {
                let i = at(i);
                if i < text.len() {
                    text.remove(i);
                }
            }
            Edit::Truncate { at: i } => {
                let i = at(i);
                text.truncate(i);
            }
            Edit::Append(b) => text.extend_from_slice(b),
        }
    }
    Placed { text, signed_input }
}

fn build_request(w: &World, r: &Req, placed: &mut Vec<Placed>) -> Request {
    let mut h = HeaderBlock::default();
    match r.method {
        Method::Get => h.push(b":method", b"GET"),
        Method::Post => h.push(b":method", b"POST"),
        Method::Delete => h.push(b":method", b"DELETE"),
        Method::Options => h.push(b":method", b"OPTIONS"),
        Method::Missing => {}
        Method::Raw(m) => h.push(b":method", m),
    }
    match r.path {
        Path::Route { route, suffix } => {
            let mut p = decision::ROUTE_PATHS[usize::from(route) % decision::ROUTE_PATHS.len()].as_bytes().to_vec();
            p.extend_from_slice(suffix);
            h.push(b":path", &p);
        }
        Path::Raw(p) => h.push(b":path", p),
        Path::Missing => {}
    }
    h.push(b":authority", r.authority.unwrap_or(b"api.test"));
    for (name, value) in r.headers.iter().take(MAX_HEADERS) {
        let name: &[u8] = match name {
            Name::Authorization => b"authorization",
            Name::Cookie => b"cookie",
            Name::XToken => b"x-token",
            Name::DeviceHeader => b"x-authflow-device",
            Name::UserAgent => b"user-agent",
            Name::XAuthUser => b"x-auth-user",
            Name::Accept => b"accept",
            Name::Raw(n) => n,
        };
        let value: Vec<u8> = match value {
            Value::Raw(v) => v.to_vec(),
            Value::Bearer { scheme, token } => {
                let t = make_token(w, token);
                let scheme: &[u8] = [&b"Bearer "[..], b"bearer ", b"BEARER  ", b"Bearer", b"Basic ", b""][usize::from(*scheme) % 6];
                let v = [scheme, &t.text].concat();
                placed.push(t);
                v
            }
            Value::Cookie { name, before, token } => {
                let t = make_token(w, token);
                let cookie: &[u8] = [&b"access_token="[..], b"other=", b"__Host-authflow-device=", b"access_token=\""][usize::from(*name) % 4];
                let v = [before, cookie, &t.text].concat();
                placed.push(t);
                v
            }
            Value::Token(token) => {
                let t = make_token(w, token);
                let v = t.text.clone();
                placed.push(t);
                v
            }
            Value::DeviceSecret => decision::DEVICE_SECRET.as_bytes().to_vec(),
            Value::BoundUserAgent => decision::USER_AGENT.as_bytes().to_vec(),
            Value::Navigation => b"text/html,application/xhtml+xml,*/*;q=0.8".to_vec(),
        };
        h.push(name, &value);
    }
    let client = match r.client {
        Client::Bound => Some(decision::CLIENT_ADDRESS.to_owned()),
        Client::Other => Some("198.51.100.7:1234".to_owned()),
        Client::Missing => None,
        Client::Raw(s) => Some(s.to_owned()),
    };
    Request::new(h, client)
}

/// The most lenient reading of a path a backend might act on: escapes
/// decoded until none is left, `\` as `/`, cut at a NUL or a decoded `?`
/// or `#`, `;` parameters dropped, dot segments resolved, slashes merged,
/// lower case.
fn lenient_reading(path: &str) -> String {
    let mut bytes = path.split(['?', '#']).next().unwrap_or_default().as_bytes().to_vec();
    for _ in 0..8 {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                (b'%', Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                (b, _, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        if out == bytes {
            break;
        }
        bytes = out;
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let text = text.split(['\0', '?', '#']).next().unwrap_or_default();
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment.split(';').next().unwrap_or_default() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/")).to_lowercase()
}

/// The decision without the bookkeeping that legitimately differs between a fresh and a cached answer.
fn decision_of(o: &Outcome) -> String {
    match o {
        Outcome::Allow(a) => format!("allow {:?} authenticated={}", a.identity_headers(), a.notes.authenticated),
        Outcome::Deny(d) => format!("deny {:?}", d.reason),
        Outcome::AwaitKeys { provider, unknown_kid } => format!("await {provider:?} {unknown_kid}"),
        Outcome::AwaitRevocations { provider } => format!("await revocations {provider:?}"),
    }
}

fn check(w: &World, req: &Request, placed: &[Placed], outcome: &Outcome) {
    let header_text = |req: &Request| -> Vec<String> {
        let mut all = Vec::new();
        // On bytes, as the filter reads cookies: a token in a `cookie` line
        // that is not UTF-8 as a whole is still read (and must be ours).
        for name in ["authorization", "cookie", "x-token"] {
            all.extend(req.header_bytes(name).map(|v| String::from_utf8_lossy(v).into_owned()));
        }
        all
    };
    match outcome {
        Outcome::Allow(a) => {
            for (name, value) in a.identity_headers() {
                assert!(name.starts_with("x-auth-"), "unexpected identity header {name}");
                assert!(value.len() <= 4096, "identity header {name} is {} bytes", value.len());
                assert!(!value.bytes().any(|b| b < 0x20 || b == 0x7f), "control character in {name}: {value:?}");
            }
            // From the bytes of `:path`: a backend reads them, UTF-8 or not.
            let raw_path = req.header_bytes(":path").next().map(String::from_utf8_lossy).unwrap_or_default();
            if lenient_reading(&raw_path).starts_with("/admin") {
                let roles = a.identity_headers().iter().find(|(n, _)| n == "x-auth-roles").map(|(_, v)| v.as_str());
                assert!(
                    roles.is_some_and(|r| r.split(',').any(|role| role == "admin")),
                    "{:?} reads as the admin area and passed without the admin role",
                    req.path()
                );
            }
            if a.notes.authenticated {
                // The token that passed was signed by us over exactly these bytes.
                let sources = header_text(req);
                let present: Vec<&Placed> = placed
                    .iter()
                    .filter(|p| !p.signed_input.is_empty() && sources.iter().any(|s| s.contains(&format!("{}.", p.signed_input))))
                    .collect();
                assert!(!present.is_empty(), "a token nobody signed was accepted");
                // The only signed token in the request is the one accepted: it names no member twice.
                if let [accepted] = present.as_slice() {
                    for part in accepted.signed_input.split('.') {
                        let json = URL_SAFE_NO_PAD.decode(part).unwrap_or_default();
                        assert!(!names_a_member_twice(&json), "a token naming a member twice was accepted: {:?}", member_names(&json));
                    }
                }
            } else {
                assert!(!a.notes.failed_open, "failure_mode is fail_closed");
                assert_eq!(policy_for(&w.config, req).map(|r| r.policy), Ok(&Policy::Public), "an anonymous request passed a protected route");
            }
        }
        Outcome::Deny(d) if d.response.status == 302 => {
            // Only a browser on the redirecting route is sent to sign in, and only to the
            // refresh page with a same-origin target the location carries exactly.
            assert!(d.browser_redirect);
            assert!(matches!(req.method(), "GET" | "HEAD"), "a {} was redirected", req.method());
            assert!(route_for(&w.config, req).is_some_and(|r| r.browser_redirect), "{:?} is not on a browser_redirect route", req.path());
            let location = d.response.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.as_str()).unwrap_or_default();
            let query = location.strip_prefix(decision::REFRESH_PATH).and_then(|l| l.strip_prefix('?'));
            let Some(query) = query else { panic!("redirected to {location:?}") };
            let target = return_to::from_query(query);
            assert!(return_to::is_safe(&target));
            assert_eq!(return_to::location(decision::REFRESH_PATH, &target), location, "the target is carried exactly");
        }
        Outcome::Deny(d) => {
            assert!(!d.browser_redirect);
            assert!([400, 401, 403, 503].contains(&d.response.status), "status {}", d.response.status);
            let mut echoed = d.response.body.clone();
            for (_, v) in &d.response.headers {
                echoed.push_str(v);
            }
            for p in placed {
                if p.text.len() >= 16 {
                    let text = String::from_utf8_lossy(&p.text);
                    assert!(!echoed.contains(text.as_ref()), "the refusal echoes a token");
                }
            }
        }
        Outcome::AwaitKeys { provider, .. } | Outcome::AwaitRevocations { provider } => assert!(w.config.provider(*provider).is_some()),
    }
}

fuzz_target!(|input: Input| {
    let w = world();
    let mut engine = decision::engine(&w.config, &w.key_set);
    let now_ms = (decision::NOW as i64 + i64::from(input.now_offset_secs)) as u64 * 1000;
    for r in input.requests.iter().take(MAX_REQUESTS) {
        let mut placed = Vec::new();
        let req = build_request(w, r, &mut placed);
        let first = engine.evaluate(&req, now_ms, r.may_wait);
        check(w, &req, &placed, &first);
        let again = engine.evaluate(&req, now_ms, r.may_wait);
        check(w, &req, &placed, &again);
        assert_eq!(decision_of(&first), decision_of(&again), "a repeated request was decided differently");
    }
});
