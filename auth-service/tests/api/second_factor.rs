//! The second factor cannot be guessed: attempts are counted before the code
//! is compared, per account across challenges, with a lockout that doubles
//! and survives a restart; the owner is told when it locks.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// A code that is not `real`.
fn wrong(real: &str) -> &'static str {
    if real == "123456" {
        "654321"
    } else {
        "123456"
    }
}

/// Status, `error_description` and `Retry-After` of one guess.
async fn guess(app: &TestApp, challenge: &str, code: &str) -> (u16, String, Option<u64>) {
    let r = app
        .post(
            "/v1/auth/signin/verify",
            json!({"challenge_id": challenge, "code": code}),
        )
        .await;
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        retry,
    )
}

#[tokio::test]
async fn parallel_guesses_never_exceed_the_limit() {
    let app = spawn_app().await;
    app.verified_user("par@example.com").await;
    let (challenge, _) = app.challenge("par@example.com", PASSWORD).await;
    let real = app.last_mail("par@example.com", 2).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = wrong(&real);
    let guesses = (0..20).map(|_| guess(&app, &challenge, bad));
    let answers = futures_join_all(guesses).await;
    let compared = answers
        .iter()
        .filter(|(_, d, _)| d == "the code is wrong")
        .count();
    assert!(
        compared <= 5,
        "{compared} of 20 parallel guesses were compared: {answers:?}"
    );
    assert!(
        answers.iter().all(|(s, _, _)| [401, 429].contains(s)),
        "{answers:?}"
    );
    // The limit holds for the right code too, once it is used up.
    let (status, _, _) = guess(&app, &challenge, &real).await;
    assert!([401, 429].contains(&status));
}

/// Runs every future concurrently on this task (no extra dependency).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().map(Option::unwrap));
    out
}

/// Password, then wrong codes until the second factor locks; the lock's length.
async fn lock_once(app: &TestApp, email: &str, mails_before: usize) -> u64 {
    let (challenge, _) = app.challenge(email, PASSWORD).await;
    let real = app.last_mail(email, mails_before + 1).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..5 {
        let (status, _, retry) = guess(app, &challenge, wrong(&real)).await;
        if status == 429 {
            return retry.unwrap();
        }
        assert_eq!(status, 401);
    }
    let (status, _, retry) = guess(app, &challenge, &real).await;
    assert_eq!(
        status, 429,
        "the second factor locks after 5 wrong codes, even for the right one"
    );
    retry.unwrap()
}

#[tokio::test]
async fn password_and_guess_cycles_escalate_and_survive_a_restart() {
    let tweak = |c: &mut authflow_auth_service::config::Config| {
        // Retry-After is whole seconds read one request after the lock was set, so it may
        // be one short when a second boundary passes in between: a 2 s base keeps 2, 4, 8
        // strictly increasing even then (a 1 s base read [1, 1, 4] under load).
        c.throttle.lockout_base = Duration::from_secs(2);
        c.throttle.account_max_failures = 1000;
    };
    let app = spawn_app_with(tweak).await;
    let email = "cycle@example.com";
    app.verified_user(email).await;
    let mut locks = Vec::new();
    for _ in 0..3 {
        let before = app.outbox(email, 0).await.len();
        let lock = lock_once(&app, email, before).await;
        locks.push(lock);
        tokio::time::sleep(Duration::from_millis(lock * 1000 + 1100)).await;
    }
    assert!(
        locks.windows(2).all(|w| w[1] > w[0]),
        "each lockout is longer than the last: {locks:?}"
    );
    // The owner was told (a notice per lockout, at least the first).
    let mails = app.outbox(email, 0).await;
    assert!(
        mails.iter().any(|m| m["subject"]
            .as_str()
            .unwrap_or_default()
            .contains("second factor")),
        "{mails:?}"
    );

    // Lock a fourth time, then a restart on the same database keeps the lock.
    let before = app.outbox(email, 0).await.len();
    let lock = lock_once(&app, email, before).await;
    assert!(lock > locks[2], "{lock} after {locks:?}");
    let restarted = spawn_app_beside(&app, tweak).await;
    let (challenge, _) = restarted.challenge(email, PASSWORD).await;
    let (status, _, retry) = guess(&restarted, &challenge, "000000").await;
    assert_eq!(
        status, 429,
        "a restart does not lift the second-factor lockout"
    );
    assert!(retry.unwrap() > 1);
}

