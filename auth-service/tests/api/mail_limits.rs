//! Mail floods: password-reset, sign-up and verification mails are limited
//! per recipient and per client address, with the same answers whether or
//! not the address has an account; a spent budget does not cost the owner
//! the address.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

async fn post_from(app: &TestApp, client: &str, path: &str, body: Value) -> u16 {
    app.http
        .post(app.url(path))
        .header("x-forwarded-for", client)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn limited(c: &mut authflow_auth_service::config::Config) {
    c.server.xff_num_trusted_hops = 1;
}

/// One mail per client and inbox an hour: a flood from many addresses meets
/// the inbox's ceiling, `RECIPIENT_SHARES` of them.
fn one_share_each(c: &mut authflow_auth_service::config::Config) {
    limited(c);
    c.mail.max_per_recipient_per_hour = 1;
}

const CEILING: usize = authflow_auth_service::mail_budget::RECIPIENT_SHARES as usize;

/// The outbox of `to` once background sends have settled.
async fn settled_outbox(app: &TestApp, to: &str) -> Vec<Value> {
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.outbox(to, 0).await
}

#[tokio::test]
async fn password_reset_mails_are_limited_per_recipient() {
    let app = spawn_app_with(one_share_each).await;
    app.verified_user("flood@example.com").await;
    for i in 0..20 {
        // From many addresses: the recipient's ceiling applies.
        let status = post_from(
            &app,
            &format!("203.0.113.{i}"),
            "/v1/auth/password/forgot",
            json!({"email": "flood@example.com"}),
        )
        .await;
        assert_eq!(status, 202);
        let status = post_from(
            &app,
            &format!("203.0.113.{i}"),
            "/v1/auth/password/forgot",
            json!({"email": "ghost@example.com"}),
        )
        .await;
        assert_eq!(
            status, 202,
            "the same answer for an address without an account"
        );
    }
    // Resets work in the background: wait until all 40 were handled.
    forgot_handled(&app, 40).await;
    let resets = settled_outbox(&app, "flood@example.com")
        .await
        .iter()
        .filter(|m| m["subject"] == "Reset your password")
        .count();
    assert!(
        (1..=CEILING).contains(&resets),
        "{resets} reset mails to one address"
    );
}

/// Finding: an inbox's shares were counted by /64, and a routed IPv6 /48
/// (free from tunnel brokers) holds 65 536 of them: ten filled the inbox's
/// hour, and the owner's own reset request mailed nothing. Shares are
/// counted by /48.
#[tokio::test]
async fn one_ipv6_network_holds_one_share_of_an_inbox() {
    let app = spawn_app_with(one_share_each).await;
    let victim = "vera@example.com";
    app.verified_user(victim).await;
    for i in 0..CEILING {
        let body = json!({"email": victim});
        let from = format!("2001:db8:77:{i:x}::1");
        assert_eq!(
            post_from(&app, &from, "/v1/auth/password/forgot", body).await,
            202
        );
    }
    forgot_handled(&app, CEILING).await;
    let resets = |mails: Vec<Value>| {
        mails
            .iter()
            .filter(|m| m["subject"] == "Reset your password")
            .count()
    };
    assert_eq!(resets(settled_outbox(&app, victim).await), 1, "one share");
    let body = json!({"email": victim});
    assert_eq!(
        post_from(&app, "203.0.113.40", "/v1/auth/password/forgot", body).await,
        202
    );
    forgot_handled(&app, CEILING + 1).await;
    assert_eq!(
        resets(settled_outbox(&app, victim).await),
        2,
        "the owner's reset link goes out"
    );
}

#[tokio::test]
async fn sign_up_notices_are_limited_per_recipient() {
    let app = spawn_app_with(one_share_each).await;
    app.verified_user("taken@example.com").await;
    for i in 0..20 {
        let status = post_from(
            &app,
            &format!("198.51.100.{i}"),
            "/v1/auth/signup",
            json!({"email": "taken@example.com", "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let mails = settled_outbox(&app, "taken@example.com").await;
    assert!(
        mails.len() <= CEILING,
        "{} mails to one address",
        mails.len()
    );
}

#[tokio::test]
async fn one_client_cannot_mail_many_addresses() {
    let app = spawn_app_with(|c| {
        limited(c);
        c.mail.max_per_client_per_hour = 3;
    })
    .await;
    for i in 0..6 {
        let status = post_from(
            &app,
            "192.0.2.7",
            "/v1/auth/signup",
            json!({"email": format!("new{i}@example.com"), "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, 201, "the same answer past the limit");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut mailed = 0;
    for i in 0..6 {
        mailed += app.outbox(&format!("new{i}@example.com"), 0).await.len();
    }
    assert_eq!(mailed, 3, "one client's mails are limited");
    // Another client is not affected.
    post_from(
        &app,
        "192.0.2.8",
        "/v1/auth/signup",
        json!({"email": "other@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(app.outbox("other@example.com", 1).await.len(), 1);
}

/// Waits until the `n` password-forgot requests answered so far were handled
/// in the background. (Not by counting their audit rows: the refusals past a
/// budget share one row per client address a minute.) Each request's task is
/// counted before its `202`, so once none runs, every one answered is done.
async fn forgot_handled(app: &TestApp, n: usize) {
    for _ in 0..300 {
        if app.state.background.in_flight() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the {n} password-forgot requests were not all handled");
}

/// An address's mail budget spent with reset requests, then a sign-up with
/// it and a stranger's password: no verification mail goes out, and the
/// owner does not know that password. Once the budget is back, a reset gives
/// the owner the account, its address confirmed.
#[tokio::test]
async fn an_address_signed_up_while_its_mail_budget_was_spent_can_be_regained() {
    let app = spawn_app_with(limited).await;
    let (email, stranger, owner) = ("dave@example.com", "198.51.100.66", "203.0.113.9");
    for _ in 0..5 {
        assert_eq!(
            post_from(
                &app,
                stranger,
                "/v1/auth/password/forgot",
                json!({"email": email})
            )
            .await,
            202
        );
    }
    forgot_handled(&app, 5).await;
    let body = json!({"email": email, "password": "attacker chosen pw1"});
    assert_eq!(
        post_from(&app, stranger, "/v1/auth/signup", body).await,
        201
    );
    assert!(
        settled_outbox(&app, email).await.is_empty(),
        "the budget was spent: nothing was mailed"
    );

    // An hour later the spent window is gone (the maintenance task prunes it).
    app.state
        .store
        .prune_mail_budget(authflow_auth_service::clock::now() + 1)
        .await
        .unwrap();
    assert_eq!(
        post_from(
            &app,
            owner,
            "/v1/auth/password/forgot",
            json!({"email": email})
        )
        .await,
        202
    );
    let reset = app.last_mail(email, 1).await;
    assert_eq!(reset["subject"], "Reset your password");
    let r = app
        .http
        .post(app.url("/v1/auth/password/reset"))
        .header("x-forwarded-for", owner);
    let r = r
        .json(&json!({"token": reset["token"], "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.signin(email, PASSWORD).await;
}

/// The fresh verification links a sign-in to an unverified account mails
/// are limited per recipient: the sign-up's link, then a share of the
/// inbox's hour (`max_per_recipient_per_hour`, 5) of their own.
#[tokio::test]
async fn verification_links_mailed_at_sign_in_are_limited_per_recipient() {
    let app = spawn_app_with(|c| {
        limited(c);
        c.throttle.account_max_failures = 1000;
    })
    .await;
    let email = "pending@example.com";
    assert_eq!(
        post_from(
            &app,
            "192.0.2.1",
            "/v1/auth/signup",
            json!({"email": email, "password": PASSWORD})
        )
        .await,
        201
    );
    for i in 0..10 {
        let status = post_from(
            &app,
            &format!("198.51.100.{i}"),
            "/v1/auth/signin",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, 401);
    }
    let mails = settled_outbox(&app, email).await;
    assert!(
        mails
            .iter()
            .all(|m| m["subject"] == "Verify your email address"),
        "{mails:?}"
    );
    assert!(
        (2..=6).contains(&mails.len()),
        "{} mails to one address",
        mails.len()
    );
}

/// Sign-up, then sign-in with the chosen password: for a new address the
/// sign-in mails a fresh verification link, for a taken one nothing. That
/// mail is charged to the recipient's budget only, never to the requester's,
/// so the requester's later mails cannot tell the two apart.
#[tokio::test]
async fn a_verification_link_mailed_at_sign_in_does_not_spend_the_requesters_budget() {
    let app = spawn_app_with(|c| {
        limited(c);
        c.mail.max_per_client_per_hour = 3;
    })
    .await;
    let prober = "192.0.2.9";
    // A new address: sign-up (one mail), then a sign-in with its password (a link in the background).
    let body = json!({"email": "probe@example.com", "password": PASSWORD});
    assert_eq!(
        post_from(&app, prober, "/v1/auth/signup", body.clone()).await,
        201
    );
    assert_eq!(post_from(&app, prober, "/v1/auth/signin", body).await, 401);
    assert_eq!(
        app.outbox("probe@example.com", 2).await.len(),
        2,
        "the sign-in mailed a fresh link"
    );
    // Two more sign-ups from the prober: its budget of 3 holds both.
    for email in ["second@example.com", "third@example.com"] {
        assert_eq!(
            post_from(
                &app,
                prober,
                "/v1/auth/signup",
                json!({"email": email, "password": PASSWORD})
            )
            .await,
            201
        );
    }
    assert_eq!(
        app.outbox("third@example.com", 1).await.len(),
        1,
        "the prober's budget was charged for the link"
    );
}

/// A client past its own per-client budget is sent nothing, and must spend
/// nobody else's budget either: otherwise one address could keep every
/// recipient's reset mails from going out (5 requests per victim per hour,
/// with no bound at all from the client's own budget), and the owner could
/// not recover a locked-out account by mail.
#[tokio::test]
async fn a_client_over_its_own_budget_does_not_spend_a_recipients() {
    let app = spawn_app_with(|c| {
        limited(c);
        c.mail.max_per_client_per_hour = 3;
    })
    .await;
    let (victim, attacker, owner) = ("vera@example.com", "198.51.100.77", "203.0.113.20");
    app.verified_user(victim).await;
    // The attacker spends its own budget on addresses of its own.
    for i in 0..3 {
        let body = json!({"email": format!("junk{i}@example.com")});
        assert_eq!(
            post_from(&app, attacker, "/v1/auth/password/forgot", body).await,
            202
        );
    }
    // (Handled first: the mail work runs in the background, and requests
    // handled at once take the budget in any order.)
    forgot_handled(&app, 3).await;
    // Past its own budget it keeps asking for resets of the victim's account.
    for _ in 0..10 {
        let body = json!({"email": victim});
        assert_eq!(
            post_from(&app, attacker, "/v1/auth/password/forgot", body).await,
            202
        );
    }
    forgot_handled(&app, 13).await;
    let resets = |mails: Vec<Value>| {
        mails
            .iter()
            .filter(|m| m["subject"] == "Reset your password")
            .count()
    };
    assert_eq!(
        resets(settled_outbox(&app, victim).await),
        0,
        "the attacker's requests past its budget mail nothing"
    );
    // The owner, from an address of its own, still gets a reset link.
    assert_eq!(
        post_from(
            &app,
            owner,
            "/v1/auth/password/forgot",
            json!({"email": victim})
        )
        .await,
        202
    );
    forgot_handled(&app, 14).await;
    assert_eq!(
        resets(settled_outbox(&app, victim).await),
        1,
        "a client over its own budget used up the recipient's budget"
    );
}

/// A flood of reset requests while the database is slow starts at most
/// `limits.background_tasks` mail tasks: the next request is answered 503
/// with `Retry-After` (before the address is looked up, so the answer is the
/// same for every address), and once the tasks end, requests are taken again.
#[tokio::test]
async fn reset_requests_start_a_bounded_number_of_background_tasks() {
    let app = spawn_app_with(|c| c.limits.background_tasks = 3).await;
    // Another client holds the write lock the mail budget needs.
    let held = hold_transaction(&app, &[], &["LOCK TABLE mail_budget IN EXCLUSIVE MODE"]).await;
    let forgot = |n: usize| {
        app.http
            .post(app.url("/v1/auth/password/forgot"))
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .json(&json!({"email": format!("user{n}@example.com")}))
            .send()
    };
    for n in 0..3 {
        assert_eq!(forgot(n).await.unwrap().status(), 202);
    }
    let r = forgot(3).await.unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_code(r, 503).await, "temporarily_unavailable");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("authflow_background_running 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authflow_background_busy_total 1\n"),
        "{metrics}"
    );

    held.commit().await;
    forgot_handled(&app, 3).await;
    let mut status = 0;
    for _ in 0..100 {
        status = forgot(4).await.unwrap().status().as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 202,
        "the slots are given back once the mail tasks end"
    );
}

/// The per-recipient budget was keyed by the exact address: sign-ups of
/// `victim+1@…`, `victim+2@…` each had a budget of their own, and every
/// verification mail landed in the one inbox.
#[tokio::test]
async fn subaddresses_of_one_inbox_share_its_budget() {
    let app = spawn_app_with(one_share_each).await;
    let aliases: Vec<String> = (0..20).map(|i| format!("inbox+{i}@example.com")).collect();
    for (i, alias) in aliases.iter().enumerate() {
        let status = post_from(
            &app,
            &format!("198.51.100.{i}"),
            "/v1/auth/signup",
            json!({"email": alias, "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, 201);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut mails = 0;
    for alias in &aliases {
        mails += app.outbox(alias, 0).await.len();
    }
    assert!((1..=CEILING).contains(&mails), "{mails} mails to one inbox");
}

/// Finding: a sign-in code went out on every sign-in started with the right
/// password, without limit. Whoever had only the password (the second
/// factor still stopping them) could send the owner a code mail per password
/// hash the service would run, through the service's own relay. Code mails
/// are now limited per account (`mail.max_signin_codes_per_hour`): past it
/// the sign-in answers 429 with `Retry-After` (the password was right, so the
/// answer tells its sender nothing new) and writes no challenge, and the
/// owner's password-reset mail, a budget of its own, still goes out.
#[tokio::test]
async fn sign_in_code_mails_are_limited_per_account() {
    let app = spawn_app_with(|c| {
        limited(c);
        c.mail.max_signin_codes_per_hour = 3;
    })
    .await;
    app.verified_user("bombed@example.com").await;
    let before = app.outbox("bombed@example.com", 0).await.len();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = app
            .http
            .post(app.url("/v1/auth/signin"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"email": "bombed@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"), "{r:?}");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let codes = settled_outbox(&app, "bombed@example.com").await.len() - before;
    assert_eq!(codes, 3, "one code mail per sign-in within the limit");

    let status = post_from(
        &app,
        "198.51.100.9",
        "/v1/auth/password/forgot",
        json!({"email": "bombed@example.com"}),
    )
    .await;
    assert_eq!(status, 202);
    forgot_handled(&app, 1).await;
    let mails = settled_outbox(&app, "bombed@example.com").await;
    assert!(
        mails.iter().any(|m| m["subject"] == "Reset your password"),
        "the owner can still reset"
    );
}

/// The `Retry-After` of a spent code budget is the time until its window
/// frees (the hour runs from the window's first mail), not a whole hour.
#[tokio::test]
async fn a_spent_sign_in_code_budget_says_when_it_frees() {
    let app = spawn_app_with(|c| {
        limited(c);
        c.mail.max_signin_codes_per_hour = 1;
    })
    .await;
    app.verified_user("waiting@example.com").await;
    let signin = |i: u32| {
        app.http
            .post(app.url("/v1/auth/signin"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"email": "waiting@example.com", "password": PASSWORD}))
            .send()
    };
    assert_eq!(signin(1).await.unwrap().status(), 200);
    // The window began 50 minutes ago: it frees in 10.
    let sql = "UPDATE mail_budget SET window_start = window_start - 3000 WHERE key LIKE 'signin:%'";
    hold_transaction(&app, &[sql], &[sql]).await.commit().await;
    let r = signin(2).await.unwrap();
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (590..=600).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
}

/// Finding: one client's budget (`max_per_client_per_hour`, 20) is four
/// times a recipient's (`max_per_recipient_per_hour`, 5), and the
/// recipient's is shared by everyone. So a single stranger, well within its
/// own budget, spent the whole hour of the owner's reset mails with five
/// `forgot` requests (and again every hour): the owner, asking from an
/// address of its own, was sent no link and could not recover the account.
/// Each client now spends only its own share of an inbox's hour.
#[tokio::test]
async fn one_stranger_within_its_own_budget_cannot_keep_the_owner_from_a_reset_link() {
    let app = spawn_app_with(limited).await;
    let (victim, stranger, owner) = ("rita@example.com", "198.51.100.78", "203.0.113.21");
    app.verified_user(victim).await;
    for _ in 0..5 {
        let body = json!({"email": victim});
        assert_eq!(
            post_from(&app, stranger, "/v1/auth/password/forgot", body).await,
            202
        );
    }
    forgot_handled(&app, 5).await;
    let resets = |mails: Vec<Value>| {
        mails
            .iter()
            .filter(|m| m["subject"] == "Reset your password")
            .count()
    };
    let before = resets(settled_outbox(&app, victim).await);
    let body = json!({"email": victim});
    assert_eq!(
        post_from(&app, owner, "/v1/auth/password/forgot", body).await,
        202
    );
    forgot_handled(&app, 6).await;
    assert_eq!(
        resets(settled_outbox(&app, victim).await),
        before + 1,
        "five requests from one stranger kept the owner's reset link from going out"
    );
}

/// Finding: the fresh verification link a sign-in mails to an unverified
/// account was capped at one client's share of the inbox's hour, counted on
/// the whole hour's count: five mails one stranger sent within its own
/// share (reset requests) kept the owner's sign-in from mailing a link.
#[tokio::test]
async fn one_stranger_within_its_own_budget_cannot_keep_the_owner_from_a_fresh_verification_link() {
    let app = spawn_app_with(limited).await;
    let (email, stranger, owner) = ("una@example.com", "198.51.100.79", "203.0.113.22");
    let account = json!({"email": email, "password": PASSWORD});
    assert_eq!(
        post_from(&app, owner, "/v1/auth/signup", account.clone()).await,
        201
    );
    for _ in 0..5 {
        let body = json!({"email": email});
        assert_eq!(
            post_from(&app, stranger, "/v1/auth/password/forgot", body).await,
            202
        );
    }
    forgot_handled(&app, 5).await;
    let links = |mails: Vec<Value>| {
        mails
            .iter()
            .filter(|m| m["subject"] == "Verify your email address")
            .count()
    };
    let before = links(settled_outbox(&app, email).await);
    assert_eq!(
        post_from(&app, owner, "/v1/auth/signin", account).await,
        401
    );
    assert_eq!(
        links(settled_outbox(&app, email).await),
        before + 1,
        "five requests from one stranger kept the owner's sign-in from mailing a fresh link"
    );
}

/// Finding: the sign-in code budget is the account's, whoever spent it.
/// Whoever has only the stolen password spends it (each sign-in mails a code
/// and is then abandoned), and the owner, who resets the password through the
/// mailbox as told, still could not sign in with the new password until the
/// hour was over: the budget the thief spent outlived the password it was
/// spent with. It is kept per password now.
#[tokio::test]
async fn the_code_budget_a_thief_spent_does_not_outlive_the_password_reset() {
    let app = spawn_app_with(|c| {
        limited(c);
        c.mail.max_signin_codes_per_hour = 3;
    })
    .await;
    let (victim, thief, owner) = ("tess@example.com", "198.51.100.79", "203.0.113.22");
    app.verified_user(victim).await;
    for _ in 0..4 {
        let body = json!({"email": victim, "password": PASSWORD});
        let status = post_from(&app, thief, "/v1/auth/signin", body).await;
        assert!(status == 200 || status == 429, "{status}");
    }
    assert_eq!(
        post_from(
            &app,
            owner,
            "/v1/auth/password/forgot",
            json!({"email": victim})
        )
        .await,
        202
    );
    forgot_handled(&app, 1).await;
    let mail = settled_outbox(&app, victim)
        .await
        .into_iter()
        .rev()
        .find(|m| m["subject"] == "Reset your password")
        .expect("a reset link");
    let new_password = "a brand new passphrase 42";
    let r = app
        .post(
            "/v1/auth/password/reset",
            json!({"token": mail["token"], "password": new_password}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = json!({"email": victim, "password": new_password});
    assert_eq!(
        post_from(&app, owner, "/v1/auth/signin", body).await,
        200,
        "the owner, with the password only it now knows, is refused for the thief's code mails"
    );
}
