//! `authflow-auth keys withdraw`: incident response for a signing key whose
//! private half leaked. A rotation alone left the key published, and
//! verifying at the service, until its last token expired (access token
//! lifetime + 60 s after the rotation's lead): whoever held it minted
//! tokens with any `sub` and `roles` that were accepted all that time.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use authflow_auth_service::clock::now;
use reqwest::Method;
use serde_json::Value;

use crate::common::*;

/// The real binary's `args` on `app`'s database, with `app`'s KEK.
fn cli(app: &TestApp, args: &[&str]) -> Output {
    let data = app.dir.path();
    let out = crate::durability::command(data, app.database_url.as_deref(), 0)
        .env("AUTHFLOW_KEK__KEY_FILE", data.join("test-kek"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    // `command` leaves a KEK of its own beside the data directory.
    let _ = std::fs::remove_file(data.with_extension("kek"));
    out
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn admin_keys_status(app: &TestApp, t: &Tokens) -> u16 {
    app.authed(Method::GET, "/v1/admin/keys", t)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// After `keys withdraw` of the key signing now, every token it signed is
/// refused at the service at once (within the ~1 s a running instance takes
/// to follow the keys another process writes), the JWKS no longer names it,
/// and a new key signs at once, with no publication lead: a sign-in gets a
/// token that verifies right away. The withdrawal is audited, `keys list`
/// shows it, and a second withdrawal of the same key changes nothing.
#[tokio::test]
async fn a_withdrawn_key_verifies_nothing_and_a_new_key_signs_at_once() {
    // A long lead: a key that waited for it would not sign during the test.
    let app = spawn_app_with(|c| c.keys.publish_lead = Duration::from_secs(600)).await;
    let admin = app.admin("root@example.com").await;
    app.verified_user("ada@example.com").await;
    let user = app.signin("ada@example.com", PASSWORD).await;
    let leaked = header(&user.access)["kid"].as_str().unwrap().to_owned();
    assert_eq!(ext_authz(&app, &user).await, 200);
    assert_eq!(admin_keys_status(&app, &admin).await, 200);

    let out = cli(&app, &["keys", "withdraw", "--kid", &leaked]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let withdrawn = Instant::now();
    while jwks_kids(&app).await.contains(&leaked) {
        assert!(
            withdrawn.elapsed() < Duration::from_secs(3),
            "the withdrawn key {leaked} is still published 3 s later"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ext_authz(&app, &user).await, 401, "the user's old token");
    assert_eq!(
        admin_keys_status(&app, &admin).await,
        401,
        "the admin's old token"
    );

    let fresh = app.signin("root@example.com", PASSWORD).await;
    let new_kid = header(&fresh.access)["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, leaked);
    assert!(jwks_kids(&app).await.contains(&new_kid));
    assert_eq!(ext_authz(&app, &fresh).await, 200, "the new key verifies");
    assert_eq!(admin_keys_status(&app, &fresh).await, 200);
    // Refresh tokens are opaque: the user gets a new access token, new key.
    let r = refresh_with_device(&app, &user.refresh, Some(&user.device)).await;
    assert_eq!(r.status(), 200);
    let refreshed = tokens_of(r).await;
    assert_eq!(header(&refreshed.access)["kid"], new_kid.as_str());
    assert_eq!(ext_authz(&app, &refreshed).await, 200);

    let list = cli(&app, &["keys", "list"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let line = list.lines().find(|l| l.starts_with(&leaked)).unwrap();
    assert!(line.contains("withdrawn_at=Some("), "{list}");

    // Idempotent: again is a success that changes nothing.
    let again = cli(&app, &["keys", "withdraw", "--kid", &leaked]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&cli(&app, &["keys", "list"]).stdout),
        list
    );
    let t = app.signin("root@example.com", PASSWORD).await;
    assert_eq!(header(&t.access)["kid"], new_kid.as_str());

    let log: Vec<Value> = app
        .authed(Method::GET, "/v1/admin/audit?limit=1000", &fresh)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        log.iter().any(|e| e["event"] == "cli_withdraw_key"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("done") && d.contains(&leaked))),
        "{log:#?}"
    );
}

/// Withdrawing a key nobody has (a typo) fails, naming it, and changes
/// nothing: the JWKS, the signing key and the tokens stay as they were.
#[tokio::test]
async fn withdrawing_an_unknown_key_fails_and_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let kid = header(&admin.access)["kid"].as_str().unwrap().to_owned();
    let before = cli(&app, &["keys", "list"]).stdout;
    let (jwks_before, _) = app.state.keys.jwks(now());

    let out = cli(&app, &["keys", "withdraw", "--kid", "no-such-key"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no-such-key"), "{err}");
    assert!(err.contains("no signing key"), "{err}");

    assert_eq!(cli(&app, &["keys", "list"]).stdout, before);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.state.keys.jwks(now()).0, jwks_before);
    assert_eq!(ext_authz(&app, &admin).await, 200);
    let t = app.signin("root@example.com", PASSWORD).await;
    assert_eq!(header(&t.access)["kid"], kid.as_str());
}

/// The same from the admin API (`POST /v1/admin/keys/{kid}/withdraw`), for an
/// admin with no shell on the service's host: the key is out of this
/// instance's JWKS and verifies nothing as the answer comes, a new key signs,
/// and the row names the admin. A user gets 403, a key nobody has 404 with
/// nothing changed, and a second withdrawal changes nothing.
#[tokio::test]
async fn an_admin_withdraws_a_key_through_the_api() {
    let app = spawn_app_with(|c| c.keys.publish_lead = Duration::from_secs(600)).await;
    let admin = app.admin("root@example.com").await;
    app.verified_user("ada@example.com").await;
    let user = app.signin("ada@example.com", PASSWORD).await;
    let leaked = header(&user.access)["kid"].as_str().unwrap().to_owned();
    let withdraw = |kid: &str, t: &Tokens| {
        app.authed(Method::POST, &format!("/v1/admin/keys/{kid}/withdraw"), t)
            .send()
    };
    let r = withdraw(&leaked, &user).await.unwrap();
    assert_eq!(error_code(r, 403).await, "insufficient_scope");
    let r = withdraw("no-such-key", &admin).await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    assert!(jwks_kids(&app).await.contains(&leaked), "nothing changed");
    assert_eq!(ext_authz(&app, &user).await, 200);

    let r = withdraw(&leaked, &admin).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["withdrawn_now"], true, "{body}");
    let successor = body["successor"].as_str().unwrap().to_owned();
    assert!(!jwks_kids(&app).await.contains(&leaked));
    assert_eq!(ext_authz(&app, &user).await, 401, "the user's old token");
    let fresh = app.signin("root@example.com", PASSWORD).await;
    assert_eq!(header(&fresh.access)["kid"], successor.as_str());
    assert_eq!(
        ext_authz(&app, &fresh).await,
        200,
        "the successor signs at once"
    );

    let r = withdraw(&leaked, &fresh).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["withdrawn_now"], false);
    let t = app.signin("root@example.com", PASSWORD).await;
    assert_eq!(
        header(&t.access)["kid"],
        successor.as_str(),
        "still the successor"
    );

    let admin_id = claims(&admin.access)["sub"].as_str().unwrap().to_owned();
    let rows: Vec<_> = app
        .state
        .store
        .audit_log(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "admin_withdraw_key")
        .collect();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(
        rows.iter().all(|e| e.outcome.contains(&admin_id)),
        "{rows:#?}"
    );
    assert!(
        rows.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains(&leaked) && d.contains(&successor))),
        "{rows:#?}"
    );
}

/// A release from before withdrawal knew only `retired_at`: it publishes a
/// key, and verifies with it, until `retired_at` + the access token lifetime
/// + 60 s, and a key that signed when it was withdrawn had none. During a
/// rolling upgrade (or after a rollback), such an instance on the same
/// database put the withdrawn key back into every JWKS a filter fetched
/// from it, and took tokens forged with it, until a later rotation. A
/// withdrawal now also retires the key long ago, so that rule drops it too.
#[tokio::test]
async fn a_withdrawn_key_is_also_retired_for_an_older_release() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let leaked = header(&admin.access)["kid"].as_str().unwrap().to_owned();
    let r = app
        .authed(
            Method::POST,
            &format!("/v1/admin/keys/{leaked}/withdraw"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let kept = app.state.config.tokens.access_ttl.as_secs() as i64 + 60;
    let keys = app.state.store.signing_keys().await.unwrap();
    let key = keys.iter().find(|k| k.kid == leaked).unwrap();
    assert!(
        key.retired_at.is_some_and(|r| r + kept <= now()),
        "an older release still publishes it: retired_at {:?}",
        key.retired_at
    );
}