/// The right `code` on `challenge` until it is compared: after each 429 waits
/// out its `Retry-After`, at most `tries` times. Every answer, in order.
async fn right_code_once_unlocked(
    app: &TestApp,
    challenge: &str,
    code: &str,
    tries: usize,
) -> Vec<(u16, String, Option<u64>)> {
    let mut answers = Vec::new();
    for _ in 0..tries {
        let answer = guess(app, challenge, code).await;
        let (status, _, retry) = answer.clone();
        answers.push(answer);
        if status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(retry.unwrap_or(1) * 1000 + 200)).await;
    }
    answers
}

/// A challenge whose attempts are used up refuses before comparing, but the
/// attempt was counted against the account: reaching the limit that way must
/// lock (a lock that runs out), not leave a count past the limit with no lock,
/// which refused every later attempt, the right code too, forever.
#[tokio::test]
async fn a_used_up_challenge_cannot_lock_the_account_forever() {
    let app = spawn_app_with(|c| {
        c.throttle.lockout_base = Duration::from_secs(1);
        c.throttle.account_max_failures = 1000;
    })
    .await;
    let email = "stuck@example.com";
    app.verified_user(email).await;
    let (a, _) = app.challenge(email, PASSWORD).await;
    let real_a = app.last_mail(email, 2).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..=5 {
        let (status, _, _) = guess(&app, &a, wrong(&real_a)).await;
        assert_eq!(status, 401, "wrong code {i} (the fifth locks)");
    }
    // The 1 s lock runs out; challenge A has no attempts left.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for i in 1..=5 {
        let (status, _, _) = guess(&app, &a, wrong(&real_a)).await;
        assert!(
            [401, 429].contains(&status),
            "post {i} to the used-up challenge: {status}"
        );
    }
    // A fresh challenge with the right code is compared once any lock has run out.
    let before = app.outbox(email, 0).await.len();
    let (b, _) = app.challenge(email, PASSWORD).await;
    let real_b = app.last_mail(email, before + 1).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let answers = right_code_once_unlocked(&app, &b, &real_b, 8).await;
    assert_eq!(
        answers.last().unwrap().0,
        200,
        "the right code never got through: {answers:?}"
    );
}

