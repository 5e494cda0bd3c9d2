//! The PostgreSQL server itself stops and starts again (a restart, a crash,
//! a failover to a promoted standby) under running instances: each gets
//! back on its own, nothing acknowledged is lost, and the feed's
//! notifications reach the other instances again.
//!
//! Each test runs its own cluster (`RestartableCluster`): stopping the shared
//! one of `pg_cluster` would fail every other test of the run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

use crate::common::*;
use crate::pg_cluster::{
    bin_dir, ensure_os_user, free_port, init_cluster, is_root, run_pg, start_watchdog, DB_USER,
    OS_USER,
};
use crate::relay::Relay;

/// A cluster of one test, which it may stop and start again. Commits are
/// synchronous (unlike the shared test cluster's): a commit acknowledged
/// before an immediate stop must be found after it.
struct RestartableCluster {
    data: PathBuf,
    log: PathBuf,
    options: String,
    base: String,
}

impl RestartableCluster {
    fn start() -> Self {
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("authflow-pg-restart-")
            .tempdir()
            .unwrap()
            .keep();
        if root {
            ensure_os_user();
            let status = std::process::Command::new("chown")
                .arg(format!("{OS_USER}:"))
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.join("data");
        let password = init_cluster(root, &dir, &data);
        let port = free_port();
        let cluster = RestartableCluster {
            log: dir.join("postgres.log"),
            options: format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=100",
                dir.display()
            ),
            base: format!("postgres://{DB_USER}:{password}@127.0.0.1:{port}"),
            data,
        };
        cluster.up();
        let pid = std::fs::read_to_string(cluster.data.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        start_watchdog(pid, &dir);
        cluster
    }

    fn pg_ctl(&self, args: &[&str]) {
        let mut all = vec!["-D", self.data.to_str().unwrap()];
        all.extend_from_slice(args);
        run_pg(is_root(), &bin_dir().join("pg_ctl"), &all);
    }

    /// Starts the server (again), waiting until it accepts connections.
    fn up(&self) {
        self.pg_ctl(&[
            "-l",
            self.log.to_str().unwrap(),
            "-o",
            &self.options,
            "-w",
            "-t",
            "60",
            "start",
        ]);
    }

    /// Stops the server: `fast` (a clean restart) or `immediate` (a crash).
    fn down(&self, mode: &str) {
        self.pg_ctl(&["-m", mode, "-w", "-t", "60", "stop"]);
    }

    async fn fresh_database(&self) -> String {
        let name = format!("t_{}", free_port());
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", self.base))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        format!("{}/{name}", self.base)
    }
}

/// The watchdog of `pg_cluster` knows only the first postmaster's pid: a
/// server started again is stopped here, however the test ends.
impl Drop for RestartableCluster {
    fn drop(&mut self) {
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", OS_USER, "--"]).arg(bin_dir().join("pg_ctl"));
            c
        } else {
            std::process::Command::new(bin_dir().join("pg_ctl"))
        };
        let _ = cmd
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Two instances on a new database of `cluster`.
async fn two_instances_on(cluster: &RestartableCluster) -> (TestApp, TestApp) {
    let url = cluster.fresh_database().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let one = spawn_app_in(Arc::clone(&dir), Some(url), |_| {}).await;
    let two = spawn_app_beside(&one, |_| {}).await;
    (one, two)
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    match app
        .http
        .get(app.url(path))
        .timeout(Duration::from_secs(15))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Waits (up to `within`) until `app` answers `/readyz` with 200.
async fn until_ready(app: &TestApp, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if status_of(app, "/readyz").await == 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not ready {within:?} after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sessions of the test's database that listen on the feed channel.
async fn listeners(app: &TestApp) -> i64 {
    let url = app.database_url.clone().unwrap();
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap()
}

async fn refresh(app: &TestApp, t: &Tokens) -> reqwest::Response {
    refresh_with_device(app, &t.refresh, Some(&t.device)).await
}

/// The server crashes (immediate stop) and comes back: both instances answer
/// `/readyz` 503 while it is down and 200 again once it is back, without a
/// restart of their own; sign-in, refresh and logout work again; what was
/// acknowledged before the crash is still in force; and the feed's
/// notification channel is listened on again, so that a logout on one
/// instance wakes the long polls parked on the other at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_get_back_on_their_own_after_the_database_server_crashes() {
    let cluster = RestartableCluster::start();
    let (one, two) = two_instances_on(&cluster).await;
    one.verified_user("back@example.com").await;
    let before = one.signin("back@example.com", PASSWORD).await;
    let gone = one.signin("back@example.com", PASSWORD).await;
    assert_eq!(one.logout(&gone).await.status(), 200);
    // Both instances listen on the feed channel.
    let deadline = Instant::now() + Duration::from_secs(5);
    while listeners(&one).await < 2 {
        assert!(Instant::now() < deadline, "two listeners before the crash");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.down("immediate");
    assert_eq!(
        status_of(&one, "/readyz").await,
        503,
        "not ready: no database"
    );
    assert_eq!(status_of(&two, "/healthz").await, 200, "alive all the same");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.up();

    let took = until_ready(&one, Duration::from_secs(20)).await;
    eprintln!("instance 1 ready {took:?} after the database came back");
    until_ready(&two, Duration::from_secs(20)).await;
    // Acknowledged before the crash: still in force.
    assert_eq!(ext_authz(&one, &gone).await, 401);
    assert_eq!(ext_authz(&two, &gone).await, 401);
    assert_eq!(refresh(&two, &gone).await.status(), 400);
    // Everything works again, on both.
    let after = two.signin("back@example.com", PASSWORD).await;
    let r = refresh(&one, &before).await;
    assert_eq!(r.status(), 200);
    let before = tokens_of(r).await;
    assert_eq!(ext_authz(&two, &before).await, 200);

    // The feed channel is listened on again by both.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while Instant::now() < deadline {
        n = listeners(&one).await;
        if n == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(n, 2, "instances listening on the feed channel again");

    // A logout on one wakes a long poll parked on the other at once.
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
                .await
                .expect("answered within 5 s, not after the 20 s wait");
            (r.status().as_u16(), Instant::now())
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while two.state.feed.waiting() < 1 {
        assert!(Instant::now() < deadline, "the poll parks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(one.logout(&after).await.status(), 200);
    let logged_out = Instant::now();
    let (status, answered) = waiter.await.unwrap();
    assert_eq!(status, 200);
    let took = answered.saturating_duration_since(logged_out);
    eprintln!("logout on 1 to the long poll's answer on 2 after the crash: {took:?}");
    // Milliseconds by the notification, 250 ms by the follower: seconds
    // only on a machine too busy to tell.
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(ext_authz(&two, &after).await, 401);
    cluster.down("fast");
}

/// A logout under way when the server crashes (here: waiting on a row lock
/// another client holds) is not acknowledged: it never committed. It is
/// answered 503 with `Retry-After`, so the client tries again, and once the
/// server is back the retry goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_in_flight_when_the_database_server_crashes_is_not_acknowledged() {
    let cluster = RestartableCluster::start();
    let (one, _two) = two_instances_on(&cluster).await;
    one.verified_user("flight@example.com").await;
    let t = one.signin("flight@example.com", PASSWORD).await;
    let held = hold_transaction(&one, &[], &["LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE"]).await;
    let logout = tokio::spawn({
        let r = one
            .authed(reqwest::Method::POST, "/v1/auth/logout", &t)
            .timeout(Duration::from_secs(25));
        async move { r.send().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!logout.is_finished(), "the logout waits on the lock");
    cluster.down("immediate");
    let r = logout.await.unwrap().expect("answered");
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").cloned();
    let body: Value = r.json().await.unwrap_or_default();
    drop(held);
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some());
    cluster.up();
    until_ready(&one, Duration::from_secs(20)).await;
    assert_eq!(ext_authz(&one, &t).await, 200, "never committed");
    assert_eq!(one.logout(&t).await.status(), 200, "the retry goes through");
    assert_eq!(ext_authz(&one, &t).await, 401);
    cluster.down("fast");
}

/// A cluster of this test's own, instance 2 connected to it directly and
/// instance 1 through a [`Relay`] that can silence its connections.
async fn behind_a_relay() -> (RestartableCluster, Relay, TestApp, TestApp) {
    let cluster = RestartableCluster::start();
    let url = cluster.fresh_database().await;
    let port: u16 = cluster.base.rsplit_once(':').unwrap().1.parse().unwrap();
    let relay = Relay::start("127.0.0.1", port).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let two = spawn_app_in(Arc::clone(&dir), Some(url.clone()), |_| {}).await;
    let relayed = url.replace(&format!(":{port}/"), &format!(":{}/", relay.port));
    let one = spawn_app_in(Arc::clone(&dir), Some(relayed), |_| {}).await;
    (cluster, relay, one, two)
}

/// A user signed in on instance 2 whose token instance 1 admits, a second
/// before the failover.
async fn admitted_by_both(one: &TestApp, two: &TestApp) -> Tokens {
    two.verified_user("cut@example.com").await;
    let t = two.signin("cut@example.com", PASSWORD).await;
    assert_eq!(ext_authz(one, &t).await, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    t
}

/// `t` logged out on instance 2 after the failover: instance 1 refuses it
/// (401), having admitted it at most while its list may be stale (45 s).
async fn logout_served_after_the_failover(
    cluster: &RestartableCluster,
    one: &TestApp,
    two: &TestApp,
    t: &Tokens,
) {
    assert_eq!(two.logout(t).await.status(), 200);
    let (status, last_admitted, seen) = until_refused_by(one, t).await;
    cluster.down("fast");
    assert_eq!(
        status, 401,
        "instance 1 never served the logout after the failover: {seen:?}"
    );
    assert!(last_admitted < Duration::from_secs(46), "{seen:?}");
}

/// Asks `one`'s `ext_authz` about `t` every 250 ms, from its logout on, until
/// it is refused (401) or 75 s have passed: the last status, when it was
/// last admitted, and each change of status with its time.
async fn until_refused_by(one: &TestApp, t: &Tokens) -> (u16, Duration, Vec<(u16, Duration)>) {
    let logged_out = Instant::now();
    let mut seen = Vec::new();
    let mut last_admitted = Duration::ZERO;
    loop {
        let status = match one
            .authed(reqwest::Method::GET, "/v1/ext-authz", t)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        if status == 200 {
            last_admitted = logged_out.elapsed();
        }
        if seen.last().map(|(s, _)| *s) != Some(status) {
            seen.push((status, logged_out.elapsed()));
        }
        if status == 401 || logged_out.elapsed() > Duration::from_secs(75) {
            return (status, last_admitted, seen);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A failover seen from an instance whose connections are silenced rather
/// than reset (the old primary's host gone, a partition, a virtual IP moved
/// to the promoted standby): new connections reach the new primary at once.
/// Instance 1 reaches the database through such a path; instance 2 directly.
/// A logout on instance 2 must be in force on instance 1's `ext_authz`
/// (401) once instance 1 has given up its silenced connections and opened
/// new ones, and never admitted past `revocation.max_staleness_secs` (45 s). A query sent
/// on a silenced connection is never answered, and nothing bounds the wait
/// (no client-side timeout, no TCP keepalive): the feed sync holds the
/// feed's sync lock for as long, every later sync (the follower's, the
/// one after each own revoking write) queues behind it, and the instance
/// answers `503` (list stale after 45 s) — or `200` before that — until
/// the kernel gives up on the connection (~15 min of retransmissions), or
/// forever if the peer still acknowledges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_silences_connections_does_not_wedge_the_feed() {
    let (cluster, relay, one, two) = behind_a_relay().await;
    let t = admitted_by_both(&one, &two).await;

    relay.cut();
    logout_served_after_the_failover(&cluster, &one, &two, &t).await;
}

/// As [`a_failover_that_silences_connections_does_not_wedge_the_feed`], with
/// instance 1's feed read in flight on a connection the failover silences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_silences_a_feed_read_in_flight_does_not_wedge_the_feed() {
    let (cluster, relay, one, two) = behind_a_relay().await;
    let t = admitted_by_both(&one, &two).await;

    // Instance 1's next feed read waits on the database (a lock held
    // elsewhere) when the failover silences its connection.
    let held = hold_transaction(
        &two,
        &[],
        &["LOCK TABLE feed_state IN ACCESS EXCLUSIVE MODE"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    relay.cut();
    held.commit().await;
    logout_served_after_the_failover(&cluster, &one, &two, &t).await;
}

/// Requests in flight on instance 1 when a failover silences its connections
/// (here: sign-ins waiting on a lock another client holds, more than its
/// pool has connections). Their clients give up; instance 1 serves again
/// on new connections once the new primary takes them: the silenced
/// connections do not keep the pool's slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_when_a_failover_silences_connections_do_not_take_the_pool_for_good() {
    let (cluster, relay, one, two) = behind_a_relay().await;
    two.verified_user("pool@example.com").await;
    let held = hold_transaction(&two, &[], &["LOCK TABLE users IN ACCESS EXCLUSIVE MODE"]).await;
    let waiting: Vec<_> = (0..12)
        .map(|_| {
            let r = one
                .http
                .post(one.url("/v1/auth/signin"))
                .json(&serde_json::json!({"email": "pool@example.com", "password": PASSWORD}))
                .timeout(Duration::from_secs(3));
            tokio::spawn(async move { r.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    relay.cut();
    held.commit().await;
    for w in waiting {
        let _ = w.await;
    }
    let cut_at = Instant::now();
    let mut seen = Vec::new();
    let status = loop {
        let status = match one
            .http
            .post(one.url("/v1/auth/signin"))
            .json(&serde_json::json!({"email": "pool@example.com", "password": PASSWORD}))
            .timeout(Duration::from_secs(15))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        if seen.last().map(|(s, _)| *s) != Some(status) {
            seen.push((status, cut_at.elapsed()));
        }
        if status == 200 || cut_at.elapsed() > Duration::from_secs(60) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("instance 1's sign-in answers after the failover (status, since): {seen:?}");
    cluster.down("fast");
    assert_eq!(status, 200, "instance 1 never served again: {seen:?}");
}

/// The feed's `LISTEN` connection of instance 1 is silenced by a failover
/// (no reset): idle, the kernel never closes it, and no notification
/// arrives on it any more. Instance 1 is to notice and listen again on a
/// new connection, so that a logout on instance 2 is announced to it (and
/// wakes its long polls) in milliseconds again, not only through the 250 ms
/// follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_silences_the_listening_connection_is_listened_through_again() {
    let cluster = RestartableCluster::start();
    let url = cluster.fresh_database().await;
    let port: u16 = cluster.base.rsplit_once(':').unwrap().1.parse().unwrap();
    let relay = Relay::start("127.0.0.1", port).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let two = spawn_app_in(Arc::clone(&dir), Some(url.clone()), |c| {
        c.mail.max_signin_codes_per_hour = 100;
    })
    .await;
    let relayed = url.replace(&format!(":{port}/"), &format!(":{}/", relay.port));
    let one = spawn_app_in(Arc::clone(&dir), Some(relayed), |_| {}).await;
    two.verified_user("quiet@example.com").await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let keys = Arc::new(tokio::sync::Notify::new());
    assert!(one.state.store.notify_changes(Arc::clone(&wake), keys));
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("woken once listening");
    let t = two.signin("quiet@example.com", PASSWORD).await;
    assert_eq!(two.logout(&t).await.status(), 200);
    tokio::time::timeout(Duration::from_secs(2), wake.notified())
        .await
        .expect("announced before the failover");

    relay.cut();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Whatever woke it meanwhile (listening again wakes it too): drained.
    let _ = tokio::time::timeout(Duration::from_millis(10), wake.notified()).await;
    let t = two.signin("quiet@example.com", PASSWORD).await;
    assert_eq!(two.logout(&t).await.status(), 200);
    let announced = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
    cluster.down("fast");
    assert!(
        announced.is_ok(),
        "a logout 30 s after the failover is not announced to instance 1"
    );
}

/// A maintenance round waiting on the database (here a prune behind a lock
/// another client holds) when a failover silences its connection (no
/// reset): the query is never answered, nothing bounds the wait, and the
/// maintenance task never runs another round — no more prunes, re-seals or
/// key clean-ups — until the kernel gives up on the socket (~15 min of
/// retransmissions; forever if the peer still acknowledges). Here a mail
/// budget row long past its window must be pruned by a later round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_silences_a_maintenance_query_does_not_stop_maintenance() {
    let cluster = RestartableCluster::start();
    let url = cluster.fresh_database().await;
    let port: u16 = cluster.base.rsplit_once(':').unwrap().1.parse().unwrap();
    let relay = Relay::start("127.0.0.1", port).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let relayed = url.replace(&format!(":{port}/"), &format!(":{}/", relay.port));
    let _one = spawn_app_in(Arc::clone(&dir), Some(relayed), |c| {
        c.maintenance.interval = Duration::from_secs(1);
    })
    .await;
    let mut direct = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut direct).await.unwrap();
    sqlx::query("LOCK TABLE challenges IN ACCESS EXCLUSIVE MODE")
        .execute(&mut direct)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    relay.cut();
    sqlx::query("COMMIT").execute(&mut direct).await.unwrap();
    sqlx::query("INSERT INTO mail_budget (key, window_start, sent) VALUES ('test-old', 0, 1)")
        .execute(&mut direct)
        .await
        .unwrap();
    let started = Instant::now();
    let mut left = 1;
    while started.elapsed() < Duration::from_secs(45) {
        left =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM mail_budget WHERE key = 'test-old'")
                .fetch_one(&mut direct)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cluster.down("fast");
    assert_eq!(
        left, 0,
        "no maintenance round ran in the 45 s after the failover"
    );
}
