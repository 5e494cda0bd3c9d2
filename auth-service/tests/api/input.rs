//! Bad input gets a 4xx in the one error shape, never a 500.

use serde_json::Value;

use crate::common::*;

async fn raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = app.http.post(app.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn malformed_bodies_are_4xx_with_the_error_shape() {
    let app = spawn_app().await;
    let json = Some("application/json");
    // (path, content type, body, status, error code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/v1/auth/signup",
            json,
            b"{not json".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/signup",
            json,
            br#"{"email":"a@b.co"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/signup",
            json,
            br#"{"email":"a@b.co","password":["x"]}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/signup",
            json,
            br#"{"email":"a@b.co","password":"correct horse battery","admin":true}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/signin",
            json,
            b"[]".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/signin",
            json,
            b"".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/signin",
            None,
            br#"{"email":"a@b.co","password":"x"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "/v1/auth/signin",
            json,
            format!(
                r#"{{"email":"a@b.co","password":"{}"}}"#,
                "x".repeat(20_000)
            )
            .into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "/v1/auth/signin",
            json,
            format!(r#"{{"email":"a@b.co","password":"{}"}}"#, "x".repeat(2_000)).into_bytes(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/signin/verify",
            json,
            br#"{"challenge_id":1,"code":"1"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/refresh",
            json,
            br#"{"refresh_token":null}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/verify-email",
            json,
            "{\"token\":\"\u{0}\u{1F600}\"}".as_bytes().to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/verify-email",
            json,
            "{\"token\":\"\u{1F600}\"}".as_bytes().to_vec(),
            400,
            "invalid_token",
        ),
        (
            "/v1/auth/password/forgot",
            json,
            br#"{"email":"nope"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/auth/signup",
            json,
            vec![0xff, 0xfe, 0x00],
            400,
            "invalid_request",
        ),
    ];
    for (path, ct, body, status, code) in cases {
        let r = raw(&app, path, ct, body).await;
        assert_eq!(r.status().as_u16(), status, "{path} {code}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], code, "{path}: {body}");
        assert!(body["error_description"].is_string());
    }
    let r = app.get("/no/such/path").await;
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = app
        .http
        .put(app.url("/v1/auth/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 405).await, "method_not_allowed");
    let r = app.get("/v1/dev/outbox?to=not-an-email").await;
    assert_eq!(error_code(r, 400).await, "invalid_request");
    let r = app.get("/v1/dev/outbox").await;
    assert_eq!(error_code(r, 400).await, "invalid_request");
    let r = app
        .http
        .get(app.url("/v1/ext-authz"))
        .header("authorization", "Bearer a.b.c")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_token");
    let r = app
        .http
        .get(app.url("/v1/admin/users"))
        .header("authorization", "Bearer x".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_token");
    let r = app
        .get(&format!("/v1/revocations?since={}", "9".repeat(600)))
        .await;
    assert_eq!(r.status(), 200, "a junk cursor is just unknown");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("authflow_http_server_errors_total 0"),
        "{metrics}"
    );
}