/// The right code with a refused DPoP proof (a replay, found only after the
/// code was compared) is a counted attempt too: on the last allowed attempt
/// it locks, and once the lock runs out the right code with a fresh proof works.
#[tokio::test]
async fn a_refused_proof_on_the_last_attempt_locks_rather_than_sticks() {
    use crate::dpop::DpopKey;
    let app = spawn_app_with(|c| {
        c.throttle.lockout_base = Duration::from_secs(1);
        c.throttle.account_max_failures = 1000;
    })
    .await;
    let email = "replay@example.com";
    app.verified_user(email).await;
    let key = DpopKey::es256();
    let url = app.htu("/v1/auth/signin/verify");
    // A proof accepted once: from then on a replay.
    let used = key.proof("POST", &url, None, None);
    let (first, _) = app.challenge(email, PASSWORD).await;
    let code = app.last_mail(email, 2).await["code"].clone();
    let r = app
        .http
        .post(app.url("/v1/auth/signin/verify"))
        .header("dpop", &used)
        .json(&json!({"challenge_id": first, "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let before = app.outbox(email, 0).await.len();
    let (challenge, _) = app.challenge(email, PASSWORD).await;
    let real = app.last_mail(email, before + 1).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..4 {
        assert_eq!(guess(&app, &challenge, wrong(&real)).await.0, 401);
    }
    let r = app
        .http
        .post(app.url("/v1/auth/signin/verify"))
        .header("dpop", &used)
        .json(&json!({"challenge_id": challenge, "code": real}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 400).await,
        "invalid_dpop_proof",
        "the fifth attempt: the right code, a replayed proof"
    );
    // That challenge's attempts are used up: a fresh one, the right code, fresh proofs.
    let before = app.outbox(email, 0).await.len();
    let (fresh, _) = app.challenge(email, PASSWORD).await;
    let real = app.last_mail(email, before + 1).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut answers = Vec::new();
    for _ in 0..8 {
        let r = app
            .http
            .post(app.url("/v1/auth/signin/verify"))
            .header("dpop", key.proof("POST", &url, None, None))
            .json(&json!({"challenge_id": fresh, "code": real}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry: Option<u64> = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        answers.push((status, retry));
        if status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(retry.unwrap_or(1) * 1000 + 200)).await;
    }
    assert_eq!(
        answers.last().unwrap().0,
        200,
        "the right code with a fresh proof never got through: {answers:?}"
    );
}

/// The value of the hidden input `name` in `html`.
fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}

/// The authenticator page (`/auth/totp`) as a browser with the cookies of
/// session `t` sees it: its HTML, and what a form posted from it carries.
struct TotpPage {
    html: String,
    cookies: String,
    csrf: String,
}

impl TotpPage {
    async fn open(app: &TestApp, t: &Tokens) -> Self {
        let jar = format!(
            "{}={}; {}={}",
            authflow_contract::browser::ACCESS_COOKIE,
            t.access,
            authflow_contract::fingerprint::DEVICE_COOKIE,
            t.device
        );
        let page = app
            .http
            .get(app.url("/auth/totp"))
            .header("cookie", &jar)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "the cookies are a signed-in session");
        let csrf_cookie = page
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with("__Host-authflow-csrf="))
            .unwrap();
        let csrf_pair = csrf_cookie.split(';').next().unwrap().to_owned();
        let html = page.text().await.unwrap();
        Self {
            csrf: hidden_field(&html, "csrf"),
            cookies: format!("{jar}; {csrf_pair}"),
            html,
        }
    }

    async fn post(&self, app: &TestApp, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut form = fields.to_vec();
        form.push(("csrf", &self.csrf));
        app.http
            .post(app.url(path))
            .header("cookie", &self.cookies)
            .header("origin", "null")
            .header("sec-fetch-site", "same-origin")
            .form(&form)
            .send()
            .await
            .unwrap()
    }
}

/// The page replaces an authenticator as the API does: it asks for a code
/// from the current one, and the password alone shows no new key.
#[tokio::test]
async fn the_page_replaces_an_authenticator_only_with_a_code_from_it() {
    let app = spawn_app().await;
    let email = "replace-page@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let (secret, enrolled_at) = app.enrol_totp(&t).await;

    let page = TotpPage::open(&app, &t).await;
    assert!(page.html.contains("name=\"code\""), "{}", page.html);
    assert!(!page.html.contains("name=\"password\""), "{}", page.html);
    let r = page
        .post(&app, "/auth/totp", &[("password", PASSWORD)])
        .await;
    assert_eq!(r.status(), 400);
    assert!(!r.text().await.unwrap().contains("totp-secret"));

    let code = totp_code(&secret, enrolled_at + 30);
    let r = page.post(&app, "/auth/totp", &[("code", &code)]).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.text().await.unwrap().contains("totp-secret"),
        "the new key is shown"
    );
}

/// Enrolling (or replacing) the authenticator needs a fresh proof — the
/// password or a current code — "so an access token alone cannot take over
/// the second factor" (`routes::auth::totp_enroll`). But the pending secret
/// that proof unlocked stays in the user row with no end, and the pages'
/// confirm handler (`web::totp::confirm`) answers a wrong code by rendering
/// the enrolment page again *with the pending secret and its QR code*, to
/// whoever holds a session of the user: no proof, no tie to the browser that
/// gave the password. A thief with the access token and device secret (and
/// no password) posts one wrong code, reads the secret, and confirms it with
/// a right code: the account's second factor is now one the thief knows.
#[tokio::test]
async fn a_session_without_the_password_cannot_read_a_pending_totp_secret() {
    let app = spawn_app().await;
    let email = "victim-totp@example.com";
    app.verified_user(email).await;
    let owner = app.signin(email, PASSWORD).await;
    // The owner starts setting up an app (proving the password) and is not done yet.
    let secret = app.begin_totp(&owner).await;

    // The thief holds the session's access token and device secret, not the password.
    let page = TotpPage::open(&app, &owner).await;
    let r = page
        .post(&app, "/auth/totp/confirm", &[("code", "000000")])
        .await;
    let status = r.status();
    let body = r.text().await.unwrap();
    let leaked = body.contains(&secret);
    if leaked {
        // What the thief does with it: confirms the app as its own.
        let code = totp_code(&secret, authflow_auth_service::clock::now());
        let r = app
            .authed(reqwest::Method::POST, "/v1/auth/totp/confirm", &owner)
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "and the thief's copy is now the account's second factor"
        );
    }
    assert!(
        !leaked,
        "a wrong code from a session that never proved the password ({status}) \
         was answered with the pending TOTP secret"
    );
}

