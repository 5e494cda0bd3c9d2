//! Bounds on what one client can make the service store: an anonymous
//! client, or one ordinary account, must grow the database with what the
//! service's limits allow it, not with the number of requests it sends.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// Waits until no background task (password-reset mails) runs.
async fn background_settled(app: &TestApp) {
    for _ in 0..600 {
        if app.state.background.in_flight() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("background work did not settle");
}

async fn audit_rows(app: &TestApp, event: &str) -> usize {
    app.state
        .store
        .audit_log(None, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event == event)
        .count()
}

/// Finding: past its mail budget, every anonymous `password/forgot`
/// request still wrote an audit row of its own (`mail_limited`, with
/// `audit::record`, not `audit::record_repeatable`): one client address
/// grew the audit log by one row per request, kept for
/// `maintenance.audit_retention_days`, with nothing to sign in to. The
/// refusals past a limit are now recorded as the other repeatable ones are:
/// at most one row per client address a minute, saying how many it held back.
#[tokio::test]
async fn a_password_reset_flood_from_one_address_writes_a_bounded_audit_trail() {
    const BUDGET: u32 = 3;
    const REQUESTS: usize = 60;
    let app = spawn_app_with(|c| {
        c.server.xff_num_trusted_hops = 1;
        c.mail.max_per_client_per_hour = BUDGET;
    })
    .await;
    for i in 0..REQUESTS {
        let r = app
            .http
            .post(app.url("/v1/auth/password/forgot"))
            .header("x-forwarded-for", "198.51.100.77")
            .json(&json!({"email": format!("nobody{i}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        background_settled(&app).await;
    }
    let rows = audit_rows(&app, "password_forgot").await;
    // Within the budget one row per request (`unknown_email` here), then
    // one for the refusals: not one per request.
    assert!(
        rows <= BUDGET as usize + 2,
        "{rows} audit rows from {REQUESTS} anonymous password-reset requests of one address"
    );
}

/// Finding: a sign-in with the right password of an account with TOTP
/// opened a challenge (and wrote a `challenge_sent` audit row) every time,
/// with no limit but the password hashing slots: the per-account budget
/// (`mail.max_signin_codes_per_hour`) that bounds sign-ins of a mailed-code
/// account was taken only when a code was mailed. One ordinary account
/// (or whoever has only its password) could keep the challenges table as
/// full as the hashing allowed and grow the audit log without bound. A TOTP
/// sign-in now spends the same per-account budget (no mail goes out).
#[tokio::test]
async fn sign_ins_of_a_totp_account_are_limited_per_account() {
    const BUDGET: u32 = 4;
    let app = spawn_app_with(|c| {
        c.server.xff_num_trusted_hops = 1;
        c.mail.max_signin_codes_per_hour = BUDGET;
    })
    .await;
    let email = "totp-flood@example.com";
    app.verified_user(email).await;
    let tokens = app.signin(email, PASSWORD).await;
    app.enrol_totp(&tokens).await;
    let mut opened = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..(BUDGET as usize * 5) {
        let r = app
            .http
            .post(app.url("/v1/auth/signin"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 200 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["method"], "totp");
            opened.push(body["challenge_id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(r.status(), 429, "{statuses:?}");
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    let mut live = 0;
    for id in &opened {
        if app.state.store.challenge(id).await.unwrap().is_some() {
            live += 1;
        }
    }
    assert!(
        live <= BUDGET as usize,
        "{live} sign-in challenges open at once for one account (answers {statuses:?})"
    );
}

/// Finding: a banned account signing in with its right password was told
/// `account_disabled` after the password's attempt had been taken back (as
/// for any right password), so whoever has that password (the banned user)
/// could sign in without limit but the hashing slots, each time writing a
/// `banned` audit row. The attempt now stays counted as a failure: the
/// account locks at its limit like a guessed one, and the log stays bounded.
#[tokio::test]
async fn sign_ins_of_a_banned_account_are_limited() {
    const MAX_FAILURES: u32 = 3;
    let app = spawn_app_with(|c| c.throttle.account_max_failures = MAX_FAILURES).await;
    let admin = app.admin("boss@example.com").await;
    let user_id = app.verified_user("banned@example.com").await;
    let r = app.ban(&admin, &user_id).await;
    assert_eq!(r.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = app
            .post(
                "/v1/auth/signin",
                json!({"email": "banned@example.com", "password": PASSWORD}),
            )
            .await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[0], 403, "{statuses:?}");
    assert!(
        statuses.ends_with(&[429]),
        "the right password of a banned account is never refused for its rate: {statuses:?}"
    );
    let rows = audit_rows(&app, "signin").await;
    assert!(
        rows <= MAX_FAILURES as usize + 4,
        "{rows} sign-in audit rows from 12 sign-ins of a banned account"
    );
}
