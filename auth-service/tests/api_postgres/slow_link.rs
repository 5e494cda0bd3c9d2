//! The database reached over a slow link: a read that takes long but keeps
//! answering is waited for, however long it takes as a whole; only a
//! connection that stops answering is given up on (`db_restarts.rs`).

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
