//! Start-up: builds the state, binds the listener, serves the router and
//! starts the background tasks (maintenance, and with a shared database the
//! following of other instances' writes).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::clock::forget_now;
use crate::config::Config;
use crate::error::StartError;
use crate::mail_budget;
use crate::routes;
use crate::state::{build_state, AppState};

/// The router with every route and layer, over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    routes::router(state)
}

/// A running service (tests and `serve`).
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub server: JoinHandle<()>,
    pub maintenance: JoinHandle<()>,
}

/// Builds the state, binds `config.server.listen` (port 0 picks a free one), serves.
pub async fn spawn(config: Config) -> Result<Running, StartError> {
    let listen = config.server.listen;
    let state = build_state(config, crate::store::Opening::CreateIfMissing).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(StartError::from_display)?;
    if state.config.server.dev_endpoints {
        tracing::warn!(
            %addr,
            "development endpoints are on (server.dev_endpoints): GET /v1/dev/outbox gives anyone who can reach this \
             listener the mailed sign-in codes and password-reset tokens, enough to take over any account; \
             turn them off unless only you can connect"
        );
    }
    let router = app(Arc::clone(&state));
    let header_read_timeout = state.config.server.header_read_timeout;
    let server = tokio::spawn(serve(
        listener,
        router,
        header_read_timeout,
        Arc::clone(&state),
    ));
    let maintenance = tokio::spawn(maintenance(Arc::clone(&state)));
    // On every store: another instance (Postgres) or another process on the
    // same database (the CLI: `keys rotate`, `service-account disable`)
    // writes keys and feed events this one must serve within a second.
    tokio::spawn(follow_shared_state(Arc::clone(&state)));
    if state.store.shared_by_instances() {
        tokio::spawn(follow_notifications(Arc::clone(&state)));
    }
    Ok(Running {
        addr,
        state,
        server,
        maintenance,
    })
}

