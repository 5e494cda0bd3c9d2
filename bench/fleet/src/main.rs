//! `authflow-bench-fleet PLAN.json`: a fleet of simulated sidecars, each
//! holding a long poll of the revocation feed (`GET /v1/revocations?since=C&wait=S`)
//! on its own connection, as the filter's lease holder does: a `200` re-arms
//! at once with the new cursor, a `304` after the wait re-arms at once, a
//! `304` that came back early (the service is over its waiter cap) waits the
//! polling interval first. Sidecar `i` polls `targets[i % targets.len()]`.
//!
//! Steps, all timed in this one process: the instances' RSS idle; the fleet
//! connects and parks; RSS with every sidecar parked; for each user in
//! `ban.users`, a ban through the admin API on `ban.target`, then the time
//! from its request to each sidecar's answer; then `idle_secs` with no bans,
//! counting requests. One JSON document on stdout.

mod http;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use http::{Conn, Response};

#[derive(Deserialize)]
struct Plan {
    targets: Vec<String>,
    sidecars: usize,
    /// `wait` of the long poll; sidecar `i` uses `waits[i % waits.len()]`.
    waits: Vec<u64>,
    /// Pause after a `304` that came back before its wait (the filter's `poll_interval_ms`).
    poll_interval_ms: u64,
    ban: Ban,
    /// The auth instances, for RSS and CPU from `/proc`.
    pids: Vec<u32>,
    idle_secs: u64,
    clk_tck: u64,
}

#[derive(Deserialize)]
struct Ban {
    target: String,
    /// Request headers that authenticate the admin (`name: value`).
    headers: Vec<String>,
    users: Vec<String>,
}

/// What every sidecar shares with the conductor.
struct Board {
    start: Instant,
    /// Requests sent, per entry of `waits`.
    requests: Vec<AtomicU64>,
    /// Sidecars with a request out and no answer yet.
    parked: AtomicUsize,
    /// Per sidecar: when (ns after `start`, +1) its first `200` since the last reset came; 0 = none yet.
    answered: Vec<AtomicU64>,
    early_304: AtomicU64,
    other_status: AtomicU64,
    errors: AtomicU64,
}

impl Board {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn cursor_of(body: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    doc.get("cursor")?.as_str().map(str::to_owned)
}

const FEED_HEADERS: [&str; 1] = ["Accept: application/json"];

async fn current_cursor(target: &str) -> Result<String, String> {
    let mut conn = Conn::open(target).await.map_err(|e| format!("{target}: {e}"))?;
    let headers: Vec<String> = FEED_HEADERS.iter().map(|h| (*h).to_owned()).collect();
    conn.send("GET", "/v1/revocations", &headers, b"").await.map_err(|e| e.to_string())?;
    let r = conn.receive().await.map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("{target}: feed answered {}", r.status));
    }
    cursor_of(&r.body).ok_or_else(|| format!("{target}: no cursor in the feed"))
}

