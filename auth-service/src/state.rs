//! What every request handler shares: the settings, the store, the signing
//! keys, the feed, the mailer, and the counters — built once at start-up.

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::clock::now;
use crate::config::Config;
use crate::domain::password::Hasher;
use crate::error::StartError;
use crate::feed::Feed;
use crate::kek::{DerivedKeys, Kek};
use crate::keys::KeyRing;
use crate::mailer::{self, Mailer};
use crate::metrics::Metrics;
use crate::password_work::PasswordWork;
use crate::store::{self, Opening, Store};
use crate::throttle::Throttle;

pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub keys: KeyRing,
    pub feed: Feed,
    /// Shared with the tasks that deliver mail after a request is answered.
    pub mailer: Arc<dyn Mailer>,
    /// Runs every argon2id hash and verification, a bounded number at once.
    pub password_work: PasswordWork,
    /// Runs the mail work requests leave behind, a bounded number at once.
    pub background: crate::background::Background,
    pub throttle: Throttle,
    pub metrics: Metrics,
    /// Signs and checks DPoP server nonces: derived from the KEK, so every
    /// instance sharing the database (and so the KEK) accepts the others'
    /// nonces, across a KEK rotation too.
    pub dpop_nonce_keys: DerivedKeys,
    /// Tags the pages' CSRF tokens, refresh cookies and TOTP enrolment pages:
    /// derived from the KEK, so what one instance tagged passes at every
    /// other, and browsers stay signed in across a KEK rotation.
    pub page_keys: DerivedKeys,
    /// Tags refresh tokens with their session (`crate::refresh_tokens`), so
    /// one pushed out of the session's history is still known as its own.
    pub refresh_keys: DerivedKeys,
    /// Keys the stored form of mailed sign-in codes (`crate::signin_codes`).
    pub signin_code_keys: DerivedKeys,
    /// Refusals for a limit recently audited (`audit::record_throttled`).
    pub audit_repeats: crate::audit::Repeats,
}

/// Opens the store chosen by the database URL (`sqlite:` or `postgres://`).
pub async fn open_store(config: &Config, opening: Opening) -> Result<Arc<dyn Store>, StartError> {
    let kek = kek(config)?;
    open_store_with(config, kek, opening).await
}

/// The configured key-encryption key (required to start).
fn kek(config: &Config) -> Result<Arc<Kek>, StartError> {
    let current = config.kek.current.ok_or_else(|| {
        StartError(
            "no key-encryption key: set `kek.key` (env AUTHFLOW_KEK__KEY; 32 random bytes in base64: \
             `openssl rand -base64 32`) or `kek.key_file` (env AUTHFLOW_KEK__KEY_FILE); it protects the TOTP \
             secrets and signing keys in the database"
                .into(),
        )
    })?;
    Ok(Arc::new(
        Kek::new(&current, &config.kek.previous).map_err(StartError)?,
    ))
}

async fn open_store_with(
    config: &Config,
    kek: Arc<Kek>,
    opening: Opening,
) -> Result<Arc<dyn Store>, StartError> {
    let url = config.database.url.expose_secret();
    let production = config.environment == crate::config::Environment::Production;
    if opening != Opening::CreateIfMissing {
        return store::open(url, kek, production, opening)
            .await
            .map_err(StartError::from_display);
    }
    std::fs::create_dir_all(&config.server.data_dir).map_err(|e| {
        StartError(format!(
            "cannot create data dir {}: {e}",
            config.server.data_dir.display()
        ))
    })?;
    // The database holds the private signing keys: owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            &config.server.data_dir,
            std::fs::Permissions::from_mode(0o700),
        );
    }
    store::open(url, kek, production, opening)
        .await
        .map_err(StartError::from_display)
}

/// Everything the routes need: store, keys (generated on first start), feed state, mailer.
pub async fn build_state(config: Config, opening: Opening) -> Result<Arc<AppState>, StartError> {
    let kek = kek(&config)?;
    let store = open_store_with(&config, Arc::clone(&kek), opening).await?;
    crate::email_upgrade::normalize_stored_emails(store.as_ref())
        .await
        .map_err(StartError::from_display)?;
    let dpop_nonce_keys = kek.derive_keys("dpop-nonce").map_err(StartError)?;
    let page_keys = kek.derive_keys("browser-csrf").map_err(StartError)?;
    let refresh_keys = kek
        .derive_keys(crate::refresh_tokens::KEY_PURPOSE)
        .map_err(StartError)?;
    let signin_code_keys = kek
        .derive_keys(crate::signin_codes::KEY_PURPOSE)
        .map_err(StartError)?;
    let now = now();
    let ttl = i64::try_from(config.tokens.access_ttl.as_secs()).unwrap_or(900);
    let keys = KeyRing::load(store.as_ref(), config.keys.signing_alg, ttl, now)
        .await
        .map_err(StartError::from_display)?;
    let feed = Feed::load(
        store.as_ref(),
        config.revocation.retention.as_secs(),
        config.revocation.max_waiters,
        // (Also where the bound a stepped clock cannot move starts counting.)
        crate::clock::forget_now(),
    )
    .await
    .map_err(StartError::from_display)?
    .with_max_staleness(config.revocation.max_staleness);
    let mailer: Arc<dyn Mailer> = mailer::from_config(&config).map_err(StartError)?.into();
    let hasher = Hasher::new(
        config.passwords.hash_memory_kib,
        config.passwords.hash_iterations,
    )
    .map_err(StartError)?;
    let password_work = PasswordWork::new(
        hasher,
        config.limits.password_hash_concurrency,
        config.limits.password_hash_wait,
    );
    let throttle = Throttle::new(config.throttle.lockout_base, config.throttle.lockout_max);
    let background = crate::background::Background::new(config.limits.background_tasks);
    Ok(Arc::new(AppState {
        config,
        store,
        keys,
        feed,
        mailer,
        password_work,
        background,
        throttle,
        metrics: Metrics::default(),
        dpop_nonce_keys,
        page_keys,
        refresh_keys,
        signin_code_keys,
        audit_repeats: crate::audit::Repeats::default(),
    }))
}
