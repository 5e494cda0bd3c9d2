//! Request budgets per user and per client address: Envoy's own
//! `local_ratelimit` after the authflow filter, exactly as `envoy/local.yaml`
//! ships it (routes, descriptors, filter order), with the real auth service,
//! the echo backend and the built `.wasm`. Only ports, the module path and the
//! bucket sizes are changed: every bucket holds `BUDGET` tokens and refills
//! once an hour, so a test spends it in a few requests and nothing refills
//! while it runs.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use authflow_contract::fingerprint::DEVICE_HEADER;
use authflow_echo::EchoServer;
use serde_json::{json, Value};
use support::*;

/// The shipped local configuration's issuer: its filter configuration is used unchanged.
const ISSUER: &str = "http://127.0.0.1:8081";
const UA: &str = "authflow-ratelimit-e2e/1.0";
const LANG: &str = "en-GB";
const PASSWORD: &str = "correct-horse-battery-staple-42";
const RATE_LIMIT_FILTER: &str = "envoy.filters.http.local_ratelimit";
/// A public route of the shipped configuration that goes to the application.
const PUBLIC: &str = "/healthz";
/// Tokens in every bucket for these tests.
const BUDGET: usize = 4;

struct Stack {
    auth: AuthService,
    envoy: Envoy,
    _backend: EchoServer,
}

/// A signed-in user: subject and the headers that carry her token from her device.
struct User {
    id: String,
    headers: Vec<(String, String)>,
}

impl User {
    fn headers(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect()
    }
}

fn stack() -> Stack {
    stack_with(|_| {})
}

/// [`stack`], with `edit` applied to the configuration of Envoy.
fn stack_with(edit: impl Fn(&mut Value)) -> Stack {
    let auth = AuthService::start(ISSUER, &[]);
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let (auth_port, backend_port) = (auth.port, backend.addr.port());
    let envoy = Envoy::start_doc(2, |port, admin_port| {
        let mut doc = shipped_local_config(port, admin_port, auth_port, backend_port);
        edit(&mut doc);
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"));
    Stack {
        auth,
        envoy,
        _backend: backend,
    }
}

/// `envoy/local.yaml` on the test's ports, with the built module and `BUDGET`-token buckets.
fn shipped_local_config(port: u16, admin_port: u16, auth_port: u16, backend_port: u16) -> Value {
    let mut doc = stack::shipped_local_config(port, admin_port, auth_port, backend_port);
    let hcm = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let mut limiters = 0;
    for filter in hcm["http_filters"].as_array_mut().unwrap() {
        if filter["name"] == RATE_LIMIT_FILTER {
            limiters += shrink_buckets(&mut filter["typed_config"]);
        }
    }
    for vhost in hcm["route_config"]["virtual_hosts"].as_array_mut().unwrap() {
        for route in vhost["routes"].as_array_mut().unwrap() {
            if let Some(limiter) = route
                .get_mut("typed_per_filter_config")
                .and_then(|c| c.get_mut(RATE_LIMIT_FILTER))
            {
                limiters += shrink_buckets(limiter);
            }
        }
    }
    assert!(limiters >= 2, "envoy/local.yaml: expected local_ratelimit on the filter chain and on routes, found {limiters}");
    doc
}

/// Every token bucket of one local_ratelimit configuration: `BUDGET` tokens, refilled hourly.
fn shrink_buckets(limiter: &mut Value) -> usize {
    shrink_buckets_to(limiter, BUDGET)
}

/// Every token bucket of one local_ratelimit configuration: `tokens`, refilled hourly.
fn shrink_buckets_to(limiter: &mut Value, tokens: usize) -> usize {
    let small = json!({"max_tokens": tokens, "tokens_per_fill": 1, "fill_interval": "3600s"});
    limiter["token_bucket"] = small.clone();
    for d in limiter["descriptors"]
        .as_array_mut()
        .expect("local_ratelimit with descriptors")
    {
        d["token_bucket"] = small.clone();
    }
    1
}

impl Stack {
    /// A user created with the service's CLI and signed in on the service itself (not
    /// through Envoy: signing in spends none of the budgets under test).
    fn user(&self, email: &str) -> User {
        let created: Value = serde_json::from_str(&self.auth.cli(&[
            "user",
            "create",
            "--email",
            email,
            "--password",
            PASSWORD,
        ]))
        .unwrap();
        let id = created["user_id"].as_str().unwrap().to_owned();
        let device = [("user-agent", UA), ("accept-language", LANG)];
        let r = post(
            &self.auth.url("/v1/auth/signin"),
            &device,
            &json!({"email": email, "password": PASSWORD}),
        );
        assert_eq!(r.status, 200, "signin: {r:?}");
        let challenge = r.json()["challenge_id"].as_str().unwrap().to_owned();
        let code = self.auth.latest_mail(email, "sign-in code", "code");
        let r = post(
            &self.auth.url("/v1/auth/signin/verify"),
            &device,
            &json!({"challenge_id": challenge, "code": code}),
        );
        assert_eq!(r.status, 200, "second factor: {r:?}");
        let j = r.json();
        let headers = vec![
            (
                "authorization".to_owned(),
                format!("Bearer {}", j["access_token"].as_str().unwrap()),
            ),
            (
                DEVICE_HEADER.to_owned(),
                j["device_secret"].as_str().unwrap().to_owned(),
            ),
            ("user-agent".to_owned(), UA.to_owned()),
            ("accept-language".to_owned(), LANG.to_owned()),
        ];
        User { id, headers }
    }

    fn call(&self, user: &User) -> Reply {
        self.envoy.get("/api/data", &user.headers())
    }

    /// Spends `user`'s whole budget on the application route: every request served, as her.
    fn spend(&self, user: &User) {
        for i in 0..BUDGET {
            let r = self.call(user);
            assert_eq!(
                r.status, 200,
                "request {i} of {BUDGET} within the budget: {r:?}"
            );
            assert_eq!(r.echoed("x-auth-user").as_deref(), Some(user.id.as_str()));
        }
    }
}

/// The answer to a spent budget: 429 in the filter's JSON error shape, with
/// Retry-After and the x-ratelimit-* headers.
fn assert_limited(r: &Reply) {
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.json()["error"], "too_many_requests", "{r:?}");
    assert!(
        r.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1),
        "Retry-After: {r:?}"
    );
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some(BUDGET.to_string().as_str()),
        "{r:?}"
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{r:?}");
}

