//! The OpenAPI document and the routes come from one list: every endpoint
//! the service answers is documented, and every documented one is answered.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// Every endpoint of the README's table, as (method, OpenAPI path). The
/// ext_authz target answers any method, under any sub-path too.
fn endpoints(dev_endpoints: bool) -> BTreeSet<(String, String)> {
    let mut list = vec![
        ("post", "/v1/auth/signup"),
        ("post", "/v1/auth/verify-email"),
        ("post", "/v1/auth/signin"),
        ("post", "/v1/auth/signin/verify"),
        ("post", "/v1/auth/refresh"),
        ("post", "/v1/auth/logout"),
        ("post", "/v1/auth/logout-all"),
        ("post", "/v1/auth/password/forgot"),
        ("post", "/v1/auth/password/reset"),
        ("post", "/v1/auth/totp/enroll"),
        ("post", "/v1/auth/totp/confirm"),
        ("post", "/v1/auth/totp/remove"),
        ("get", "/v1/admin/users"),
        ("post", "/v1/admin/users/{user_id}/ban"),
        ("delete", "/v1/admin/users/{user_id}/ban"),
        ("get", "/v1/admin/users/{user_id}/sessions"),
        ("delete", "/v1/admin/users/{user_id}/totp"),
        ("post", "/v1/admin/tokens/revoke"),
        ("get", "/v1/admin/keys"),
        ("post", "/v1/admin/keys/rotate"),
        ("post", "/v1/admin/keys/{kid}/withdraw"),
        ("get", "/v1/admin/audit"),
        ("post", "/v1/admin/service-accounts"),
        ("post", "/v1/admin/service-accounts/{client_id}/secret"),
        ("post", "/v1/admin/service-accounts/{client_id}/disable"),
        ("put", "/v1/admin/service-accounts/{client_id}/key"),
        ("delete", "/v1/admin/service-accounts/{client_id}/key"),
        ("post", "/v1/oauth/token"),
        ("get", "/.well-known/jwks.json"),
        ("get", "/.well-known/openid-configuration"),
        ("get", "/v1/revocations"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    for method in [
        "get", "post", "put", "delete", "patch", "head", "options", "trace",
    ] {
        list.push((method, "/v1/ext-authz"));
        list.push((method, "/v1/ext-authz/{rest}"));
    }
    if dev_endpoints {
        list.push(("get", "/v1/dev/outbox"));
    }
    list.into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect()
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "post", "put", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                set.insert((method.clone(), path.clone()));
            }
        }
    }
    set
}

/// True unless the router's fallback answered: no route for this path, or
/// none for this method.
async fn is_routed(app: &TestApp, method: &str, path: &str) -> bool {
    let url = app.url(
        &path
            .replace("{user_id}", "nobody")
            .replace("{kid}", "nokey")
            .replace("{rest}", "a/b"),
    );
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
    let r = app.http.request(method.clone(), url).send().await.unwrap();
    if r.status() == 405 {
        return false;
    }
    if r.status() != 404 || method == Method::HEAD {
        return true;
    }
    let body: Value = r.json().await.unwrap();
    body["error_description"] != "no such endpoint"
}

async fn check_doc_matches_routes(dev_endpoints: bool) {
    let app = spawn_app_with(|c| c.server.dev_endpoints = dev_endpoints).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let documented = documented(&doc);
    let expected = endpoints(dev_endpoints);
    let undocumented: Vec<_> = expected.difference(&documented).collect();
    let unexpected: Vec<_> = documented.difference(&expected).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unexpected.is_empty(),
        "documented but not an endpoint: {unexpected:?}"
    );
    for (method, path) in &documented {
        assert!(
            is_routed(&app, method, path).await,
            "documented but not served: {method} {path}"
        );
    }
}

#[tokio::test]
async fn every_endpoint_is_documented_and_every_documented_one_is_served() {
    check_doc_matches_routes(true).await;
}

/// The development outbox is neither served nor documented when it is off.
#[tokio::test]
async fn a_disabled_endpoint_is_not_documented() {
    check_doc_matches_routes(false).await;
}

