//! Two instances of the service on one PostgreSQL database: whatever one
//! decides, the other knows.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// Two instances on one fresh database, `tweak` applied to both.
async fn two_instances(
    tweak: impl Fn(&mut authflow_auth_service::config::Config),
) -> (TestApp, TestApp) {
    let one = spawn_app_with(&tweak).await;
    let two = spawn_app_beside(&one, &tweak).await;
    (one, two)
}

/// A verified user written straight to the store (no mail, no limits).
async fn stored_user(app: &TestApp, email: &str) -> String {
    let user = authflow_auth_service::store::User {
        email_verified: true,
        ..authflow_auth_service::store::User::new(
            email,
            "unused".into(),
            vec!["user".into()],
            authflow_auth_service::clock::now(),
        )
    };
    app.state.store.create_user(&user).await.unwrap();
    user.id
}

fn banned_subjects(feed: &Value) -> Vec<String> {
    feed["banned_subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["sub"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sign_in_failures_on_one_instance_count_on_the_other() {
    let (one, two) = two_instances(|c| c.throttle.account_max_failures = 3).await;
    one.verified_user("ada@example.com").await;
    for app in [&one, &one, &two] {
        let r = app
            .post(
                "/v1/auth/signin",
                json!({"email": "ada@example.com", "password": "wrong password!!"}),
            )
            .await;
        assert_eq!(error_code(r, 401).await, "invalid_credentials");
    }
    // The third failure (on instance 2) locked the account everywhere.
    for app in [&two, &one] {
        let r = app
            .post(
                "/v1/auth/signin",
                json!({"email": "ada@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!(error_code(r, 429).await, "too_many_attempts");
    }
}

#[tokio::test]
async fn a_ban_on_one_instance_is_served_in_the_others_feed_within_a_second() {
    let (one, two) = two_instances(|_| {}).await;
    let admin = one.admin("root@example.com").await;
    let victim = one.verified_user("eve@example.com").await;
    let (_, snapshot) = two.feed(None).await;
    let cursor = snapshot.unwrap()["cursor"].as_str().unwrap().to_owned();

    let r = one.ban(&admin, &victim).await;
    assert_eq!(r.status(), 200);
    let acknowledged = std::time::Instant::now();
    loop {
        let (status, body) = two.feed(Some(&cursor)).await;
        if status == 200 {
            assert_eq!(banned_subjects(&body.unwrap()), vec![victim.clone()]);
            break;
        }
        assert_eq!(status, 304);
        assert!(
            acknowledged.elapsed() < Duration::from_secs(1),
            "instance 2 still answers 304 a second after the ban"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn concurrent_bans_on_two_instances_reach_a_poller_exactly_once() {
    let (one, two) = two_instances(|_| {}).await;
    let admin = one.admin("root@example.com").await;
    let mut victims = Vec::new();
    for i in 0..40 {
        victims.push(stored_user(&one, &format!("v{i}@example.com")).await);
    }
    let (one, two) = (Arc::new(one), Arc::new(two));
    let admin = Arc::new(admin);
    let (_, snapshot) = one.feed(None).await;
    let mut cursor = snapshot.unwrap()["cursor"].as_str().unwrap().to_owned();

    // Two writers, one per instance, banning at the same time.
    let mut writers = Vec::new();
    for (w, app) in [Arc::clone(&one), Arc::clone(&two)].into_iter().enumerate() {
        let mine: Vec<String> = victims.iter().skip(w).step_by(2).cloned().collect();
        let admin = Arc::clone(&admin);
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for id in mine {
                let r = app.ban(&admin, &id).await;
                assert_eq!(r.status(), 200);
                acknowledged.push(id);
            }
            acknowledged
        }));
    }

    // A poller in between, alternating instances: every ban arrives once.
    let mut seen: HashSet<String> = HashSet::new();
    let mut round = 0usize;
    let mut done = false;
    let mut acknowledged: Vec<String> = Vec::new();
    while !(done && victims.iter().all(|v| seen.contains(v))) {
        round += 1;
        assert!(
            round < 2000,
            "the poller never saw every ban: {} of {}",
            seen.len(),
            victims.len()
        );
        let app = if round.is_multiple_of(2) { &one } else { &two };
        let (status, body) = app.feed(Some(&cursor)).await;
        if status == 200 {
            let body = body.unwrap();
            let subjects = banned_subjects(&body);
            if body["snapshot"] == true {
                seen = subjects.into_iter().collect();
            } else {
                for s in subjects {
                    assert!(
                        seen.insert(s.clone()),
                        "ban of {s} delivered twice in deltas"
                    );
                }
            }
            let next = body["cursor"].as_str().unwrap().to_owned();
            let seq = |c: &str| c.split('.').nth(1).unwrap().parse::<i64>().unwrap();
            assert!(seq(&next) >= seq(&cursor), "the cursor went back");
            cursor = next;
        }
        if !done && writers.iter().all(|w| w.is_finished()) {
            for w in writers.drain(..) {
                acknowledged.extend(w.await.unwrap());
            }
            done = true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(acknowledged.len(), victims.len());
    assert_eq!(seen, victims.iter().cloned().collect::<HashSet<_>>());
}

#[tokio::test]
async fn two_instances_racing_on_one_refresh_token_exactly_one_wins() {
    let (one, two) = two_instances(|_| {}).await;
    one.verified_user("rita@example.com").await;
    for _ in 0..5 {
        let t = one.signin("rita@example.com", PASSWORD).await;
        let refresh = |app: &TestApp| {
            app.http
                .post(app.url("/v1/auth/refresh"))
                .header("x-authflow-device", &t.device)
                .json(&json!({"refresh_token": t.refresh}))
                .send()
        };
        let (a, b) = tokio::join!(refresh(&one), refresh(&two));
        let (a, b) = (a.unwrap(), b.unwrap());
        let statuses = [a.status().as_u16(), b.status().as_u16()];
        let mut sorted = statuses;
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [200, 400],
            "exactly one rotation wins: {statuses:?}"
        );
        // The loser is refused as just rotated, not taken for reuse: the
        // session lives on with the winner's token, on both instances.
        let (winner, loser) = if a.status() == 200 { (a, b) } else { (b, a) };
        assert_eq!(invalid_grant(loser).await, "refresh token was just rotated");
        let session = one.state.store.session(&t.session).await.unwrap().unwrap();
        assert!(session.revoked_at.is_none(), "the race revoked the session");
        let won = tokens_of(winner).await;
        for app in [&one, &two] {
            let r = app
                .authed(Method::GET, "/v1/ext-authz", &won)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "the winner's access token works");
        }
        let r = refresh_with_device(&two, &won.refresh, Some(&won.device)).await;
        assert_eq!(r.status(), 200, "the winner's refresh token works");
        // Past the grace, the rotated-out token is reuse: the session is over on both instances.
        age_rotation(&one, &t.refresh, 60).await;
        let r = refresh_with_device(&two, &t.refresh, Some(&t.device)).await;
        assert_eq!(
            invalid_grant(r).await,
            "refresh token reuse detected; the session is revoked"
        );
        assert!(one
            .state
            .store
            .session(&t.session)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
    }
}

#[tokio::test]
async fn instances_starting_together_agree_on_one_signing_key() {
    for _ in 0..3 {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let url = crate::backend::fresh_database_url().await;
        let (one, two) = tokio::join!(
            spawn_app_in(Arc::clone(&dir), url.clone(), |_| {}),
            spawn_app_in(dir, url, |_| {})
        );
        let keys = one.state.store.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 1, "one first key, not one per instance");
        // A token from either instance verifies with the other's JWKS.
        for (signer, verifier) in [(&one, &two), (&two, &one)] {
            let email = format!(
                "{}@example.com",
                authflow_auth_service::domain::random_id().to_ascii_lowercase()
            );
            let t = signer.admin(&email).await;
            let kid = header(&t.access)["kid"].as_str().unwrap().to_owned();
            let jwks: Value = verifier
                .get("/.well-known/jwks.json")
                .await
                .json()
                .await
                .unwrap();
            assert!(
                jwks["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kid"] == kid.as_str()),
                "{kid} not published by the other"
            );
        }
    }
}

/// Two real `authflow-auth` processes on one database; one is killed with
/// On PostgreSQL too: an empty database (a mistyped name the server has)
/// is not set up by a command that acts on a running service's.
#[tokio::test]
async fn the_cli_refuses_a_database_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::backend::fresh_database_url().await.unwrap();
    crate::durability::cli_refuses_a_database_that_is_not_there(
        &dir.path().join("data"),
        Some(&url),
    );
}

/// SIGKILL while writes flow through it. Every write it acknowledged is
/// there, and the other instance keeps serving reads, writes and the feed.
#[tokio::test]
async fn kill_dash_nine_of_one_instance_loses_nothing_and_the_other_keeps_serving() {
    use crate::durability::{
        assert_nothing_lost, command, free_port, sign_in, start, write_until_killed,
    };

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = crate::backend::fresh_database_url().await.unwrap();
    let db = Some(url.as_str());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let out = command(&data, db, 0)
        .args([
            "user",
            "create",
            "--email",
            "root@example.com",
            "--password",
            PASSWORD,
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (port_a, port_b) = (free_port(), free_port());
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    let mut a = start(&data, db, port_a, &http).await;
    let _b = start(&data, db, port_b, &http).await;
    let (admin, device) = sign_in(&http, &base_b, "root@example.com").await;

    let acked = write_until_killed(
        &http,
        &base_a,
        &admin,
        &device,
        &mut a,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        acked.signed_up.len() >= 10 && !acked.banned.is_empty(),
        "writes were acknowledged before the kill ({})",
        acked.signed_up.len()
    );

    // Instance B: every acknowledged write is there, and it still writes.
    assert_nothing_lost(&http, &base_b, &admin, &device, &acked).await;
    let r = http
        .post(format!("{base_b}/v1/auth/signup"))
        .json(&json!({"email": "after@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "instance B keeps taking writes");
}

/// A key rotated on instance 1 is published by instance 2 before either
/// signs with it, and from its activation both sign with it.
#[tokio::test]
async fn a_rotated_key_is_published_by_every_instance_before_any_signs_with_it() {
    let (one, two) = two_instances(|c| c.keys.publish_lead = Duration::from_secs(3)).await;
    let admin = one.admin("root@example.com").await;
    let old_kid = header(&admin.access)["kid"].as_str().unwrap().to_owned();
    let r = one
        .authed(Method::POST, "/v1/admin/keys/rotate", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rotated = std::time::Instant::now();
    let new_kid = r.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    loop {
        let jwks: Value = two
            .get("/.well-known/jwks.json")
            .await
            .json()
            .await
            .unwrap();
        if jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == new_kid.as_str())
        {
            break;
        }
        assert!(
            rotated.elapsed() < Duration::from_millis(1500),
            "instance 2 does not publish the new key 1.5 s after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = two.signin("root@example.com", PASSWORD).await;
    assert_eq!(
        header(&t.access)["kid"],
        old_kid.as_str(),
        "not signing with the new key before its lead time"
    );
    tokio::time::sleep(Duration::from_millis(3200).saturating_sub(rotated.elapsed())).await;
    for app in [&one, &two] {
        let t = app.signin("root@example.com", PASSWORD).await;
        assert_eq!(
            header(&t.access)["kid"],
            new_kid.as_str(),
            "every instance signs with the one active key"
        );
    }
}

/// A ban committed on one instance is announced on the database's feed
/// channel (LISTEN/NOTIFY), and a long poll parked on the other instance is
/// answered with it at once.
#[tokio::test]
async fn a_ban_on_one_instance_wakes_long_polls_on_the_other() {
    let (one, two) = two_instances(|_| {}).await;
    let admin = one.admin("root@example.com").await;
    let user_id = stored_user(&one, "leo@example.com").await;

    // The store's own announcement, seen from instance 2's store.
    let wake = Arc::new(tokio::sync::Notify::new());
    let keys = Arc::new(tokio::sync::Notify::new());
    assert!(
        two.state.store.notify_changes(Arc::clone(&wake), keys),
        "Postgres announces feed changes"
    );
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("woken once listening");

    let (_, snapshot) = two.feed(None).await;
    let cursor = snapshot.unwrap()["cursor"].as_str().unwrap().to_owned();
    let waiter = tokio::spawn({
        let (http, url) = (two.http.clone(), two.url("/v1/revocations"));
        async move {
            let r = http
                .get(url)
                .query(&[("since", cursor.as_str()), ("wait", "20")])
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let r = r.expect("answered within 5 s, not after the 20 s wait");
            let status = r.status().as_u16();
            (
                status,
                r.json::<Value>().await.ok(),
                std::time::Instant::now(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = one.ban(&admin, &user_id).await;
    assert_eq!(r.status(), 200);
    let banned_at = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(2), wake.notified())
        .await
        .expect("the ban was announced on the feed channel");

    let (status, body, answered_at) = waiter.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(banned_subjects(&body.unwrap()), vec![user_id]);
    let took = answered_at.saturating_duration_since(banned_at);
    eprintln!("ban on instance 1 to the long poll's answer on instance 2: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// Two rotations at once, one on each instance (two admins, or one request
/// retried through another instance): as if they had run one after the
/// other, exactly one key is left unretired, and both instances sign with it.
#[tokio::test]
async fn rotations_racing_on_two_instances_leave_one_key_unretired() {
    let (one, two) = two_instances(|c| {
        c.keys.publish_lead = Duration::from_secs(0);
        // Two sign-ins a round: more code mails than an account may have an hour.
        c.mail.max_signin_codes_per_hour = 100;
    })
    .await;
    one.admin("root@example.com").await;
    let alg = one.state.config.keys.signing_alg;
    for round in 0..12 {
        let now = authflow_auth_service::clock::now();
        let (a, b) = tokio::join!(
            one.state.keys.rotate(one.state.store.as_ref(), alg, now, 0),
            two.state.keys.rotate(two.state.store.as_ref(), alg, now, 0)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let keys = one.state.store.signing_keys().await.unwrap();
        let unretired: Vec<&str> = keys
            .iter()
            .filter(|k| k.retired_at.is_none())
            .map(|k| k.kid.as_str())
            .collect();
        assert_eq!(
            unretired.len(),
            1,
            "round {round}: {unretired:?} are all unretired after rotations to {a} and {b}"
        );
        one.state
            .keys
            .reload(one.state.store.as_ref())
            .await
            .unwrap();
        two.state
            .keys
            .reload(two.state.store.as_ref())
            .await
            .unwrap();
        for (n, app) in [(1, &one), (2, &two)] {
            let t = app.signin("root@example.com", PASSWORD).await;
            assert_eq!(
                header(&t.access)["kid"],
                unretired[0],
                "round {round}: instance {n} signs with a retired key"
            );
        }
    }
}

/// The second factor is spent once, whichever instance it reaches: one
/// mailed code sent to both instances at once signs in once.
#[tokio::test]
async fn one_mailed_code_raced_on_two_instances_signs_in_once() {
    let (one, two) = two_instances(|_| {}).await;
    let email = "mona@example.com";
    one.verified_user(email).await;
    for round in 0..6 {
        let before = one.outbox(email, 0).await.len();
        let (challenge, _) = one.challenge(email, PASSWORD).await;
        let code = one.last_mail(email, before + 1).await["code"].clone();
        let verify = |app: &TestApp| {
            app.http
                .post(app.url("/v1/auth/signin/verify"))
                .json(&json!({"challenge_id": challenge, "code": code}))
                .send()
        };
        let (a, b) = tokio::join!(verify(&one), verify(&two));
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 401], "round {round}: one code, one sign-in");
        let loser = if a.status() == 200 { b } else { a };
        assert_eq!(
            loser.json::<Value>().await.unwrap()["error"],
            "invalid_code",
            "round {round}"
        );
    }
}

/// A TOTP code is spent once per account (RFC 6238 §5.2), across instances:
/// two challenges, one on each instance, answered with the same code at
/// once sign in once, and the code is refused afterwards on either.
#[tokio::test]
async fn a_totp_code_spent_on_one_instance_is_refused_by_the_other() {
    let (one, two) = two_instances(|_| {}).await;
    let email = "tess@example.com";
    one.verified_user(email).await;
    let t = one.signin(email, PASSWORD).await;
    let (secret, now) = one.enrol_totp(&t).await;
    // The next step's code: within the ±1 step window for the next minute, not spent yet.
    let code = totp_code(&secret, now + 30);
    let verify = |app: &TestApp, challenge: &str| {
        app.http
            .post(app.url("/v1/auth/signin/verify"))
            .json(&json!({"challenge_id": challenge, "code": code}))
            .send()
    };
    let (first, method) = one.challenge(email, PASSWORD).await;
    assert_eq!(method, "totp");
    let (second, _) = two.challenge(email, PASSWORD).await;
    let (a, b) = tokio::join!(verify(&one, &first), verify(&two, &second));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "one code, one sign-in");
    for app in [&one, &two] {
        let (again, _) = app.challenge(email, PASSWORD).await;
        let r = verify(app, &again).await.unwrap();
        assert_eq!(
            error_code(r, 401).await,
            "invalid_code",
            "a spent code on a fresh challenge"
        );
    }
}

/// Sign-ins of one user on two instances at once each counted the user's
/// live sessions without the other's (not committed yet), and each kept
/// `sessions.max_per_user`: together they left more. They take turns on the
/// user's row, so the cap holds however they interleave.
#[tokio::test]
async fn sign_ins_racing_on_two_instances_keep_the_session_cap() {
    const CAP: u32 = 3;
    let (one, two) = two_instances(|_| {}).await;
    let user_id = stored_user(&one, "many-at-once@example.com").await;
    let cap = authflow_auth_service::store::SessionCap {
        max_live: CAP,
        feed_expires_at: authflow_auth_service::clock::now() + 900,
    };
    for round in 0..10 {
        let starts = [&one, &two, &one, &two].map(|app| {
            let store = Arc::clone(&app.state.store);
            let (session, refresh) = new_session(&user_id, &format!("{round}-{}", app.base));
            tokio::spawn(async move {
                store
                    .create_session(&session, &refresh, None, 0, cap)
                    .await
                    .unwrap()
            })
        });
        for start in starts {
            assert!(start.await.unwrap().is_some());
        }
        let now = authflow_auth_service::clock::now();
        let live = one
            .state
            .store
            .live_sessions_of(&user_id, now, 100)
            .await
            .unwrap();
        assert!(
            live.len() <= CAP as usize,
            "round {round}: {} live",
            live.len()
        );
    }
}

/// The locks the store takes order its writes only under READ COMMITTED
/// (each statement sees what the lock waited for): a database whose default
/// isolation an operator raised (`ALTER DATABASE … SET
/// default_transaction_isolation`) must not let racing sign-ins past the cap.
#[tokio::test]
async fn sign_ins_racing_on_a_repeatable_read_database_keep_the_session_cap() {
    const CAP: u32 = 3;
    let first = spawn_app_with(|_| {}).await;
    run_sql(
        &first,
        &["DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = ''repeatable read''', \
           current_database()); END $$"],
    )
    .await;
    // Instances connecting from now on get the database's default.
    let one = spawn_app_beside(&first, |_| {}).await;
    let two = spawn_app_beside(&first, |_| {}).await;
    let user_id = stored_user(&one, "isolated@example.com").await;
    let cap = authflow_auth_service::store::SessionCap {
        max_live: CAP,
        feed_expires_at: authflow_auth_service::clock::now() + 900,
    };
    for round in 0..10 {
        let starts = [&one, &two, &one, &two].map(|app| {
            let store = Arc::clone(&app.state.store);
            let (session, refresh) = new_session(&user_id, &format!("{round}-{}", app.base));
            tokio::spawn(
                async move { store.create_session(&session, &refresh, None, 0, cap).await },
            )
        });
        for start in starts {
            let _ = start.await.unwrap();
        }
        let now = authflow_auth_service::clock::now();
        let live = one
            .state
            .store
            .live_sessions_of(&user_id, now, 100)
            .await
            .unwrap();
        assert!(
            live.len() <= CAP as usize,
            "round {round}: {} live",
            live.len()
        );
    }
}

/// A session of `user_id` starting now, and its first refresh token.
fn new_session(
    user_id: &str,
    tag: &str,
) -> (
    authflow_auth_service::store::Session,
    authflow_auth_service::store::RefreshRecord,
) {
    let now = authflow_auth_service::clock::now();
    let id = authflow_auth_service::domain::random_id();
    let session = authflow_auth_service::store::Session {
        id: id.clone(),
        user_id: user_id.to_owned(),
        device_secret_hash: "00".repeat(32),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
        revoked_at: None,
        revoke_reason: None,
        ip: None,
        user_agent: Some(tag.to_owned()),
        dpop_jkt: None,
        dpop_bound_at: None,
    };
    let refresh = authflow_auth_service::store::RefreshRecord {
        hash: authflow_auth_service::domain::random_id(),
        session_id: id,
        created_at: now,
        expires_at: now + 3600,
        used_at: None,
        dpop_bound: false,
    };
    (session, refresh)
}

/// A key withdrawn on instance 1 (its private half leaked) is refused by
/// instance 2 within about a second, gone from its JWKS, and both sign with
/// the key that replaced it at once (no publication lead).
#[tokio::test]
async fn a_key_withdrawn_on_one_instance_is_refused_by_the_other_within_a_second() {
    let (one, two) = two_instances(|c| c.keys.publish_lead = Duration::from_secs(600)).await;
    let admin = one.admin("root@example.com").await;
    let leaked = header(&admin.access)["kid"].as_str().unwrap().to_owned();
    assert_eq!(ext_authz(&two, &admin).await, 200);
    let config = &one.state.config;
    let withdrawn = one
        .state
        .keys
        .withdraw(
            one.state.store.as_ref(),
            config.keys.signing_alg,
            &leaked,
            authflow_auth_service::clock::now(),
        )
        .await
        .unwrap();
    let authflow_auth_service::keys::Withdrawn::Now {
        successor: Some(new_kid),
    } = withdrawn
    else {
        panic!("a new key replaces the one that signed: {withdrawn:?}");
    };
    let withdrawn = std::time::Instant::now();
    while ext_authz(&two, &admin).await != 401 {
        assert!(
            withdrawn.elapsed() < Duration::from_millis(1500),
            "instance 2 accepts the withdrawn key's token 1.5 s later"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jwks: Value = two
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(!kids.contains(&leaked.as_str()), "{kids:?}");
    assert!(kids.contains(&new_kid.as_str()), "{kids:?}");
    for (app, other) in [(&one, &two), (&two, &one)] {
        let t = app.signin("root@example.com", PASSWORD).await;
        assert_eq!(header(&t.access)["kid"], new_kid.as_str());
        assert_eq!(ext_authz(other, &t).await, 200);
    }
}

/// A key withdrawn on one instance (or by the CLI) is announced on the
/// database's channel, so the other instances reload their keys at once.
/// Before, they noticed at their next periodic reload (up to a second) and
/// published the leaked key until then: a filter fetching the JWKS from one
/// of them in that second trusted the key until its own next fetch.
#[tokio::test]
async fn a_key_withdrawn_on_one_instance_is_announced_to_the_others() {
    let (one, two) = two_instances(|_| {}).await;
    let (feed, keys) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    assert!(two
        .state
        .store
        .notify_changes(Arc::clone(&feed), Arc::clone(&keys)));
    tokio::time::timeout(Duration::from_secs(5), keys.notified())
        .await
        .expect("woken once listening");

    let now = authflow_auth_service::clock::now();
    let kid = one.state.keys.list().pop().unwrap().kid;
    one.state
        .keys
        .withdraw(
            one.state.store.as_ref(),
            one.state.config.keys.signing_alg,
            &kid,
            now,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), keys.notified())
        .await
        .expect("the withdrawal is announced");
    // Instance 2 no longer publishes it.
    let started = std::time::Instant::now();
    while two
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap()
        .contains(&kid)
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
