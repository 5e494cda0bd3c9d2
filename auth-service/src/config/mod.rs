//! Configuration in nested sections (`[server]`, `[tokens]`, …): a TOML file
//! (optional) overlaid with `AUTHFLOW_<SECTION>__<FIELD>` environment
//! variables ([`sources`]), extracted into [`raw::RawConfig`] and validated
//! into [`Config`] in one place ([`raw`]). Every error names the setting and
//! the file key or variable it came from; secrets never show in `Debug`.

mod raw;
pub mod sources;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use authflow_contract::fingerprint::DeviceAttribute;
use authflow_contract::Algorithm;
use secrecy::SecretString;

pub use raw::RawConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    /// As written in `environment`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub environment: Environment,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub tokens: TokenConfig,
    pub keys: KeyConfig,
    pub accounts: AccountConfig,
    pub passwords: PasswordConfig,
    pub throttle: ThrottleConfig,
    pub sessions: SessionConfig,
    pub mail: MailConfig,
    pub maintenance: MaintenanceConfig,
    pub revocation: RevocationConfig,
    pub kek: KekConfig,
    pub dpop: DpopConfig,
    pub limits: LimitsConfig,
}

/// `[server]`: the listener and the HTTP surface.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Created if missing: the SQLite database (by default) and the outbox.
    pub data_dir: PathBuf,
    pub dev_endpoints: bool,
    pub body_limit_bytes: usize,
    /// Trusted proxies in front of the service, each appending to
    /// `x-forwarded-for`: the client address (throttling, audit, the
    /// `client-ip-prefix` attribute) is the entry this many hops from the
    /// right; 0 = the peer address. Envoy's setting of the same name.
    pub xff_num_trusted_hops: u32,
    /// The peers whose `x-forwarded-for` is read (`xff_num_trusted_hops`):
    /// the proxies in front. A request from any other peer (one that reaches
    /// the service directly, past the proxies) is taken at its peer
    /// address, whatever it wrote. Empty: every peer is trusted.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a connection may take to send a request head (also how
    /// long an idle keep-alive connection stays open): a client that
    /// trickles its headers, or never sends any, is cut off after it
    /// instead of holding a task and a socket forever. A client that
    /// accepts none of its answer for as long is cut off too.
    pub header_read_timeout: Duration,
    /// How long a request's body may take to arrive, in all (not between
    /// bytes: a trickle of one byte a second would pass that): past it the
    /// body is refused (`400`) and the request's task freed.
    pub request_body_timeout: Duration,
}

impl ServerConfig {
    /// The `xff_num_trusted_hops` to read a request from `peer` with: 0 (its
    /// peer address) unless `trusted_proxies` is empty or holds the peer.
    pub fn trusted_hops_for(&self, peer: Option<SocketAddr>) -> u32 {
        let trusted = self.trusted_proxies.is_empty()
            || peer.is_some_and(|p| {
                // An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`,
                // and may be listed either way: both spellings are one proxy.
                let ip = p.ip().to_canonical();
                let mapped = match ip {
                    std::net::IpAddr::V4(v4) => std::net::IpAddr::V6(v4.to_ipv6_mapped()),
                    v6 => v6,
                };
                self.trusted_proxies
                    .iter()
                    .any(|net| net.contains(&ip) || net.contains(&mapped))
            });
        if trusted {
            self.xff_num_trusted_hops
        } else {
            0
        }
    }
}

/// [`ServerConfig::header_read_timeout`]: generous for any real client
/// (a proxy sends a whole head at once), short for one that holds sockets.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// [`ServerConfig::request_body_timeout`]: bodies are small (`body_limit_bytes`,
/// 1 MiB at most), so this is minutes of slack for a slow link.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// `[database]`.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// May carry the database password: `Debug` prints `[REDACTED]`.
    pub url: SecretString,
}

/// `[tokens]`: what every issued token says and how long it lives.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub fingerprint_attributes: Vec<DeviceAttribute>,
}

/// `[keys]`: the signing key ring.
#[derive(Clone, Debug)]
pub struct KeyConfig {
    pub signing_alg: Algorithm,
    /// A rotated-in key is published this long before it signs.
    pub publish_lead: Duration,
}

/// `[accounts]`: sign-in challenges, mailed links, the second factor.
#[derive(Clone, Debug)]
pub struct AccountConfig {
    pub challenge_ttl: Duration,
    pub challenge_max_attempts: u32,
    pub email_token_ttl: Duration,
    pub reset_token_ttl: Duration,
    /// An account whose address was never verified is deleted this long
    /// after it was begun, once no link of it is live.
    pub unverified_retention: Duration,
    pub totp_issuer: String,
    /// Public origin of the browser pages (`/auth/…`) for links in mails,
    /// as `scheme://host[:port]` (https in production); `None`: the issuer's.
    pub pages_url: Option<String>,
}

impl AccountConfig {
    /// The origin mailed links start with (no trailing `/`): the issuer's
    /// origin by default, not the issuer, whose path (`/realms/main`) the
    /// pages are not under: a reset link there went to whatever the path
    /// routes to, one-time token and all.
    pub fn pages_url<'a>(&'a self, issuer: &'a str) -> &'a str {
        match self.pages_url.as_deref() {
            Some(url) => url.trim_end_matches('/'),
            None => origin_of(issuer),
        }
    }
}

/// `scheme://authority` of a URL (the whole text when it has no path).
fn origin_of(url: &str) -> &str {
    let authority_at = url.find("://").map_or(0, |at| at + 3);
    let path_at = url
        .get(authority_at..)
        .and_then(|rest| rest.find('/'))
        .map_or(url.len(), |at| authority_at + at);
    url.get(..path_at).unwrap_or(url)
}

/// `[passwords]`: the argon2id cost.
#[derive(Clone, Debug)]
pub struct PasswordConfig {
    pub hash_memory_kib: u32,
    pub hash_iterations: u32,
}

/// `[throttle]`: failure counting and lockouts.
#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    pub account_max_failures: u32,
    pub ip_max_failures: u32,
    pub lockout_base: Duration,
    pub lockout_max: Duration,
    /// Wrong second-factor codes per account (across challenges) before it locks.
    pub second_factor_max_failures: u32,
    /// Cap of the doubling second-factor lockout.
    pub second_factor_lockout_max: Duration,
    /// Sign-ups per client address before it is locked out (with the same
    /// backoff as sign-in failures); each one costs a password hash.
    pub ip_max_signups: u32,
    /// The IPv6 prefix every per-address limit counts as one client (an
    /// IPv6 client holds a whole /64 at least); IPv4 addresses count alone.
    pub ipv6_prefix_len: u8,
    /// Refresh-token rotations per session within any hour; past it a
    /// refresh answers 429 with `Retry-After` (the token stays usable).
    /// At most [`crate::store::ROTATED_REFRESH_TOKENS_KEPT`]: the limit is
    /// counted from the rotations a session keeps.
    pub refresh_max_per_hour: u32,
}

/// `[sessions]`: what one user may hold.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Live sessions per user: a sign-in past it ends the user's least
    /// recently used ones. Each live session is one revocation event when
    /// they all end at once (logout-all, a password reset, a ban).
    pub max_per_user: u32,
}

/// `[mail]` (and `[smtp]` for the relay).
#[derive(Clone, Debug)]
pub struct MailConfig {
    pub transport: MailerConfig,
    pub from: String,
    /// Mails an anonymous client can trigger (sign-up, password reset) per
    /// recipient and per client address, each per hour.
    pub max_per_recipient_per_hour: u32,
    pub max_per_client_per_hour: u32,
    /// Sign-in code mails to one account per hour: each sign-in started with
    /// the right password mails one, so the password alone could otherwise
    /// flood the owner's inbox through the relay.
    pub max_signin_codes_per_hour: u32,
    /// How long one delivery to the SMTP relay may take in all (connection,
    /// TLS, every command): past it the mail is given up (and logged). A mail
    /// task holds its `limits.background_tasks` slot until then, and a
    /// stopping service waits about this long for deliveries in flight.
    pub delivery_timeout: Duration,
}

#[derive(Clone, Debug)]
pub enum MailerConfig {
    /// Every message is written under `<data_dir>/outbox/` (and readable via
    /// the dev endpoint when enabled).
    DevOutbox,
    /// SMTP (optionally authenticated) to a relay, over TLS unless
    /// `smtp.tls = "none"` was chosen.
    Smtp {
        host: String,
        port: u16,
        username: Option<String>,
        password: Option<SecretString>,
        tls: SmtpTls,
        /// Extra trust root(s) for the relay's certificate (a private CA), PEM.
        ca_file: Option<PathBuf>,
    },
}

/// How the connection to the SMTP relay is protected (`smtp.tls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required: a relay
    /// that does not offer it gets no credentials and no mail.
    StartTls,
    /// TLS from the first byte (SMTPS, RFC 8314; port 465).
    Implicit,
    /// No TLS at all: only when set explicitly, and credentials only to a
    /// relay on a loopback address.
    None,
}

impl SmtpTls {
    pub fn name(self) -> &'static str {
        match self {
            Self::StartTls => "starttls",
            Self::Implicit => "implicit",
            Self::None => "none",
        }
    }
}

/// `[maintenance]`: the periodic task.
#[derive(Clone, Debug)]
pub struct MaintenanceConfig {
    /// Pruning, feed and key reload period.
    pub interval: Duration,
    /// Audit rows older than this are deleted by the maintenance task.
    pub audit_retention: Duration,
}

/// `[revocation]`: the revocation feed.
#[derive(Clone, Debug)]
pub struct RevocationConfig {
    /// How long past its token's `exp` a revocation is kept, published and
    /// honoured: at least the largest `clock_skew_secs` of any filter.
    pub retention: Duration,
    /// Long polls of the revocation feed held open at once; past it a
    /// `wait` is answered at once, like a plain poll.
    pub max_waiters: usize,
    /// How long after its last sync that worked this process still trusts
    /// its own list; past it, its own token checks answer 503.
    pub max_staleness: Duration,
}

/// `[kek]`: the key-encryption key(s) for secrets at rest (see `kek.rs`).
/// `Debug` prints nothing of them.
#[derive(Clone, Default)]
pub struct KekConfig {
    /// Seals and opens; required to start (`kek.key` or `kek.key_file`).
    pub current: Option<[u8; 32]>,
    /// Open only, during a rotation (`kek.previous`).
    pub previous: Vec<[u8; 32]>,
}

impl std::fmt::Debug for KekConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KekConfig")
            .field("current", &self.current.map(|_| "<redacted>"))
            .field("previous", &self.previous.len())
            .finish()
    }
}

/// `[dpop]`: DPoP (RFC 9449) at this service's token endpoints and own endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopConfig {
    /// Proof algorithms accepted (advertised as `dpop_signing_alg_values_supported`).
    pub algorithms: Vec<Algorithm>,
    /// Token requests need a server nonce (RFC 9449 §8).
    pub require_nonce: bool,
    /// Other origins (`scheme://host[:port]`) clients reach this service's
    /// endpoints at, besides the issuer's: a proxy in front of it whose
    /// filter checks the same proof against the origin the client used.
    pub origins: Vec<String>,
}

