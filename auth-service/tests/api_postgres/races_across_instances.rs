//! Counted and single-use things raced across two instances.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

async fn two_instances(
    tweak: impl Fn(&mut authflow_auth_service::config::Config),
) -> (TestApp, TestApp) {
    let one = spawn_app_with(&tweak).await;
    let two = spawn_app_beside(&one, &tweak).await;
    (one, two)
}

/// A code of six digits that is none of `secret`'s codes around now.
fn wrong_code(secret: &str, i: u32) -> String {
    let now = authflow_auth_service::clock::now();
    let right: Vec<String> = (-2..=2).map(|k| totp_code(secret, now + k * 30)).collect();
    let mut n = 100_000 + i * 7919;
    loop {
        let c = format!("{:06}", n % 1_000_000);
        if !right.contains(&c) {
            return c;
        }
        n += 1;
    }
}

#[tokio::test]
async fn wrong_passwords_split_across_instances_are_evaluated_no_more_than_the_limit() {
    const LIMIT: u32 = 3;
    let (one, two) = two_instances(|c| {
        c.throttle.account_max_failures = LIMIT;
        c.throttle.ip_max_failures = 10_000;
    })
    .await;
    let email = "guess@example.com";
    one.verified_user(email).await;
    let mut reqs = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { &one } else { &two };
        let (http, url) = (app.http.clone(), app.url("/v1/auth/signin"));
        reqs.push(async move {
            http.post(url)
                .json(&json!({"email": email, "password": format!("wrong password {i}!!")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let statuses = join_all(reqs).await;
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        (1..=LIMIT as usize).contains(&evaluated)
            && statuses.iter().all(|c| *c == 401 || *c == 429),
        "{evaluated} evaluated (limit {LIMIT}): {statuses:?}"
    );
}

#[tokio::test]
async fn wrong_totp_codes_split_across_instances_are_evaluated_no_more_than_the_limit() {
    const LIMIT: u32 = 3;
    let (one, two) = two_instances(|c| {
        c.throttle.second_factor_max_failures = LIMIT;
        c.throttle.ip_max_failures = 10_000;
        c.accounts.challenge_max_attempts = 1000;
    })
    .await;
    let email = "totp-guess@example.com";
    one.verified_user(email).await;
    let t = one.signin(email, PASSWORD).await;
    let (secret, _) = one.enrol_totp(&t).await;
    let (c1, _) = one.challenge(email, PASSWORD).await;
    let (c2, _) = two.challenge(email, PASSWORD).await;
    let mut reqs = Vec::new();
    for i in 0..40u32 {
        let (app, ch) = if i % 2 == 0 { (&one, &c1) } else { (&two, &c2) };
        let (http, url) = (app.http.clone(), app.url("/v1/auth/signin/verify"));
        let body = json!({"challenge_id": ch, "code": wrong_code(&secret, i)});
        reqs.push(async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let statuses = join_all(reqs).await;
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        (1..=LIMIT as usize).contains(&evaluated)
            && statuses.iter().all(|c| *c == 401 || *c == 429),
        "{evaluated} evaluated (limit {LIMIT}): {statuses:?}"
    );
}

/// One TOTP code, sent at once as a sign-in's second factor on one
/// instance and as the proof of an authenticator replacement on the other.
#[tokio::test]
async fn one_totp_code_is_not_both_a_sign_in_and_an_enrolment_proof() {
    let (one, two) = two_instances(|_| {}).await;
    let email = "both@example.com";
    one.verified_user(email).await;
    let t = one.signin(email, PASSWORD).await;
    let (secret, now) = one.enrol_totp(&t).await;
    for round in 0..3 {
        let code = totp_code(&secret, now + 30 * (round + 1));
        // Wait until this step's code is within the window (the step before or the step).
        while authflow_auth_service::clock::now() / 30 + 1 < (now + 30 * (round + 1)) / 30 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let (ch, _) = one.challenge(email, PASSWORD).await;
        let signin = one
            .http
            .post(one.url("/v1/auth/signin/verify"))
            .json(&json!({"challenge_id": ch, "code": code}))
            .send();
        let enrol = two
            .authed(Method::POST, "/v1/auth/totp/enroll", &t)
            .json(&json!({"code": code}))
            .send();
        let (a, b) = tokio::join!(signin, enrol);
        let (a, b) = (a.unwrap().status().as_u16(), b.unwrap().status().as_u16());
        assert!(
            !(a == 200 && b == 200),
            "round {round}: one code used twice"
        );
    }
}

/// An admin removes a user's lost (stolen) authenticator while the thief,
/// holding it and a session, replaces it: the replacement was proven with a
/// code of the removed authenticator, yet it lands after the removal.
#[tokio::test]
async fn an_authenticator_removed_by_an_admin_is_not_replaced_by_a_proof_of_it_racing_the_removal()
{
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let email = "stolen-phone@example.com";
    let user_id = app.verified_user(email).await;
    // The thief's phone: the authenticator and a signed-in session.
    let t = app.signin(email, PASSWORD).await;
    let (lost, _) = app.enrol_totp(&t).await;
    // Another client holds the user's row for a moment (any write to it
    // does): the admin's removal queues first, the thief's proof behind it.
    let lock = format!("SELECT 1 FROM users WHERE id = '{user_id}' FOR UPDATE");
    let held = hold_transaction(&app, &[], &[&lock]).await;
    let remove = {
        let req = app.authed(
            Method::DELETE,
            &format!("/v1/admin/users/{user_id}/totp"),
            &admin,
        );
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let code = totp_code(&lost, authflow_auth_service::clock::now() + 30);
    let enrol = {
        let req = app
            .authed(Method::POST, "/v1/auth/totp/enroll", &t)
            .json(&json!({"code": code}));
        tokio::spawn(async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    held.commit().await;
    assert_eq!(remove.await.unwrap(), 200, "the admin's removal");
    let (status, body) = enrol.await.unwrap();
    if status == 200 {
        // The thief confirms an authenticator of its own.
        let thief = body["secret"].as_str().unwrap().to_owned();
        let r = app
            .authed(Method::POST, "/v1/auth/totp/confirm", &t)
            .json(&json!({"code": totp_code(&thief, authflow_auth_service::clock::now())}))
            .send()
            .await
            .unwrap();
        let confirmed = r.status().as_u16();
        let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
        panic!(
            "the removed authenticator's code proved a replacement after the removal \
             (enrol 200, confirm {confirmed}); the account's authenticator is now the thief's: {}",
            user.totp_secret.as_deref() == Some(thief.as_str())
        );
    }
    assert!(status == 409 || status == 401, "enrol {status}: {body}");
}

/// An admin banned on one instance keeps acting as an admin on the other
/// after the ban was acknowledged: the other instance checks the token
/// against its in-memory revocation list, synced a moment later. Here the
/// banned admin leaves itself a service account (a client secret) that
/// outlives the ban.
#[tokio::test]
async fn a_banned_admin_cannot_act_on_another_instance_once_the_ban_is_acknowledged() {
    let (one, two) = two_instances(|_| {}).await;
    let root = one.admin("root@example.com").await;
    let mut acted = Vec::new();
    for round in 0..30 {
        let rogue = one.admin(&format!("rogue{round}@example.com")).await;
        let rogue_id = claims(&rogue.access)["sub"].as_str().unwrap().to_owned();
        let r = one.ban(&root, &rogue_id).await;
        assert_eq!(r.status(), 200);
        // The ban is acknowledged. The rogue admin, on the other instance:
        let client_id = format!("backdoor-{round}");
        let r = two
            .authed(Method::POST, "/v1/admin/service-accounts", &rogue)
            .json(&json!({"client_id": client_id, "scopes": []}))
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            let secret = r.json::<Value>().await.unwrap()["client_secret"]
                .as_str()
                .unwrap()
                .to_owned();
            // Long after the ban, the credential still mints tokens.
            let token = one
                .http
                .post(one.url("/v1/oauth/token"))
                .basic_auth(&client_id, Some(&secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            acted.push((round, token));
        }
    }
    assert!(
        acted.is_empty(),
        "(round, later token request status) where a banned admin created a service account after its ban was acknowledged: {acted:?}"
    );
}

/// The owner sets up an authenticator (whoever holds the password and the
/// mailbox must now also hold it) while such a holder finishes a sign-in
/// begun with a mailed code: the README promises that a sign-in begun
/// before with a mailed code cannot finish with it once the authenticator
/// is confirmed. Here the confirmation is answered first, and the mailed
/// code's session is stored after it.
#[tokio::test]
async fn a_mailed_code_sign_in_gets_no_session_stored_after_an_authenticator_was_confirmed() {
    let app = spawn_app().await;
    let email = "owner-arming@example.com";
    let user_id = app.verified_user(email).await;
    let owner = app.signin(email, PASSWORD).await;
    let pending = app.begin_totp(&owner).await;
    // The thief: the password and the mailbox.
    let before = app.outbox(email, 0).await.len();
    let (challenge, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "email");
    let code = app.last_mail(email, before + 1).await["code"].clone();
    // Another client holds the user's row a moment: the confirmation queues first.
    let lock = format!("SELECT 1 FROM users WHERE id = '{user_id}' FOR NO KEY UPDATE");
    let held = hold_transaction(&app, &[], &[&lock]).await;
    let confirm = {
        let req = app
            .authed(Method::POST, "/v1/auth/totp/confirm", &owner)
            .json(&json!({"code": totp_code(&pending, authflow_auth_service::clock::now())}));
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let thief = {
        let req = app
            .http
            .post(app.url("/v1/auth/signin/verify"))
            .json(&json!({"challenge_id": challenge, "code": code}));
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    held.commit().await;
    let (confirmed, signed_in) = (confirm.await.unwrap(), thief.await.unwrap());
    assert_eq!(confirmed, 200, "the owner's authenticator");
    assert_ne!(
        signed_in, 200,
        "a mailed code got a session stored after the authenticator was confirmed"
    );
}

/// The owner ends a session it does not recognise (a thief's) from "your
/// devices" on one instance. Once that is acknowledged, the thief, on
/// another instance, still acts with the ended session's access token: that
/// instance checks it against its in-memory revocation list, synced a moment
/// later. Here the thief logs the owner out everywhere, ending the owner's
/// own session, which nothing had ended.
#[tokio::test]
async fn an_ended_session_cannot_end_the_owners_other_sessions_on_another_instance() {
    let (one, two) = two_instances(|c| c.throttle.ip_max_signups = 1000).await;
    let mut acted = Vec::new();
    for round in 0..20 {
        let email = format!("owner{round}@example.com");
        one.verified_user(&email).await;
        let owner = one.signin(&email, PASSWORD).await;
        let thief = one.signin(&email, PASSWORD).await;
        // What "your devices" does for the session the owner ends there.
        assert!(authflow_auth_service::sessions::revoke_session(
            &one.state,
            &thief.session,
            "logout_device"
        )
        .await
        .unwrap());
        // Acknowledged. The thief, on the other instance:
        let r = two
            .authed(Method::POST, "/v1/auth/logout-all", &thief)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let owners = one
            .state
            .store
            .session(&owner.session)
            .await
            .unwrap()
            .unwrap();
        if status == 200 || owners.revoked_at.is_some() {
            acted.push((round, status, owners.revoke_reason));
        }
    }
    assert!(
        acted.is_empty(),
        "(round, logout-all status, how the owner's session ended) where an ended session's token acted after the end was acknowledged: {acted:?}"
    );
}

/// As above, the thief also knows the password: it began an authenticator
/// enrolment while its session was live, and switches it on from the other
/// instance after the owner ended that session. The account's second factor
/// is now the thief's: the owner's next sign-in asks for a code only the
/// thief has, the thief signs in with the password and its code.
#[tokio::test]
async fn an_ended_session_cannot_switch_on_an_authenticator_on_another_instance() {
    let (one, two) = two_instances(|c| c.throttle.ip_max_signups = 1000).await;
    let mut acted = Vec::new();
    for round in 0..20 {
        let email = format!("victim{round}@example.com");
        let user_id = one.verified_user(&email).await;
        let thief = one.signin(&email, PASSWORD).await;
        let pending = one.begin_totp(&thief).await;
        assert!(authflow_auth_service::sessions::revoke_session(
            &one.state,
            &thief.session,
            "logout_device"
        )
        .await
        .unwrap());
        // Acknowledged. The thief, on the other instance:
        let code = totp_code(&pending, authflow_auth_service::clock::now());
        let r = two
            .authed(Method::POST, "/v1/auth/totp/confirm", &thief)
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let user = one.state.store.user_by_id(&user_id).await.unwrap().unwrap();
        if status == 200 || user.totp_secret.is_some() {
            let (_, method) = one.challenge(&email, PASSWORD).await;
            acted.push((round, status, method));
        }
    }
    assert!(
        acted.is_empty(),
        "(round, confirm status, the owner's next sign-in method) where an ended session switched on its authenticator after the end was acknowledged: {acted:?}"
    );
}

/// An admin removes a user's stolen authenticator while the thief (the
/// password, the authenticator and a challenge) finishes a sign-in with one
/// of its codes: the code is compared with the secret read before the
/// removal, its step recorded after it, and a session stored. The removal
/// was answered 200 and a session opened by the removed authenticator
/// exists after it.
#[tokio::test]
async fn a_sign_in_proven_by_an_authenticator_removed_meanwhile_gets_no_session() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let email = "stolen-phone-signin@example.com";
    let user_id = app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let (lost, _) = app.enrol_totp(&t).await;
    // The thief's sign-in, begun with the password.
    let (challenge, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");
    // Another client holds the user's row a moment: the removal queues first,
    // the thief's code behind it.
    let lock = format!("SELECT 1 FROM users WHERE id = '{user_id}' FOR UPDATE");
    let held = hold_transaction(&app, &[], &[&lock]).await;
    let remove = {
        let req = app.authed(
            Method::DELETE,
            &format!("/v1/admin/users/{user_id}/totp"),
            &admin,
        );
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let code = totp_code(&lost, authflow_auth_service::clock::now() + 30);
    let thief = {
        let req = app
            .http
            .post(app.url("/v1/auth/signin/verify"))
            .json(&json!({"challenge_id": challenge, "code": code}));
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    held.commit().await;
    assert_eq!(remove.await.unwrap(), 200, "the admin's removal");
    assert_ne!(
        thief.await.unwrap(),
        200,
        "a code of the removed authenticator got a session stored after the removal"
    );
}

/// The owner replaces an authenticator a thief copied (the thief also holds
/// a session) while the thief removes it with one of its codes: the code is
/// checked against the old secret, the owner's replacement is confirmed and
/// answered 200, and then the thief's removal lands and takes the owner's
/// new authenticator with it (sign-in falls back to mailed codes).
#[tokio::test]
async fn a_removal_proven_by_a_replaced_authenticator_leaves_its_replacement() {
    let app = spawn_app_with(|c| c.server.xff_num_trusted_hops = 1).await;
    let email = "copied-authenticator@example.com";
    let user_id = app.verified_user(email).await;
    let owner = app.signin(email, PASSWORD).await;
    let thief = app.signin(email, PASSWORD).await;
    let (old, _) = app.enrol_totp(&owner).await;
    // The owner's replacement, begun (its proof is not at issue here).
    let new = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    let proven = authflow_auth_service::store::EnrolmentProof {
        password_version: user.password_version,
        authenticator: user.totp_secret.as_deref(),
    };
    assert!(app
        .state
        .store
        .set_totp_pending(&user_id, new, &owner.session, proven)
        .await
        .unwrap());
    // The thief's removal is let through its code's check and then held
    // before it removes anything: first the user's row is held (its code
    // waits there), then the row of the thief's address in the throttle
    // (which its right code is taken back from before the removal).
    let row = format!("SELECT 1 FROM users WHERE id = '{user_id}' FOR UPDATE");
    let held_row = hold_transaction(&app, &[], &[&row]).await;
    let remove = {
        let req = app
            .authed(Method::POST, "/v1/auth/totp/remove", &thief)
            .header("x-forwarded-for", "10.9.9.9")
            .json(&json!({"code": totp_code(&old, authflow_auth_service::clock::now() + 30)}));
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let address = "SELECT 1 FROM signin_throttle WHERE key = 'ip:10.9.9.9' FOR UPDATE";
    let held_address = hold_transaction(&app, &[], &[address]).await;
    held_row.commit().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The owner confirms the new authenticator, and is told it is on.
    let r = app
        .authed(Method::POST, "/v1/auth/totp/confirm", &owner)
        .header("x-forwarded-for", "10.8.8.8")
        .json(&json!({"code": totp_code(new, authflow_auth_service::clock::now())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the owner's replacement");
    held_address.commit().await;
    let removed = remove.await.unwrap();
    let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    assert_eq!(
        user.totp_secret.as_deref(),
        Some(new),
        "the owner's confirmed authenticator is gone (the thief's removal: {removed})"
    );
    assert_ne!(removed, 200);
}

/// As above in the other order: the thief's code is checked and its step
/// recorded while the authenticator is still the account's; then the admin's
/// removal is committed and answered; only then is the thief's session
/// stored, opened by an authenticator removed before it.
#[tokio::test]
async fn a_sign_in_whose_authenticator_is_removed_before_its_session_is_stored_gets_none() {
    let app = spawn_app_with(|c| c.server.xff_num_trusted_hops = 1).await;
    let admin = app.admin("root@example.com").await;
    let email = "stolen-phone-late@example.com";
    let user_id = app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let (lost, _) = app.enrol_totp(&t).await;
    let (challenge, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");
    // The thief's code waits at the user's row; then, past it, at the row of
    // its address in the throttle (its right code is taken back from there
    // before the session is stored).
    let row = format!("SELECT 1 FROM users WHERE id = '{user_id}' FOR UPDATE");
    let held_row = hold_transaction(&app, &[], &[&row]).await;
    let code = totp_code(&lost, authflow_auth_service::clock::now() + 30);
    let thief = {
        let req = app
            .http
            .post(app.url("/v1/auth/signin/verify"))
            .header("x-forwarded-for", "10.9.9.9")
            .json(&json!({"challenge_id": challenge, "code": code}));
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let address = "SELECT 1 FROM signin_throttle WHERE key = 'ip:10.9.9.9' FOR UPDATE";
    let held_address = hold_transaction(&app, &[], &[address]).await;
    held_row.commit().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = app
        .authed(
            Method::DELETE,
            &format!("/v1/admin/users/{user_id}/totp"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the admin's removal");
    held_address.commit().await;
    assert_ne!(
        thief.await.unwrap(),
        200,
        "a session was stored after its authenticator's removal was answered"
    );
}

/// An admin revokes one stolen access token (by its `jti`: the session stays)
/// on one instance. Once that is acknowledged, the thief, on another
/// instance, still acts with it until that instance's revocation list syncs:
/// the session is live in the database, so only the feed knows. Here the
/// thief logs the owner out everywhere.
#[tokio::test]
async fn a_token_revoked_by_its_id_cannot_act_on_another_instance() {
    let (one, two) = two_instances(|c| c.throttle.ip_max_signups = 1000).await;
    let admin = one.admin("root@example.com").await;
    let mut acted = Vec::new();
    for round in 0..20 {
        let email = format!("jti-owner{round}@example.com");
        one.verified_user(&email).await;
        let owner = one.signin(&email, PASSWORD).await;
        let stolen = one.signin(&email, PASSWORD).await;
        let jti = claims(&stolen.access)["jti"].as_str().unwrap().to_owned();
        let r = one
            .authed(Method::POST, "/v1/admin/tokens/revoke", &admin)
            .json(&json!({"jti": jti}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Acknowledged. The thief, on the other instance:
        let r = two
            .authed(Method::POST, "/v1/auth/logout-all", &stolen)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let owners = one
            .state
            .store
            .session(&owner.session)
            .await
            .unwrap()
            .unwrap();
        if status == 200 || owners.revoked_at.is_some() {
            acted.push((round, status));
        }
    }
    assert!(
        acted.is_empty(),
        "(round, logout-all status) where a revoked token acted after its revocation was acknowledged: {acted:?}"
    );
}

/// An admin removes a user's authenticator (the one the admin's read saw)
/// while the owner confirms a replacement: the replacement, confirmed and
/// answered first, stays, and the admin is told the authenticator changed.
#[tokio::test]
async fn an_admin_removal_leaves_a_replacement_confirmed_since_the_admin_read_the_account() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let email = "replaced-phone@example.com";
    let user_id = app.verified_user(email).await;
    let owner = app.signin(email, PASSWORD).await;
    let (old, _) = app.enrol_totp(&owner).await;
    let r = app
        .authed(Method::POST, "/v1/auth/totp/enroll", &owner)
        .json(&json!({"code": totp_code(&old, authflow_auth_service::clock::now() + 30)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the replacement begun");
    let new = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // The audit log is held: the admin's removal reads the account (the old
    // authenticator) and waits to write its audit row; the owner's
    // confirmation commits meanwhile (and waits to write its own row).
    let held = hold_transaction(&app, &[], &["LOCK TABLE audit_log IN SHARE MODE"]).await;
    let remove = {
        let req = app.authed(
            Method::DELETE,
            &format!("/v1/admin/users/{user_id}/totp"),
            &admin,
        );
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let confirm = {
        let req = app
            .authed(Method::POST, "/v1/auth/totp/confirm", &owner)
            .json(&json!({"code": totp_code(&new, authflow_auth_service::clock::now())}));
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    let confirmed = async {
        loop {
            let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
            if user.totp_secret.as_deref() == Some(new.as_str()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), confirmed)
        .await
        .expect("the owner's replacement is stored");
    held.commit().await;
    assert_eq!(confirm.await.unwrap(), 200, "the owner's replacement");
    let removed = remove.await.unwrap();
    let user = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    assert_eq!(
        user.totp_secret.as_deref(),
        Some(new.as_str()),
        "the owner's confirmed replacement was removed (the admin's removal: {removed})"
    );
    assert_eq!(removed, 409);
}

/// Feed writers on two instances at once, and a reader moving its cursor to
/// the newest event it read each time: an event whose number was handed out
/// before another's but committed after it would never be read. Each read
/// must continue the numbers exactly where the last one stopped.
#[tokio::test]
async fn feed_events_racing_on_two_instances_are_read_without_a_gap() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let (one, two) = two_instances(|_| {}).await;
    let done = Arc::new(AtomicBool::new(false));
    let exp = authflow_auth_service::clock::now() + 900;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(if w % 2 == 0 {
                &one.state.store
            } else {
                &two.state.store
            });
            tokio::spawn(async move {
                for i in 0..EACH {
                    let now = authflow_auth_service::clock::now();
                    store
                        .revoke_token(&format!("w{w}-{i}"), now, exp)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let store = Arc::clone(&one.state.store);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                for e in store.feed_events_after(cursor, 0).await.unwrap() {
                    assert_eq!(
                        e.seq,
                        cursor + 1,
                        "the reader's cursor went past an event committed later"
                    );
                    cursor = e.seq;
                    seen.push(e.subject);
                }
                if finished {
                    return seen;
                }
            }
        })
    };
    for w in writers {
        tokio::time::timeout(std::time::Duration::from_secs(60), w)
            .await
            .unwrap()
            .unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.len(), WRITERS * EACH);
}

/// A ban on one instance racing refreshes of the user's sessions on the
/// other: whatever access token a refresh answered is refused afterwards.
#[tokio::test]
async fn a_ban_racing_refreshes_on_another_instance_leaves_no_token_alive() {
    let (one, two) = two_instances(|_| {}).await;
    let admin = one.admin("root@example.com").await;
    for round in 0..4 {
        let email = format!("racer{round}@example.com");
        let user_id = one.verified_user(&email).await;
        let mut sessions = Vec::new();
        for _ in 0..3 {
            sessions.push(one.signin(&email, PASSWORD).await);
        }
        let r =
            |i: usize| refresh_with_device(&two, &sessions[i].refresh, Some(&sessions[i].device));
        let (ban, a, b, c) = tokio::join!(one.ban(&admin, &user_id), r(0), r(1), r(2));
        assert_eq!(ban.status(), 200);
        for r in [a, b, c] {
            if r.status() == 200 {
                let t = tokens_of(r).await;
                for app in [&one, &two] {
                    assert_ne!(
                        settled_verdict(app, &t).await,
                        200,
                        "round {round}: a token refreshed during the ban still passes"
                    );
                }
            }
        }
    }
}

/// A ban on one instance racing the code step of sign-ins on the other:
/// a session stored after the ban's sweep of the user's sessions would
/// live on. Whatever the sign-ins answered is refused afterwards.
#[tokio::test]
async fn a_ban_racing_sign_ins_on_another_instance_leaves_no_session_alive() {
    let (one, two) = two_instances(|_| {}).await;
    let admin = one.admin("root@example.com").await;
    for round in 0..4 {
        let email = format!("signer{round}@example.com");
        let user_id = one.verified_user(&email).await;
        let mut pending = Vec::new();
        for _ in 0..3 {
            let before = one.outbox(&email, 0).await.len();
            let (challenge, _) = one.challenge(&email, PASSWORD).await;
            let code = one.last_mail(&email, before + 1).await["code"].clone();
            pending.push(json!({"challenge_id": challenge, "code": code}));
        }
        let verify = |i: usize| two.post("/v1/auth/signin/verify", pending[i].clone());
        let (ban, a, b, c) =
            tokio::join!(one.ban(&admin, &user_id), verify(0), verify(1), verify(2));
        assert_eq!(ban.status(), 200);
        for r in [a, b, c] {
            if r.status() == 200 {
                let t = tokens_of(r).await;
                let session = one.state.store.session(&t.session).await.unwrap().unwrap();
                assert!(
                    session.revoked_at.is_some(),
                    "round {round}: a session stored across the ban lives"
                );
                for app in [&one, &two] {
                    assert_ne!(
                        settled_verdict(app, &t).await,
                        200,
                        "round {round}: a token of a sign-in during the ban still passes"
                    );
                }
            }
        }
    }
}

/// `app`'s ext_authz verdict on `t` once it stops allowing it, or 200 after
/// 2.5 s (a revocation reaches every instance well within that).
async fn settled_verdict(app: &TestApp, t: &Tokens) -> u16 {
    for _ in 0..50 {
        let status = ext_authz(app, t).await;
        if status != 200 {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    200
}