async fn sidecar(board: Arc<Board>, id: usize, target: String, mut cursor: String, wait: u64, group: usize, poll_interval: Duration) {
    let headers: Vec<String> = FEED_HEADERS.iter().map(|h| (*h).to_owned()).collect();
    let wait_d = Duration::from_secs(wait);
    loop {
        let mut conn = match Conn::open(&target).await {
            Ok(c) => c,
            Err(_) => {
                board.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let path = format!("/v1/revocations?since={cursor}&wait={wait}");
            if conn.send("GET", &path, &headers, b"").await.is_err() {
                board.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            board.requests[group].fetch_add(1, Ordering::Relaxed);
            board.parked.fetch_add(1, Ordering::SeqCst);
            let sent = Instant::now();
            let answer = tokio::time::timeout(wait_d + Duration::from_secs(15), conn.receive()).await;
            board.parked.fetch_sub(1, Ordering::SeqCst);
            let Ok(Ok(Response { status, body, close })) = answer else {
                board.errors.fetch_add(1, Ordering::Relaxed);
                break;
            };
            match status {
                200 => {
                    let at = board.now_ns() + 1;
                    let _ = board.answered[id].compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst);
                    match cursor_of(&body) {
                        Some(c) => cursor = c,
                        None => {
                            board.other_status.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                304 if sent.elapsed() + Duration::from_millis(500) < wait_d => {
                    board.early_304.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(poll_interval).await;
                }
                304 => {}
                _ => {
                    board.other_status.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(poll_interval).await;
                }
            }
            if close {
                break;
            }
        }
    }
}

fn proc_field(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = proc_field(pid, "stat");
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after_name.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // utime and stime: fields 14 and 15 of the whole line, 12 and 13 after the name.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Waits until every sidecar has a request out and stayed so for `settle`.
async fn all_parked(board: &Board, n: usize, settle: Duration, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut since: Option<Instant> = None;
    while Instant::now() < deadline {
        if board.parked.load(Ordering::SeqCst) >= n {
            let s = *since.get_or_insert_with(Instant::now);
            if s.elapsed() >= settle {
                return true;
            }
        } else {
            since = None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// One ban through the admin API; the instant its request was sent. Not the
/// instant its `200` was read: the service wakes its waiters once the ban is
/// committed, before it answers the admin, and this one thread reads many of
/// their answers before it gets to the `200` (which made times negative).
async fn ban(plan: &Ban, user: &str) -> Result<Instant, String> {
    let mut conn = Conn::open(&plan.target).await.map_err(|e| e.to_string())?;
    let at = Instant::now();
    conn.send("POST", &format!("/v1/admin/users/{user}/ban"), &plan.headers, b"{}").await.map_err(|e| e.to_string())?;
    let r = conn.receive().await.map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("ban answered {}: {}", r.status, String::from_utf8_lossy(&r.body)));
    }
    Ok(at)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run(plan: Plan) -> Result<serde_json::Value, String> {
    if plan.targets.is_empty() || plan.waits.is_empty() {
        return Err("targets and waits must not be empty".into());
    }
    let n = plan.sidecars;
    let board = Arc::new(Board {
        start: Instant::now(),
        requests: plan.waits.iter().map(|_| AtomicU64::new(0)).collect(),
        parked: AtomicUsize::new(0),
        answered: (0..n).map(|_| AtomicU64::new(0)).collect(),
        early_304: AtomicU64::new(0),
        other_status: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut cursors = Vec::new();
    for t in &plan.targets {
        cursors.push(current_cursor(t).await?);
    }
    let idle_rss: Vec<u64> = plan.pids.iter().map(|p| rss_kib(*p)).collect();

    // Connect in batches: a burst of 10 000 SYNs overflows the listen backlog
    // and the kernel's retry (1 s, then 3 s) would look like feed latency.
    let connect_start = Instant::now();
    let poll_interval = Duration::from_millis(plan.poll_interval_ms);
    for i in 0..n {
        let t = i % plan.targets.len();
        let group = i % plan.waits.len();
        tokio::spawn(sidecar(Arc::clone(&board), i, plan.targets[t].clone(), cursors[t].clone(), plan.waits[group], group, poll_interval));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if !all_parked(&board, n, Duration::from_secs(1), Duration::from_secs(60)).await {
        return Err(format!("only {} of {n} sidecars parked within 60 s", board.parked.load(Ordering::SeqCst)));
    }
    let parked_in = connect_start.elapsed();
    let parked_rss: Vec<u64> = plan.pids.iter().map(|p| rss_kib(*p)).collect();

    let mut bans = Vec::new();
    let mut pooled: Vec<f64> = Vec::new();
    for user in &plan.ban.users {
        for a in &board.answered {
            a.store(0, Ordering::SeqCst);
        }
        let banned_at = ban(&plan.ban, user).await?;
        let base = u64::try_from(banned_at.duration_since(board.start).as_nanos()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = board.answered.iter().filter(|a| a.load(Ordering::Relaxed) != 0).count();
            if done == n || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // ms from the ban's request to each sidecar's answer.
        let mut ms: Vec<f64> = board
            .answered
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .filter(|a| *a != 0)
            .map(|a| ((a - 1) as f64 - base as f64) / 1e6)
            .collect();
        ms.sort_by(f64::total_cmp);
        let answered = ms.len();
        bans.push(json!({
            "answered": answered, "p50_ms": percentile(&ms, 50.0), "p99_ms": percentile(&ms, 99.0),
            "max_ms": ms.last().copied().unwrap_or(f64::NAN), "min_ms": ms.first().copied().unwrap_or(f64::NAN),
        }));
        eprintln!("[fleet] ban {}: {answered}/{n} answered, p50 {:.1} ms, p99 {:.1} ms, all {:.1} ms",
            bans.len(), percentile(&ms, 50.0), percentile(&ms, 99.0), ms.last().copied().unwrap_or(f64::NAN));
        pooled.extend(ms);
        if !all_parked(&board, n, Duration::from_millis(500), Duration::from_secs(60)).await {
            return Err("the fleet did not re-arm within 60 s of a ban".into());
        }
    }
    pooled.sort_by(f64::total_cmp);

    // Idle: no bans; every request in the window is a re-arm after a `304`.
    let before: Vec<u64> = board.requests.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    let ticks0: Vec<u64> = plan.pids.iter().map(|p| cpu_ticks(*p)).collect();
    let early0 = board.early_304.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(plan.idle_secs)).await;
    let minutes = plan.idle_secs as f64 / 60.0;
    let idle: Vec<serde_json::Value> = plan
        .waits
        .iter()
        .enumerate()
        .map(|(g, w)| {
            let size = (0..n).filter(|i| i % plan.waits.len() == g).count().max(1);
            let reqs = board.requests[g].load(Ordering::SeqCst) - before[g];
            json!({"wait_secs": w, "sidecars": size, "requests": reqs, "per_sidecar_per_min": reqs as f64 / size as f64 / minutes})
        })
        .collect();
    let idle_cpu_ms: Vec<f64> = plan
        .pids
        .iter()
        .zip(&ticks0)
        .map(|(p, t0)| (cpu_ticks(*p) - t0) as f64 * 1000.0 / plan.clk_tck as f64)
        .collect();

    Ok(json!({
        "sidecars": n,
        "targets": plan.targets.len(),
        "parked_in_ms": parked_in.as_secs_f64() * 1000.0,
        "idle_rss_kib": idle_rss,
        "parked_rss_kib": parked_rss,
        "bans": bans,
        "answer_p50_ms": percentile(&pooled, 50.0),
        "answer_p99_ms": percentile(&pooled, 99.0),
        "answer_max_ms": pooled.last().copied().unwrap_or(f64::NAN),
        "idle_secs": plan.idle_secs,
        "idle": idle,
        "idle_cpu_ms": idle_cpu_ms,
        "idle_early_304": board.early_304.load(Ordering::SeqCst) - early0,
        "early_304": board.early_304.load(Ordering::SeqCst),
        "other_status": board.other_status.load(Ordering::SeqCst),
        "errors": board.errors.load(Ordering::SeqCst),
    }))
}

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: authflow-bench-fleet PLAN.json");
        return std::process::ExitCode::from(2);
    };
    let plan: Plan = match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{path}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // One thread: the fleet stays on the core it is pinned to.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(plan)) {
        Ok(doc) => {
            println!("{doc}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("[fleet] {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
