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

/// A NUL character (JSON `\u0000`, or `%00` in a path or query) in an id or
/// token is a string PostgreSQL's TEXT cannot hold: it must get the same 4xx
/// as any other unknown id, not a 500 (a database error) the client can
/// cause at will.
#[tokio::test]
async fn a_nul_in_an_id_or_token_is_no_server_error() {
    use reqwest::Method;
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let nul_json = |field: &str| format!("{{\"{field}\":\"a\\u0000b\",\"code\":\"123456\"}}");
    let mut statuses = Vec::new();
    for (path, body) in [
        ("/v1/auth/signin/verify", nul_json("challenge_id")),
        (
            "/v1/auth/refresh",
            "{\"refresh_token\":\"a\\u0000b\"}".to_owned(),
        ),
        (
            "/v1/auth/verify-email",
            "{\"token\":\"a\\u0000b\"}".to_owned(),
        ),
        (
            "/v1/auth/password/reset",
            "{\"token\":\"a\\u0000b\",\"password\":\"correct horse battery staple\"}".to_owned(),
        ),
    ] {
        let r = raw(&app, path, Some("application/json"), body.into_bytes()).await;
        statuses.push((path.to_owned(), r.status().as_u16()));
    }
    for (method, path, body) in [
        (Method::GET, "/v1/admin/users/a%00b/sessions", None),
        (Method::POST, "/v1/admin/users/a%00b/ban", None),
        (Method::GET, "/v1/admin/audit?user_id=a%00b", None),
        (
            Method::POST,
            "/v1/admin/tokens/revoke",
            Some(serde_json::json!({"jti": "a\u{0}b"})),
        ),
        (
            Method::POST,
            "/v1/admin/service-accounts/a%00b/secret",
            None,
        ),
    ] {
        let mut req = app.authed(method, path, &admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        statuses.push((path.to_owned(), r.status().as_u16()));
    }
    let r = app.get("/v1/revocations?since=a%00b").await;
    statuses.push(("/v1/revocations".to_owned(), r.status().as_u16()));
    let server_errors: Vec<_> = statuses.iter().filter(|(_, s)| *s >= 500).collect();
    assert!(
        server_errors.is_empty(),
        "{server_errors:?} (all: {statuses:?})"
    );
}

/// A path segment that does not decode to UTF-8 gets the one error shape
/// (JSON `{error, error_description}`), as every other bad input does.
#[tokio::test]
async fn an_undecodable_path_segment_gets_the_error_shape() {
    use reqwest::Method;
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    for (method, path) in [
        (Method::GET, "/v1/admin/users/%FF/sessions"),
        (Method::POST, "/v1/admin/users/%FF/ban"),
        (Method::POST, "/v1/admin/service-accounts/%FF/disable"),
    ] {
        let r = app.authed(method, path, &admin).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: {status} {text:?} is not the JSON error shape"));
        assert_eq!(status, 400, "{path}");
        assert_eq!(body["error"], "invalid_request", "{path}: {body}");
    }
}

/// A refused query or path segment is described without repeating it, as a
/// JSON body is: axum's text quotes an unknown parameter's name and a
/// value it could not take, so a page or a proxy's log showing the answer
/// showed the client's own text (`"><script>…`, kilobytes of anything).
#[tokio::test]
async fn a_refused_query_or_path_segment_is_not_repeated_in_the_answer() {
    use reqwest::Method;
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let marker = "zz-marker-zz";
    for path in [
        format!("/v1/admin/users?{marker}=1"),
        format!("/v1/admin/users?limit={marker}"),
        format!("/v1/admin/audit?limit=1&{marker}%22%3E%3Cscript%3E=1"),
        format!("/v1/admin/users/%FF{marker}/sessions"),
    ] {
        let r = app.authed(Method::GET, &path, &admin).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let text = r.text().await.unwrap();
        assert!(!text.contains(marker), "{path} repeats it: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"], "invalid_request", "{path}: {body}");
    }
}

/// A refused JSON body is described without repeating what it held: the
/// serde text quotes values (`invalid type: integer `…``, `string "…"`), so
/// a password, a second-factor code or a token sent with the wrong type,
/// or kilobytes of anything, would come back in the answer (and into
/// whatever logs or shows the answers: a proxy's access log, a page).
#[tokio::test]
async fn a_refused_json_body_is_not_repeated_in_the_answer() {
    let app = spawn_app().await;
    let long = "s3cr3t-".repeat(500);
    // (path, body, what must not come back)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "/v1/auth/signin",
            r#"{"email":"a@b.co","password":918273645546372819}"#.into(),
            "918273645546372819".into(),
        ),
        (
            "/v1/auth/signin/verify",
            r#"{"challenge_id":"c","code":493817}"#.into(),
            "493817".into(),
        ),
        (
            "/v1/auth/signin",
            format!(r#"{{"email":"a@b.co","password":"x","{long}":1}}"#),
            "s3cr3t-s3cr3t-".into(),
        ),
        (
            "/v1/auth/signup",
            format!(r#"{{"email":["{long}"],"password":"correct horse battery"}}"#),
            "s3cr3t-s3cr3t-".into(),
        ),
    ];
    for (path, body, secret) in cases {
        let r = raw(&app, path, Some("application/json"), body.into_bytes()).await;
        assert_eq!(r.status(), 400, "{path}");
        let text = r.text().await.unwrap();
        assert!(!text.contains(&secret), "{path} repeats `{secret}`: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"], "invalid_request", "{path}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| d.len() < 300),
            "{path}: {body}"
        );
    }
}

/// A body without a field the request needs is told which one (the name
/// is the service's own).
#[tokio::test]
async fn a_missing_json_field_is_named() {
    let app = spawn_app().await;
    let r = raw(
        &app,
        "/v1/auth/signin",
        Some("application/json"),
        br#"{"email":"a@b.co"}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["error_description"],
        "the JSON body lacks the field `password`"
    );
}
