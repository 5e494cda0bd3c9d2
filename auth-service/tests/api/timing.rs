//! No user enumeration by timing: an unknown email costs the same argon2
//! work as a wrong password (a dummy hash), and an unverified account's
//! right password no more than a wrong one. Generous bound: this only
//! catches a missing dummy hash (an unknown email answering in ~0 ms) or
//! work done before answering that a wrong password does not do.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

const WRONG: &str = "wrong password!!";

/// How long one `POST path` of `email` and `password` takes to its `status`.
async fn answer_time(
    app: &TestApp,
    path: &str,
    email: &str,
    password: &str,
    status: u16,
) -> Duration {
    let start = Instant::now();
    let r = app
        .post(path, json!({"email": email, "password": password}))
        .await;
    assert_eq!(r.status(), status, "{path} {email}");
    start.elapsed()
}

/// How long one sign-in of `email` with `password` takes to its 401.
async fn signin_time(app: &TestApp, email: &str, password: &str) -> Duration {
    answer_time(app, "/v1/auth/signin", email, password, 401).await
}

/// The median times of a wrong password for `known` and for an unknown
/// address (a new one each round), over `rounds` interleaved rounds after
/// one to warm up.
async fn medians(app: &TestApp, known: &str, rounds: usize) -> (Duration, Duration) {
    signin_time(app, known, WRONG).await;
    let (mut k, mut u) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        k.push(signin_time(app, known, WRONG).await);
        u.push(signin_time(app, &format!("nobody{i}@example.com"), WRONG).await);
    }
    k.sort();
    u.sort();
    (k[k.len() / 2], u[u.len() / 2])
}

#[tokio::test]
async fn unknown_email_and_wrong_password_take_about_the_same_time() {
    // A real memory cost so the hash dominates the request time.
    let app = spawn_app_with(|c| {
        c.passwords.hash_memory_kib = 8192;
        c.passwords.hash_iterations = 2;
        c.throttle.account_max_failures = 1000;
        c.throttle.ip_max_failures = 1000;
    })
    .await;
    app.verified_user("olga@example.com").await;
    let (k, u) = medians(&app, "olga@example.com", 6).await;
    let ratio = u.as_secs_f64() / k.as_secs_f64();
    eprintln!("median unknown {u:?} vs wrong password {k:?}");
    assert!(
        (0.33..3.0).contains(&ratio),
        "median unknown {u:?} vs wrong password {k:?}"
    );
}

