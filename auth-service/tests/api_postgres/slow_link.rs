//! The database slow to answer (far away, busy, a large list): a read that
//! takes long but keeps answering is waited for, however long it takes as a
//! whole (only a connection that stops answering is given up on:
//! `db_restarts.rs`), and reads that take long do not pile up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use authflow_auth_service::store::DATABASE_WAIT_BOUND;
use sqlx::Connection;

use crate::common::*;
use crate::relay::Relay;

/// Revocations written straight to the feed: `n` token entries valid for an hour.
async fn many_revocations(app: &TestApp, n: u64) {
    let now = authflow_auth_service::clock::now();
    let insert = format!(
        "INSERT INTO revocation_events (seq, kind, subject, not_before, expires_at, created_at) \
         SELECT g, 'token', md5(g::text) || md5((g + 1)::text), NULL, {}, {now} \
         FROM generate_series(1, {n}) g",
        now + 3600
    );
    let head = format!("UPDATE feed_state SET head = {n}");
    run_sql(app, &[&insert, &head]).await;
}

/// An instance starting behind a slow link to a database whose revocation
/// list takes longer than [`DATABASE_WAIT_BOUND`] to read whole (a million
/// entries on a distant database; here 20 000 at about 150 kB/s) loads it
/// all and serves it: the bound is on a wait with no answer, not on a read
/// that keeps answering. Before, every sync of such a list was given up
/// after 10 s: the instance could not start, and one running could never
/// read the list again in full (a new feed epoch, a clock stepped back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_behind_a_slow_link_loads_a_list_longer_to_read_than_the_wait_bound() {
    const ENTRIES: u64 = 20_000;
    let one = spawn_app().await;
    many_revocations(&one, ENTRIES).await;
    let url = one.database_url.clone().unwrap();
    let (host, port) = {
        let authority = url.split('@').nth(1).unwrap().split('/').next().unwrap();
        let (host, port) = authority.rsplit_once(':').unwrap();
        (host.to_owned(), port.parse::<u16>().unwrap())
    };
    let relay = Relay::start(&host, port).await;
    relay.throttle(150_000);
    let relayed = url.replace(
        &format!("{host}:{port}/"),
        &format!("127.0.0.1:{}/", relay.port),
    );

    let started = Instant::now();
    let two = spawn_app_in(Arc::clone(&one.dir), Some(relayed), |_| {}).await;
    let took = started.elapsed();
    assert!(
        took > DATABASE_WAIT_BOUND + Duration::from_secs(1),
        "started in {took:?}: the link is not slow enough to test the bound"
    );
    // Its own list holds them all, first to last.
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let now = authflow_auth_service::clock::now();
    for seq in [1, ENTRIES as i64] {
        let jti: String =
            sqlx::query_scalar("SELECT subject FROM revocation_events WHERE seq = $1")
                .bind(seq)
                .fetch_one(&mut db)
                .await
                .unwrap();
        let revoked = two
            .state
            .feed
            .is_revoked(Some(&jti), "a-session", None, now - 10, now);
        assert_eq!(revoked, Ok(true), "entry {seq}");
    }
}

/// The number of feed answers `app` has read from the database.
fn feed_reads(app: &TestApp) -> u64 {
    let metrics = app.state.feed.render_metrics();
    let line = metrics
        .lines()
        .find_map(|l| l.strip_prefix("authflow_feed_store_reads_total "))
        .unwrap();
    line.parse().unwrap()
}

/// Whole lists (polls without a cursor: anyone can send them, the endpoint
/// is open) were shared only by the polls of the second their read began.
/// A read taking longer than a second (a million entries: about 2.5 s) was
/// joined, each second, by another read of the whole list, so polls once a
/// second kept several reads of the list, and their encodings, in memory and
/// on the CPU at once. A poll now shares the read under way at its head,
/// whichever second it began in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_for_the_whole_list_share_the_read_under_way() {
    let app = spawn_app().await;
    many_revocations(&app, 100).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // the list synced
    let before = feed_reads(&app);
    // The read of the list waits on the table (a slow read, held still).
    let held = hold_transaction(
        &app,
        &[],
        &["LOCK TABLE revocation_events IN ACCESS EXCLUSIVE MODE"],
    )
    .await;
    let poll = || {
        let (http, url) = (app.http.clone(), app.url("/v1/revocations"));
        tokio::spawn(async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (
                status,
                body["revoked_tokens"].as_array().map_or(0, Vec::len),
            )
        })
    };
    let first = poll();
    // The next poll in a later second, the first one's read still under way.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = poll();
    tokio::time::sleep(Duration::from_millis(200)).await;
    held.commit().await;
    for answer in [first, second] {
        assert_eq!(answer.await.unwrap(), (200, 100));
    }
    assert_eq!(
        feed_reads(&app) - before,
        1,
        "one read of the list for both"
    );
}
