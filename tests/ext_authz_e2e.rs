//! The auth service as Envoy's HTTP `ext_authz` target (the comparison case
//! of `make bench`), through the real Envoy to the echo backend: what reaches
//! the backend is what the filter would let through.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_echo::EchoServer;
use serde_json::json;
use support::stack::*;
use support::*;

/// Envoy with only the `ext_authz` filter (as `bench/bench.py`'s case F),
/// checking every request at the auth service on `auth_port`.
fn ext_authz_envoy(auth_port: u16, backend_port: u16) -> Envoy {
    let forwarded = [
        "x-authflow-device",
        "cookie",
        "user-agent",
        "accept-language",
    ];
    let ext_authz = json!({"name": "envoy.filters.http.ext_authz", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
    "transport_api_version": "V3",
    "allowed_headers": {"patterns": forwarded.iter().map(|n| json!({"exact": n})).collect::<Vec<_>>()},
    "http_service": {
        "server_uri": {"uri": "http://127.0.0.1", "cluster": "authsvc", "timeout": "2s"},
        "path_prefix": "/v1/ext-authz",
        "authorization_response": {"allowed_upstream_headers": {"patterns": [{"exact": "x-auth-user"}]}}
    }}});
    let routes = [json!({"match": {"prefix": "/"}, "route": {"cluster": "backend"}})];
    let clusters = [
        ("authsvc".to_owned(), auth_port),
        ("backend".to_owned(), backend_port),
    ];
    Envoy::start_doc(1, |port, admin_port| {
        envoy_doc(ext_authz.clone(), &routes, &clusters, port, admin_port)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ext_authz_lets_through_only_what_the_filter_would() {
    let st = Stack::start(
        StackOptions {
            issuer: "http://authflow.ext-authz-e2e",
            service_env: &[],
            extra_clusters: &[],
        },
        |_| {},
    );
    let sub = st.sign_up("ext@e2e.test");
    let s = st.sign_in("ext@e2e.test");
    let backend = EchoServer::start("127.0.0.1:0").unwrap();
    let envoy = ext_authz_envoy(st.auth.port, backend.addr.port());

    // The subject reaches the backend in x-auth-user, replacing a client's
    // copy; a client's other identity headers, in any spelling, do not.
    let mut headers = s.headers();
    headers.extend([
        ("x-auth-user", "u-someone-else"),
        ("x-auth-roles", "admin"),
        ("x_auth_roles", "admin"),
        ("x-auth_session", "s-forged"),
        ("x-auth-issuer", "https://forged.example"),
    ]);
    let r = envoy.get("/api/me", &headers);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echoed("x-auth-user").as_deref(), Some(sub.as_str()));
    for name in [
        "x-auth-roles",
        "x_auth_roles",
        "x-auth_session",
        "x-auth-issuer",
    ] {
        assert_eq!(r.echoed(name), None, "{name} reached the backend");
    }
    // The device secret is the auth service's alone, as behind the filter.
    assert_eq!(
        r.echoed("x-authflow-device"),
        None,
        "the device secret reached the backend"
    );
    // So is the verified token (the filter's default, `forward_token: false`,
    // and jwt_authn's): a backend holding it could replay it at every other
    // API the token is for.
    assert_eq!(
        r.echoed("authorization"),
        None,
        "the access token reached the backend"
    );

    // The site's root is checked too (at `/v1/ext-authz/`), not refused.
    for path in ["/", "/?page=1"] {
        let r = envoy.get(path, &s.headers());
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.echoed("x-auth-user").as_deref(), Some(sub.as_str()));
        assert_eq!(envoy.get(path, &[]).status, 401, "{path} without a token");
    }

    // A second token in the query: refused as the filter refuses it, 400
    // `invalid_request` (RFC 6750 §3.1: one method).
    for query in ["access_token=forged", "page=1&Access.Token=forged"] {
        let r = envoy.get(&format!("/api/me?{query}"), &s.headers());
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(r.body.contains("invalid_request"), "{query}: {}", r.body);
    }
    assert_eq!(envoy.get("/api/me?page=1", &s.headers()).status, 200);
}
