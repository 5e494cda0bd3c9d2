//! Revocations pushed through a long poll, through the real Envoy (two
//! workers) with the built filter and the real auth service (SQLite): with a
//! polling interval far too long to deliver it, a ban is enforced in every
//! worker within a couple of seconds; and against a feed that does not wait,
//! the filter polls at its interval, never in a loop.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::stack::*;
use support::*;

const ISSUER: &str = "http://authflow.push-e2e";

/// The stack with the revocation feed polled every `poll_interval_ms` (with
/// the default long poll) from `feed_cluster`, else from the auth service.
fn stack(poll_interval_ms: u64, feed_cluster: Option<(&str, u16)>) -> Stack {
    let extra: Vec<(&str, u16)> = feed_cluster.into_iter().collect();
    let feed = feed_cluster.map_or("authflow_auth", |(name, _)| name);
    Stack::start(
        StackOptions {
            issuer: ISSUER,
            service_env: &[],
            extra_clusters: &extra,
        },
        |f| {
            // No `wait_secs`: the default long poll.
            f["providers"][0]["revocations"] = json!({"cluster": feed, "path": "/v1/revocations", "poll_interval_ms": poll_interval_ms});
        },
    )
}

impl Stack {
    /// The statuses of `n` requests, each on its own connection (spread over
    /// the workers); 0 for one reset without an answer: a request in flight
    /// for a second when the ban lands is ended like any open stream
    /// (`streams`), and is asked again.
    fn statuses(&self, s: &Session, n: usize) -> Vec<u16> {
        let url = self.envoy.url("/api/x");
        std::thread::scope(|scope| {
            let calls: Vec<_> = (0..n)
                .map(|_| {
                    scope.spawn(|| {
                        let mut call = http().get(&url);
                        for (name, value) in s.headers() {
                            call = call.header(name, value);
                        }
                        call.call().map_or(0, |r| r.status().as_u16())
                    })
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        })
    }
}

/// The polling interval (30 s) cannot deliver the ban in time; only the long
/// poll can. Every worker refuses the banned user's token within a couple of
/// seconds of the admin's 200.
#[test]
fn a_ban_reaches_every_worker_through_the_long_poll() {
    let st = stack(30_000, None);
    let bob = st.sign_up("bob@push.test");
    let admin = st.admin("admin@push.test");
    let bob_s = st.sign_in("bob@push.test");
    // Every worker has its keys and list (a worker still loading keys may pause a request).
    // Generous: on a loaded machine each worker's first fetch can take a while,
    // and readiness is not what this test measures (the ban's delivery is).
    let mut last = Vec::new();
    let ready = eventually(Duration::from_secs(20), || {
        last = st.statuses(&bob_s, 8);
        last.iter().all(|s| *s == 200)
    });
    assert!(ready, "signed in, allowed everywhere: {last:?}");
    // Let the holder's poll of the current cursor be parked at the service.
    std::thread::sleep(Duration::from_millis(500));

    let r = st.envoy.post(
        &format!("/v1/admin/users/{bob}/ban"),
        &admin.headers(),
        &json!({}),
    );
    assert_eq!(r.status, 200, "ban: {r:?}");
    let banned_at = Instant::now();
    let everywhere = eventually(Duration::from_secs(3), || {
        st.statuses(&bob_s, 8).iter().all(|s| *s == 401)
    });
    assert!(
        everywhere,
        "not refused in every worker within 3 s of the ban (polling interval 30 s)"
    );
    let took = banned_at.elapsed();
    eprintln!("ban to 401 in every worker: {took:?}");
    assert!(
        st.statuses(&admin, 4).iter().all(|s| *s == 200),
        "others unaffected"
    );
}

/// A feed that answers at once (and always the same document) is polled at
/// the polling interval, not in a loop: the long poll never spins.
#[test]
fn a_feed_that_does_not_wait_is_polled_at_the_interval() {
    let feed = JwksServer::start(
        json!({"issuer": ISSUER, "cursor": "static.1", "snapshot": true}).to_string(),
    );
    let st = stack(500, Some(("static_feed", feed.port)));
    assert!(
        eventually(Duration::from_secs(5), || feed.hits() > 0),
        "the feed is polled"
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = feed.hits();
    std::thread::sleep(Duration::from_secs(4));
    let polls = feed.hits() - before;
    eprintln!("polls of a non-waiting feed in 4 s at a 500 ms interval: {polls}");
    assert!(
        (4..=12).contains(&polls),
        "{polls} polls in 4 s: expected about 8 (one Envoy, one lease holder)"
    );
    let _ = st.envoy.log();
}