/// Confirming a pending authenticator is a code check like any other: a
/// session (a stolen token and device secret) that found an enrolment the
/// owner left pending cannot try its codes without limit and switch on a key
/// it never saw. Wrong codes count against the account's second-factor
/// guard, which locks; the right code is then refused too until the lock
/// runs out.
#[tokio::test]
async fn confirming_an_enrolment_is_guarded_like_every_code() {
    let app = spawn_app().await;
    let email = "pending@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let secret = app.begin_totp(&t).await;
    let real = totp_code(&secret, authflow_auth_service::clock::now());
    let confirm = |code: String| {
        let r = app
            .authed(reqwest::Method::POST, "/v1/auth/totp/confirm", &t)
            .json(&json!({ "code": code }));
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(confirm(wrong(&real).to_owned()).await);
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(
        confirm(real).await,
        429,
        "the guard locked after 5 wrong codes, even for the right one"
    );
    let (_, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "email", "nothing was switched on");
}

/// Someone who knows the password can keep the owner's second factor
/// locked (five wrong codes whenever a lock runs out). When that factor is
/// the mailed code, the owner's way out is a password reset: it ends that
/// person's way in, so it lifts the lock, and the owner signs in with the
/// new password at once.
#[tokio::test]
async fn a_password_reset_lifts_the_second_factor_lock() {
    let app = spawn_app_with(|c| {
        c.throttle.lockout_base = Duration::from_secs(600);
        c.throttle.account_max_failures = 1000;
    })
    .await;
    let email = "locked-owner@example.com";
    app.verified_user(email).await;
    let before = app.outbox(email, 0).await.len();
    let lock = lock_once(&app, email, before).await;
    assert!(lock > 60, "{lock}");

    let new_password = "a brand new password 2";
    reset_through_the_mailbox(&app, email, new_password).await;

    let before = app.outbox(email, 0).await.len();
    let (challenge, _) = app.challenge(email, new_password).await;
    let code = app.last_mail(email, before + 1).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, description, _) = guess(&app, &challenge, &code).await;
    assert_eq!(status, 200, "{description}");
}