/// The token endpoints document the `DPoP` proof header, the `DPoP-Nonce`
/// answer header and that `token_type` may be `DPoP`.
#[tokio::test]
async fn the_token_endpoints_document_dpop() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for path in [
        "/v1/auth/signin/verify",
        "/v1/auth/refresh",
        "/v1/oauth/token",
    ] {
        let op = &doc["paths"][path]["post"];
        let params = op["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has no parameters"));
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "DPoP" && p["in"] == "header"),
            "{path}: {params:?}"
        );
        assert!(
            op["responses"]["200"]["headers"]["DPoP-Nonce"].is_object(),
            "{path}: {}",
            op["responses"]["200"]
        );
        assert!(
            op["responses"]["400"]["description"]
                .as_str()
                .unwrap()
                .contains("invalid_dpop_proof"),
            "{path}"
        );
    }
    for schema in ["TokenResponse", "ClientTokenResponse"] {
        let description = doc["components"]["schemas"][schema]["properties"]["token_type"]
            ["description"]
            .as_str()
            .unwrap();
        assert!(description.contains("`DPoP`"), "{schema}: {description}");
    }
    // The operations that take a token say how a DPoP-bound one is presented.
    let scheme = doc["components"]["securitySchemes"]["bearer"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(scheme.contains("Authorization: DPoP"), "{scheme}");
}

/// Every operation behind the bearer scheme documents the refusals every
/// such caller can get: 401 (no or a bad token), 403 (a token without the
/// right, or a service account's on the user endpoints) and 503 (this
/// instance's revocation list stale: `admin::an_instance_that_cannot_sync_its_feed_stops_vouching_for_tokens`).
#[tokio::test]
async fn bearer_operations_document_400_401_403_and_503() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if path.starts_with("/v1/ext-authz") {
                continue; // 200 or 401 only: the filter's comparison
            }
            let bearer = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            if !bearer {
                continue;
            }
            // 400: two tokens, or a token scheme with nothing usable after it.
            for status in ["400", "401", "403", "503"] {
                if !op["responses"][status].is_object() {
                    missing.push(format!("{method} {path}: {status}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "undocumented refusals: {missing:#?}");
}

/// A parameter is documented where the service reads it: the path
/// parameters are exactly the `{…}` segments of the path, so every other
/// one (`limit`, `after`, `email`, `user_id`, `revoke_tokens`, `to`) is a
/// query parameter, as the handlers read them. A client generated from the
/// document otherwise cannot send them (no `{revoke_tokens}` in the path to
/// put `true` into: a leaked secret rotated without ending its tokens).
#[tokio::test]
async fn parameters_are_documented_where_the_service_reads_them() {
    let app = spawn_app_with(|c| c.server.dev_endpoints = true).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut misplaced = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let segments: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let in_path: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            if in_path != segments {
                misplaced.push(format!("{method} {path}: path parameters {in_path:?}"));
            }
        }
    }
    assert!(misplaced.is_empty(), "{misplaced:#?}");
    // And the service reads them from the query.
    let admin = app.admin("admin@example.com").await;
    let r = app
        .authed(
            Method::GET,
            "/v1/admin/users?limit=1&email=admin@example.com",
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The refusals of a body are documented on every operation that takes
/// one, with the answer the service gives: a body of the wrong type (415
/// for a JSON operation), one that does not fit (400) and one past
/// `server.body_limit_bytes` (413), sent by an admin so that the body is
/// what is judged.
#[tokio::test]
async fn every_refusal_of_a_body_is_documented() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let admin = app.admin("admin@example.com").await;
    let oversize = format!("{{\"a\":\"{}\"}}", "x".repeat(64 * 1024));
    let mut undocumented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(content) = op["requestBody"]["content"].as_object() else {
                continue;
            };
            let media = content.keys().next().unwrap().clone();
            let url = path.replace("{client_id}", "nobody");
            for (body, content_type) in [
                ("x".to_owned(), "text/plain"),
                ("{\"not_a_field\":1}".to_owned(), media.as_str()),
                (oversize.clone(), media.as_str()),
            ] {
                let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                let r = app
                    .authed(method.clone(), &url, &admin)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_str().to_owned();
                if !op["responses"][&status].is_object() {
                    undocumented.push(format!("{method} {path} ({content_type}): {status}"));
                }
            }
        }
    }
    assert!(undocumented.is_empty(), "{undocumented:#?}");
}

/// Sign-up's throttle, 429 with `Retry-After` past `throttle.ip_max_signups`
/// from one address, is documented: a client built from the document
/// otherwise has no word to wait on.
#[tokio::test]
async fn the_sign_up_throttle_is_documented() {
    let app = spawn_app_with(|c| c.throttle.ip_max_signups = 1).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut statuses = Vec::new();
    for i in 0..2 {
        let body = json!({"email": format!("s{i}@example.com"), "password": PASSWORD});
        statuses.push(app.post("/v1/auth/signup", body).await.status().as_u16());
    }
    assert_eq!(statuses, [201, 429]);
    let documented = &doc["paths"]["/v1/auth/signup"]["post"]["responses"];
    assert!(documented["429"].is_object(), "{documented}");
}

/// A query the service refuses (a parameter it does not know, a value of
/// the wrong type: 400 `invalid_request`) is documented on every operation
/// that reads one.
#[tokio::test]
async fn every_refusal_of_a_query_is_documented() {
    let app = spawn_app_with(|c| c.server.dev_endpoints = true).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let admin = app.admin("admin@example.com").await;
    let mut undocumented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let reads_query = op["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["in"] == "query"));
            if !reads_query {
                continue;
            }
            let url = path
                .replace("{client_id}", "nobody")
                .replace("{user_id}", "nobody");
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let r = app
                .authed(method.clone(), &format!("{url}?not_a_parameter=1"), &admin)
                .send()
                .await
                .unwrap();
            let status = r.status().as_str().to_owned();
            if !op["responses"][&status].is_object() {
                undocumented.push(format!("{method} {path}: {status}"));
            }
        }
    }
    assert!(undocumented.is_empty(), "{undocumented:#?}");
}