/// `[limits]`: how much of the machine one kind of work may take.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// argon2id hashes and verifications running at once (each holds
    /// `passwords.hash_memory_kib` of memory and a core).
    pub password_hash_concurrency: usize,
    /// How long a request waits for one of them before it is answered 503.
    pub password_hash_wait: Duration,
    /// Mail tasks left running after an answer (password resets,
    /// verification links sent again) at once; a reset request past it is answered 503.
    pub background_tasks: usize,
}

/// Settings whose values are secret: never quoted in an error either.
const SECRET_PATHS: &[&str] = &["database.url", "smtp.password", "kek.key", "kek.previous"];

#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration error: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Why this service, configured as development, looks deployed: a
    /// listener other hosts can reach, or an https issuer. Each warning says
    /// that the production checks are off and how to turn them on; none in
    /// production, nor for a development service on a loopback address.
    pub fn development_warnings(&self) -> Vec<String> {
        let mut warnings = self.forwarded_for_warning().into_iter().collect::<Vec<_>>();
        warnings.extend(self.development_reasons());
        warnings
    }

    /// With `xff_num_trusted_hops` set, no `trusted_proxies`, and a listener
    /// other hosts can reach: whoever reaches the service directly chooses
    /// the address it is throttled and audited under.
    fn forwarded_for_warning(&self) -> Option<String> {
        let server = &self.server;
        (server.xff_num_trusted_hops > 0
            && server.trusted_proxies.is_empty()
            && !server.listen.ip().is_loopback())
        .then(|| {
            format!(
                "server.xff_num_trusted_hops is {} and server.trusted_proxies is empty: a client that \
                 reaches {} directly, past the proxies, chooses the address it is throttled and \
                 audited under (x-forwarded-for); list the proxies' addresses in \
                 server.trusted_proxies (CIDR ranges)",
                server.xff_num_trusted_hops, server.listen
            )
        })
    }

    fn development_reasons(&self) -> Vec<String> {
        if self.environment != Environment::Development {
            return Vec::new();
        }
        let mut reasons = Vec::new();
        if !self.server.listen.ip().is_loopback() {
            reasons.push(format!(
                "server.listen {} is not a loopback address",
                self.server.listen
            ));
        }
        if self.tokens.issuer.starts_with("https://") {
            reasons.push(format!("tokens.issuer {} is https", self.tokens.issuer));
        }
        reasons
            .into_iter()
            .map(|reason| {
                format!(
                    "environment is development but {reason}: the production checks are off \
                     (https issuer and pages, mail over SMTP, the password-hash floor, no development \
                     endpoints, explicit audiences); set AUTHFLOW_ENVIRONMENT=production \
                     (or environment = \"production\" in the file) to turn them on"
                )
            })
            .collect()
    }

    /// Reads `file` (if any), overlays the process environment, validates.
    /// Deprecated flat names that were used are logged with their new names.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // `vars_os`: `std::env::vars` panics on any variable that is not
        // UTF-8, another program's included. Only the service's own must be.
        let mut env: Vec<(String, String)> = Vec::new();
        for (name, value) in std::env::vars_os() {
            let shown = name.to_string_lossy();
            // Any case: a lower-case prefix is refused by name, not skipped.
            let prefix = shown.get(..sources::ENV_PREFIX.len());
            if !prefix.is_some_and(|p| p.eq_ignore_ascii_case(sources::ENV_PREFIX)) {
                continue;
            }
            match (name.to_str(), value.into_string()) {
                (Some(name), Ok(value)) => env.push((name.to_owned(), value)),
                // The value is not repeated: it may be a secret.
                _ => {
                    return Err(ConfigError(format!(
                        "environment variable `{shown}`: its name or value is not UTF-8 text"
                    )))
                }
            }
        }
        let (config, report) = Self::load_reporting(file, &env)?;
        if !report.overridden.is_empty() {
            tracing::warn!(
                settings = %report.overridden.join(", "),
                "settings of the configuration file replaced by environment variables (AUTHFLOW_…)"
            );
        }
        let deprecated = report.deprecated;
        // One line, not one per name: the shipped deployment files use them.
        if !deprecated.is_empty() {
            let renames: Vec<String> = deprecated
                .iter()
                .map(|(old, new)| format!("{old} → {new}"))
                .collect();
            tracing::warn!(renames = %renames.join(", "), "deprecated flat setting names (still honoured; a nested name wins)");
        }
        Ok(config)
    }

    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        Self::load_reporting(file, env).map(|(config, _)| config)
    }

    /// As [`Config::load_from`], also returning what loading noticed: each
    /// deprecated flat name used, and the file's settings a variable replaced.
    pub fn load_reporting(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<(Self, sources::Report), ConfigError> {
        let (figment, report) = sources::layered(file, env)?;
        // Lossy: environment values are text; numbers and booleans
        // (true/false, yes/no, on/off, 1/0) are read out of it.
        let raw: RawConfig = figment
            .extract_lossy()
            .map_err(|e| extraction_error(&figment, e))?;
        let config = raw.validate().map_err(|invalid| {
            ConfigError(format!(
                "`{}` ({}): {}",
                invalid.path,
                sources::origin_of(&figment, invalid.path),
                invalid.why
            ))
        })?;
        if config.environment == Environment::Production {
            refuse_secrets_open_to_every_account(file, &report.file_secrets)?;
        }
        // A leftover export or an image's own `ENV` would otherwise run a
        // service its file declares production without production's checks.
        let declared = report.file_environment.as_deref().map(str::trim);
        if declared.is_some_and(|name| name.eq_ignore_ascii_case(Environment::Production.name()))
            && config.environment != Environment::Production
        {
            return Err(ConfigError(format!(
                "`environment`: the file says production, the environment ({}ENVIRONMENT) says {}: a variable may not turn production's checks off; remove it or change the file",
                sources::ENV_PREFIX,
                config.environment.name()
            )));
        }
        Ok((config, report))
    }

    /// Defaults only (development), with the data directory given: for tests.
    pub fn for_data_dir(data_dir: &Path) -> Result<Self, ConfigError> {
        let mut raw = RawConfig::default();
        raw.server.data_dir = Some(data_dir.display().to_string());
        raw.validate()
            .map_err(|invalid| ConfigError(format!("`{}`: {}", invalid.path, invalid.why)))
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.server.data_dir.join("outbox")
    }
}

/// A configuration file holding a secret is refused, in production, when
/// every account on the host can read it: the rule of `kek.key_file`, for
/// the secret written in the file itself.
fn refuse_secrets_open_to_every_account(
    file: Option<&Path>,
    secrets: &[String],
) -> Result<(), ConfigError> {
    let (Some(file), Some(first)) = (file, secrets.first()) else {
        return Ok(());
    };
    let Some(mode) = raw::open_to_every_account(file) else {
        return Ok(());
    };
    Err(ConfigError(format!(
        "{} holds {} and is open to every account (mode {mode:o}): `chmod o-rwx` it, \
         or pass the secret in its variable ({})",
        file.display(),
        secrets.join(", "),
        sources::env_var_of(first),
    )))
}

