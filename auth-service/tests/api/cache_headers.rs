//! Caching and content-type headers of the JSON API: answers that carry a
//! secret (tokens, TOTP secrets, client secrets, mailed codes) are never
//! stored by a cache (`Cache-Control: no-store`; RFC 6749 §5.1 for tokens),
//! no answer is content-sniffed, and the public documents keep the caching
//! their `ETag` / `If-None-Match` answers rely on.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// No cache may keep it, and it is not sniffed.
fn assert_no_store(r: &reqwest::Response, what: &str) {
    assert_eq!(header(r, "cache-control"), "no-store", "{what}");
    // RFC 6749 §5.1: `Pragma: no-cache` beside it, for HTTP/1.0 caches.
    assert_eq!(header(r, "pragma"), "no-cache", "{what}");
    assert_eq!(header(r, "x-content-type-options"), "nosniff", "{what}");
}

#[tokio::test]
async fn secret_bearing_answers_are_not_stored_and_none_is_sniffed() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;

    // A mailed code and the tokens of a sign-in.
    app.verified_user("ada@example.com").await;
    let r = app
        .http
        .get(app.url("/v1/dev/outbox"))
        .query(&[("to", "ada@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_no_store(&r, "the development outbox");
    let (challenge, _) = app.challenge("ada@example.com", PASSWORD).await;
    let code = app.last_mail("ada@example.com", 2).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": challenge, "code": code}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_no_store(&r, "sign-in tokens");
    let t = tokens_of(r).await;
    let r = refresh_with_device(&app, &t.refresh, Some(&t.device)).await;
    assert_eq!(r.status(), 200);
    assert_no_store(&r, "refreshed tokens");
    let t = tokens_of(r).await;

    // A TOTP secret.
    let r = app
        .authed(Method::POST, "/v1/auth/totp/enroll", &t)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_no_store(&r, "TOTP enrolment");

    // A client secret, at creation and rotation, and the client's token.
    let r = app
        .authed(Method::POST, "/v1/admin/service-accounts", &admin)
        .json(&json!({"client_id": "billing", "scopes": ["read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_no_store(&r, "service-account creation");
    let r = app
        .authed(
            Method::POST,
            "/v1/admin/service-accounts/billing/secret",
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_no_store(&r, "service-account secret rotation");
    let secret = r.json::<Value>().await.unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .http
        .post(app.url("/v1/oauth/token"))
        .basic_auth("billing", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_no_store(&r, "client-credentials token");

    // Every other JSON answer too: admin reads, errors (the service's own and the router's).
    let r = app
        .authed(Method::GET, "/v1/admin/users", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_no_store(&r, "admin user list");
    let r = app
        .post(
            "/v1/auth/signin",
            json!({"email": "ada@example.com", "password": "wrong"}),
        )
        .await;
    assert_eq!(r.status(), 401);
    assert_no_store(&r, "a refusal");
    let r = app.get("/v1/no-such-endpoint").await;
    assert_eq!(r.status(), 404);
    assert_no_store(&r, "404");
    let r = app
        .http
        .delete(app.url("/v1/auth/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_no_store(&r, "405");
}

/// A cache between the service and a verifier (a CDN, a mesh's JWKS
/// cache) keeps the key set for its `max-age`: one fetched just before a
/// rotated-in key is published must have expired, with time left for the
/// verifier to fetch again, before that key signs (`keys.publish_lead_secs`
/// later). At most half the lead, and a minute.
#[tokio::test]
async fn a_cached_key_set_expires_well_before_a_rotated_in_key_signs() {
    for (lead, max_age) in [(10, 5), (60, 30), (3600, 60)] {
        let app =
            spawn_app_with(|c| c.keys.publish_lead = std::time::Duration::from_secs(lead)).await;
        let r = app.get("/.well-known/jwks.json").await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "cache-control"),
            format!("public, max-age={max_age}"),
            "publish lead {lead} s"
        );
    }
}

#[tokio::test]
async fn public_documents_keep_their_caching_and_conditional_answers() {
    let app = spawn_app_with(|c| c.keys.publish_lead = std::time::Duration::from_secs(120)).await;

    let r = app.get("/.well-known/jwks.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "public, max-age=60");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let etag = header(&r, "etag");
    assert!(!etag.is_empty());
    let r = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "cache-control"), "public, max-age=60");
    assert_eq!(header(&r, "etag"), etag);

    let r = app.get("/.well-known/openid-configuration").await;
    assert_eq!(r.status(), 200);
    // No longer than the key set: it names the keys' algorithms.
    assert_eq!(header(&r, "cache-control"), "public, max-age=60");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");

    let r = app.get("/v1/revocations").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "no-cache");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let cursor = r.json::<Value>().await.unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .http
        .get(app.url("/v1/revocations"))
        .query(&[("since", cursor.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "cache-control"), "no-cache");
}

/// RFC 9110 §15.4.5: a `304` carries the `Vary` its `200` would, so a cache
/// freshening a stored feed answer with it keeps the encodings apart (the
/// compact and the JSON answer of one cursor are two stored responses).
#[tokio::test]
async fn a_feed_304_varies_on_accept_as_its_200_does() {
    let app = spawn_app().await;
    let r = app.get("/v1/revocations").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "vary"), "accept");
    let cursor = r.json::<Value>().await.unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    for accept in [
        "application/json",
        "application/vnd.authflow.revocations.v1",
    ] {
        let r = app
            .http
            .get(app.url("/v1/revocations"))
            .query(&[("since", cursor.as_str())])
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{accept}");
        assert_eq!(header(&r, "vary"), "accept", "{accept}");
        assert_eq!(header(&r, "cache-control"), "no-cache", "{accept}");
    }
}

/// RFC 9110 §13.1.2: `If-None-Match` compares weakly. A compressing proxy
/// between the service and a verifier (Envoy's compressor, nginx gzip)
/// hands out the key set's `ETag` weakened (`W/"…"`); sent back, it still
/// names the set, so the answer is a `304`, not the whole set every time.
#[tokio::test]
async fn a_weakened_etag_still_revalidates_the_key_set() {
    let app = spawn_app().await;
    let r = app.get("/.well-known/jwks.json").await;
    assert_eq!(r.status(), 200);
    let etag = header(&r, "etag");
    for sent in [format!("W/{etag}"), format!("\"other\", W/{etag}")] {
        let r = app
            .http
            .get(app.url("/.well-known/jwks.json"))
            .header("if-none-match", &sent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{sent}");
        assert_eq!(header(&r, "etag"), etag, "{sent}");
    }
    // Another set's validator, weak or not, is no match.
    let r = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", "W/\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
