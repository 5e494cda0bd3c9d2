//! `GET /v1/revocations?since=C&wait=S`: the long poll. A waiting request is
//! answered as soon as something newer than its cursor is committed, else
//! `304` once the wait is over; a cursor it cannot wait on gets its answer at once.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

async fn current_cursor(app: &TestApp) -> String {
    let (status, snapshot) = app.feed(None).await;
    assert_eq!(status, 200);
    snapshot.unwrap()["cursor"].as_str().unwrap().to_owned()
}

async fn long_poll(
    app: &TestApp,
    since: &str,
    wait: &str,
    client_timeout: Duration,
) -> reqwest::Response {
    app.http
        .get(app.url("/v1/revocations"))
        .query(&[("since", since), ("wait", wait)])
        .timeout(client_timeout)
        .send()
        .await
        .expect("answered within the client timeout")
}

#[tokio::test]
async fn a_waiting_request_is_answered_as_soon_as_a_ban_is_committed() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let user_id = app.verified_user("leo@example.com").await;
    let cursor = current_cursor(&app).await;

    let started = Instant::now();
    let waiter = tokio::spawn({
        let (http, url) = (app.http.clone(), app.url("/v1/revocations"));
        async move {
            let r = http
                .get(url)
                .query(&[("since", cursor.as_str()), ("wait", "20")])
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            r.expect("answered within 5 s, not after the 20 s wait")
        }
    });
    // The request parks before the ban.
    until_parked(&app, 1).await;
    assert!(!waiter.is_finished(), "nothing new yet: the request waits");
    let r = app.ban(&admin, &user_id).await;
    assert_eq!(r.status(), 200);
    let banned_at = Instant::now();

    let r = waiter.await.unwrap();
    let answered = Instant::now();
    assert_eq!(r.status(), 200);
    let delta: Value = r.json().await.unwrap();
    assert_eq!(delta["snapshot"], false);
    assert_eq!(delta["banned_subjects"][0]["sub"], user_id.as_str());
    assert!(
        answered.duration_since(banned_at) < Duration::from_secs(1),
        "woken by the ban: {:?}",
        answered.duration_since(banned_at)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn without_a_change_the_wait_ends_in_304() {
    let app = spawn_app().await;
    let cursor = current_cursor(&app).await;
    let started = Instant::now();
    let r = long_poll(&app, &cursor, "1", Duration::from_secs(5)).await;
    assert_eq!(r.status(), 304);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "held for the wait: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "not much longer: {waited:?}"
    );
}

#[tokio::test]
async fn an_unknown_or_stale_cursor_is_answered_at_once() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let user_id = app.verified_user("leo@example.com").await;
    let old = current_cursor(&app).await;
    let r = app.ban(&admin, &user_id).await;
    assert_eq!(r.status(), 200);

    let started = Instant::now();
    let r = long_poll(&app, "another-database.7", "20", Duration::from_secs(5)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["snapshot"], true, "unknown cursor: the snapshot");
    assert_eq!(body["banned_subjects"][0]["sub"], user_id.as_str());
    let r = long_poll(&app, &old, "20", Duration::from_secs(5)).await;
    assert_eq!(r.status(), 200, "behind the head: the delta at once");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no waiting: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn invalid_waits_are_refused() {
    let app = spawn_app().await;
    let cursor = current_cursor(&app).await;
    for wait in ["-1", "abc", "61", "1.5", "", "99999999999999999999"] {
        let r = long_poll(&app, &cursor, wait, Duration::from_secs(5)).await;
        assert_eq!(error_code(r, 400).await, "invalid_request", "wait={wait}");
    }
    let r = long_poll(&app, &cursor, "0", Duration::from_secs(5)).await;
    assert_eq!(r.status(), 304, "wait=0 is a plain poll");
}

#[tokio::test]
async fn over_the_waiter_cap_a_request_is_answered_as_a_plain_poll() {
    let app = spawn_app_with(|c| c.revocation.max_waiters = 1).await;
    let cursor = current_cursor(&app).await;
    let parked = tokio::spawn({
        let (http, url, cursor) = (app.http.clone(), app.url("/v1/revocations"), cursor.clone());
        async move {
            http.get(url)
                .query(&[("since", cursor.as_str()), ("wait", "3")])
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    until_parked(&app, 1).await;
    let started = Instant::now();
    let r = long_poll(&app, &cursor, "3", Duration::from_secs(5)).await;
    assert_eq!(r.status(), 304);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "over the cap: no wait ({:?})",
        started.elapsed()
    );
    assert_eq!(
        parked.await.unwrap(),
        304,
        "the first one waited its turn out"
    );
}

/// Waits until `n` long polls are parked (a fixed sleep is not enough on a busy machine).
async fn until_parked(app: &TestApp, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.feed.waiting() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} polls parked",
            app.state.feed.waiting()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn store_reads(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("authflow_feed_store_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("authflow_feed_store_reads_total in /metrics")
}

/// Every long poll woken by one ban asks for the same delta: it is read from
/// the database once and shared, not once per waiter (10 000 sidecars would
/// queue 10 000 identical queries behind the pool and the last one would learn
/// of the ban seconds late).
#[tokio::test]
async fn waiters_woken_by_one_ban_share_one_database_read() {
    const WAITERS: usize = 50;
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let user_id = app.verified_user("ida@example.com").await;
    let cursor = current_cursor(&app).await;
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (http, url, cursor) =
                (app.http.clone(), app.url("/v1/revocations"), cursor.clone());
            tokio::spawn(async move {
                let r = http
                    .get(url)
                    .query(&[("since", cursor.as_str()), ("wait", "20")])
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let r = r.expect("answered within 10 s");
                (r.status(), r.json::<Value>().await.ok())
            })
        })
        .collect();
    // Every waiter parked before the ban (a poll arriving after the shared
    // read reads again, as it should).
    until_parked(&app, WAITERS).await;
    let before = store_reads(&app.get("/metrics").await.text().await.unwrap());
    let r = app.ban(&admin, &user_id).await;
    assert_eq!(r.status(), 200);
    for w in waiters {
        let (status, delta) = w.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            delta.unwrap()["banned_subjects"][0]["sub"],
            user_id.as_str(),
            "every waiter gets the ban"
        );
    }
    let reads = store_reads(&app.get("/metrics").await.text().await.unwrap()) - before;
    assert_eq!(
        reads, 1,
        "{WAITERS} waiters woken by one ban: one database read, not {reads}"
    );
}