/// A type error or unknown key from extraction, named by its dotted path
/// and where it was written; a secret's value is not repeated.
fn extraction_error(figment: &figment::Figment, error: figment::Error) -> ConfigError {
    let mut path = error.path.join(".");
    if let figment::error::Kind::UnknownField(field, _) = &error.kind {
        // The path may stop at the section: the key itself is the field.
        if error.path.last() != Some(field) {
            path = if path.is_empty() {
                field.clone()
            } else {
                format!("{path}.{field}")
            };
        }
    }
    let origin = match &error.metadata {
        Some(md) => sources::describe(md, &path),
        None => sources::origin_of(figment, &path),
    };
    let why = match &error.kind {
        figment::error::Kind::InvalidType(_, expected) if SECRET_PATHS.contains(&path.as_str()) => {
            format!("expected {expected}")
        }
        figment::error::Kind::UnknownField(field, expected) => {
            format!(
                "unknown setting `{field}`; expected one of: {}",
                expected.join(", ")
            )
        }
        kind => kind.to_string(),
    };
    ConfigError(format!("`{path}` ({origin}): {why}"))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authflow.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// The session cap is at least one (the new session) and stays well
    /// inside one feed delta (every session ending at once).
    #[test]
    fn the_session_cap_is_bounded() {
        let load = |value: &str| {
            Config::load_from(None, &env(&[("AUTHFLOW_SESSIONS__MAX_PER_USER", value)]))
        };
        assert_eq!(
            Config::load_from(None, &[]).unwrap().sessions.max_per_user,
            100
        );
        assert_eq!(load("5").unwrap().sessions.max_per_user, 5);
        for refused in ["0", "1001"] {
            let e = load(refused).unwrap_err().to_string();
            assert!(e.contains("sessions.max_per_user"), "{e}");
        }
    }

    /// A client refreshes once per access-token lifetime: the refresh
    /// limit's default leaves room for two, and a limit below one is refused.
    #[test]
    fn the_refresh_limit_follows_the_access_token_lifetime() {
        let load = |pairs: &[(&str, &str)]| Config::load_from(None, &env(pairs));
        assert_eq!(load(&[]).unwrap().throttle.refresh_max_per_hour, 120);
        let short = load(&[("AUTHFLOW_TOKENS__ACCESS_TTL_SECS", "20")]).unwrap();
        assert!(short.throttle.refresh_max_per_hour >= 180);
        assert!(load(&[
            ("AUTHFLOW_TOKENS__ACCESS_TTL_SECS", "20"),
            ("AUTHFLOW_THROTTLE__REFRESH_MAX_PER_HOUR", "100"),
        ])
        .is_err());
        let ok = load(&[
            ("AUTHFLOW_TOKENS__ACCESS_TTL_SECS", "20"),
            ("AUTHFLOW_THROTTLE__REFRESH_MAX_PER_HOUR", "180"),
        ])
        .unwrap();
        assert_eq!(ok.throttle.refresh_max_per_hour, 180);
        // Below 15 s a client refreshing at each expiry needs more rotations
        // an hour than a session keeps (256): such a lifetime is refused,
        // naming the range, rather than every client throttled.
        let err = load(&[("AUTHFLOW_TOKENS__ACCESS_TTL_SECS", "14")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("15..=86400"), "{err}");
        assert!(load(&[("AUTHFLOW_TOKENS__ACCESS_TTL_SECS", "15")]).is_ok());
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.tokens.issuer, "http://127.0.0.1:8081");
        assert_eq!(c.tokens.audiences, vec!["authflow-demo"]);
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(c.tokens.fingerprint_attributes.len(), 2);
        assert!(c.database.url.expose_secret().ends_with("authflow.db"));
        assert!(!c.server.dev_endpoints);
        assert_eq!(c.keys.signing_alg, Algorithm::EdDSA);
    }

    /// The development outbox hands out sign-in codes and reset tokens: it is
    /// served only when asked for by name, whatever the environment, and
    /// never in production.
    #[test]
    fn dev_endpoints_only_when_enabled_explicitly() {
        for vars in [
            vec![],
            vec![("AUTHFLOW_ENVIRONMENT", "development")],
            vec![("AUTHFLOW_SERVER__DEV_ENDPOINTS", "false")],
        ] {
            assert!(
                !Config::load_from(None, &env(&vars))
                    .unwrap()
                    .server
                    .dev_endpoints,
                "{vars:?}"
            );
        }
        let c = Config::for_data_dir(Path::new("/nonexistent")).unwrap();
        assert!(!c.server.dev_endpoints, "the defaults the tests start from");
        for vars in [
            vec![("AUTHFLOW_SERVER__DEV_ENDPOINTS", "true")],
            vec![("AUTHFLOW_DEV_ENDPOINTS", "yes")],
            vec![
                ("AUTHFLOW_ENVIRONMENT", "development"),
                ("AUTHFLOW_SERVER__DEV_ENDPOINTS", "on"),
            ],
        ] {
            assert!(
                Config::load_from(None, &env(&vars))
                    .unwrap()
                    .server
                    .dev_endpoints,
                "{vars:?}"
            );
        }
        let (_dir, path) = file_with("[server]\ndev_endpoints = true\n");
        assert!(
            Config::load_from(Some(&path), &[])
                .unwrap()
                .server
                .dev_endpoints
        );
        let production = [
            ("AUTHFLOW_ENVIRONMENT", "production"),
            ("AUTHFLOW_TOKENS__ISSUER", "https://a.example"),
            ("AUTHFLOW_TOKENS__AUDIENCES", "api.example.com"),
            ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
            ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
            ("AUTHFLOW_SMTP__HOST", "relay.example"),
        ];
        assert!(
            !Config::load_from(None, &env(&production))
                .unwrap()
                .server
                .dev_endpoints
        );
        let mut vars = production.to_vec();
        vars.push(("AUTHFLOW_SERVER__DEV_ENDPOINTS", "true"));
        let e = Config::load_from(None, &env(&vars))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.dev_endpoints") && e.contains("AUTHFLOW_SERVER__DEV_ENDPOINTS"),
            "{e}"
        );
    }

    /// An issuer the revocation feed's header cannot carry whole (and every
    /// filter would refuse) stops the service at startup.
    #[test]
    fn an_issuer_longer_than_the_feed_carries_is_refused() {
        let limit = authflow_contract::revocation::blob::MAX_ISSUER_LEN;
        let fits = format!("https://a.example/{}", "a".repeat(limit - 18));
        assert_eq!(fits.len(), limit);
        let c = Config::load_from(None, &env(&[("AUTHFLOW_TOKENS__ISSUER", &fits)])).unwrap();
        assert_eq!(c.tokens.issuer, fits);
        let long = format!("{fits}a");
        let e = Config::load_from(None, &env(&[("AUTHFLOW_TOKENS__ISSUER", &long)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokens.issuer") && e.contains("at most"), "{e}");
    }

    /// Production refused no Argon2 cost above the parser's bounds: 1 MiB
    /// and one pass (a development setting) hashed real users' passwords.
    /// Below OWASP's floor it is refused in production, kept in development.
    #[test]
    fn production_refuses_a_password_hash_below_the_owasp_floor() {
        let production = [
            ("AUTHFLOW_ENVIRONMENT", "production"),
            ("AUTHFLOW_TOKENS__ISSUER", "https://a.example"),
            ("AUTHFLOW_TOKENS__AUDIENCES", "api.example.com"),
            ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
            ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
            ("AUTHFLOW_SMTP__HOST", "relay.example"),
        ];
        for (memory, passes, ok) in [
            ("1024", "1", false),
            ("8192", "4", false),
            ("19456", "1", false),
            ("19456", "2", true),
            ("7168", "5", true),
            ("47104", "1", true),
        ] {
            let mut vars = production.to_vec();
            vars.extend([
                ("AUTHFLOW_PASSWORDS__HASH_MEMORY_KIB", memory),
                ("AUTHFLOW_PASSWORDS__HASH_ITERATIONS", passes),
            ]);
            let loaded = Config::load_from(None, &env(&vars));
            assert_eq!(
                loaded.is_ok(),
                ok,
                "{memory} × {passes}: {:?}",
                loaded.err()
            );
            if let Err(e) = loaded {
                let e = e.to_string();
                assert!(e.contains("AUTHFLOW_PASSWORDS__HASH_MEMORY_KIB"), "{e}");
            }
            let development = [
                ("AUTHFLOW_PASSWORDS__HASH_MEMORY_KIB", memory),
                ("AUTHFLOW_PASSWORDS__HASH_ITERATIONS", passes),
            ];
            Config::load_from(None, &env(&development)).unwrap();
        }
    }

    /// A production KEK file every account on the host could read opened
    /// every sealed secret for all of them: refused (group read stays allowed).
    #[cfg(unix)]
    #[test]
    fn production_refuses_a_kek_file_every_account_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kek");
        std::fs::write(&file, crate::kek::generate_key()).unwrap();
        let path = file.to_str().unwrap();
        for (mode, ok) in [(0o644, false), (0o604, false), (0o640, true), (0o600, true)] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let production = [
                ("AUTHFLOW_ENVIRONMENT", "production"),
                ("AUTHFLOW_TOKENS__ISSUER", "https://a.example"),
                ("AUTHFLOW_TOKENS__AUDIENCES", "api.example.com"),
                ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
                ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
                ("AUTHFLOW_SMTP__HOST", "relay.example"),
                ("AUTHFLOW_KEK__KEY_FILE", path),
            ];
            let loaded = Config::load_from(None, &env(&production));
            assert_eq!(loaded.is_ok(), ok, "{mode:o}: {:?}", loaded.err());
            if let Err(e) = loaded {
                let e = e.to_string();
                assert!(
                    e.contains("AUTHFLOW_KEK__KEY_FILE") && e.contains("o-rwx"),
                    "{e}"
                );
            }
            // Development (a key generated for a demo) is not checked.
            Config::load_from(None, &env(&[("AUTHFLOW_KEK__KEY_FILE", path)])).unwrap();
        }
    }

    /// A configuration file every account on the host could write was read:
    /// any of them could set `environment = "development"` and
    /// `server.dev_endpoints = true` (the outbox's codes and reset tokens to
    /// whoever connects). Refused whatever the environment it names.
    #[cfg(unix)]
    #[test]
    fn a_config_file_every_account_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = file_with("environment = \"development\"\n");
        for (mode, ok) in [(0o666, false), (0o602, false), (0o664, true), (0o644, true)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let loaded = Config::load_from(Some(&path), &[]);
            assert_eq!(loaded.is_ok(), ok, "{mode:o}: {:?}", loaded.err());
            if let Err(e) = loaded {
                assert!(e.to_string().contains("o-w"), "{e}");
            }
        }
    }

    /// A production configuration file every account on the host can read
    /// gave them whatever secret it held (the KEK itself, the SMTP password, a
    /// database password), though a KEK file so readable was refused. Such a
    /// file is refused too once it holds a secret; one holding none is fine.
    #[cfg(unix)]
    #[test]
    fn production_refuses_secrets_in_a_config_file_every_account_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let production = env(&[
            ("AUTHFLOW_ENVIRONMENT", "production"),
            ("AUTHFLOW_TOKENS__ISSUER", "https://a.example"),
            ("AUTHFLOW_TOKENS__AUDIENCES", "api.example.com"),
            ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
            ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
            ("AUTHFLOW_SMTP__HOST", "relay.example"),
        ]);
        let key = crate::kek::generate_key();
        let key = key.trim();
        let with_secrets = [
            ("kek.key", format!("[kek]\nkey = \"{key}\"\n")),
            ("kek.key", format!("kek = \"{key}\"\n")),
            ("kek.previous", format!("[kek]\nprevious = [\"{key}\"]\n")),
            (
                "smtp.password",
                "[smtp]\nusername = \"u\"\npassword = \"hunter2\"\n".into(),
            ),
            (
                "database.url",
                "[database]\nurl = \"postgres://authflow:hunter2@db.internal/authflow\"\n".into(),
            ),
            (
                "database.url",
                "[database]\nurl = \"postgres://authflow@db.internal/authflow?password=hunter2\"\n"
                    .into(),
            ),
        ];
        for (setting, text) in &with_secrets {
            let (_dir, path) = file_with(text);
            for (mode, ok) in [(0o644, false), (0o604, false), (0o640, true), (0o600, true)] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                let loaded = Config::load_from(Some(&path), &production);
                assert_eq!(loaded.is_ok(), ok, "{setting} {mode:o}: {:?}", loaded.err());
                if let Err(e) = loaded {
                    let e = e.to_string();
                    assert!(
                        e.contains(setting) && e.contains("o-rwx") && !e.contains("hunter2"),
                        "{e}"
                    );
                }
            }
            // Development (a demo's file) is not checked.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            Config::load_from(Some(&path), &[]).unwrap();
        }
        // No secret in it (the SMTP password in its variable): readable by all is fine.
        let mut production = production;
        production.extend(env(&[
            ("AUTHFLOW_SMTP__USERNAME", "u"),
            ("AUTHFLOW_SMTP__PASSWORD", "hunter2"),
        ]));
        for text in [
            "[database]\nurl = \"postgres://authflow@db.internal/authflow?sslmode=verify-full\"\n",
            "[database]\nurl = \"sqlite:///var/lib/authflow/authflow.db\"\n",
            "[kek]\nprevious = []\n[smtp]\nusername = \"u\"\n",
        ] {
            let (_dir, path) = file_with(text);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let loaded = Config::load_from(Some(&path), &production);
            assert!(loaded.is_ok(), "{text}: {:?}", loaded.err());
        }
    }

    #[test]
    fn dpop_settings_default_to_both_algorithms_without_nonces() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(
            c.dpop,
            DpopConfig {
                algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
                require_nonce: false,
                origins: vec![],
            }
        );
        let c = Config::load_from(
            None,
            &env(&[
                ("AUTHFLOW_DPOP__ALGORITHMS", "EdDSA"),
                ("AUTHFLOW_DPOP__REQUIRE_NONCE", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.dpop,
            DpopConfig {
                algorithms: vec![Algorithm::EdDSA],
                require_nonce: true,
                origins: vec![],
            }
        );
        let c = Config::load_from(
            None,
            &env(&[
                ("AUTHFLOW_DPOP_ALGORITHMS", "EdDSA"),
                ("AUTHFLOW_DPOP_REQUIRE_NONCE", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.dpop,
            DpopConfig {
                algorithms: vec![Algorithm::EdDSA],
                require_nonce: true,
                origins: vec![],
            },
            "the flat names"
        );
        let c = Config::load_from(
            None,
            &env(&[(
                "AUTHFLOW_DPOP__ORIGINS",
                "https://API.Example.test:443, http://127.0.0.1:8080",
            )]),
        )
        .unwrap();
        assert_eq!(
            c.dpop.origins,
            ["https://api.example.test", "http://127.0.0.1:8080"],
            "written as origins"
        );
        for refused in [
            "https://api.example.test/v1",
            "https://u@api.example.test",
            "ftp://api.example.test",
            "https://api.example.test?x",
        ] {
            let e =
                Config::load_from(None, &env(&[("AUTHFLOW_DPOP__ORIGINS", refused)])).unwrap_err();
            assert!(e.to_string().contains("dpop.origins"), "{refused}: {e}");
        }
        for refused in ["RS256", "none", ""] {
            let e = Config::load_from(None, &env(&[("AUTHFLOW_DPOP__ALGORITHMS", refused)]))
                .unwrap_err();
            assert!(
                e.to_string().contains("dpop.algorithms")
                    && e.to_string().contains("AUTHFLOW_DPOP__ALGORITHMS"),
                "{refused}: {e}"
            );
        }
    }

    /// Revocations are kept past their token's `exp` by at least the largest
    /// skew a filter accepts, unless told otherwise, and never by less than
    /// this service's own tolerance.
    #[test]
    fn revocation_retention_covers_every_allowed_skew() {
        use authflow_contract::revocation::MAX_CLOCK_SKEW_SECS;
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(
            c.revocation.retention,
            Duration::from_secs(MAX_CLOCK_SKEW_SECS)
        );
        let c = Config::load_from(
            None,
            &env(&[("AUTHFLOW_REVOCATION__RETENTION_SECS", "120")]),
        )
        .unwrap();
        assert_eq!(c.revocation.retention, Duration::from_secs(120));
        let e = Config::load_from(None, &env(&[("AUTHFLOW_REVOCATION_RETENTION_SECS", "29")]))
            .unwrap_err();
        assert!(e.to_string().contains("revocation.retention_secs"), "{e}");
    }

    /// The service's own checks trust an unsynced list as long as a filter
    /// left at its defaults does, unless told otherwise.
    #[test]
    fn revocation_staleness_defaults_to_the_filters_bound() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.revocation.max_staleness, Duration::from_secs(45));
        let c = Config::load_from(
            None,
            &env(&[("AUTHFLOW_REVOCATION__MAX_STALENESS_SECS", "10")]),
        )
        .unwrap();
        assert_eq!(c.revocation.max_staleness, Duration::from_secs(10));
        let e = Config::load_from(
            None,
            &env(&[("AUTHFLOW_REVOCATION__MAX_STALENESS_SECS", "1")]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("revocation.max_staleness_secs"),
            "{e}"
        );
    }

    /// The file in sections, the environment as `AUTHFLOW_<SECTION>__<FIELD>`.
    #[test]
    fn nested_sections_in_file_and_environment() {
        let (_dir, path) = file_with(
            "environment = \"development\"\n\
             [server]\nlisten = \"127.0.0.1:9\"\nxff_num_trusted_hops = 1\n\
             [tokens]\naccess_ttl_secs = 60\naudiences = [\"a\", \"b\"]\n\
             [throttle]\naccount_max_failures = 7\n\
             [mail]\ntransport = \"smtp\"\n\
             [smtp]\nhost = \"relay.internal\"\nport = 587\n",
        );
        let c = Config::load_from(
            Some(&path),
            &env(&[
                ("AUTHFLOW_TOKENS__ACCESS_TTL_SECS", "120"),
                (
                    "AUTHFLOW_TOKENS__FINGERPRINT_ATTRIBUTES",
                    "user-agent, client-ip-prefix",
                ),
                ("AUTHFLOW_KEYS__SIGNING_ALG", "ES256"),
                ("AUTHFLOW_SERVER__DEV_ENDPOINTS", "off"),
                ("AUTHFLOW_REVOCATION__MAX_WAITERS", "3"),
            ]),
        )
        .unwrap();
        let shown = format!("{c:?}");
        // The environment overrides the file; the rest of the file stays.
        for expected in [
            "listen: 127.0.0.1:9",
            "access_ttl: 120s",
            "account_max_failures: 7",
            "host: \"relay.internal\"",
            "port: 587",
            "ClientIpPrefix",
            "ES256",
            "dev_endpoints: false",
            "max_waiters: 3",
            "xff_num_trusted_hops: 1",
        ] {
            assert!(
                shown.contains(expected),
                "`{expected}` missing from {shown}"
            );
        }
        assert_eq!(c.tokens.audiences, vec!["a", "b"]);
    }

    /// SMTP is over TLS unless `none` is written out: STARTTLS (required) by
    /// default, both spellings of the variables, and no password in clear to
    /// a relay off this machine.
    #[test]
    fn smtp_tls_settings() {
        let smtp = |vars: &[(&str, &str)]| {
            let mut all = vec![
                ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
                ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
                ("AUTHFLOW_SMTP__HOST", "relay.internal"),
            ];
            all.extend_from_slice(vars);
            Config::load_from(None, &env(&all)).map(|c| match c.mail.transport {
                MailerConfig::Smtp {
                    port, tls, ca_file, ..
                } => (port, tls, ca_file),
                MailerConfig::DevOutbox => unreachable!(),
            })
        };
        assert_eq!(smtp(&[]).unwrap(), (25, SmtpTls::StartTls, None));
        assert_eq!(
            smtp(&[("AUTHFLOW_SMTP__TLS", "implicit")]).unwrap(),
            (465, SmtpTls::Implicit, None)
        );
        assert_eq!(
            smtp(&[
                ("AUTHFLOW_SMTP_TLS", "implicit"),
                ("AUTHFLOW_SMTP_PORT", "2465")
            ])
            .unwrap(),
            (2465, SmtpTls::Implicit, None)
        );
        assert_eq!(
            smtp(&[("AUTHFLOW_SMTP__TLS", "none")]).unwrap(),
            (25, SmtpTls::None, None)
        );
        let (_dir, path) = file_with(
            "[mail]\ntransport = \"smtp\"\n[smtp]\nhost = \"relay.internal\"\ntls = \"none\"\n",
        );
        assert!(matches!(
            Config::load_from(Some(&path), &[]).unwrap().mail.transport,
            MailerConfig::Smtp {
                tls: SmtpTls::None,
                ..
            }
        ));

        let e = smtp(&[("AUTHFLOW_SMTP__TLS", "tls")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("smtp.tls")
                && e.contains("AUTHFLOW_SMTP__TLS")
                && e.contains("starttls|implicit|none"),
            "{e}"
        );
        // Credentials over plain SMTP: only to a loopback relay.
        for vars in [
            vec![
                ("AUTHFLOW_SMTP__TLS", "none"),
                ("AUTHFLOW_SMTP__USERNAME", "mailer"),
                ("AUTHFLOW_SMTP__PASSWORD", "pw-5Kd1"),
            ],
            vec![
                ("AUTHFLOW_SMTP_TLS", "none"),
                ("AUTHFLOW_SMTP_PASSWORD", "pw-5Kd1"),
            ],
        ] {
            let e = smtp(&vars).unwrap_err().to_string();
            assert!(
                e.contains("smtp.tls")
                    && e.contains("in clear to relay.internal")
                    && !e.contains("pw-5Kd1"),
                "{e}"
            );
        }
        for host in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            let vars = [
                ("AUTHFLOW_SMTP__HOST", host),
                ("AUTHFLOW_SMTP__TLS", "none"),
                ("AUTHFLOW_SMTP__USERNAME", "mailer"),
                ("AUTHFLOW_SMTP__PASSWORD", "pw"),
            ];
            assert!(smtp(&vars).is_ok(), "{host}");
        }
        // In production, mail (codes and reset links) goes in clear to no relay off this machine.
        let production = |host: &str| {
            let vars = [
                ("AUTHFLOW_ENVIRONMENT", "production"),
                ("AUTHFLOW_ISSUER", "https://auth.example.com"),
                ("AUTHFLOW_TOKENS__AUDIENCES", "api.example.com"),
                ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
                ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
                ("AUTHFLOW_SMTP__HOST", host),
                ("AUTHFLOW_SMTP__TLS", "none"),
            ];
            Config::load_from(None, &env(&vars)).map(|_| ())
        };
        let e = production("relay.internal").unwrap_err().to_string();
        assert!(
            e.contains("smtp.tls")
                && e.contains("sign-in codes and reset links in clear to relay.internal"),
            "{e}"
        );
        production("127.0.0.1").unwrap();
        // Half the credentials would send mail unauthenticated without a word.
        let e = smtp(&[("AUTHFLOW_SMTP__USERNAME", "mailer")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("smtp.password") && e.contains("required with smtp.username"),
            "{e}"
        );
        let e = smtp(&[("AUTHFLOW_SMTP__PASSWORD", "pw-5Kd1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp.username") && !e.contains("pw-5Kd1"), "{e}");
        // The CA file: read at start, named when unusable; no use without TLS.
        let e = smtp(&[("AUTHFLOW_SMTP__CA_FILE", "/nonexistent/ca.pem")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("smtp.ca_file")
                && e.contains("AUTHFLOW_SMTP__CA_FILE")
                && e.contains("cannot read"),
            "{e}"
        );
        let (_dir, not_pem) = file_with("not a certificate");
        let e = smtp(&[("AUTHFLOW_SMTP_CA_FILE", not_pem.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("smtp.ca_file") && e.contains("no certificate"),
            "{e}"
        );
        let e = smtp(&[
            ("AUTHFLOW_SMTP__TLS", "none"),
            ("AUTHFLOW_SMTP__CA_FILE", "/x.pem"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("smtp.ca_file") && e.contains("smtp.tls = none"),
            "{e}"
        );
        let e = smtp(&[("AUTHFLOW_SMTP__HOST", "relay internal")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp.host"), "{e}");
    }

    /// The flat names of earlier releases keep working (file keys and
    /// variables), are reported as deprecated, and lose to the nested name.
    #[test]
    fn flat_names_are_deprecated_aliases() {
        let (_dir, path) =
            file_with("listen = \"127.0.0.1:9\"\naccess_ttl_secs = 60\nkek_previous = []\n");
        let (c, report) = Config::load_reporting(
            Some(&path),
            &env(&[
                ("AUTHFLOW_SMTP_HOST", "relay.internal"),
                ("AUTHFLOW_MAILER", "smtp"),
                ("AUTHFLOW_REFRESH_TTL_SECS", "3600"),
                ("AUTHFLOW_TOKENS__REFRESH_TTL_SECS", "7200"),
                // Not settings: other tools' and the CLI's own variables.
                ("AUTHFLOW_CONFIG", "elsewhere.toml"),
                ("AUTHFLOW_NEW_PASSWORD", "x"),
            ]),
        )
        .unwrap();
        let deprecated = report.deprecated;
        assert_eq!(c.server.listen.port(), 9);
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(60));
        assert_eq!(
            c.tokens.refresh_ttl,
            Duration::from_secs(7200),
            "the nested name wins"
        );
        assert!(
            matches!(&c.mail.transport, MailerConfig::Smtp { host, .. } if host == "relay.internal")
        );
        for (old, new) in [
            ("listen", "server.listen"),
            ("access_ttl_secs", "tokens.access_ttl_secs"),
            ("AUTHFLOW_MAILER", "AUTHFLOW_MAIL__TRANSPORT"),
            ("AUTHFLOW_SMTP_HOST", "AUTHFLOW_SMTP__HOST"),
        ] {
            assert!(
                deprecated.iter().any(|(o, n)| o == old && n == new),
                "{old} → {new} not in {deprecated:?}"
            );
        }
        assert!(
            !deprecated
                .iter()
                .any(|(o, _)| o.contains("CONFIG") || o.contains("NEW_PASSWORD")),
            "{deprecated:?}"
        );
    }

    #[test]
    fn env_overrides_and_lists() {
        let c = Config::load_from(
            None,
            &env(&[
                ("AUTHFLOW_AUDIENCES", "a, b"),
                ("AUTHFLOW_ACCESS_TTL_SECS", "60"),
                (
                    "AUTHFLOW_FINGERPRINT_ATTRIBUTES",
                    "user-agent,client-ip-prefix",
                ),
                ("AUTHFLOW_SIGNING_ALG", "ES256"),
                ("AUTHFLOW_DEV_ENDPOINTS", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.tokens.audiences, vec!["a", "b"]);
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(60));
        assert_eq!(
            c.tokens.fingerprint_attributes[1],
            DeviceAttribute::ClientIpPrefix
        );
        assert_eq!(c.keys.signing_alg, Algorithm::ES256);
        assert!(!c.server.dev_endpoints);
    }

    /// Every error names the setting and the exact variable or file it came from.
    #[test]
    fn bad_values_name_the_field_and_its_source() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Vars, &[&str])] = &[
            (
                &[("AUTHFLOW_ACCESS_TTL_SECS", "soon")],
                &[
                    "tokens.access_ttl_secs",
                    "AUTHFLOW_ACCESS_TTL_SECS",
                    "deprecated",
                ],
            ),
            (
                &[("AUTHFLOW_TOKENS__ACCESS_TTL_SECS", "soon")],
                &["tokens.access_ttl_secs", "AUTHFLOW_TOKENS__ACCESS_TTL_SECS"],
            ),
            (
                &[("AUTHFLOW_TOKENS__ACCESS_TTL_SECS", "0")],
                &[
                    "tokens.access_ttl_secs",
                    "AUTHFLOW_TOKENS__ACCESS_TTL_SECS",
                    "15..=86400",
                ],
            ),
            (
                &[("AUTHFLOW_LISTEN", "nowhere")],
                &["server.listen", "AUTHFLOW_LISTEN"],
            ),
            (
                &[("AUTHFLOW_SERVER__LISTEN", "nowhere")],
                &["server.listen", "AUTHFLOW_SERVER__LISTEN"],
            ),
            (
                &[("AUTHFLOW_FINGERPRINT_ATTRIBUTES", "bad header")],
                &["tokens.fingerprint_attributes"],
            ),
            (
                &[("AUTHFLOW_ACCOUNTS__PAGES_URL", "javascript:alert(1)")],
                &["accounts.pages_url", "AUTHFLOW_ACCOUNTS__PAGES_URL"],
            ),
            (
                &[
                    ("AUTHFLOW_ENVIRONMENT", "production"),
                    ("AUTHFLOW_ISSUER", "https://a.example"),
                    ("AUTHFLOW_TOKENS__AUDIENCES", "api.example.com"),
                    ("AUTHFLOW_DEV_ENDPOINTS", "true"),
                ],
                &["server.dev_endpoints", "AUTHFLOW_DEV_ENDPOINTS"],
            ),
            (
                &[("AUTHFLOW_TRUST_FORWARDED_FOR", "true")],
                &["xff_num_trusted_hops"],
            ),
            (
                &[("AUTHFLOW_XFF_NUM_TRUSTED_HOPS", "11")],
                &["server.xff_num_trusted_hops"],
            ),
            (
                &[
                    ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
                    ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
                ],
                &["smtp.host", "not set", "AUTHFLOW_SMTP__HOST"],
            ),
            (
                &[("AUTHFLOW_KEK__KEY", "short")],
                &["kek.key", "AUTHFLOW_KEK__KEY"],
            ),
        ];
        for (vars, needles) in cases {
            let e = Config::load_from(None, &env(vars)).unwrap_err().to_string();
            for needle in *needles {
                assert!(e.contains(needle), "{vars:?}: `{needle}` missing from: {e}");
            }
        }
        let (_dir, path) = file_with("[tokens]\naccess_ttl_secs = \"soon\"\n");
        let e = Config::load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(
            e.contains("tokens.access_ttl_secs")
                && e.contains("authflow.toml")
                && e.contains("u64"),
            "{e}"
        );
        let (_dir, path) = file_with("[throttle]\nlockout_base_secs = 60\nlockout_max_secs = 10\n");
        let e = Config::load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(
            e.contains("throttle.lockout_max_secs") && e.contains("authflow.toml"),
            "{e}"
        );
    }

    /// Configuration is logged and printed with `{:?}`: no secret may show,
    /// whichever name set it.
    #[test]
    fn debug_output_holds_no_secret() {
        let (kek, previous) = (crate::kek::generate_key(), crate::kek::generate_key());
        let (_dir, path) = file_with(&format!(
            "[kek]\nprevious = [\"{}\"]\n[smtp]\npassword = \"file-pass-3Rt8\"\n",
            previous.trim()
        ));
        for vars in [
            vec![
                (
                    "AUTHFLOW_DATABASE_URL",
                    "postgres://authflow:db-pass-7Hq2@db.internal:5432/authflow",
                ),
                ("AUTHFLOW_MAILER", "smtp"),
                ("AUTHFLOW_SMTP_HOST", "relay.internal"),
                ("AUTHFLOW_SMTP_USERNAME", "mailer"),
                ("AUTHFLOW_SMTP_PASSWORD", "smtp-pass-9Xw4"),
                ("AUTHFLOW_KEK", &kek),
            ],
            vec![
                (
                    "AUTHFLOW_DATABASE__URL",
                    "postgres://authflow:db-pass-7Hq2@db.internal:5432/authflow",
                ),
                ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
                ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
                ("AUTHFLOW_SMTP__HOST", "relay.internal"),
                ("AUTHFLOW_SMTP__USERNAME", "mailer"),
                ("AUTHFLOW_SMTP__PASSWORD", "smtp-pass-9Xw4"),
                ("AUTHFLOW_KEK__KEY", &kek),
            ],
        ] {
            for file in [None, Some(path.as_path())] {
                let c = Config::load_from(file, &env(&vars)).unwrap();
                assert_eq!(c.kek.previous.len(), usize::from(file.is_some()));
                let shown = format!("{c:?} {c:#?}");
                for secret in [
                    "db-pass-7Hq2",
                    "smtp-pass-9Xw4",
                    "file-pass-3Rt8",
                    kek.trim(),
                    previous.trim(),
                ] {
                    assert!(!shown.contains(secret), "`{secret}` appears in {shown}");
                }
                // What is not secret still shows, so the output stays useful.
                assert!(
                    shown.contains("relay.internal") && shown.contains("mailer"),
                    "{shown}"
                );
            }
        }
    }

    /// A secret of the wrong type is refused without repeating it.
    #[test]
    fn errors_do_not_repeat_a_secret() {
        let (_dir, path) = file_with("[smtp]\npassword = 987654321\n");
        let e = Config::load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(
            e.contains("smtp.password") && !e.contains("987654321"),
            "{e}"
        );
        let e = Config::load_from(
            None,
            &env(&[("AUTHFLOW_KEK__PREVIOUS", "secret-not-a-key")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("kek.previous") && !e.contains("secret-not-a-key"),
            "{e}"
        );
    }

    /// A file that is not valid TOML is refused without quoting the line:
    /// the TOML parser's message shows the source around the error, which
    /// may be a secret (an unquoted or unterminated password or KEK) that
    /// would end up in the service's log.
    #[test]
    fn a_toml_error_does_not_quote_a_secret() {
        for text in [
            "[smtp]\npassword = hunter2-secret\n",
            "[kek]\nkey = \"hunter2-secret\n",
            "[database]\nurl = 'postgres://u:hunter2-secret@db/x\n",
        ] {
            let (_dir, path) = file_with(text);
            let e = Config::load_from(Some(&path), &[])
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains("not valid TOML") && e.contains("line 2"), "{e}");
            assert!(!e.contains("hunter2"), "{text:?}: {e}");
        }
    }

    /// A typo in a security setting must not silently fall back to a default:
    /// unknown keys are refused, at the top, in every section and in the
    /// environment's nested names.
    #[test]
    fn unknown_settings_are_refused() {
        let files: &[(&str, &str)] = &[
            (
                "listen = \"127.0.0.1:9\"\nlisten_adress = \"x\"\n",
                "listen_adress",
            ),
            ("[tokens]\naccess_ttl_sec = 60\n", "tokens.access_ttl_sec"),
            (
                "[throttle]\naccount_max_failure = 1000\n",
                "throttle.account_max_failure",
            ),
            ("[kek]\nkey_fiel = \"/run/kek\"\n", "kek.key_fiel"),
            ("[token]\naccess_ttl_secs = 60\n", "token"),
        ];
        for (text, name) in files {
            let (_dir, path) = file_with(text);
            let e = Config::load_from(Some(&path), &[]).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{name}`")) && e.contains("authflow.toml"),
                "{text:?}: {e}"
            );
        }
        for (var, name, source) in [
            (
                "AUTHFLOW_TOKENS__ACESS_TTL_SECS",
                "tokens.acess_ttl_secs",
                "AUTHFLOW_TOKENS__ACESS_TTL_SECS",
            ),
            (
                "AUTHFLOW_THROTLE__IP_MAX_FAILURES",
                "throtle",
                "AUTHFLOW_THROTLE__",
            ),
            (
                "AUTHFLOW_SMTP__PASSWORT",
                "smtp.passwort",
                "AUTHFLOW_SMTP__PASSWORT",
            ),
        ] {
            let e = Config::load_from(None, &env(&[(var, "1")]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("`{name}`")) && e.contains(source),
                "{var}: {e}"
            );
        }
    }

    /// The development outbox writes every sign-in code and reset link in
    /// clear to `<data_dir>/outbox/`, delivers nothing and is never pruned:
    /// a production start with it (the default transport) is refused.
    #[test]
    fn production_refuses_the_development_outbox() {
        let production = [
            ("AUTHFLOW_ENVIRONMENT", "production"),
            ("AUTHFLOW_TOKENS__ISSUER", "https://a.example"),
            ("AUTHFLOW_TOKENS__AUDIENCES", "api.example.com"),
        ];
        for extra in [None, Some(("AUTHFLOW_MAIL__TRANSPORT", "dev-outbox"))] {
            let mut vars = production.to_vec();
            vars.extend(extra);
            let e = Config::load_from(None, &env(&vars))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains("mail.transport") && e.contains("smtp"), "{e}");
        }
        let mut vars = production.to_vec();
        vars.extend([
            ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
            ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
            ("AUTHFLOW_SMTP__HOST", "relay.example"),
        ]);
        Config::load_from(None, &env(&vars)).unwrap();
    }

    /// A nested name written with one underscore between section and field
    /// (`AUTHFLOW_MAIL_TRANSPORT`) is neither a setting nor a deprecated
    /// alias: it was silently not read, leaving e.g. the development outbox
    /// as the mail transport of a production service. It is refused by name.
    #[test]
    fn a_nested_name_with_one_underscore_is_refused() {
        for (var, meant) in [
            ("AUTHFLOW_MAIL_TRANSPORT", "AUTHFLOW_MAIL__TRANSPORT"),
            ("AUTHFLOW_TOKENS_ISSUER", "AUTHFLOW_TOKENS__ISSUER"),
            (
                "AUTHFLOW_THROTTLE_ACCOUNT_MAX_FAILURES",
                "AUTHFLOW_THROTTLE__ACCOUNT_MAX_FAILURES",
            ),
            (
                "AUTHFLOW_ACCOUNTS_PAGES_URL",
                "AUTHFLOW_ACCOUNTS__PAGES_URL",
            ),
            (
                "AUTHFLOW_SERVER_DEV_ENDPOINTS",
                "AUTHFLOW_SERVER__DEV_ENDPOINTS",
            ),
        ] {
            let e = Config::load_from(None, &env(&[(var, "smtp")]))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(var) && e.contains(meant), "{var}: {e}");
        }
        // Other `AUTHFLOW_` variables (the CLI's, the filter's, the test
        // harness's) are still not settings, and the flat aliases still apply.
        let c = Config::load_from(
            None,
            &env(&[
                ("AUTHFLOW_NEW_PASSWORD", "x"),
                ("AUTHFLOW_CONFIG", "x"),
                ("AUTHFLOW_DPOP_NONCE_KEY", "x"),
                ("AUTHFLOW_AUTH_BIN", "x"),
                ("AUTHFLOW_SMTP_TLS", "implicit"),
            ]),
        );
        assert!(c.is_ok(), "{:?}", c.err());
    }

    /// A misspelt setting name was silently not read: with
    /// `AUTHFLOW_ENVIROMENT=production` the service started as development
    /// (plain-HTTP issuer and the mail outbox allowed). A near miss of a
    /// setting's name is refused with the name it meant, as are the usual
    /// abbreviation `AUTHFLOW_ENV` and a lower-case prefix (`authflow_…`, while
    /// the rest of a name is read in any case); the other `AUTHFLOW_`
    /// variables in the project (CLI, filter, tests) still pass.
    #[test]
    fn a_misspelt_setting_name_is_refused() {
        for (var, meant) in [
            ("AUTHFLOW_ENVIROMENT", "AUTHFLOW_ENVIRONMENT"),
            ("AUTHFLOW_ENVIRONMNET", "AUTHFLOW_ENVIRONMENT"),
            ("AUTHFLOW_ENVIRONMENTS", "AUTHFLOW_ENVIRONMENT"),
            ("AUTHFLOW_ISUER", "AUTHFLOW_ISSUER"),
            ("AUTHFLOW_DEV_ENDPOINT", "AUTHFLOW_DEV_ENDPOINTS"),
            ("AUTHFLOW_ENV", "AUTHFLOW_ENVIRONMENT"),
            ("authflow_environment", "AUTHFLOW_"),
            ("Authflow_Server__Dev_Endpoints", "AUTHFLOW_"),
        ] {
            let e = Config::load_from(None, &env(&[(var, "production")]))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(var) && e.contains(meant), "{var}: {e}");
        }
        for var in [
            "AUTHFLOW_ENVOY",
            "AUTHFLOW_WASM",
            "AUTHFLOW_AUTH_BIN",
            "AUTHFLOW_PG_BIN",
            "AUTHFLOW_CONFIG",
            "AUTHFLOW_NEW_PASSWORD",
            "AUTHFLOW_DPOP_NONCE_KEY",
            "AUTHFLOW_E2E_DPOP_NONCE_KEY",
            "AUTHFLOW_ECHO_LISTEN",
            "AUTHFLOW_CHROMIUM",
            "AUTHFLOW_CHROMEDRIVER",
            "AUTHFLOW_DOCKER_ROOT",
            "AUTHFLOW_SCREENSHOTS",
            "AUTHFLOW_TEST_PG_URL",
            "AUTHFLOW_RUN_DIR",
            "AUTHFLOW_RUN_BIN_DIR",
            "AUTHFLOW_RUN_AUTH_PORT",
            "AUTHFLOW_RUN_ECHO_PORT",
            "AUTHFLOW_RUN_ENVOY_PORT",
            "AUTHFLOW_RUN_ADMIN_PORT",
        ] {
            let c = Config::load_from(None, &env(&[(var, "x")]));
            assert!(c.is_ok(), "{var}: {:?}", c.err());
        }
    }

    /// Every setting of every section, spelt with one underscore between
    /// section and field (`AUTHFLOW_SERVER_TRUSTED_PROXIES`), is refused by
    /// name, unless that spelling is its deprecated flat alias: otherwise it
    /// is silently not read and the setting keeps its default (every peer's
    /// x-forwarded-for trusted; ten sign-in code mails an hour).
    #[test]
    fn every_setting_spelt_with_one_underscore_is_refused() {
        let silent = spellings_not_refused(|section, field| {
            let flat = format!("{section}_{field}");
            (!sources::FLAT_ALIASES.iter().any(|(f, _)| *f == flat)).then_some(flat)
        });
        assert!(silent.is_empty(), "silently not read: {silent:?}");
    }

    /// A setting spelt by its field alone, without its section
    /// (`AUTHFLOW_TRUSTED_PROXIES` for `AUTHFLOW_SERVER__TRUSTED_PROXIES`), as
    /// the flat names of the older settings are, was silently not read: the
    /// setting kept its default (every peer's x-forwarded-for trusted, DPoP
    /// proofs without nonces). Refused with the variable meant, unless that
    /// spelling is a deprecated flat alias.
    #[test]
    fn a_setting_spelt_without_its_section_is_refused() {
        let silent = spellings_not_refused(|_, field| {
            let alias = sources::FLAT_ALIASES.iter().any(|(f, _)| *f == field);
            (!alias && field != "trust_forwarded_for").then(|| field.to_owned())
        });
        assert!(silent.is_empty(), "silently not read: {silent:?}");
    }

    /// The variables `spell(section, field)` names for every setting (none
    /// for a spelling that is read) that are not refused with the variable
    /// meant.
    fn spellings_not_refused(spell: impl Fn(&str, &str) -> Option<String>) -> Vec<String> {
        let mut silent = Vec::new();
        for section in sources::SECTIONS {
            // The section's fields, as the unknown-setting error lists them.
            let probe = sources::env_var_of(&format!("{section}.not_a_setting"));
            let e = Config::load_from(None, &env(&[(&probe, "1")]))
                .unwrap_err()
                .to_string();
            let fields = e.split("expected one of: ").nth(1).expect(&e);
            for field in fields.split(", ") {
                let Some(flat) = spell(section, field) else {
                    continue;
                };
                let var = format!("{}{}", sources::ENV_PREFIX, flat.to_ascii_uppercase());
                let meant = sources::env_var_of(&format!("{section}.{field}"));
                match Config::load_from(None, &env(&[(&var, "1")])) {
                    Err(e) if e.to_string().contains(&meant) => {}
                    _ => silent.push(var),
                }
            }
        }
        silent
    }

    /// `0.0.0.0/0` or `::/0` in `server.trusted_proxies` trusts every peer's
    /// x-forwarded-for, as an empty list does, but without the warning an
    /// empty list gets (and an IPv4 peer on a dual-stack socket is inside
    /// `::/0` too): whoever reaches the service directly chooses its address.
    #[test]
    fn a_trusted_proxy_range_of_every_address_is_refused() {
        // Also every IPv4 peer by other spellings (a dual-stack socket's
        // peers are compared as `::ffff:a.b.c.d` too), or by ranges that
        // together hold every address.
        for range in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8, 192.0.2.1/0",
            "::ffff:0:0/96",
            "::/64",
            "0.0.0.0/1, 128.0.0.0/1",
            "::ffff:0:0/97, 128.0.0.0/1",
            "::/1, 8000::/1",
            "::/1",
        ] {
            let e = Config::load_from(
                None,
                &env(&[
                    ("AUTHFLOW_SERVER__XFF_NUM_TRUSTED_HOPS", "1"),
                    ("AUTHFLOW_SERVER__TRUSTED_PROXIES", range),
                ]),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("server.trusted_proxies") && e.contains("every"),
                "{range}: {e}"
            );
        }
    }

    /// Ranges that leave addresses out are taken.
    #[test]
    fn trusted_proxy_ranges_short_of_every_address_are_taken() {
        for range in [
            "10.0.0.0/8, fd00::/8",
            "0.0.0.0/1, 128.0.0.0/2",
            "::ffff:10.0.0.0/104, 127.0.0.1",
            "8000::/1",
        ] {
            let c = Config::load_from(
                None,
                &env(&[
                    ("AUTHFLOW_SERVER__XFF_NUM_TRUSTED_HOPS", "1"),
                    ("AUTHFLOW_SERVER__TRUSTED_PROXIES", range),
                ]),
            );
            assert!(c.is_ok(), "{range}: {:?}", c.err());
        }
    }

    /// Proxies listed without a hop to read: their x-forwarded-for is not
    /// read, every client is taken at its proxy's address, and one client's
    /// failed sign-ins throttle every other (`throttle.ip_max_failures`).
    #[test]
    fn trusted_proxies_without_a_hop_to_read_are_refused() {
        let e = Config::load_from(
            None,
            &env(&[("AUTHFLOW_SERVER__TRUSTED_PROXIES", "10.0.0.0/8")]),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("server.trusted_proxies") && e.contains("xff_num_trusted_hops"),
            "{e}"
        );
    }

    /// The issuer is every token's `iss` (compared byte for byte by the
    /// filters), the base of `htu` and of discovery, and, without
    /// `accounts.pages_url`, the origin of the links mailed with one-time
    /// tokens. It is refused unless it is an http(s) URL written as such a
    /// URL is written (lower-case scheme and host, no default port), with a
    /// host and without user info, query, fragment or whitespace: checks the
    /// pages origin gets when set, and skipped when it defaults to the issuer.
    #[test]
    fn the_issuer_is_a_plain_url_in_its_canonical_spelling() {
        for issuer in [
            "https://auth.example.com@evil.example",
            "https://user:pw@auth.example.com",
            "https://auth.example.com?x=1",
            "https://auth.example.com#f",
            "https://auth example.com",
            "https:///x",
            "https://Auth.Example.com",
            "HTTPS://auth.example.com",
            "https://auth.example.com:443",
            "https://auth.example.com\\@evil.example",
        ] {
            let e = production_with(&[("AUTHFLOW_TOKENS__ISSUER", issuer)])
                .map(|c| c.accounts.pages_url(&c.tokens.issuer).to_owned());
            assert!(
                matches!(&e, Err(e) if e.to_string().contains("tokens.issuer")),
                "{issuer:?} accepted: {e:?}"
            );
        }
        for (issuer, pages) in [
            ("https://auth.example.com", "https://auth.example.com"),
            (
                "https://auth.example.com:8443",
                "https://auth.example.com:8443",
            ),
            ("https://[::1]:8443", "https://[::1]:8443"),
        ] {
            let c = production_with(&[("AUTHFLOW_TOKENS__ISSUER", issuer)]);
            assert!(c.is_ok(), "{issuer}: {:?}", c.err());
            let c = c.unwrap();
            assert_eq!(c.accounts.pages_url(&c.tokens.issuer), pages, "{issuer}");
        }
        // Finding: mailed links went under the issuer's path, where no page
        // is. In production such an issuer needs `accounts.pages_url`; in
        // development the links start with its origin.
        let with_path = [(
            "AUTHFLOW_TOKENS__ISSUER",
            "https://auth.example.com/realms/main",
        )];
        let e = production_with(&with_path).unwrap_err().to_string();
        assert!(e.contains("accounts.pages_url"), "{e}");
        let mut named = with_path.to_vec();
        named.push(("AUTHFLOW_ACCOUNTS__PAGES_URL", "https://auth.example.com"));
        production_with(&named).unwrap();
        let c = Config::load_from(None, &env(&with_path)).unwrap();
        assert_eq!(
            c.accounts.pages_url(&c.tokens.issuer),
            "https://auth.example.com"
        );
        Config::load_from(None, &[]).unwrap();
    }

    /// The second factor's lockout starts at `throttle.lockout_base_secs`
    /// and doubles up to its cap: a cap below the start is as incoherent as
    /// `lockout_max_secs` below `lockout_base_secs` (refused), and locks a
    /// guessed-at second factor for less than the first lockout.
    #[test]
    fn the_second_factor_lockout_cap_is_at_least_the_base() {
        let e = Config::load_from(
            None,
            &env(&[
                ("AUTHFLOW_THROTTLE__LOCKOUT_BASE_SECS", "60"),
                ("AUTHFLOW_THROTTLE__SECOND_FACTOR_LOCKOUT_MAX_SECS", "1"),
            ]),
        )
        .map(|c| c.throttle.second_factor_lockout_max);
        assert!(
            matches!(&e, Err(e) if e.to_string().contains("throttle.second_factor_lockout_max_secs")),
            "{e:?}"
        );
    }

    /// Every path the single-underscore check knows is a real setting.
    #[test]
    fn every_known_path_is_a_setting() {
        let paths = sources::FLAT_ALIASES
            .iter()
            .map(|(_, p)| *p)
            .chain(sources::UNALIASED_PATHS.iter().copied());
        for path in paths {
            let var = sources::env_var_of(path);
            if let Err(e) = Config::load_from(None, &env(&[(&var, "1")])) {
                assert!(!e.to_string().contains("unknown setting"), "{path}: {e}");
            }
        }
    }

    /// The documented example holds every setting at its default: it loads,
    /// and equals no file at all.
    #[test]
    fn shipped_example_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("authflow.example.toml");
        let (example, report) = Config::load_reporting(Some(&path), &[]).unwrap();
        let deprecated = report.deprecated;
        assert!(deprecated.is_empty(), "{deprecated:?}");
        assert_eq!(
            format!("{example:?}"),
            format!("{:?}", Config::load_from(None, &[]).unwrap())
        );
    }

    #[test]
    fn file_values_load() {
        let (_dir, path) = file_with("listen = \"127.0.0.1:9\"\nissuer = \"https://a.example\"\n");
        let c = Config::load_from(Some(&path), &[]).unwrap();
        assert_eq!(c.server.listen.port(), 9);
        let (_dir, path) = file_with(
            "[server]\nlisten = \"127.0.0.1:10\"\n[tokens]\nissuer = \"https://a.example\"\n",
        );
        let c = Config::load_from(Some(&path), &[]).unwrap();
        assert_eq!(
            (c.server.listen.port(), c.tokens.issuer.as_str()),
            (10, "https://a.example")
        );
    }

    /// A production environment that loads, to which a test adds one setting.
    const PRODUCTION: &[(&str, &str)] = &[
        ("AUTHFLOW_ENVIRONMENT", "production"),
        ("AUTHFLOW_TOKENS__ISSUER", "https://auth.example.com"),
        ("AUTHFLOW_TOKENS__AUDIENCES", "api.example.com"),
        ("AUTHFLOW_MAIL__TRANSPORT", "smtp"),
        ("AUTHFLOW_MAIL__FROM", "authflow <no-reply@example.com>"),
        ("AUTHFLOW_SMTP__HOST", "relay.example"),
    ];

    /// A variable left over from development (an image's own `ENV`, an old
    /// export) must not turn off the checks of a service its file declares
    /// production; raising development to production is fine.
    #[test]
    fn a_variable_cannot_turn_a_production_file_into_development() {
        let (_dir, path) = file_with("environment = \"production\"\n");
        let e = Config::load_from(
            Some(&path),
            &env(&[("AUTHFLOW_ENVIRONMENT", "development")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`environment`") && e.contains("may not turn production's checks off"),
            "{e}"
        );
        let (_dir, path) = file_with("environment = \"development\"\n");
        let raised =
            Config::load_from(Some(&path), &env(&[("AUTHFLOW_ENVIRONMENT", "production")]));
        assert!(
            !matches!(&raised, Err(e) if e.to_string().contains("may not turn")),
            "{:?}",
            raised.err()
        );
        let (_dir, path) = file_with("environment = \"development\"\n");
        Config::load_from(
            Some(&path),
            &env(&[("AUTHFLOW_ENVIRONMENT", "development")]),
        )
        .unwrap();
    }

    /// The shipped Kubernetes Deployment (`deploy/k8s/auth-deployment.yaml`)
    /// starts: its environment, with stand-ins for the values its Secret
    /// holds, is a production configuration the service loads. A check the
    /// service gains (the mail sender, say) must come with the manifest's
    /// setting.
    #[test]
    fn the_shipped_kubernetes_deployment_loads_in_production() {
        use serde_norway::Value;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/k8s/auth-deployment.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let deployment = serde_norway::Deserializer::from_str(&text)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        use base64::Engine as _;
        let kek = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let secrets = [
            (
                "database-url",
                "postgres://authflow@db.example/authflow?sslmode=verify-full",
            ),
            ("smtp-username", "authflow"),
            ("smtp-password", "stand-in"),
            ("kek", kek.as_str()),
        ];
        let vars: Vec<(String, String)> = container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_owned();
                let value = match e["value"].as_str() {
                    Some(v) => v.to_owned(),
                    None => {
                        let key = e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
                        let (_, v) = secrets.iter().find(|(k, _)| *k == key).unwrap();
                        (*v).to_owned()
                    }
                };
                (name, value)
            })
            .collect();
        assert!(vars.contains(&("AUTHFLOW_ENVIRONMENT".into(), "production".into())));
        if let Err(e) = Config::load_from(None, &vars) {
            panic!("{path}: {e}");
        }
    }

    fn production_with(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars = PRODUCTION.to_vec();
        vars.extend_from_slice(extra);
        Config::load_from(None, &env(&vars))
    }

    /// The default sender's domain is `authflow.invalid`, which a relay
    /// checking senders refuses: in production every sign-in code and reset
    /// link was lost, only logged. There the sender is set or the start refused.
    #[test]
    fn production_needs_the_mail_sender_set() {
        let without: Vec<(&str, &str)> = PRODUCTION
            .iter()
            .copied()
            .filter(|(k, _)| *k != "AUTHFLOW_MAIL__FROM")
            .collect();
        let e = Config::load_from(None, &env(&without))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mail.from"), "{e}");
        let c = production_with(&[]).unwrap();
        assert_eq!(c.mail.from, "authflow <no-reply@example.com>");
        let dev = Config::load_from(None, &[]).unwrap();
        assert!(
            dev.mail.from.ends_with("@authflow.invalid>"),
            "{}",
            dev.mail.from
        );
    }

    /// Mailed links carry one-time tokens (email verification, password
    /// reset) and start with `accounts.pages_url`, to which the pages' paths
    /// (`/auth/…`, served at the root: forms post there and the cookies are
    /// `__Host-`) are appended. So it is an origin: a path, query, fragment
    /// or user info would make broken or misleading links, and in production
    /// plain http would hand the tokens to anyone on the network.
    #[test]
    fn pages_url_is_a_bare_origin_and_https_in_production() {
        let pages = |vars: &[(&str, &str)]| {
            Config::load_from(None, &env(vars)).map(|c| c.accounts.pages_url)
        };
        for (given, stored) in [
            ("https://app.example.com", "https://app.example.com"),
            ("https://app.example.com/", "https://app.example.com"),
            ("https://App.Example.com:443/", "https://app.example.com"),
            (
                "https://app.example.com:8443",
                "https://app.example.com:8443",
            ),
            ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
            ("http://[::1]:8081/", "http://[::1]:8081"),
        ] {
            let got = pages(&[("AUTHFLOW_ACCOUNTS__PAGES_URL", given)]);
            assert_eq!(got.unwrap().as_deref(), Some(stored), "{given}");
        }
        for refused in [
            "https://app.example.com/auth",
            "https://app.example.com/app/",
            "https://app.example.com/?next=/x",
            "https://app.example.com?",
            "https://app.example.com/#top",
            "https://user@app.example.com",
            "https://user:pw-4Gz8@app.example.com",
            "https://app.example.com\\@evil.example",
            "https://",
            "https:app.example.com",
            "ftp://app.example.com",
        ] {
            let e = pages(&[("AUTHFLOW_ACCOUNTS__PAGES_URL", refused)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("accounts.pages_url")
                    && e.contains("AUTHFLOW_ACCOUNTS__PAGES_URL")
                    && e.contains("origin"),
                "{refused}: {e}"
            );
            assert!(!e.contains("pw-4Gz8"), "{e}");
        }
        let (_dir, path) = file_with("[accounts]\npages_url = \"https://a.example/x?y#z\"\n");
        let e = Config::load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(
            e.contains("accounts.pages_url") && e.contains("authflow.toml"),
            "{e}"
        );
        // Production: https only, as the issuer.
        let e = production_with(&[("AUTHFLOW_ACCOUNTS__PAGES_URL", "http://app.example.com")])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("accounts.pages_url")
                && e.contains("AUTHFLOW_ACCOUNTS__PAGES_URL")
                && e.contains("https:// in production"),
            "{e}"
        );
        let c = production_with(&[("AUTHFLOW_ACCOUNTS__PAGES_URL", "https://app.example.com/")])
            .unwrap();
        assert_eq!(
            c.accounts.pages_url(&c.tokens.issuer),
            "https://app.example.com"
        );
    }

    /// A development service reachable from other hosts, or behind an https
    /// issuer, looks deployed: the start warns that the production checks
    /// are off and how to turn them on. A local development run and a
    /// production service get no such warning.
    #[test]
    fn a_development_service_that_looks_deployed_is_warned_about() {
        let warnings = |vars: &[(&str, &str)]| {
            Config::load_from(None, &env(vars))
                .unwrap()
                .development_warnings()
        };
        for quiet in [
            vec![],
            vec![("AUTHFLOW_SERVER__LISTEN", "127.0.0.1:9000")],
            vec![("AUTHFLOW_SERVER__LISTEN", "[::1]:9000")],
            vec![("AUTHFLOW_TOKENS__ISSUER", "http://auth.test")],
        ] {
            assert_eq!(warnings(&quiet), Vec::<String>::new(), "{quiet:?}");
        }
        for (vars, named) in [
            (
                vec![("AUTHFLOW_SERVER__LISTEN", "0.0.0.0:8081")],
                "server.listen 0.0.0.0:8081",
            ),
            (
                vec![("AUTHFLOW_SERVER__LISTEN", "192.0.2.7:8081")],
                "server.listen 192.0.2.7:8081",
            ),
            (
                vec![("AUTHFLOW_TOKENS__ISSUER", "https://auth.example.com")],
                "tokens.issuer https://auth.example.com",
            ),
        ] {
            let w = warnings(&vars);
            assert_eq!(w.len(), 1, "{vars:?}: {w:?}");
            for needle in [
                named,
                "development",
                "production checks are off",
                "AUTHFLOW_ENVIRONMENT=production",
                "environment = \"production\"",
            ] {
                assert!(w[0].contains(needle), "`{needle}` missing from {w:?}");
            }
        }
        let both = warnings(&[
            ("AUTHFLOW_SERVER__LISTEN", "0.0.0.0:8081"),
            ("AUTHFLOW_TOKENS__ISSUER", "https://auth.example.com"),
        ]);
        assert_eq!(both.len(), 2, "{both:?}");
        let c = production_with(&[("AUTHFLOW_SERVER__LISTEN", "0.0.0.0:8081")]).unwrap();
        assert!(c.development_warnings().is_empty());
    }

    /// A rotated-in key must reach every instance (each reloads the keys
    /// every second) and every filter (an unknown `kid` refetches the JWKS
    /// at most every `min_refetch_interval_secs`, 5 s by default) before it
    /// signs: with a shorter lead its first tokens are refused as signed by
    /// an unknown key. Below 10 s the lead is refused, saying why.
    #[test]
    fn the_key_publish_lead_leaves_time_to_fetch_the_key() {
        let load = |pairs: &[(&str, &str)]| Config::load_from(None, &env(pairs));
        assert_eq!(
            load(&[]).unwrap().keys.publish_lead,
            Duration::from_secs(60)
        );
        for (var, value) in [
            ("AUTHFLOW_KEYS__PUBLISH_LEAD_SECS", "0"),
            ("AUTHFLOW_KEYS__PUBLISH_LEAD_SECS", "9"),
            ("AUTHFLOW_KEY_PUBLISH_LEAD_SECS", "0"),
        ] {
            let e = load(&[(var, value)]).map(|_| ()).unwrap_err().to_string();
            for needle in ["keys.publish_lead_secs", var, "at least 10", "JWKS"] {
                assert!(e.contains(needle), "{var}={value}: `{needle}` missing: {e}");
            }
        }
        assert_eq!(
            load(&[("AUTHFLOW_KEYS__PUBLISH_LEAD_SECS", "10")])
                .unwrap()
                .keys
                .publish_lead,
            Duration::from_secs(10)
        );
        let e = load(&[("AUTHFLOW_KEYS__PUBLISH_LEAD_SECS", "86401")])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys.publish_lead_secs"), "{e}");
    }

    /// A key-encryption key of 32 equal bytes (all zeros, base64 `AAAA…=`)
    /// is a placeholder, not a random key: refused wherever it is given.
    #[test]
    fn a_placeholder_kek_is_refused() {
        use base64::Engine as _;
        let zeros = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        let sevens = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        for (var, path) in [
            ("AUTHFLOW_KEK__KEY", "kek.key"),
            ("AUTHFLOW_KEK", "kek.key"),
        ] {
            for key in [&zeros, &sevens] {
                let e = Config::load_from(None, &env(&[(var, key)]))
                    .map(|_| ())
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains(path) && e.contains(var) && e.contains("placeholder"),
                    "{var}: {e}"
                );
                assert!(!e.contains(key.as_str()), "{e}");
            }
        }
        let (_dir, file) = file_with(&zeros);
        let e = Config::load_from(
            None,
            &env(&[("AUTHFLOW_KEK__KEY_FILE", file.to_str().unwrap())]),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("kek.key_file") && e.contains("placeholder"),
            "{e}"
        );
    }

    /// In production the audiences must be written out: the default
    /// (`authflow-demo`) is the demo's, and tokens minted for it would be
    /// accepted by any other deployment that kept it too.
    #[test]
    fn production_needs_the_audiences_set() {
        let without: Vec<(&str, &str)> = PRODUCTION
            .iter()
            .copied()
            .filter(|(k, _)| *k != "AUTHFLOW_TOKENS__AUDIENCES")
            .collect();
        let e = Config::load_from(None, &env(&without))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokens.audiences")
                && e.contains("AUTHFLOW_TOKENS__AUDIENCES")
                && e.contains("production"),
            "{e}"
        );
        let c = production_with(&[]).unwrap();
        assert_eq!(c.tokens.audiences, vec!["api.example.com"]);
        let mut flat = without.clone();
        flat.push(("AUTHFLOW_AUDIENCES", "a, b"));
        let c = Config::load_from(None, &env(&flat)).unwrap();
        assert_eq!(c.tokens.audiences, vec!["a", "b"]);
        let (_dir, path) = file_with("[tokens]\naudiences = [\"api.example.com\"]\n");
        Config::load_from(Some(&path), &env(&without)).unwrap();
        // Development keeps the demo's default.
        assert_eq!(
            Config::load_from(None, &[]).unwrap().tokens.audiences,
            vec!["authflow-demo"]
        );
    }

    #[test]
    fn trusted_proxies_are_ranges_and_decide_whose_forwarded_for_is_read() {
        let c = Config::load_from(
            None,
            &[
                (
                    "AUTHFLOW_SERVER__XFF_NUM_TRUSTED_HOPS".to_owned(),
                    "1".to_owned(),
                ),
                (
                    "AUTHFLOW_SERVER__TRUSTED_PROXIES".to_owned(),
                    "10.1.2.3/8, fd00::/8, 192.0.2.7".to_owned(),
                ),
            ],
        )
        .unwrap();
        let hops = |peer: &str| c.server.trusted_hops_for(Some(peer.parse().unwrap()));
        assert_eq!(hops("10.9.9.9:1"), 1);
        assert_eq!(hops("[fd12::1]:1"), 1);
        assert_eq!(hops("192.0.2.7:1"), 1);
        assert_eq!(
            hops("[::ffff:10.0.0.1]:1"),
            1,
            "an IPv4 peer on a dual-stack socket"
        );
        assert_eq!(hops("192.0.2.8:1"), 0);
        assert_eq!(hops("127.0.0.1:1"), 0);
        assert_eq!(c.server.trusted_hops_for(None), 0);

        let e = Config::load_from(
            None,
            &[(
                "AUTHFLOW_SERVER__TRUSTED_PROXIES".to_owned(),
                "10.0.0.0/33".to_owned(),
            )],
        )
        .unwrap_err();
        assert!(e.to_string().contains("server.trusted_proxies"), "{e}");

        // Without a list every peer is trusted (and a reachable listener is warned about).
        let open = Config::load_from(
            None,
            &[
                (
                    "AUTHFLOW_SERVER__XFF_NUM_TRUSTED_HOPS".to_owned(),
                    "1".to_owned(),
                ),
                (
                    "AUTHFLOW_SERVER__LISTEN".to_owned(),
                    "0.0.0.0:8081".to_owned(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            open.server
                .trusted_hops_for(Some("192.0.2.8:1".parse().unwrap())),
            1
        );
        assert!(open
            .development_warnings()
            .iter()
            .any(|w| w.contains("server.trusted_proxies")));
        assert!(!c
            .development_warnings()
            .iter()
            .any(|w| w.contains("trusted_proxies")));
    }

    /// A container image's own `ENV` (its listen address and data
    /// directory) silently replaced what the operator's file said: the data
    /// went to another directory, the listener to every interface. Loading
    /// now names each file setting a variable replaced.
    #[test]
    fn the_file_settings_variables_replace_are_named() {
        let (_dir, path) = file_with(
            "[server]\nlisten = \"127.0.0.1:9\"\ndata_dir = \"/data\"\n[tokens]\naccess_ttl_secs = 60\n",
        );
        let (c, report) = Config::load_reporting(
            Some(&path),
            &env(&[
                ("AUTHFLOW_SERVER__LISTEN", "0.0.0.0:8081"),
                ("AUTHFLOW_SERVER__DATA_DIR", "/var/lib/authflow"),
                ("AUTHFLOW_TOKENS__REFRESH_TTL_SECS", "7200"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 8081, "the variable still wins");
        assert_eq!(report.overridden, ["server.data_dir", "server.listen"]);
        let (_, alone) = Config::load_reporting(Some(&path), &[]).unwrap();
        assert!(alone.overridden.is_empty());
    }

    /// A deployment that ran on a placeholder KEK moves off it by naming it
    /// in `kek.previous` beside a real key: refused there too, the values it
    /// sealed could never be opened again.
    #[test]
    fn a_placeholder_kek_can_be_rotated_away_from() {
        use base64::Engine as _;
        let zeros = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        let c = Config::load_from(
            None,
            &[
                ("AUTHFLOW_KEK__KEY".to_owned(), crate::kek::generate_key()),
                ("AUTHFLOW_KEK__PREVIOUS".to_owned(), zeros.clone()),
            ],
        );
        assert!(c.is_ok(), "{:?}", c.err());
        let e = Config::load_from(None, &[("AUTHFLOW_KEK__KEY".to_owned(), zeros)]).unwrap_err();
        assert!(e.to_string().contains("kek.key"), "{e}");
    }
}
