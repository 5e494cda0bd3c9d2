//! The authflow auth service: issues what the filter verifies (see the
//! contract crate) and feeds it keys and revocations.

pub mod config;
pub mod domain;
pub mod error;
pub mod extract;
pub mod feed;
pub mod feed_notify;
pub mod kek;
pub mod keys;
pub mod mail_budget;
pub mod mailer;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod store;
pub mod throttle;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::domain::password::Hasher;
use crate::feed::Feed;
use crate::keys::KeyRing;
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::store::{AuditEntry, Store};
use crate::throttle::Throttle;

/// Seconds since the Unix epoch: the one clock of the service.
pub fn now() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub keys: KeyRing,
    pub feed: Feed,
    pub mailer: Box<dyn Mailer>,
    pub hasher: Hasher,
    pub throttle: Throttle,
    pub metrics: Metrics,
}

#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

fn start_err(e: impl std::fmt::Display) -> StartError {
    StartError(e.to_string())
}

/// Opens the store chosen by the database URL (`sqlite:` or `postgres://`).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError(format!("cannot create data dir {}: {e}", config.data_dir.display())))?;
    // The database holds the private signing keys: owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let current = config.kek.current.ok_or_else(|| {
        StartError(
            "no key-encryption key: set AUTHFLOW_KEK (32 random bytes in base64: `openssl rand -base64 32`) \
             or AUTHFLOW_KEK_FILE; it protects the TOTP secrets and signing keys in the database"
                .into(),
        )
    })?;
    let kek = kek::Kek::new(&current, &config.kek.previous).map_err(StartError)?;
    store::open(&config.database_url, Arc::new(kek)).await.map_err(start_err)
}

/// Everything the routes need: store, keys (generated on first start), feed state, mailer.
pub async fn build_state(config: Config) -> Result<Arc<AppState>, StartError> {
    let store = open_store(&config).await?;
    let now = now();
    let ttl = i64::try_from(config.access_ttl.as_secs()).unwrap_or(900);
    let keys = KeyRing::load(store.as_ref(), config.signing_alg, ttl, now).await.map_err(start_err)?;
    let feed = Feed::load(store.as_ref(), config.revocation_retention.as_secs(), config.revocation_max_waiters, now).await.map_err(start_err)?;
    let mailer = mailer::from_config(&config).map_err(StartError)?;
    let hasher = Hasher::new(config.password_hash_memory_kib, config.password_hash_iterations).map_err(StartError)?;
    let throttle = Throttle::new(config.lockout_base, config.lockout_max);
    Ok(Arc::new(AppState { config, store, keys, feed, mailer, hasher, throttle, metrics: Metrics::default() }))
}

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

/// Builds the state, binds `config.listen` (port 0 picks a free one), serves.
pub async fn spawn(config: Config) -> Result<Running, StartError> {
    let listen = config.listen;
    let state = build_state(config).await?;
    let listener = TcpListener::bind(listen).await.map_err(|e| StartError(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(start_err)?;
    let router = app(Arc::clone(&state));
    let server = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    let maintenance = tokio::spawn(maintenance(Arc::clone(&state)));
    if state.store.shared_by_instances() {
        tokio::spawn(follow_shared_state(Arc::clone(&state)));
        tokio::spawn(follow_feed_notifications(Arc::clone(&state)));
    }
    Ok(Running { addr, state, server, maintenance })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
/// milliseconds; the periodic follow below stays as the safety net.
async fn follow_feed_notifications(state: Arc<AppState>) {
    let wake = Arc::new(tokio::sync::Notify::new());
    if !state.store.notify_feed_changes(Arc::clone(&wake)) {
        return;
    }
    loop {
        wake.notified().await;
        if let Err(e) = state.feed.sync(state.store.as_ref(), now()).await {
            tracing::warn!(error = %e, "feed sync failed");
        }
    }
}

/// With several instances on one database: picks up the feed events and the
/// signing keys the others write.
async fn follow_shared_state(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(FEED_FOLLOW_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        round = round.wrapping_add(1);
        tick.tick().await;
        if let Err(e) = state.feed.sync(state.store.as_ref(), now()).await {
            tracing::warn!(error = %e, "feed sync failed");
        }
        if round.is_multiple_of(KEY_RELOAD_EVERY) {
            if let Err(e) = state.keys.reload(state.store.as_ref()).await {
                tracing::warn!(error = %e, "key reload failed");
            }
        }
    }
}

/// Periodically prunes expired rows and picks up feed events written by
/// other processes (e.g. the CLI).
async fn maintenance(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.config.maintenance_interval);
    loop {
        tick.tick().await;
        let now = now();
        if let Err(e) = state.store.prune(now).await {
            tracing::warn!(error = %e, "prune failed");
        }
        if let Err(e) = state.store.prune_signin_failures(now, now.saturating_sub(state.throttle.quiet_secs())).await {
            tracing::warn!(error = %e, "sign-in throttle prune failed");
        }
        match state.feed.prune(state.store.as_ref(), now).await {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "expired revocation entries pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "feed prune failed"),
        }
        if let Err(e) = state.feed.sync(state.store.as_ref(), now).await {
            tracing::warn!(error = %e, "feed sync failed");
        }
        if let Err(e) = state.keys.reload(state.store.as_ref()).await {
            tracing::warn!(error = %e, "key reload failed");
        }
        match state.keys.forget_retired_private_keys(state.store.as_ref(), now).await {
            Ok(n) if n > 0 => tracing::info!(keys = n, "private halves of retired signing keys deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retired key cleanup failed"),
        }
        if let Err(e) = state.store.prune_mail_budget(now - mail_budget::WINDOW_SECS).await {
            tracing::warn!(error = %e, "mail budget prune failed");
        }
        let retention = i64::try_from(state.config.audit_retention.as_secs()).unwrap_or(i64::MAX);
        match state.store.prune_audit(now.saturating_sub(retention)).await {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "expired audit rows deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit prune failed"),
        }
    }
}

/// Writes one audit row; a failure is logged, never fatal to the request.
pub async fn audit(state: &AppState, client: Option<&extract::Client>, event: &str, outcome: &str, user_id: Option<&str>, email: Option<&str>) {
    let entry = AuditEntry {
        at: now(),
        event: event.to_owned(),
        outcome: outcome.to_owned(),
        user_id: user_id.map(str::to_owned),
        email: email.map(str::to_owned),
        ip: client.map(|c| c.ip.clone()),
        user_agent: client.map(|c| c.user_agent.clone()),
        detail: None,
    };
    if let Err(e) = state.store.audit(&entry).await {
        tracing::warn!(error = %e, event, "audit write failed");
    }
}