/// A GET sent from another loopback address (`from`), so Envoy sees another client.
fn status_from(from: [u8; 4], to_port: u16, path: &str) -> u16 {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket
        .connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], to_port)).into(),
            Duration::from_secs(5),
        )
        .unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

#[test]
fn a_user_who_spent_her_budget_gets_429_while_another_user_is_still_served() {
    let st = stack();
    let alice = st.user("alice@ratelimit.test");
    let bob = st.user("bob@ratelimit.test");

    st.spend(&alice);
    assert_limited(&st.call(&alice));
    assert_limited(&st.call(&alice));

    // Bob's budget is his own: all of it is there, and then it runs out too.
    st.spend(&bob);
    assert_limited(&st.call(&bob));
}

#[test]
fn anonymous_requests_are_limited_per_client_address_and_a_forged_identity_header_picks_no_bucket()
{
    let st = stack();
    let bob = st.user("bob@ratelimit.test");

    // `/healthz` is public (the filter lets anonymous requests through) and goes to the
    // application like every route without budgets of its own.
    // An anonymous client names Bob in the identity header. The filter removes it (the
    // backend sees no identity), so these requests spend the client address's budget, not Bob's.
    for i in 0..BUDGET {
        let r = st.envoy.get(PUBLIC, &[("x-auth-user", &bob.id)]);
        assert_eq!(
            r.status, 200,
            "anonymous request {i} within the address's budget: {r:?}"
        );
        assert_eq!(
            r.echoed("x-auth-user"),
            None,
            "the forged identity reached the backend: {r:?}"
        );
    }
    // The address's budget is spent, whatever the client says about itself: no identity,
    // someone else's, a fresh one in another spelling, or another address in x-forwarded-for.
    let forged: [&[(&str, &str)]; 5] = [
        &[],
        &[("x-auth-user", &bob.id)],
        &[("x-auth-user", "a-fresh-identity")],
        &[("X-Auth-User", "another-fresh-identity")],
        &[("x-forwarded-for", "203.0.113.7")],
    ];
    for headers in forged {
        assert_limited(&st.envoy.get(PUBLIC, headers));
    }

    // Bob's own budget was never touched.
    st.spend(&bob);
    assert_limited(&st.call(&bob));

    // Another client address has a budget of its own.
    assert_eq!(status_from([127, 0, 0, 2], st.envoy.port, PUBLIC), 200);
    // And each auth-service route has its own: the spent address is still served there.
    let r = st.envoy.get("/.well-known/jwks.json", &[]);
    assert_eq!(r.status, 200, "{r:?}");
}