/// The refusals that come of the service's own capacity are documented
/// where they happen, not only behind the bearer scheme: 503
/// `temporarily_unavailable` + `Retry-After` where a request waits for a
/// password-hashing slot (`password_work::parallel_password_work_beyond_the_limit_is_refused_with_503`:
/// sign-up, sign-in, password reset, and a client secret an earlier release
/// hashed with argon2id) or needs a key to sign with (`tokens::ensure_signer`:
/// the token requests) or on a feed write it could not load (the revocation
/// feed after a failed sync); and 429 where a code meets the second-factor guard
/// (confirming an authenticator counts as a sign-in code does), and 409
/// where an enrolment's proof went stale while it was checked. A client
/// generated from the document otherwise has no word to wait on.
#[tokio::test]
async fn capacity_and_second_factor_refusals_are_documented() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let expected = [
        ("post", "/v1/auth/signup", "503"),
        ("post", "/v1/auth/signin", "503"),
        ("post", "/v1/auth/password/reset", "503"),
        ("post", "/v1/auth/signin/verify", "503"),
        ("post", "/v1/auth/refresh", "503"),
        ("post", "/v1/oauth/token", "503"),
        ("get", "/v1/revocations", "503"),
        ("post", "/v1/auth/totp/confirm", "429"),
        ("post", "/v1/auth/totp/enroll", "409"),
    ];
    let missing: Vec<_> = expected
        .iter()
        .filter(|(method, path, status)| {
            !doc["paths"][path][method]["responses"][status].is_object()
        })
        .collect();
    assert!(missing.is_empty(), "undocumented refusals: {missing:?}");
}

/// Every series `/metrics` serves is named in the README's endpoint table,
/// and every `authflow_…_total` the README names is served: a dashboard
/// built from the README finds what it asks for.
#[tokio::test]
async fn every_metric_is_in_the_readme() {
    const README: &str = include_str!("../../README.md");
    let app = spawn_app().await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let served: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let undocumented: Vec<_> = served
        .iter()
        .filter(|name| !README.contains(&format!("`{name}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in the README: {undocumented:?}"
    );
    let named: BTreeSet<&str> = README
        .split('`')
        .filter(|w| {
            w.starts_with("authflow_") && (w.ends_with("_total") || w.ends_with("_running"))
        })
        .collect();
    let unserved: Vec<_> = named.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "named in the README, not served: {unserved:?}"
    );
}
