//! Client addresses behind the proxy: taken `xff_num_trusted_hops` entries
//! from the right of `x-forwarded-for` (the address the proxy saw), so one
//! client's failures lock out that client only and a forged first hop changes
//! nothing.

use serde_json::json;

use crate::common::*;

/// A failed sign-in as a client the proxy saw at `seen_by_proxy`, having written `forged` itself.
async fn fail_signin(app: &TestApp, email: &str, forged: Option<&str>, seen_by_proxy: &str) -> u16 {
    let xff = match forged {
        Some(f) => format!("{f}, {seen_by_proxy}"),
        None => seen_by_proxy.to_owned(),
    };
    app.http
        .post(app.url("/v1/auth/signin"))
        .header("x-forwarded-for", xff)
        .json(&json!({"email": email, "password": "wrong password!!"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn behind_one_proxy(c: &mut authflow_auth_service::config::Config) {
    c.server.xff_num_trusted_hops = 1;
    c.throttle.ip_max_failures = 3;
    c.throttle.account_max_failures = 1000;
}

#[tokio::test]
async fn rotating_a_forged_first_hop_does_not_bypass_the_address_limit() {
    let app = spawn_app_with(behind_one_proxy).await;
    for i in 0..3 {
        let status = fail_signin(
            &app,
            &format!("a{i}@example.com"),
            Some(&format!("198.51.100.{i}")),
            "203.0.113.5",
        )
        .await;
        assert_eq!(status, 401);
    }
    let status = fail_signin(&app, "a9@example.com", Some("198.51.100.99"), "203.0.113.5").await;
    assert_eq!(
        status, 429,
        "the address the proxy saw is locked, whatever the client wrote before it"
    );
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    assert!(
        log.iter().all(|e| e.ip.as_deref() == Some("203.0.113.5")),
        "forged addresses in the audit log: {log:?}"
    );
}

/// With `xff_num_trusted_hops` set, whoever reached the service directly
/// (past the proxy: another container on its network, a pod without the
/// mesh) wrote the address it was throttled and audited under, a fresh one
/// per request: the address limit never held. Only the peers listed in
/// `server.trusted_proxies` are read for `x-forwarded-for`.
#[tokio::test]
async fn a_client_past_the_proxies_does_not_choose_its_address() {
    let app = spawn_app_with(|c| {
        behind_one_proxy(c);
        c.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    for i in 0..3 {
        let seen = format!("203.0.113.{i}");
        assert_eq!(
            fail_signin(&app, &format!("d{i}@example.com"), None, &seen).await,
            401
        );
    }
    assert_eq!(
        fail_signin(&app, "d9@example.com", None, "203.0.113.99").await,
        429,
        "the test client (127.0.0.1, not a proxy) is throttled at its own address"
    );
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    assert!(
        log.iter().all(|e| e.ip.as_deref() == Some("127.0.0.1")),
        "addresses the client wrote in the audit log: {log:?}"
    );

    // The test client as the proxy: its x-forwarded-for is read.
    let app = spawn_app_with(|c| {
        behind_one_proxy(c);
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    })
    .await;
    fail_signin(&app, "e0@example.com", None, "203.0.113.7").await;
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    assert!(
        log.iter().all(|e| e.ip.as_deref() == Some("203.0.113.7")),
        "{log:?}"
    );
}

/// A dual-stack listener reports an IPv4 proxy as `::ffff:a.b.c.d`, and an
/// operator may list it so: it is the same proxy, and its `x-forwarded-for`
/// is read. Otherwise every client behind it would share the proxy's bucket,
/// and one client's failures would lock out all of them.
#[tokio::test]
async fn a_proxy_listed_as_an_ipv4_mapped_address_is_trusted() {
    let app = spawn_app_with(|c| {
        behind_one_proxy(c);
        c.server.trusted_proxies = vec!["::ffff:127.0.0.0/104".parse().unwrap()];
    })
    .await;
    for i in 0..4 {
        fail_signin(&app, &format!("m{i}@example.com"), None, "203.0.113.5").await;
    }
    assert_eq!(
        fail_signin(&app, "m9@example.com", None, "203.0.113.6").await,
        401,
        "another client behind the same proxy is not locked out"
    );
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    assert!(
        log.iter().all(|e| e.ip.as_deref() != Some("127.0.0.1")),
        "the proxy's address in the audit log: {log:?}"
    );
}

#[tokio::test]
async fn one_clients_failures_do_not_lock_out_the_others() {
    let app = spawn_app_with(behind_one_proxy).await;
    for i in 0..4 {
        fail_signin(&app, &format!("b{i}@example.com"), None, "203.0.113.5").await;
    }
    assert_eq!(
        fail_signin(&app, "b9@example.com", None, "203.0.113.5").await,
        429
    );
    // Everyone else behind the same proxy still gets an answer.
    assert_eq!(
        fail_signin(&app, "b9@example.com", None, "203.0.113.6").await,
        401
    );
    assert_eq!(
        fail_signin(&app, "c0@example.com", Some("203.0.113.5"), "192.0.2.44").await,
        401
    );
}

/// Quiet 200 s (the throttle's `2 × max`), a limit of 3. Times from now on:
/// the maintenance task deletes keys quiet for its own quiet period.
const QUIET_THROTTLE: (u64, u64, u32) = (10, 100, 3);

fn quiet_throttle() -> authflow_auth_service::throttle::Throttle {
    let (base, max, _) = QUIET_THROTTLE;
    authflow_auth_service::throttle::Throttle::new(
        std::time::Duration::from_secs(base),
        std::time::Duration::from_secs(max),
    )
}

/// One attempt against `key` at `at`, as `Throttle::attempt` counts it; the store's answer.
async fn count_attempt(
    app: &TestApp,
    key: &str,
    at: i64,
) -> authflow_auth_service::store::SigninAttempt {
    let (base, max, limit) = QUIET_THROTTLE;
    let quiet = quiet_throttle().quiet_secs();
    app.state
        .store
        .signin_attempt(key, at, quiet, limit, base as i64, max as i64)
        .await
        .unwrap()
}

/// On a shared address (an office behind NAT) where someone signs in
/// successfully every 150 s, a typo is forgotten once the quiet period has
/// passed since it: a right password takes back its attempt, its time too.
#[tokio::test]
async fn right_passwords_do_not_keep_an_addresss_old_failures_alive() {
    use authflow_auth_service::store::SigninAttempt;
    let app = spawn_app().await;
    let (store, throttle, limit) = (app.state.store.as_ref(), quiet_throttle(), QUIET_THROTTLE.2);
    let (key, t0) = ("ip:192.0.2.7", authflow_auth_service::clock::now());
    // t = 0: a wrong password, counted and kept.
    assert!(matches!(
        count_attempt(&app, key, t0).await,
        SigninAttempt::Counted { failures: 1, .. }
    ));
    // t = 150, 300: right passwords, counted and taken back.
    for at in [t0 + 150, t0 + 300] {
        let attempt = throttle
            .attempt(store, key, limit, at)
            .await
            .unwrap()
            .unwrap();
        throttle.undo(store, &attempt).await.unwrap();
    }
    // t = 450: the one failure, at t = 0, is older than the quiet period.
    let next = count_attempt(&app, key, t0 + 450).await;
    assert!(
        matches!(next, SigninAttempt::Counted { failures: 1, .. }),
        "{next:?}"
    );
}

/// A right password taken back after a later attempt was counted leaves
/// that attempt's time: the later failure keeps the count alive for the
/// whole quiet period (taking back never forgets a failure early).
#[tokio::test]
async fn taking_back_a_right_password_keeps_a_later_failures_time() {
    use authflow_auth_service::store::SigninAttempt;
    let app = spawn_app().await;
    let (store, throttle, limit) = (app.state.store.as_ref(), quiet_throttle(), QUIET_THROTTLE.2);
    let (key, t0) = ("ip:192.0.2.8", authflow_auth_service::clock::now());
    // A right password and a wrong one in flight together at t = 150; the right one is taken back last.
    let right = throttle
        .attempt(store, key, limit, t0 + 150)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        count_attempt(&app, key, t0 + 150).await,
        SigninAttempt::Counted { failures: 2, .. }
    ));
    throttle.undo(store, &right).await.unwrap();
    // t = 300: the failure at 150 is within the quiet period, so it still counts.
    let next = count_attempt(&app, key, t0 + 300).await;
    assert!(
        matches!(next, SigninAttempt::Counted { failures: 2, .. }),
        "{next:?}"
    );
}

/// A request from `client` (the `x-forwarded-for` value, written by the one trusted proxy).
async fn post_from(app: &TestApp, client: &str, path: &str, body: serde_json::Value) -> u16 {
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

/// One IPv6 client holds a whole /64 (and often more): every per-address
/// limit counts the /64 (`throttle.ipv6_prefix_len`), so changing the last
/// groups of the address does not give a fresh budget. Another /64 has its own.
#[tokio::test]
async fn an_ipv6_client_cannot_escape_its_limits_by_changing_its_address_within_the_prefix() {
    let app = spawn_app_with(|c| {
        c.server.xff_num_trusted_hops = 1;
        c.throttle.ip_max_failures = 3;
        c.throttle.account_max_failures = 1000;
        c.mail.max_per_client_per_hour = 3;
    })
    .await;
    let signup = |i: u32| json!({"email": format!("v6-{i}@example.com"), "password": PASSWORD});
    for i in 0..10 {
        assert_eq!(
            post_from(
                &app,
                &format!("2001:db8:1:2::{:x}", i + 1),
                "/v1/auth/signup",
                signup(i)
            )
            .await,
            201,
            "sign-up {i}"
        );
    }
    for i in 10..13 {
        let status = post_from(
            &app,
            &format!("2001:db8:1:2:{:x}::13", i),
            "/v1/auth/signup",
            signup(i),
        )
        .await;
        assert_eq!(status, 429, "sign-up {i} from the same /64");
    }
    assert_eq!(
        post_from(&app, "2001:db8:1:3::1", "/v1/auth/signup", signup(20)).await,
        201,
        "another /64"
    );

    // The mail budget of the /64: three of the ten sign-ups were mailed.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut mailed = 0;
    for i in 0..10 {
        mailed += app.outbox(&format!("v6-{i}@example.com"), 0).await.len();
    }
    assert_eq!(mailed, 3, "one /64's mails are limited together");

    // Sign-in failures of the /64.
    let wrong =
        |i: u32| json!({"email": format!("x{i}@example.com"), "password": "wrong password!!"});
    for i in 0..3 {
        assert_eq!(
            post_from(
                &app,
                &format!("2001:db8:5:6::{:x}", i + 1),
                "/v1/auth/signin",
                wrong(i)
            )
            .await,
            401
        );
    }
    assert_eq!(
        post_from(
            &app,
            "2001:db8:5:6:ffff:ffff:ffff:ffff",
            "/v1/auth/signin",
            wrong(9)
        )
        .await,
        429
    );
    assert_eq!(
        post_from(&app, "2001:db8:5:7::1", "/v1/auth/signin", wrong(9)).await,
        401,
        "another /64"
    );
}

/// An IPv4 address is its own bucket, whether the proxy wrote it as IPv4 or
/// IPv4-mapped IPv6; and the prefix length is a setting.
#[tokio::test]
async fn ipv4_mapped_addresses_count_as_ipv4_and_the_ipv6_prefix_is_configurable() {
    let app = spawn_app_with(|c| {
        behind_one_proxy(c);
        c.throttle.ipv6_prefix_len = 128;
    })
    .await;
    for (n, client) in [
        "192.0.2.60",
        "::ffff:192.0.2.60",
        "[::ffff:192.0.2.60]:4711",
    ]
    .into_iter()
    .enumerate()
    {
        // (Addresses of their own: `:` and `[` are not in an address's local part.)
        assert_eq!(
            fail_signin(&app, &format!("m-{n}@example.com"), None, client).await,
            401
        );
    }
    assert_eq!(
        fail_signin(&app, "m9@example.com", None, "192.0.2.60").await,
        429
    );
    assert_eq!(
        fail_signin(&app, "m9@example.com", None, "192.0.2.61").await,
        401
    );
    // With /128, each IPv6 address is its own bucket.
    for i in 0..4 {
        assert_eq!(
            fail_signin(
                &app,
                &format!("n{i}@example.com"),
                None,
                &format!("2001:db8::{:x}", i + 1)
            )
            .await,
            401
        );
    }
}

/// Padding before the proxy's entry, or a line with a byte that is not
/// ASCII, does not turn the client into the proxy (the peer): its failures
/// count against its own address, which the audit shows.
#[tokio::test]
async fn an_odd_forwarded_for_does_not_make_the_client_the_proxy() {
    let app = spawn_app_with(behind_one_proxy).await;
    let padded = format!("{}198.51.100.1, 203.0.113.7", " ".repeat(5000));
    let non_ascii = reqwest::header::HeaderValue::from_bytes(b"\xff, 203.0.113.7").unwrap();
    for xff in [
        reqwest::header::HeaderValue::from_str(&padded).unwrap(),
        non_ascii.clone(),
        non_ascii,
    ] {
        let r = app
            .http
            .post(app.url("/v1/auth/signin"))
            .header("x-forwarded-for", xff);
        let r = r
            .json(&json!({"email": "odd@example.com", "password": "wrong password!!"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // The client's own address is locked; the proxy's (the peer) is not.
    assert_eq!(
        fail_signin(&app, "odd2@example.com", None, "203.0.113.7").await,
        429
    );
    assert_eq!(
        fail_signin(&app, "odd2@example.com", None, "127.0.0.1").await,
        401
    );
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    let odd: Vec<_> = log
        .iter()
        .filter(|e| e.email.as_deref() == Some("odd@example.com"))
        .collect();
    assert_eq!(odd.len(), 3);
    assert!(
        odd.iter().all(|e| e.ip.as_deref() == Some("203.0.113.7")),
        "not the client's address in the audit log: {odd:?}"
    );
}

/// Without the entry the trusted proxy appends (a request that did not come
/// through it, or one with an unreadable entry), the client is unknown:
/// every such request shares one bucket, with the per-address limits, and
/// the proxy's own address is neither used nor locked.
#[tokio::test]
async fn a_client_without_a_readable_entry_counts_in_the_unknown_bucket() {
    let app = spawn_app_with(|c| {
        behind_one_proxy(c);
        c.server.xff_num_trusted_hops = 2;
    })
    .await;
    // One entry where two are needed; an entry that is no address.
    for xff in ["203.0.113.8", "junk, 203.0.113.8", "203.0.113.9"] {
        let r = app
            .http
            .post(app.url("/v1/auth/signin"))
            .header("x-forwarded-for", xff);
        let r = r
            .json(&json!({"email": "unknown@example.com", "password": "wrong password!!"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = app
        .post(
            "/v1/auth/signin",
            json!({"email": "unknown@example.com", "password": "wrong password!!"}),
        )
        .await;
    assert_eq!(
        r.status(),
        429,
        "no x-forwarded-for at all: the same unknown client"
    );
    // Neither the proxy's address nor the entries it appended were locked.
    assert_eq!(
        fail_signin(&app, "k@example.com", Some("127.0.0.1"), "203.0.113.8").await,
        401
    );
    assert_eq!(
        fail_signin(&app, "k@example.com", Some("203.0.113.8"), "127.0.0.1").await,
        401
    );
    let log = app.state.store.audit_log(None, 100).await.unwrap();
    assert!(
        log.iter()
            .filter(|e| e.email.as_deref() == Some("unknown@example.com"))
            .all(|e| e.ip.as_deref() == Some("")),
        "{log:?}"
    );
}

/// Anyone could lock anyone out: wrong passwords for the victim's address,
/// from the attacker's own client address, locked the account, and the
/// owner's right password was then refused (429) before it was compared —
/// for good, one request per `lockout_max` keeping the lock at its cap. A
/// device the account signed in on before (it presents that session's device
/// secret, OWASP's "device cookie") is past the account's lock: it has a
/// count of its own. A client without one, or with a secret that is not this
/// account's, is still locked.
#[tokio::test]
async fn a_strangers_wrong_passwords_do_not_lock_the_owner_out_of_a_known_device() {
    let app = spawn_app_with(|c| {
        c.server.xff_num_trusted_hops = 1;
        c.throttle.account_max_failures = 3;
        c.throttle.ip_max_failures = 1000;
    })
    .await;
    let victim = "owner@example.com";
    app.verified_user(victim).await;
    let earlier = app.signin(victim, PASSWORD).await;
    let other = "other@example.com";
    app.verified_user(other).await;
    let strangers = app.signin(other, PASSWORD).await;
    for _ in 0..4 {
        let status = fail_signin(&app, victim, None, "198.51.100.66").await;
        assert!(status == 401 || status == 429, "{status}");
    }
    let sign_in = |device: Option<&str>, password: &str| {
        let mut r = app
            .http
            .post(app.url("/v1/auth/signin"))
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({"email": victim, "password": password}));
        if let Some(d) = device {
            r = r.header("x-authflow-device", d.to_owned());
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(sign_in(None, PASSWORD).await, 429, "no device: locked");
    assert_eq!(
        sign_in(Some(&strangers.device), PASSWORD).await,
        429,
        "another account's device secret is no way past the lock"
    );
    assert_eq!(
        sign_in(
            Some("not-a-device-secret-of-anyone-at-all-0000000"),
            PASSWORD
        )
        .await,
        429
    );
    assert_eq!(
        sign_in(Some(&earlier.device), PASSWORD).await,
        200,
        "the owner's right password, on the device it signed in on before"
    );
    // The known device has a lock of its own: it is no way to guess past the limit.
    for _ in 0..3 {
        assert_eq!(
            sign_in(Some(&earlier.device), "wrong password!!").await,
            401
        );
    }
    assert_eq!(sign_in(Some(&earlier.device), PASSWORD).await, 429);
}

/// The device cookie's exemption is for a device the account is signed in
/// on: the secret of a session that ended (signed out, revoked for a reused
/// refresh token, by a reset or a ban) opens no private count past the
/// account's lock. Whoever kept that secret is a stranger like any other.
#[tokio::test]
async fn a_device_whose_session_ended_is_no_way_past_the_lock() {
    let app = spawn_app_with(|c| {
        c.server.xff_num_trusted_hops = 1;
        c.throttle.account_max_failures = 3;
        c.throttle.ip_max_failures = 1000;
    })
    .await;
    let victim = "ended-device@example.com";
    app.verified_user(victim).await;
    let ended = app.signin(victim, PASSWORD).await;
    let r = app.logout(&ended).await;
    assert_eq!(r.status(), 200);
    let live = app.signin(victim, PASSWORD).await;
    for _ in 0..4 {
        let status = fail_signin(&app, victim, None, "198.51.100.67").await;
        assert!(status == 401 || status == 429, "{status}");
    }
    let sign_in = |device: &str| {
        let r = app
            .http
            .post(app.url("/v1/auth/signin"))
            .header("x-forwarded-for", "203.0.113.10")
            .header("x-authflow-device", device.to_owned())
            .json(&json!({"email": victim, "password": PASSWORD}));
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        sign_in(&ended.device).await,
        429,
        "the device secret of a signed-out session is no way past the lock"
    );
    assert_eq!(
        sign_in(&live.device).await,
        200,
        "a device the account is signed in on still is"
    );
}

/// Second-factor codes from one address were checked against its lock,
/// compared, and only then counted: guesses sent together (on any
/// instance), each on another account whose password is known, were all
/// compared before the address locked. Counted before they are compared,
/// as passwords are, at most the address's limit are compared.
#[tokio::test]
async fn second_factor_guesses_sent_together_from_one_address_stop_at_its_limit() {
    let app = spawn_app_with(|c| {
        c.server.xff_num_trusted_hops = 1;
        c.throttle.ip_max_failures = 3;
    })
    .await;
    let mut challenges = Vec::new();
    for i in 0..8 {
        let email = format!("known{i}@example.com");
        app.verified_user(&email).await;
        challenges.push(app.challenge(&email, PASSWORD).await.0);
    }
    let guesses = challenges
        .iter()
        .map(|challenge| {
            let guess = app
                .http
                .post(app.url("/v1/auth/signin/verify"))
                .header("x-forwarded-for", "192.0.2.99")
                .json(&json!({"challenge_id": challenge, "code": "000000"}));
            async move { guess.send().await.unwrap().status().as_u16() }
        })
        .collect();
    let statuses = join_all(guesses).await;
    let compared = statuses.iter().filter(|s| **s == 401).count();
    assert!(compared <= 3, "{compared} codes compared: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
}