/// Finding: the per-address budget is keyed on the whole client address
/// (`remote_address`). One IPv6 client holds a /64 at least (2^64 addresses:
/// SLAAC privacy addresses, any host with a routed prefix), so it gets a fresh
/// anonymous budget with every request — the sign-in API's 60-then-1/s included
/// — and can cycle 10,000 of its addresses to push every other client's bucket out
/// of the LRU. The auth service's own throttle buckets IPv6 by /64
/// (`throttle.ipv6_prefix_len`); Envoy's budget must do the same. Behind a load
/// balancer (`xff_num_trusted_hops: 1`, as docs/deploy.md says to set), the
/// balancer appends each client's address: here written by the test.
#[test]
fn one_ipv6_client_does_not_get_a_fresh_anonymous_budget_from_each_address_of_its_64() {
    let auth = AuthService::start(ISSUER, &[]);
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let (auth_port, backend_port) = (auth.port, backend.addr.port());
    let envoy = Envoy::start_doc(2, |port, admin_port| {
        let mut doc = shipped_local_config(port, admin_port, auth_port, backend_port);
        // One trusted load balancer in front of the edge Envoy: its entry is kept
        // (the shipped edge drops a client's x-forwarded-for), as docs/deploy.md says.
        let hcm = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        hcm["xff_num_trusted_hops"] = json!(1);
        hcm.as_object_mut()
            .unwrap()
            .remove("early_header_mutation_extensions")
            .expect("the shipped edge drops the client's x-forwarded-for");
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let statuses: Vec<u16> = (1..=BUDGET + 2)
        .map(|i| {
            let from = format!("2001:db8:1:2::{i:x}");
            envoy.get(PUBLIC, &[("x-forwarded-for", &from)]).status
        })
        .collect();
    assert!(
        statuses.contains(&429),
        "{} requests from one /64 all served: {statuses:?}",
        BUDGET + 2
    );
    // Another client (another /64) still has its own budget.
    let r = envoy.get(PUBLIC, &[("x-forwarded-for", "2001:db8:1:3::1")]);
    assert_eq!(r.status, 200, "{r:?}");
    drop(auth);
}

/// Finding: the per-user budget is keyed on the subject alone. With more than
/// one provider (the README: "backends tell one issuer's `u-alice` from
/// another's" by `x-auth-issuer`), a partner's `u-alice` and your `u-alice` are
/// one bucket: a user of one issuer spends (drains) the budget of another
/// issuer's user who has the same `sub`, and subjects are only unique per issuer
/// (RFC 7519 §4.1.2; sequential ids and user-chosen names collide).
#[test]
fn two_issuers_users_with_the_same_subject_do_not_share_a_budget() {
    use jwt_simple::prelude::*;
    const MAIN: &str = "https://main.e2e.test";
    const PARTNER: &str = "https://partner.e2e.test";
    let main_key = Ed25519KeyPair::generate().with_key_id("main");
    let partner_key = Ed25519KeyPair::generate().with_key_id("partner");
    let inline = |k: &Ed25519KeyPair| -> Value {
        serde_json::from_str(&jwks_of(&[k.public_key().to_jwk()])).unwrap()
    };
    let provider = |name: &str, issuer: &str, jwks: Value| {
        json!({"name": name, "issuer": issuer, "audiences": ["api"], "algorithms": ["EdDSA"],
               "jwks": {"inline": jwks}})
    };
    let filter = json!({
        "providers": [provider("main", MAIN, inline(&main_key)), provider("partner", PARTNER, inline(&partner_key))],
        "routes": [{"match": {"path_prefix": "/api"}, "policy": "authenticated", "providers": ["main", "partner"]}],
        "default_providers": ["main"]
    });
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let backend_port = backend.addr.port();
    let envoy = Envoy::start_doc(1, |port, admin_port| {
        let mut doc = shipped_local_config(port, admin_port, free_port(), backend_port);
        let hcm = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let wasm = hcm["http_filters"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|f| f["name"] == "envoy.filters.http.wasm")
            .unwrap();
        wasm["typed_config"]["config"]["configuration"]["value"] = json!(filter.to_string());
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let sign = |key: &Ed25519KeyPair, iss: &str| {
        format!(
            "Bearer {}",
            key.sign(claims_for(user_with_roles(&[]), iss, "u-alice", None))
                .unwrap()
        )
    };
    let (ours, theirs) = (sign(&main_key, MAIN), sign(&partner_key, PARTNER));
    // The partner's u-alice spends every request of her budget.
    for i in 0..BUDGET {
        let r = envoy.get("/api/data", &[("authorization", &theirs)]);
        assert_eq!(r.status, 200, "partner request {i}: {r:?}");
        assert_eq!(r.echoed("x-auth-issuer").as_deref(), Some(PARTNER));
    }
    assert_limited(&envoy.get("/api/data", &[("authorization", &theirs)]));
    // Our u-alice is another user: her budget is untouched.
    let r = envoy.get("/api/data", &[("authorization", &ours)]);
    assert_eq!(
        (r.status, r.echoed("x-auth-issuer").as_deref()),
        (200, Some(MAIN)),
        "another issuer's user drained this user's budget: {r:?}"
    );
}

/// With the (subject, issuer) bucket: one provider sets no issuer header, and a
/// client's copy of it (in any spelling) picks no fresh bucket for its user.
#[test]
fn a_user_who_spent_her_budget_gets_no_fresh_one_from_an_issuer_header_of_her_own() {
    let st = stack();
    let alice = st.user("alice@ratelimit.test");
    st.spend(&alice);
    for (name, value) in [
        ("x-auth-issuer", "https://fresh.example"),
        ("X-Auth-Issuer", ISSUER),
    ] {
        let mut headers = alice.headers();
        headers.push((name, value));
        assert_limited(&st.envoy.get("/api/data", &headers));
    }
}

/// The budgets above run after the filter: a request whose token it refuses
/// (its own 401) never reaches them. An anonymous client sending forged
/// tokens (a real token's header and claims, a signature of its own: each
/// one a signature check) spent no budget, however many it sent. The budget
/// per client address before the filter (`before_auth`) counts them: past
/// it 429, in the same JSON shape, and another address is still served.
#[test]
fn forged_tokens_spend_the_client_addresss_budget_before_the_filter() {
    const BEFORE_AUTH: usize = 2 * BUDGET;
    let st = stack_with(|doc| {
        let filters = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
            [0]["typed_config"]["http_filters"];
        let before = filters
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|f| f["name"] == "authflow.rate_limit.before_auth")
            .expect("envoy/local.yaml: a budget before the authflow filter");
        shrink_buckets_to(&mut before["typed_config"], BEFORE_AUTH);
    });
    let alice = st.user("alice@ratelimit.test");
    let bearer = alice.headers()[0].1.to_owned();
    let mut statuses = Vec::new();
    for i in 0..3 * BEFORE_AUTH {
        let (head, signature) = bearer.rsplit_once('.').unwrap();
        let mut signature = signature.as_bytes().to_vec();
        // A distinct forgery each time: nothing can be remembered about the last one.
        signature[i] = if signature[i] == b'A' { b'B' } else { b'A' };
        let forged = format!("{head}.{}", String::from_utf8(signature).unwrap());
        let r = st
            .envoy
            .get("/api/data", &[("authorization", forged.as_str())]);
        if statuses.len() < BEFORE_AUTH {
            assert_eq!(r.status, 401, "within the budget the filter answers: {r:?}");
        } else {
            assert_eq!(r.status, 429, "{r:?}");
            assert_eq!(r.json()["error"], "too_many_requests", "{r:?}");
            assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        }
        statuses.push(r.status);
    }
    assert_eq!(
        st.envoy.stat("denied.bad_signature"),
        BEFORE_AUTH as u64,
        "only the forgeries within the budget cost a signature check"
    );
    assert_eq!(status_from([127, 0, 0, 2], st.envoy.port, PUBLIC), 200);
}
