//! Changing or removing a factor needs a fresh proof, not just a (possibly
//! stolen) access token and device secret: the password to set up the first
//! authenticator, a current code from it to replace or remove it (an
//! administrator removes a lost one). The owner is mailed each time; so is a
//! password change.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

fn subjects(mails: &[Value]) -> Vec<String> {
    mails
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_stolen_token_cannot_replace_the_authenticator() {
    let app = spawn_app().await;
    let email = "victim@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;

    // The owner sets up TOTP, proving the password.
    let (secret, _) = app.enrol_totp(&t).await;
    let mails = app.outbox(email, 0).await;
    assert!(
        subjects(&mails).iter().any(|s| s.contains("authenticator")),
        "the owner is told: {:?}",
        subjects(&mails)
    );

    // Whoever holds only the token and device secret cannot start a replacement.
    let r = app
        .authed(Method::POST, "/v1/auth/totp/enroll", &t)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!([400, 401].contains(&r.status().as_u16()), "{}", r.status());
    let r = app
        .authed(Method::POST, "/v1/auth/totp/enroll", &t)
        .send()
        .await
        .unwrap();
    assert!(
        [400, 401, 415].contains(&r.status().as_u16()),
        "{}",
        r.status()
    );
    let r = app
        .authed(Method::POST, "/v1/auth/totp/enroll", &t)
        .json(&json!({"code": "000000"}))
        .send()
        .await
        .unwrap();
    assert!([401].contains(&r.status().as_u16()));
    // Nor does the password: the authenticator is there because the password
    // alone may be known, so only a code from it replaces or removes it.
    for path in ["/v1/auth/totp/enroll", "/v1/auth/totp/remove"] {
        for password in [PASSWORD, "not the password"] {
            let r = app
                .authed(Method::POST, path, &t)
                .json(&json!({ "password": password }))
                .send()
                .await
                .unwrap();
            assert_eq!(error_code(r, 400).await, "invalid_request", "{path}");
        }
    }
    let (_, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp", "the authenticator is unchanged");

    // With a current code the owner can remove it, and is told.
    let before = app.outbox(email, 0).await.len();
    let code = totp_code(&secret, authflow_auth_service::clock::now() + 30);
    let r = app
        .authed(Method::POST, "/v1/auth/totp/remove", &t)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mails = app.outbox(email, before + 1).await;
    assert!(
        subjects(&mails[before..])
            .iter()
            .any(|s| s.contains("authenticator")),
        "{:?}",
        subjects(&mails)
    );
    let (_, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "email");
}

/// A lost authenticator: the owner cannot prove a code, so an administrator
/// removes it. Sign-in falls back to mailed codes, the owner is told, and
/// nobody else may do it.
#[tokio::test]
async fn an_administrator_removes_a_lost_authenticator() {
    let app = spawn_app().await;
    let email = "lost-phone@example.com";
    let user_id = app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    app.enrol_totp(&t).await;
    let path = format!("/v1/admin/users/{user_id}/totp");

    let r = app.authed(Method::DELETE, &path, &t).send().await.unwrap();
    assert_eq!(r.status(), 403, "the owner's own token is not an admin's");
    let (_, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");

    let admin = app.admin("root@example.com").await;
    let before = app.outbox(email, 0).await.len();
    let r = app
        .authed(Method::DELETE, &path, &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mails = app.outbox(email, before + 1).await;
    assert!(
        subjects(&mails[before..])
            .iter()
            .any(|s| s.contains("authenticator")),
        "{:?}",
        subjects(&mails)
    );
    let (_, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "email", "sign-in falls back to mailed codes");

    let r = app
        .authed(Method::DELETE, &path, &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 409).await,
        "conflict",
        "nothing left to remove"
    );
    let r = app
        .authed(Method::DELETE, "/v1/admin/users/no-such-user/totp", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let log = app.audit_of(&user_id).await;
    assert!(
        log.iter()
            .any(|e| e.event == "admin_totp_remove" && e.detail.as_deref() == Some("done")),
        "recorded in the audit log"
    );
}

#[tokio::test]
async fn a_password_change_is_mailed_to_the_owner() {
    let app = spawn_app().await;
    let email = "changed@example.com";
    app.verified_user(email).await;
    let r = app
        .post("/v1/auth/password/forgot", json!({"email": email}))
        .await;
    assert_eq!(r.status(), 202);
    let token = app.last_mail(email, 2).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(
            "/v1/auth/password/reset",
            json!({"token": token, "password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let mails = app.outbox(email, 3).await;
    assert!(
        subjects(&mails[2..])
            .iter()
            .any(|s| s.contains("password was changed")),
        "{:?}",
        subjects(&mails)
    );
}

/// An address sign-up takes can set up an authenticator: the otpauth label
/// (`issuer:account`) cannot hold a `:`, and totp-rs refuses an account name
/// with one, so `a:b@example.com` got a 500 at every enrolment (and the
/// enrolment page an empty QR code). Refused at sign-up instead now.
#[tokio::test]
async fn every_address_sign_up_takes_can_set_up_an_authenticator() {
    let app = spawn_app().await;
    let email = "a:b@example.com";
    let r = app
        .post(
            "/v1/auth/signup",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    if r.status() == 400 {
        return;
    }
    assert_eq!(r.status(), 201);
    let mail = app.last_mail(email, 1).await;
    let r = app
        .post("/v1/auth/verify-email", json!({"token": mail["token"]}))
        .await;
    assert_eq!(r.status(), 200);
    let tokens = app.signin(email, PASSWORD).await;
    let r = app
        .authed(Method::POST, "/v1/auth/totp/enroll", &tokens)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// The password proves an enrolment only while no authenticator is set up,
/// but that was read when the request began: an enrolment proven by the
/// password (whoever knows it, with a stolen token) while the owner set up
/// an authenticator was still written after it, and confirmed with the
/// attacker's own code it replaced the owner's authenticator. The pending
/// secret is written only while what the proof saw still holds.
#[tokio::test]
async fn an_enrolment_proven_by_the_password_cannot_land_after_the_owners_authenticator() {
    let app = spawn_app_with(|c| {
        c.limits.password_hash_concurrency = 1;
        c.limits.password_hash_wait = std::time::Duration::from_secs(20);
    })
    .await;
    let email = "race@example.com";
    app.verified_user(email).await;
    let owner = app.signin(email, PASSWORD).await;
    let thief = app.signin(email, PASSWORD).await;
    let owners_secret = app.begin_totp(&owner).await;

    // The thief's enrolment reads the account (no authenticator yet), then
    // waits for the one hashing slot, held here.
    let slot = app.state.password_work.reserve().await.unwrap();
    let request = app
        .authed(Method::POST, "/v1/auth/totp/enroll", &thief)
        .json(&json!({ "password": PASSWORD }))
        .send();
    let thiefs = tokio::spawn(request);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Meanwhile the owner confirms (no hashing needed).
    let r = app
        .authed(Method::POST, "/v1/auth/totp/confirm", &owner)
        .json(&json!({"code": totp_code(&owners_secret, authflow_auth_service::clock::now())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !thiefs.is_finished(),
        "the thief's request waits for the slot"
    );
    drop(slot);
    let r = thiefs.await.unwrap().unwrap();
    assert_eq!(error_code(r, 409).await, "conflict");

    let user = app.state.store.user_by_email(email).await.unwrap().unwrap();
    assert_eq!(user.totp_secret.as_deref(), Some(owners_secret.as_str()));
    assert_eq!(user.totp_pending, None, "nothing the thief could confirm");
}

/// A sign-in begun with the password alone before the authenticator was set
/// up (a mailed-code challenge) must not finish with the mailed code after
/// it: whoever holds the password and the mailbox (what the authenticator is
/// there to stop) could start a sign-in, wait for the owner to turn TOTP on,
/// and still get a session without any code from the app.
#[tokio::test]
async fn a_mailed_code_sign_in_begun_before_the_authenticator_cannot_finish_after_it() {
    let app = spawn_app().await;
    let email = "late-totp@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;

    // The thief (password and mailbox) starts a sign-in: a mailed code.
    let before = app.outbox(email, 0).await.len();
    let (challenge, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "email");
    let mail = app.last_mail(email, before + 1).await;

    // The owner turns the authenticator on.
    app.enrol_totp(&t).await;
    let (_, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");

    // The mailed code still finishes the earlier sign-in.
    let r = app
        .post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": challenge, "code": mail["code"]}),
        )
        .await;
    assert_eq!(
        r.status(),
        401,
        "a mailed code signed in past the authenticator set up since"
    );
}

/// A replacement left pending by a session that has since ended: a thief
/// holding a stolen session and one phished code from the authenticator
/// starts a replacement and keeps its key. The owner ends every session
/// (logout-all). The pending enrolment must end with them, as it ends with
/// a password reset: otherwise any session the thief gets hold of later
/// (an access token alone, no password, no code from the owner's app)
/// confirms it and the owner's authenticator is the thief's.
#[tokio::test]
async fn an_enrolment_left_pending_ends_with_every_session() {
    let app = spawn_app().await;
    let email = "pending@example.com";
    app.verified_user(email).await;
    let owner = app.signin(email, PASSWORD).await;
    let stolen = app.signin(email, PASSWORD).await;
    let (secret, at) = app.enrol_totp(&owner).await;

    // The thief: the stolen session and one phished code start a replacement.
    let thiefs = begin_replacement(&app, &stolen, totp_code(&secret, at + 30)).await;

    // The owner ends every session, then signs in again with the app (a code
    // of the step after the phished one: wait until it is accepted).
    let r = app
        .authed(Method::POST, "/v1/auth/logout-all", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let next_step = at / 30 + 2;
    while authflow_auth_service::clock::now() / 30 + 1 < next_step {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (challenge, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");
    let r = app
        .post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": challenge, "code": totp_code(&secret, next_step * 30)}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let later = tokens_of(r).await;

    // Any later session of the owner's, in the thief's hands: no code from
    // the owner's app, no password, yet the thief's key would be switched on.
    let now = authflow_auth_service::clock::now();
    let r = app
        .authed(Method::POST, "/v1/auth/totp/confirm", &later)
        .json(&json!({"code": totp_code(&thiefs, now)}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 409).await,
        "conflict",
        "the enrolment left pending by an ended session is gone"
    );
    let r = app
        .authed(Method::POST, "/v1/auth/totp/remove", &later)
        .json(&json!({"code": totp_code(&thiefs, now + 30)}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 401).await,
        "invalid_code",
        "the owner's app is still the one"
    );
}

/// Finding: a pending authenticator enrolment belonged to the account, not
/// to the session that began it. A thief with a stolen session and one
/// phished code starts a replacement; the owner ends that session (or it
/// expires) but not every session, so the enrolment stays pending, and any
/// later session of the account in the thief's hands switched the thief's
/// key on with no code from the owner's app. Only the session that began an
/// enrolment confirms it.
#[tokio::test]
async fn only_the_session_that_began_an_enrolment_confirms_it() {
    let app = spawn_app().await;
    let email = "pending-session@example.com";
    app.verified_user(email).await;
    let owner = app.signin(email, PASSWORD).await;
    let stolen = app.signin(email, PASSWORD).await;
    let later = app.signin(email, PASSWORD).await;
    let (secret, at) = app.enrol_totp(&owner).await;

    // The thief: the stolen session and one phished code start a replacement.
    let thiefs = begin_replacement(&app, &stolen, totp_code(&secret, at + 30)).await;

    // Another session of the account cannot switch the thief's key on.
    let now = authflow_auth_service::clock::now();
    let r = app
        .authed(Method::POST, "/v1/auth/totp/confirm", &later)
        .json(&json!({"code": totp_code(&thiefs, now)}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 409).await,
        "conflict",
        "an enrolment begun by another session was confirmed"
    );
    // The session that began it can.
    let r = app
        .authed(Method::POST, "/v1/auth/totp/confirm", &stolen)
        .json(&json!({"code": totp_code(&thiefs, now)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Begins an authenticator replacement in session `t` with a `code` of the
/// current one; returns the new, pending secret.
async fn begin_replacement(app: &TestApp, t: &Tokens, code: String) -> String {
    let r = app
        .authed(Method::POST, "/v1/auth/totp/enroll", t)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pending: Value = r.json().await.unwrap();
    pending["secret"].as_str().unwrap().to_owned()
}

/// The first authenticator replaces the mailed code as the second factor,
/// and once set up only a code from it removes it (a password reset keeps
/// it). So someone holding a stolen session (access token and device
/// secret) and the password — but not the mailbox — took the account over
/// for good: enrolled their own app, which the owner could not remove. It
/// now needs a session signed in (with the mailed code) within the last
/// 15 minutes: a fresh proof of the factor it replaces.
#[tokio::test]
async fn the_first_authenticator_needs_a_recent_sign_in() {
    let app = spawn_app().await;
    let email = "ada@example.com";
    app.verified_user(email).await;
    let stolen = app.signin(email, PASSWORD).await;
    run_sql(
        &app,
        &[&format!(
            "UPDATE sessions SET created_at = created_at - 16 * 60 WHERE id = '{}'",
            stolen.session
        )],
    )
    .await;
    let r = app
        .authed(Method::POST, "/v1/auth/totp/enroll", &stolen)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_user_authentication\"")
            && challenge.contains("max_age=\"900\""),
        "RFC 9470: {challenge}"
    );
    assert_eq!(error_code(r, 401).await, "insufficient_user_authentication");
    let (_, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "email", "no authenticator was set up");

    // Signed in again (the mailed code), the owner sets one up.
    let fresh = app.signin(email, PASSWORD).await;
    app.enrol_totp(&fresh).await;
    let (_, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");
}
