//! What should expire does: retired signing keys lose their private half once
//! they no longer sign, and audit rows go after the retention period — both
//! done by the service's background task.

use std::time::Duration;

use authflow_auth_service::store::AuditEntry;
use authflow_contract::KeySet;
use reqwest::Method;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn retired_key_loses_its_private_half_but_stays_published() {
    let app = spawn_app_with(|c| {
        c.keys.publish_lead = Duration::from_secs(1);
        c.maintenance.interval = Duration::from_secs(1);
    })
    .await;
    let admin = app.admin("keys@example.com").await;
    let old_kid = header(&admin.access)["kid"].as_str().unwrap().to_owned();
    let r = app
        .authed(Method::POST, "/v1/admin/keys/rotate", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new_kid = r.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let stored = app.state.store.signing_keys().await.unwrap();
    let old = stored
        .iter()
        .find(|k| k.kid == old_kid)
        .expect("the retired key's row (public half) is kept");
    assert!(
        old.private_key.is_empty(),
        "the retired key's private half is deleted once it no longer signs"
    );
    let new = stored.iter().find(|k| k.kid == new_kid).unwrap();
    assert!(!new.private_key.is_empty());

    // Its tokens still verify until they expire: it stays in the JWKS and the service accepts them.
    let jwks = KeySet::parse(
        &app.get("/.well-known/jwks.json")
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(jwks.has_kid(&old_kid) && jwks.has_kid(&new_kid));
    let r = app
        .authed(Method::GET, "/v1/admin/keys", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = app.signin("keys@example.com", PASSWORD).await;
    assert_eq!(header(&t.access)["kid"], new_kid.as_str());
}

#[tokio::test]
async fn audit_rows_expire_after_the_retention_period() {
    let app = spawn_app_with(|c| c.maintenance.interval = Duration::from_secs(1)).await;
    let now = authflow_auth_service::clock::now();
    let old = AuditEntry {
        at: now - 91 * 86_400,
        event: "signin".into(),
        outcome: "ancient".into(),
        ..AuditEntry::default()
    };
    let recent = AuditEntry {
        at: now - 89 * 86_400,
        event: "signin".into(),
        outcome: "recent".into(),
        ..AuditEntry::default()
    };
    app.state.store.audit(&old).await.unwrap();
    app.state.store.audit(&recent).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let log = app.state.store.audit_log(None, 1000).await.unwrap();
    assert!(
        !log.iter().any(|e| e.outcome == "ancient"),
        "rows older than 90 days are gone"
    );
    assert!(
        log.iter().any(|e| e.outcome == "recent"),
        "younger rows stay"
    );
}