/// A new address signed up with a chosen password, then signed in with it,
/// answers like a taken one (whose password that is not) and as fast: the
/// fresh verification link goes out in the background.
#[tokio::test]
async fn an_unverified_account_and_a_wrong_password_take_about_the_same_time() {
    let app = spawn_app_with(|c| {
        c.passwords.hash_memory_kib = 8192;
        c.passwords.hash_iterations = 2;
        c.throttle.account_max_failures = 1000;
        c.throttle.ip_max_failures = 1000;
    })
    .await;
    app.verified_user("olga@example.com").await;
    let r = app
        .post(
            "/v1/auth/signup",
            json!({"email": "pat@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 201);
    signin_time(&app, "olga@example.com", WRONG).await;
    let (mut wrong, mut unverified) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        wrong.push(signin_time(&app, "olga@example.com", WRONG).await);
        unverified.push(signin_time(&app, "pat@example.com", PASSWORD).await);
    }
    wrong.sort();
    unverified.sort();
    let (w, u) = (wrong[wrong.len() / 2], unverified[unverified.len() / 2]);
    let ratio = u.as_secs_f64() / w.as_secs_f64();
    eprintln!("median unverified {u:?} vs wrong password {w:?}");
    assert!(
        (0.33..3.0).contains(&ratio),
        "median unverified {u:?} vs wrong password {w:?}"
    );
}

/// Sign-in promises "the same 401, after the same argon2 work, for an
/// unknown email, a wrong password …" (`routes::auth::start_signin`). The
/// dummy hash of an unknown email is made with the cost configured now
/// (`domain::password::Hasher::new`), but a stored hash is verified with the
/// cost written in it, the one of the day it was set, and nothing re-hashes
/// it. Once an operator raises `passwords.hash_memory_kib` /
/// `hash_iterations` (the usual hardening), every existing account answers a
/// wrong password many times faster than an unknown address: whoever times
/// one sign-in per address learns which addresses have accounts.
#[tokio::test]
async fn raising_the_hash_cost_does_not_let_timing_tell_old_accounts_apart() {
    let limits = |c: &mut authflow_auth_service::config::Config| {
        c.throttle.account_max_failures = 1000;
        c.throttle.ip_max_failures = 1000;
    };
    // Accounts made under the earlier, cheaper cost (the fixtures' 1 MiB, 1 pass).
    let before = spawn_app_with(limits).await;
    before.verified_user("old-timer@example.com").await;
    // The operator raises the cost; the service restarts on the same data.
    let app = spawn_app_beside(&before, |c| {
        limits(c);
        c.passwords.hash_memory_kib = 32 * 1024;
        c.passwords.hash_iterations = 3;
    })
    .await;
    let (k, u) = medians(&app, "old-timer@example.com", 5).await;
    let ratio = u.as_secs_f64() / k.as_secs_f64();
    assert!(
        (0.33..3.0).contains(&ratio),
        "median unknown {u:?} vs an existing account's wrong password {k:?}: \
         the address's account is told by timing"
    );
}

/// A raised cost protects the existing accounts too: a hash made under
/// another cost is replaced, with the same password, the next time its owner
/// signs in with the right one (the sign-ins begun meanwhile are not ended,
/// nor are the account's sessions), and a lowered cost no longer leaves the
/// old accounts slower than an unknown address.
#[tokio::test]
async fn a_sign_in_brings_an_old_hash_to_the_cost_configured_now() {
    let before = spawn_app().await;
    let email = "rehash@example.com";
    before.verified_user(email).await;
    let old = before
        .state
        .store
        .user_by_email(email)
        .await
        .unwrap()
        .unwrap();
    assert!(
        old.password_hash.contains("m=1024,t=1"),
        "{}",
        old.password_hash
    );
    let app = spawn_app_beside(&before, |c| c.passwords.hash_iterations = 2).await;
    let session = app.signin(email, PASSWORD).await;
    let mut upgraded = None;
    for _ in 0..100 {
        let user = app.state.store.user_by_email(email).await.unwrap().unwrap();
        if user.password_hash != old.password_hash {
            upgraded = Some(user);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let user = upgraded.expect("the hash is replaced after a sign-in with the right password");
    assert!(
        user.password_hash.contains("m=1024,t=2"),
        "{}",
        user.password_hash
    );
    assert_eq!(
        user.password_version, old.password_version,
        "the same password: no sign-in is ended"
    );
    app.signin(email, PASSWORD).await;
    let r = refresh_with_device(&app, &session.refresh, Some(&session.device)).await;
    assert_eq!(r.status(), 200, "the session of that sign-in lives on");
    // A wrong password changes nothing.
    let before_wrong = app
        .state
        .store
        .user_by_email(email)
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    let r = app
        .post(
            "/v1/auth/signin",
            json!({"email": email, "password": "wrong password!!"}),
        )
        .await;
    assert_eq!(r.status(), 401);
    let app2 = spawn_app_beside(&app, |c| c.passwords.hash_iterations = 3).await;
    let r = app2
        .post(
            "/v1/auth/signin",
            json!({"email": email, "password": "wrong password!!"}),
        )
        .await;
    assert_eq!(r.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app2.state
            .store
            .user_by_email(email)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        before_wrong
    );
}

/// The fix for a raised cost was to follow an old hash's verification with
/// the dummy's: an old account then answered slower than an unknown address
/// by its old cost, as telling as faster. With the cost raised by half
/// (8 MiB, two passes, then three), an old account took 1.7 times as long.
/// Now an old hash's answer waits until today's cost has passed.
#[tokio::test]
async fn an_old_account_answers_neither_faster_nor_slower_than_an_unknown_address() {
    let limits = |c: &mut authflow_auth_service::config::Config| {
        c.throttle.account_max_failures = 1000;
        c.throttle.ip_max_failures = 1000;
        c.passwords.hash_memory_kib = 8 * 1024;
        c.passwords.hash_iterations = 2;
    };
    let before = spawn_app_with(limits).await;
    before.verified_user("two-passes@example.com").await;
    let app = spawn_app_beside(&before, |c| {
        limits(c);
        c.passwords.hash_iterations = 3;
    })
    .await;
    let (k, u) = medians(&app, "two-passes@example.com", 9).await;
    let ratio = k.as_secs_f64() / u.as_secs_f64();
    eprintln!("median old account {k:?} vs unknown {u:?}");
    assert!(
        (0.7..1.35).contains(&ratio),
        "median old account {k:?} vs unknown address {u:?}: the account is told by timing"
    );
}

/// Makes every insert into `one_time_tokens` slow (a slow disk, a busy
/// database) and returns about how long the added work takes.
async fn slow_token_inserts(app: &TestApp) -> Duration {
    if app.database_url.is_some() {
        run_sql(
            app,
            &[
                "CREATE OR REPLACE FUNCTION test_slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.4); RETURN NEW; END $$",
                "CREATE TRIGGER test_slow_one_time_tokens BEFORE INSERT ON one_time_tokens FOR EACH ROW EXECUTE FUNCTION test_slow_insert()",
            ],
        )
        .await;
        return Duration::from_millis(400);
    }
    // SQLite has no sleep: a cross join of a padding table stands in for it.
    let work = "SELECT sum(a.x * b.x) FROM test_pad a, test_pad b";
    run_sql(
        app,
        &[
            "CREATE TABLE test_pad (x INTEGER)",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1200) INSERT INTO test_pad SELECT x FROM c",
            &format!("CREATE TRIGGER test_slow_one_time_tokens BEFORE INSERT ON one_time_tokens BEGIN {work}; END"),
        ],
    )
    .await;
    let started = Instant::now();
    run_sql(app, &[work]).await;
    started.elapsed()
}

/// How long one sign-up of `email` takes to its 201.
async fn signup_time(app: &TestApp, email: &str) -> Duration {
    answer_time(app, "/v1/auth/signup", email, PASSWORD, 201).await
}

/// Sign-up answers a new address and a taken one alike, and as fast: the
/// new account's verification link is written (and mailed) after the
/// answer, since a taken address writes no link. Were it written first,
/// whoever times sign-ups would tell taken addresses from new ones by the
/// time of that one write. (Mail through a relay, as in production: the
/// development outbox is written before the answer.)
#[tokio::test]
async fn sign_up_answers_a_new_and_a_taken_address_as_fast() {
    // A relay that is not there: each mail fails at once, and is logged.
    let port = {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        closed.local_addr().unwrap().port()
    };
    let app = spawn_app_with(move |c| {
        c.throttle.ip_max_signups = 1000;
        c.mail.max_per_client_per_hour = 1000;
        c.mail.max_per_recipient_per_hour = 1000;
        c.mail.transport = authflow_auth_service::config::MailerConfig::Smtp {
            host: "127.0.0.1".into(),
            port,
            username: None,
            password: None,
            tls: authflow_auth_service::config::SmtpTls::None,
            ca_file: None,
        };
    })
    .await;
    signup_time(&app, "taken@example.com").await;
    let slow = slow_token_inserts(&app).await;
    let (mut new, mut taken) = (Vec::new(), Vec::new());
    for i in 0..3 {
        new.push(signup_time(&app, &format!("new{i}@example.com")).await);
        // Its link written (the slow insert over) before the next is timed.
        tokio::time::sleep(slow * 2).await;
        taken.push(signup_time(&app, "taken@example.com").await);
    }
    new.sort();
    taken.sort();
    let (n, t) = (new[1], taken[1]);
    eprintln!("median new {n:?} vs taken {t:?} (a token write takes {slow:?} more)");
    assert!(
        n < t + slow / 2,
        "a new address answers {n:?}, a taken one {t:?}: the link's write ({slow:?}) is on the answer"
    );
}
