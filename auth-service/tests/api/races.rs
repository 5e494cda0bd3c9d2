//! Counted and single-use things raced on one instance (SQLite here,
//! PostgreSQL in `api_postgres`).

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

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

/// A wait for a hashing slot long enough that parallel sign-ins on a busy
/// machine are not refused 503 for want of one: what these tests count is
/// the throttle's and the budget's answers.
const UNBUSY: std::time::Duration = std::time::Duration::from_secs(60);

async fn statuses(reqs: Vec<reqwest::RequestBuilder>) -> Vec<u16> {
    join_all(
        reqs.into_iter()
            .map(|r| async move { r.send().await.unwrap().status().as_u16() })
            .collect(),
    )
    .await
}

#[tokio::test]
async fn parallel_wrong_passwords_are_evaluated_no_more_than_the_limit() {
    const LIMIT: u32 = 3;
    let app = spawn_app_with(|c| {
        c.throttle.account_max_failures = LIMIT;
        c.throttle.ip_max_failures = 10_000;
        c.limits.password_hash_wait = UNBUSY;
    })
    .await;
    let email = "guess@example.com";
    app.verified_user(email).await;
    let reqs = (0..40)
        .map(|i| {
            app.http
                .post(app.url("/v1/auth/signin"))
                .json(&json!({"email": email, "password": format!("wrong password {i}!!")}))
        })
        .collect();
    let s = statuses(reqs).await;
    let evaluated = s.iter().filter(|s| **s == 401).count();
    assert!(
        (1..=LIMIT as usize).contains(&evaluated) && s.iter().all(|c| *c == 401 || *c == 429),
        "{evaluated} evaluated (limit {LIMIT}): {s:?}"
    );
}

#[tokio::test]
async fn parallel_wrong_second_factor_codes_are_evaluated_no_more_than_the_limit() {
    const LIMIT: u32 = 3;
    let app = spawn_app_with(|c| {
        c.throttle.second_factor_max_failures = LIMIT;
        c.throttle.ip_max_failures = 10_000;
        c.accounts.challenge_max_attempts = 1000;
    })
    .await;
    let email = "totp-guess@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let (secret, _) = app.enrol_totp(&t).await;
    let (c1, _) = app.challenge(email, PASSWORD).await;
    let (c2, _) = app.challenge(email, PASSWORD).await;
    let reqs = (0..40u32)
        .map(|i| {
            let ch = if i % 2 == 0 { &c1 } else { &c2 };
            app.http
                .post(app.url("/v1/auth/signin/verify"))
                .json(&json!({"challenge_id": ch, "code": wrong_code(&secret, i)}))
        })
        .collect();
    let s = statuses(reqs).await;
    let evaluated = s.iter().filter(|s| **s == 401).count();
    assert!(
        (1..=LIMIT as usize).contains(&evaluated) && s.iter().all(|c| *c == 401 || *c == 429),
        "{evaluated} evaluated (limit {LIMIT}): {s:?}"
    );
}

#[tokio::test]
async fn parallel_sign_ins_mail_no_more_codes_than_the_budget() {
    const BUDGET: u32 = 3;
    let app = spawn_app_with(|c| {
        c.mail.max_signin_codes_per_hour = BUDGET;
        c.throttle.account_max_failures = 1000;
        c.throttle.ip_max_failures = 10_000;
        c.limits.password_hash_wait = UNBUSY;
    })
    .await;
    let email = "budget@example.com";
    app.verified_user(email).await;
    let reqs = (0..20)
        .map(|_| {
            app.http
                .post(app.url("/v1/auth/signin"))
                .json(&json!({"email": email, "password": PASSWORD}))
        })
        .collect();
    let s = statuses(reqs).await;
    let sent = s.iter().filter(|s| **s == 200).count();
    assert!(
        (1..=BUDGET as usize).contains(&sent) && s.iter().all(|c| *c == 200 || *c == 429),
        "{sent} mailed (budget {BUDGET}): {s:?}"
    );
}

#[tokio::test]
async fn a_reset_link_used_several_times_at_once_resets_once() {
    let app = spawn_app_with(|c| {
        c.mail.max_per_recipient_per_hour = 100;
        c.mail.max_per_client_per_hour = 100;
    })
    .await;
    let email = "reset@example.com";
    app.verified_user(email).await;
    let mut seen = std::collections::HashSet::new();
    for round in 0..5 {
        let r = app
            .post("/v1/auth/password/forgot", json!({"email": email}))
            .await;
        assert_eq!(r.status(), 202);
        let token = loop {
            let fresh = app
                .outbox(email, 0)
                .await
                .into_iter()
                .filter(|m| m["subject"] == "Reset your password")
                .map(|m| m["token"].clone())
                .find(|t| !seen.contains(&t.to_string()));
            if let Some(t) = fresh {
                seen.insert(t.to_string());
                break t;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let reqs = (0..6)
            .map(|i| {
                app.http.post(app.url("/v1/auth/password/reset")).json(
                    &json!({"token": token, "password": format!("a brand new password {round} {i}")}),
                )
            })
            .collect();
        let s = statuses(reqs).await;
        assert_eq!(
            s.iter().filter(|s| **s == 200).count(),
            1,
            "round {round}: {s:?}"
        );
    }
}

#[tokio::test]
async fn an_enrolment_confirmed_several_times_at_once_is_confirmed_once() {
    let app = spawn_app().await;
    let email = "confirm@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let secret = app.begin_totp(&t).await;
    let code = totp_code(&secret, authflow_auth_service::clock::now());
    let reqs = (0..6)
        .map(|_| {
            app.authed(Method::POST, "/v1/auth/totp/confirm", &t)
                .json(&json!({"code": code}))
        })
        .collect();
    let s = statuses(reqs).await;
    assert_eq!(s.iter().filter(|s| **s == 200).count(), 1, "{s:?}");
    // The confirming code is spent: it cannot sign in.
    let (ch, _) = app.challenge(email, PASSWORD).await;
    let r = app
        .post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": ch, "code": code}),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_code", "{body}");
}