/// Serves HTTP/1.1 on `listener` until SIGINT / SIGTERM, then lets every
/// open connection finish (what `axum::serve` does), with what it lacks: a
/// timer, so that a connection that does not send a whole request head
/// within `header_read_timeout` (a slowloris client, or an idle keep-alive
/// one) is closed, and one whose client accepts none of its answer for as
/// long too. Each request carries its peer address (`ConnectInfo`).
async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: std::time::Duration,
    state: Arc<AppState>,
) {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, as axum::serve does.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        // hyper has no write timeout: a client that asks for answers
        // (pipelined, or one larger than the socket buffers) and never reads
        // them would hold its task, its socket and megabytes of kernel send
        // buffer forever. A write that goes nowhere for as long as a request
        // head may take fails and ends the connection; a long poll writes
        // nothing while it waits, so it is not cut.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(header_read_timeout));
        let stream = Box::pin(stream);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    // The filters' long polls of the feed are always parked (up to 60 s):
    // answered now, they do not hold the stop past a termination grace period.
    state.feed.stop_waiters();
    graceful.shutdown().await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// How often an instance sharing its database reads the feed's head, so a
/// revocation written by another instance is served here within this time.
const FEED_FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Every how many feed reads the signing keys are reloaded (once a second):
/// a key rotated on another instance is published here well before it signs
/// (`key_publish_lead`), and all instances switch to it at its `active_at`.
const KEY_RELOAD_EVERY: u32 = 4;

/// With several instances on one database: syncs the feed as soon as the
/// store announces an event committed by any instance (PostgreSQL
/// `LISTEN/NOTIFY`), which wakes this instance's long polls of the feed in
/// milliseconds, and reloads the keys as soon as it announces a key
/// withdrawn; the periodic follow below stays as the safety net.
async fn follow_notifications(state: Arc<AppState>) {
    let (feed, keys) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    if !state
        .store
        .notify_changes(Arc::clone(&feed), Arc::clone(&keys))
    {
        return;
    }
    tokio::spawn({
        let state = Arc::clone(&state);
        async move {
            loop {
                keys.notified().await;
                reload_keys(&state).await;
            }
        }
    });
    loop {
        feed.notified().await;
        if let Err(e) = state.feed.sync(state.store.as_ref(), forget_now()).await {
            tracing::warn!(error = %e, "feed sync failed");
        }
    }
}

/// Picks up the feed events and the signing keys other writers put in the
/// database: other instances, and the CLI.
async fn follow_shared_state(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(FEED_FOLLOW_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        round = round.wrapping_add(1);
        tick.tick().await;
        if let Err(e) = state.feed.sync(state.store.as_ref(), forget_now()).await {
            tracing::warn!(error = %e, "feed sync failed");
        }
        if round.is_multiple_of(KEY_RELOAD_EVERY) {
            reload_keys(&state).await;
        }
    }
}

/// Reloads the signing keys from the store, bounded: the loops that call
/// it would stop for good on a read never answered.
async fn reload_keys(state: &AppState) {
    if let Err(e) = crate::store::bounded(state.keys.reload(state.store.as_ref())).await {
        tracing::warn!(error = %e, "key reload failed");
    }
}

/// How many secrets at rest one maintenance round re-seals at most.
const RESEAL_BATCH: u32 = 500;

/// Re-seals with the current KEK what is still sealed with an older one: a
/// value an instance not yet rotated wrote after this one started (its start
/// re-sealed everything there was then). Until none is left, `kek.previous`
/// must stay (see the README's rotation). Looks first, without a lock, for
/// any such value; then re-seals a bounded batch.
async fn reseal_round(state: &AppState) {
    let store = state.store.as_ref();
    match store.count_to_reseal().await {
        Ok(0) => {}
        Ok(_) => match store.reseal_batch(RESEAL_BATCH).await {
            Ok(report) => {
                let remaining = store.count_to_reseal().await.ok();
                if report.resealed > 0 {
                    tracing::info!(
                        values = report.resealed,
                        remaining,
                        "secrets at rest sealed with an older key-encryption key re-sealed with the current one"
                    );
                }
                for reason in &report.unopened {
                    tracing::warn!(
                        error = %reason,
                        "a secret at rest cannot be re-sealed: keep the key that sealed it in `kek.previous`"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "re-sealing secrets at rest failed"),
        },
        Err(e) => tracing::warn!(error = %e, "counting secrets at rest under older keys failed"),
    }
}

/// Periodically prunes expired rows and picks up feed events written by
/// other processes (e.g. the CLI).
async fn maintenance(state: Arc<AppState>) {
    let interval = state.config.maintenance.interval;
    // A round given up at ten intervals (at least the store's own bound): a
    // query on a connection a failover silenced is never answered, and the
    // task would wait on it for good, pruning and re-sealing nothing more.
    let bound = (interval * 10).max(crate::store::DATABASE_WAIT_BOUND);
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if tokio::time::timeout(bound, maintenance_round(&state))
            .await
            .is_err()
        {
            tracing::warn!(
                after_secs = bound.as_secs(),
                "maintenance round given up: the database did not answer"
            );
        }
    }
}

/// One round of [`maintenance`].
async fn maintenance_round(state: &AppState) {
    // Everything here forgets: by the bound a clock stepped forward cannot move.
    let now = forget_now();
    if let Err(e) = state.store.prune(now).await {
        tracing::warn!(error = %e, "prune failed");
    }
    if let Err(e) = state
        .store
        .prune_signin_failures(now, now.saturating_sub(state.throttle.quiet_secs()))
        .await
    {
        tracing::warn!(error = %e, "sign-in throttle prune failed");
    }
    match state.feed.prune(state.store.as_ref(), now).await {
        Ok(n) if n > 0 => tracing::debug!(pruned = n, "expired revocation entries pruned"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "feed prune failed"),
    }
    // The clock read again: the steps above may have waited on the
    // database for seconds, and a sync with an older time than the
    // follower's last takes it for a clock stepped back.
    if let Err(e) = state.feed.sync(state.store.as_ref(), forget_now()).await {
        tracing::warn!(error = %e, "feed sync failed");
    }
    reload_keys(state).await;
    match state
        .keys
        .forget_retired_private_keys(state.store.as_ref(), now)
        .await
    {
        Ok(n) if n > 0 => {
            tracing::info!(keys = n, "private halves of retired signing keys deleted")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "retired key cleanup failed"),
    }
    if let Err(e) = state
        .store
        .prune_mail_budget(now - mail_budget::WINDOW_SECS)
        .await
    {
        tracing::warn!(error = %e, "mail budget prune failed");
    }
    reseal_round(state).await;
    let unverified =
        i64::try_from(state.config.accounts.unverified_retention.as_secs()).unwrap_or(i64::MAX);
    match state
        .store
        .prune_unverified_accounts(now.saturating_sub(unverified), now)
        .await
    {
        Ok(n) if n > 0 => tracing::info!(accounts = n, "unverified accounts deleted"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "unverified account prune failed"),
    }
    let retention =
        i64::try_from(state.config.maintenance.audit_retention.as_secs()).unwrap_or(i64::MAX);
    match state.store.prune_audit(now.saturating_sub(retention)).await {
        Ok(n) if n > 0 => tracing::debug!(pruned = n, "expired audit rows deleted"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "audit prune failed"),
    }
    // Ended sessions stay listed (to admins) as long as the audit rows of
    // their sign-ins, and past that while a token record names them.
    match state
        .store
        .prune_sessions(now.saturating_sub(retention))
        .await
    {
        Ok(n) if n > 0 => tracing::debug!(pruned = n, "ended sessions deleted"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "session prune failed"),
    }
}