/// Whoever holds the mailbox of an account with an authenticator can reset
/// its password, but the authenticator is still to beat: the reset must not
/// lift its lock, or each reset would buy another round of guesses.
#[tokio::test]
async fn a_password_reset_keeps_the_authenticator_locked() {
    let app = spawn_app_with(|c| {
        c.throttle.lockout_base = Duration::from_secs(600);
        c.throttle.account_max_failures = 1000;
    })
    .await;
    let email = "totp-mailbox@example.com";
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let (secret, enrolled_at) = app.enrol_totp(&t).await;
    let (challenge, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");
    let real = totp_code(&secret, enrolled_at + 30);
    let lock = guess_until_locked(&app, &challenge, wrong(&real)).await;
    assert!(lock > 60, "{lock}");

    let new_password = "a brand new password 2";
    reset_through_the_mailbox(&app, email, new_password).await;

    let (challenge, method) = app.challenge(email, new_password).await;
    assert_eq!(method, "totp");
    let (status, description, retry) = guess(&app, &challenge, &real).await;
    assert_eq!(status, 429, "{description}");
    assert!(retry.is_some_and(|r| r > 60), "{retry:?}");
}

/// Wrong guesses on `challenge` until the second factor locks; the lock's length.
async fn guess_until_locked(app: &TestApp, challenge: &str, wrong_code: &str) -> u64 {
    for _ in 0..=5 {
        let (status, description, retry) = guess(app, challenge, wrong_code).await;
        if status == 429 {
            return retry.unwrap();
        }
        assert_eq!(status, 401, "{description}");
    }
    panic!("the second factor never locked");
}

/// Forgot password, then the mailed link with `new_password`.
async fn reset_through_the_mailbox(app: &TestApp, email: &str, new_password: &str) {
    let before = app.outbox(email, 0).await.len();
    let r = app
        .post("/v1/auth/password/forgot", json!({"email": email}))
        .await;
    assert_eq!(r.status(), 202);
    let reset = app
        .outbox(email, before + 1)
        .await
        .into_iter()
        .rev()
        .find(|m| m["subject"] == "Reset your password")
        .expect("the reset mail");
    let r = app
        .post(
            "/v1/auth/password/reset",
            json!({"token": reset["token"], "password": new_password}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// The owner submits the right code twice (a double click, a second tab):
/// one request signs in, the other finds the code's time step (or the
/// challenge) taken. That was counted as a wrong code: on the owner's last
/// allowed attempt it locked the account just signed in to, and mailed the
/// owner about wrong codes. The right code, second, is no guess: nor is it
/// left counted, which brought the owner's next lock one code early (here,
/// with one try allowed, at once).
#[tokio::test]
async fn the_right_code_sent_twice_does_not_lock_the_owner() {
    let email = "twice@example.com";
    let (app, _, secret, _) = owner_with_an_authenticator_and_one_try(email).await;
    let (first, method) = app.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");
    let (second, _) = app.challenge(email, PASSWORD).await;
    let now = authflow_auth_service::clock::now() + 30;
    let code = totp_code(&secret, now);
    assert_eq!(guess(&app, &first, &code).await.0, 200);
    let (status, description, _) = guess(&app, &second, &code).await;
    assert_eq!(status, 401, "{description}");
    assert_not_told_of_wrong_codes(&app, email).await;
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    assert!(
        log.iter().any(|e| e.outcome == "right_code_late"),
        "the late code is audited as what it was: {log:?}"
    );
    let (third, _) = app.challenge(email, PASSWORD).await;
    let (status, description, _) = guess(&app, &third, wrong(&code)).await;
    assert_eq!(
        status, 401,
        "the owner's one try is still theirs: {description}"
    );
}

/// The same double submit when proving the owner for an authenticator
/// change: the second request found the code's time step used and counted
/// a wrong code, which on the last allowed attempt locked the owner out.
#[tokio::test]
async fn the_right_code_sent_twice_for_an_authenticator_change_does_not_lock_the_owner() {
    let email = "twice-change@example.com";
    let (app, t, secret, at) = owner_with_an_authenticator_and_one_try(email).await;
    let code = totp_code(&secret, at + 30);
    let enroll = |code: &str| {
        app.authed(reqwest::Method::POST, "/v1/auth/totp/enroll", &t)
            .json(&json!({ "code": code }))
            .send()
    };
    assert_eq!(enroll(&code).await.unwrap().status(), 200);
    let r = enroll(&code).await.unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_code");
    assert_not_told_of_wrong_codes(&app, email).await;
    let r = enroll(wrong(&code)).await.unwrap();
    assert_eq!(
        error_code(r, 401).await,
        "invalid_code",
        "the owner's one try is still theirs"
    );
}

/// A signed-in owner with an authenticator (its secret, and the time its
/// first code was for), on a service that locks at the first wrong code.
async fn owner_with_an_authenticator_and_one_try(email: &str) -> (TestApp, Tokens, String, i64) {
    let app = spawn_app_with(|c| c.throttle.second_factor_max_failures = 1).await;
    app.verified_user(email).await;
    let t = app.signin(email, PASSWORD).await;
    let (secret, at) = app.enrol_totp(&t).await;
    (app, t, secret, at)
}

async fn assert_not_told_of_wrong_codes(app: &TestApp, email: &str) {
    let mails = app.outbox(email, 0).await;
    assert!(
        !mails.iter().any(|m| m["subject"]
            .as_str()
            .is_some_and(|s| s.contains("wrong second factor codes"))),
        "the owner is told of wrong codes: {mails:?}"
    );
}

/// A lock reached by an attempt counted before a right code signed in (the
/// loser of a double submit, past the limit) found the count the success had
/// reset, and locked all the same. With no attempt counted, nothing locks.
#[tokio::test]
async fn no_lock_without_a_counted_attempt() {
    let app = spawn_app().await;
    let email = "counted@example.com";
    let user = app.verified_user(email).await;
    app.signin(email, PASSWORD).await;
    let store = &app.state.store;
    let now = authflow_auth_service::clock::now();
    assert_eq!(
        store
            .second_factor_lock(&user, now, 30, 3600)
            .await
            .unwrap(),
        None
    );
    store.second_factor_attempt(&user, now).await.unwrap();
    assert!(store
        .second_factor_lock(&user, now, 30, 3600)
        .await
        .unwrap()
        .is_some());
}
