//! Configuration: a TOML file (optional) overlaid with `AUTHFLOW_<FIELD>`
//! environment variables, parsed into a raw struct and then validated into
//! [`Config`]. Every error names the field and the source it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use authflow_contract::fingerprint::DeviceAttribute;
use authflow_contract::revocation::MAX_CLOCK_SKEW_SECS;
use authflow_contract::Algorithm;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Clone, Debug)]
pub enum MailerConfig {
    /// Every message is written under `<data_dir>/outbox/` (and readable via
    /// the dev endpoint when enabled).
    DevOutbox,
    /// Plain SMTP (optionally authenticated) to a relay.
    Smtp { host: String, port: u16, username: Option<String>, password: Option<SecretString> },
}

/// The key-encryption key(s) for secrets at rest (see `kek.rs`). `Debug`
/// prints nothing of them.
#[derive(Clone, Default)]
pub struct KekConfig {
    /// Seals and opens; required to start (`kek` or `kek_file`).
    pub current: Option<[u8; 32]>,
    /// Open only, during a rotation (`kek_previous`).
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

/// DPoP (RFC 9449) at this service's token endpoints and own endpoints:
/// the settings `dpop_algorithms` and `dpop_require_nonce`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopSettings {
    /// Proof algorithms accepted (advertised as `dpop_signing_alg_values_supported`).
    pub algorithms: Vec<Algorithm>,
    /// Token requests need a server nonce (RFC 9449 §8).
    pub require_nonce: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub environment: Environment,
    pub listen: SocketAddr,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub challenge_ttl: Duration,
    pub challenge_max_attempts: u32,
    pub email_token_ttl: Duration,
    pub reset_token_ttl: Duration,
    pub fingerprint_attributes: Vec<DeviceAttribute>,
    pub data_dir: PathBuf,
    /// May carry the database password: `Debug` prints `[REDACTED]`.
    pub database_url: SecretString,
    pub mailer: MailerConfig,
    pub mail_from: String,
    pub dev_endpoints: bool,
    pub signing_alg: Algorithm,
    pub key_publish_lead: Duration,
    pub totp_issuer: String,
    /// Trusted proxies in front of the service, each appending to
    /// `x-forwarded-for`: the client address (throttling, audit, the
    /// `client-ip-prefix` attribute) is the entry this many hops from the
    /// right; 0 = the peer address. Envoy's setting of the same name.
    pub xff_num_trusted_hops: u32,
    pub body_limit_bytes: usize,
    pub account_max_failures: u32,
    pub ip_max_failures: u32,
    pub lockout_base: Duration,
    pub lockout_max: Duration,
    /// Wrong second-factor codes per account (across challenges) before it locks.
    pub second_factor_max_failures: u32,
    /// Cap of the doubling second-factor lockout.
    pub second_factor_lockout_max: Duration,
    pub password_hash_memory_kib: u32,
    pub password_hash_iterations: u32,
    pub maintenance_interval: Duration,
    /// Audit rows older than this are deleted by the maintenance task.
    pub audit_retention: Duration,
    /// Mails an anonymous client can trigger (sign-up, password reset) per
    /// recipient and per client address, each per hour.
    pub mail_max_per_recipient_per_hour: u32,
    pub mail_max_per_client_per_hour: u32,
    /// How long past its token's `exp` a revocation is kept, published and
    /// honoured: at least the largest `clock_skew_secs` of any filter.
    pub revocation_retention: Duration,
    /// Long polls of the revocation feed held open at once; past it a
    /// `wait` is answered at once, like a plain poll.
    pub revocation_max_waiters: usize,
    pub kek: KekConfig,
    pub dpop: DpopSettings,
}

/// Every field that may appear in the file, all optional. No `Debug`: it
/// holds secrets in clear until [`RawConfig::validate`] wraps them.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub environment: Option<String>,
    pub listen: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub access_ttl_secs: Option<u64>,
    pub refresh_ttl_secs: Option<u64>,
    pub challenge_ttl_secs: Option<u64>,
    pub challenge_max_attempts: Option<u32>,
    pub email_token_ttl_secs: Option<u64>,
    pub reset_token_ttl_secs: Option<u64>,
    pub fingerprint_attributes: Option<Vec<String>>,
    pub data_dir: Option<String>,
    pub database_url: Option<String>,
    pub mailer: Option<String>,
    pub mail_from: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    pub dev_endpoints: Option<bool>,
    pub signing_alg: Option<String>,
    pub key_publish_lead_secs: Option<u64>,
    pub totp_issuer: Option<String>,
    pub xff_num_trusted_hops: Option<u32>,
    /// Replaced by `xff_num_trusted_hops`; refused with a pointer to it.
    pub trust_forwarded_for: Option<bool>,
    pub body_limit_bytes: Option<usize>,
    pub account_max_failures: Option<u32>,
    pub ip_max_failures: Option<u32>,
    pub lockout_base_secs: Option<u64>,
    pub lockout_max_secs: Option<u64>,
    pub second_factor_max_failures: Option<u32>,
    pub second_factor_lockout_max_secs: Option<u64>,
    pub password_hash_memory_kib: Option<u32>,
    pub password_hash_iterations: Option<u32>,
    pub maintenance_interval_secs: Option<u64>,
    pub audit_retention_days: Option<u64>,
    pub mail_max_per_recipient_per_hour: Option<u32>,
    pub mail_max_per_client_per_hour: Option<u32>,
    pub revocation_retention_secs: Option<u64>,
    pub revocation_max_waiters: Option<u32>,
    /// 32 random bytes, base64; or `kek_file`, a file holding that text.
    pub kek: Option<String>,
    pub kek_file: Option<String>,
    pub kek_previous: Option<Vec<String>>,
    /// `ES256`, `EdDSA` (both by default).
    pub dpop_algorithms: Option<Vec<String>>,
    pub dpop_require_nonce: Option<bool>,
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bool,
    List,
}

/// Field name → value kind, for the environment overlay (`AUTHFLOW_<FIELD>`).
const FIELDS: &[(&str, Kind)] = &[
    ("environment", Kind::Text),
    ("listen", Kind::Text),
    ("issuer", Kind::Text),
    ("audiences", Kind::List),
    ("access_ttl_secs", Kind::Int),
    ("refresh_ttl_secs", Kind::Int),
    ("challenge_ttl_secs", Kind::Int),
    ("challenge_max_attempts", Kind::Int),
    ("email_token_ttl_secs", Kind::Int),
    ("reset_token_ttl_secs", Kind::Int),
    ("fingerprint_attributes", Kind::List),
    ("data_dir", Kind::Text),
    ("database_url", Kind::Text),
    ("mailer", Kind::Text),
    ("mail_from", Kind::Text),
    ("smtp_host", Kind::Text),
    ("smtp_port", Kind::Int),
    ("smtp_username", Kind::Text),
    ("smtp_password", Kind::Text),
    ("dev_endpoints", Kind::Bool),
    ("signing_alg", Kind::Text),
    ("key_publish_lead_secs", Kind::Int),
    ("totp_issuer", Kind::Text),
    ("xff_num_trusted_hops", Kind::Int),
    ("trust_forwarded_for", Kind::Bool),
    ("body_limit_bytes", Kind::Int),
    ("account_max_failures", Kind::Int),
    ("ip_max_failures", Kind::Int),
    ("lockout_base_secs", Kind::Int),
    ("lockout_max_secs", Kind::Int),
    ("second_factor_max_failures", Kind::Int),
    ("second_factor_lockout_max_secs", Kind::Int),
    ("password_hash_memory_kib", Kind::Int),
    ("password_hash_iterations", Kind::Int),
    ("maintenance_interval_secs", Kind::Int),
    ("audit_retention_days", Kind::Int),
    ("mail_max_per_recipient_per_hour", Kind::Int),
    ("mail_max_per_client_per_hour", Kind::Int),
    ("revocation_retention_secs", Kind::Int),
    ("revocation_max_waiters", Kind::Int),
    ("kek", Kind::Text),
    ("kek_file", Kind::Text),
    ("kek_previous", Kind::List),
    ("dpop_algorithms", Kind::List),
    ("dpop_require_nonce", Kind::Bool),
];

#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration error: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn bad(field: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("`{field}` (env AUTHFLOW_{}): {why}", field.to_ascii_uppercase()))
}

impl Config {
    /// Reads `file` (if any), overlays the process environment, validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError(format!("{} is not valid TOML: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for (name, kind) in FIELDS {
            let var = format!("AUTHFLOW_{}", name.to_ascii_uppercase());
            let Some((_, value)) = env.iter().find(|(k, _)| *k == var) else { continue };
            table.insert((*name).to_owned(), env_value(name, *kind, value)?);
        }
        // Check each known field's type first, so the error names the field.
        for (name, kind) in FIELDS {
            if let Some(value) = table.get(*name) {
                let ok = match kind {
                    Kind::Text => value.is_str(),
                    Kind::Int => value.as_integer().is_some_and(|i| i >= 0),
                    Kind::Bool => value.is_bool(),
                    Kind::List => value.as_array().is_some_and(|a| a.iter().all(toml::Value::is_str)),
                };
                if !ok {
                    let expected = match kind {
                        Kind::Text => "a string",
                        Kind::Int => "a non-negative integer",
                        Kind::Bool => "true or false",
                        Kind::List => "a list of strings",
                    };
                    return Err(bad(name, format!("expected {expected}, found `{value}`")));
                }
            }
        }
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.message().to_owned()))?;
        raw.validate()
    }

    /// Defaults only (development), with the data directory given: for tests.
    pub fn for_data_dir(data_dir: &Path) -> Result<Self, ConfigError> {
        RawConfig { data_dir: Some(data_dir.display().to_string()), ..RawConfig::default() }.validate()
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }
}

fn env_value(name: &str, kind: Kind, value: &str) -> Result<toml::Value, ConfigError> {
    let v = value.trim();
    Ok(match kind {
        Kind::Text => toml::Value::String(v.to_owned()),
        Kind::Int => toml::Value::Integer(v.parse::<i64>().map_err(|_| bad(name, format!("`{v}` is not an integer")))?),
        Kind::Bool => toml::Value::Boolean(match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad(name, format!("`{v}` is not true/false"))),
        }),
        Kind::List => toml::Value::Array(
            v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.to_owned())).collect(),
        ),
    })
}

fn secs(field: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(bad(field, format!("{v} is outside {min}..={max} seconds")));
    }
    Ok(Duration::from_secs(v))
}

fn count<T: Copy + PartialOrd + std::fmt::Display>(field: &str, value: Option<T>, default: T, min: T, max: T) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(bad(field, format!("{v} is outside {min}..={max}")));
    }
    Ok(v)
}

impl RawConfig {
    fn kek_config(&self) -> Result<KekConfig, ConfigError> {
        let current = match (&self.kek, &self.kek_file) {
            (Some(_), Some(_)) => return Err(bad("kek_file", "set either `kek` or `kek_file`, not both")),
            (Some(text), None) => Some(crate::kek::parse_key(text).map_err(|e| bad("kek", e))?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| bad("kek_file", format!("cannot read {path}: {e}")))?;
                Some(crate::kek::parse_key(&text).map_err(|e| bad("kek_file", format!("{path}: {e}")))?)
            }
            (None, None) => None,
        };
        let previous = self
            .kek_previous
            .iter()
            .flatten()
            .map(|k| crate::kek::parse_key(k).map_err(|e| bad("kek_previous", e)))
            .collect::<Result<_, _>>()?;
        Ok(KekConfig { current, previous })
    }

    fn dpop_settings(&self) -> Result<DpopSettings, ConfigError> {
        let names = self.dpop_algorithms.clone().unwrap_or_else(|| vec!["ES256".into(), "EdDSA".into()]);
        let mut algorithms = Vec::new();
        for name in &names {
            let alg = match name.as_str() {
                "ES256" => Algorithm::ES256,
                "EdDSA" => Algorithm::EdDSA,
                other => return Err(bad("dpop_algorithms", format!("`{other}` is not ES256|EdDSA"))),
            };
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if algorithms.is_empty() {
            return Err(bad("dpop_algorithms", "needs at least one of ES256, EdDSA"));
        }
        Ok(DpopSettings { algorithms, require_nonce: self.dpop_require_nonce.unwrap_or(false) })
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let kek = self.kek_config()?;
        let dpop = self.dpop_settings()?;
        let environment = match self.environment.as_deref().unwrap_or("development") {
            "development" => Environment::Development,
            "production" => Environment::Production,
            other => return Err(bad("environment", format!("`{other}` is not development|production"))),
        };
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:8081".into());
        let listen: SocketAddr =
            listen_text.parse().map_err(|_| bad("listen", format!("`{listen_text}` is not an ip:port address")))?;
        let issuer = self.issuer.unwrap_or_else(|| "http://127.0.0.1:8081".into());
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) || issuer.ends_with('/') {
            return Err(bad("issuer", format!("`{issuer}` must be an http(s) URL without a trailing slash")));
        }
        if environment == Environment::Production && !issuer.starts_with("https://") {
            return Err(bad("issuer", "must be https:// in production"));
        }
        let audiences = self.audiences.unwrap_or_else(|| vec!["authflow-demo".into()]);
        if audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(bad("audiences", "needs at least one non-empty audience"));
        }
        let access_ttl = secs("access_ttl_secs", self.access_ttl_secs, 900, 1, 86_400)?;
        let refresh_ttl = secs("refresh_ttl_secs", self.refresh_ttl_secs, 30 * 86_400, 60, 365 * 86_400)?;
        if refresh_ttl <= access_ttl {
            return Err(bad("refresh_ttl_secs", "must be longer than access_ttl_secs"));
        }
        let attribute_names =
            self.fingerprint_attributes.unwrap_or_else(|| vec!["user-agent".into(), "accept-language".into()]);
        let fingerprint_attributes = attribute_names
            .iter()
            .map(|n| DeviceAttribute::parse(n).map_err(|e| bad("fingerprint_attributes", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let data_dir = PathBuf::from(self.data_dir.unwrap_or_else(|| "./.authflow-data".into()));
        let database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("authflow.db").display()));
        if crate::store::Backend::of_url(&database_url).is_none() {
            return Err(bad("database_url", "must start with sqlite: or postgres://"));
        }
        let mailer = match self.mailer.as_deref().unwrap_or("dev-outbox") {
            "dev-outbox" => MailerConfig::DevOutbox,
            "smtp" => MailerConfig::Smtp {
                host: self.smtp_host.ok_or_else(|| bad("smtp_host", "required when mailer = smtp"))?,
                port: self.smtp_port.unwrap_or(25),
                username: self.smtp_username,
                password: self.smtp_password.map(SecretString::from),
            },
            other => return Err(bad("mailer", format!("`{other}` is not dev-outbox|smtp"))),
        };
        let dev_endpoints = self.dev_endpoints.unwrap_or(environment == Environment::Development);
        if dev_endpoints && environment == Environment::Production {
            return Err(bad("dev_endpoints", "cannot be enabled in production"));
        }
        let signing_alg = match self.signing_alg.as_deref().unwrap_or("EdDSA") {
            "EdDSA" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            other => return Err(bad("signing_alg", format!("`{other}` is not EdDSA|ES256"))),
        };
        let totp_issuer = self.totp_issuer.unwrap_or_else(|| "authflow".into());
        if totp_issuer.is_empty() || totp_issuer.contains(':') {
            return Err(bad("totp_issuer", "must be non-empty and contain no `:`"));
        }
        if self.trust_forwarded_for.is_some() {
            return Err(bad(
                "trust_forwarded_for",
                "was replaced by `xff_num_trusted_hops` (the number of proxies in front that append to x-forwarded-for; 1 behind the shipped Envoy)",
            ));
        }
        let lockout_base = secs("lockout_base_secs", self.lockout_base_secs, 30, 1, 3600)?;
        let lockout_max = secs("lockout_max_secs", self.lockout_max_secs, 900, 1, 86_400)?;
        if lockout_max < lockout_base {
            return Err(bad("lockout_max_secs", "must be at least lockout_base_secs"));
        }
        Ok(Config {
            environment,
            listen,
            issuer,
            audiences,
            access_ttl,
            refresh_ttl,
            challenge_ttl: secs("challenge_ttl_secs", self.challenge_ttl_secs, 300, 30, 3600)?,
            challenge_max_attempts: count("challenge_max_attempts", self.challenge_max_attempts, 5, 1, 20)?,
            email_token_ttl: secs("email_token_ttl_secs", self.email_token_ttl_secs, 86_400, 60, 30 * 86_400)?,
            reset_token_ttl: secs("reset_token_ttl_secs", self.reset_token_ttl_secs, 1800, 60, 86_400)?,
            fingerprint_attributes,
            data_dir,
            database_url: SecretString::from(database_url),
            mailer,
            mail_from: self.mail_from.unwrap_or_else(|| "authflow <no-reply@authflow.invalid>".into()),
            dev_endpoints,
            signing_alg,
            key_publish_lead: secs("key_publish_lead_secs", self.key_publish_lead_secs, 60, 0, 86_400)?,
            totp_issuer,
            xff_num_trusted_hops: count(
                "xff_num_trusted_hops",
                self.xff_num_trusted_hops,
                0,
                0,
                authflow_contract::client_address::MAX_TRUSTED_HOPS,
            )?,
            body_limit_bytes: count("body_limit_bytes", self.body_limit_bytes, 16 * 1024, 1024, 1024 * 1024)?,
            account_max_failures: count("account_max_failures", self.account_max_failures, 5, 1, 1000)?,
            ip_max_failures: count("ip_max_failures", self.ip_max_failures, 50, 1, 100_000)?,
            lockout_base,
            lockout_max,
            second_factor_max_failures: count("second_factor_max_failures", self.second_factor_max_failures, 5, 1, 20)?,
            second_factor_lockout_max: secs(
                "second_factor_lockout_max_secs",
                self.second_factor_lockout_max_secs,
                86_400,
                1,
                30 * 86_400,
            )?,
            password_hash_memory_kib: count(
                "password_hash_memory_kib",
                self.password_hash_memory_kib,
                19_456,
                1024,
                1024 * 1024,
            )?,
            password_hash_iterations: count("password_hash_iterations", self.password_hash_iterations, 2, 1, 16)?,
            maintenance_interval: secs("maintenance_interval_secs", self.maintenance_interval_secs, 30, 1, 3600)?,
            mail_max_per_recipient_per_hour: count(
                "mail_max_per_recipient_per_hour",
                self.mail_max_per_recipient_per_hour,
                5,
                1,
                1000,
            )?,
            kek,
            dpop,
            mail_max_per_client_per_hour: count("mail_max_per_client_per_hour", self.mail_max_per_client_per_hour, 20, 1, 100_000)?,
            audit_retention: Duration::from_secs(86_400 * count("audit_retention_days", self.audit_retention_days, 90, 1, 3650)?),
            // Never shorter than this service's own tolerance on `exp`; the
            // default covers the largest skew a filter accepts.
            revocation_retention: secs(
                "revocation_retention_secs",
                self.revocation_retention_secs,
                MAX_CLOCK_SKEW_SECS,
                crate::tokens::TIME_TOLERANCE_SECS,
                7 * 86_400,
            )?,
            revocation_max_waiters: count("revocation_max_waiters", self.revocation_max_waiters, 10_000, 0, 1_000_000)? as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.issuer, "http://127.0.0.1:8081");
        assert_eq!(c.audiences, vec!["authflow-demo"]);
        assert_eq!(c.access_ttl, Duration::from_secs(900));
        assert_eq!(c.fingerprint_attributes.len(), 2);
        assert!(c.database_url.expose_secret().ends_with("authflow.db"));
        assert!(c.dev_endpoints);
        assert_eq!(c.signing_alg, Algorithm::EdDSA);
    }

    /// Revocations are kept past their token's `exp` by at least the largest
    /// skew a filter accepts, unless told otherwise, and never by less than
    /// this service's own tolerance.
    #[test]
    fn revocation_retention_covers_every_allowed_skew() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.revocation_retention, Duration::from_secs(MAX_CLOCK_SKEW_SECS));
        let c = Config::load_from(None, &env(&[("AUTHFLOW_REVOCATION_RETENTION_SECS", "120")])).unwrap();
        assert_eq!(c.revocation_retention, Duration::from_secs(120));
        let e = Config::load_from(None, &env(&[("AUTHFLOW_REVOCATION_RETENTION_SECS", "29")])).unwrap_err();
        assert!(e.to_string().contains("revocation_retention_secs"), "{e}");
    }

    #[test]
    fn env_overrides_and_lists() {
        let c = Config::load_from(
            None,
            &env(&[
                ("AUTHFLOW_AUDIENCES", "a, b"),
                ("AUTHFLOW_ACCESS_TTL_SECS", "60"),
                ("AUTHFLOW_FINGERPRINT_ATTRIBUTES", "user-agent,client-ip-prefix"),
                ("AUTHFLOW_SIGNING_ALG", "ES256"),
                ("AUTHFLOW_DEV_ENDPOINTS", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.audiences, vec!["a", "b"]);
        assert_eq!(c.access_ttl, Duration::from_secs(60));
        assert_eq!(c.fingerprint_attributes[1], DeviceAttribute::ClientIpPrefix);
        assert_eq!(c.signing_alg, Algorithm::ES256);
        assert!(!c.dev_endpoints);
    }

    #[test]
    fn dpop_settings_default_to_both_algorithms_without_nonces() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.dpop, DpopSettings { algorithms: vec![Algorithm::ES256, Algorithm::EdDSA], require_nonce: false });
        let c = Config::load_from(None, &env(&[("AUTHFLOW_DPOP_ALGORITHMS", "EdDSA"), ("AUTHFLOW_DPOP_REQUIRE_NONCE", "true")])).unwrap();
        assert_eq!(c.dpop, DpopSettings { algorithms: vec![Algorithm::EdDSA], require_nonce: true });
        for refused in ["RS256", "none", ""] {
            let e = Config::load_from(None, &env(&[("AUTHFLOW_DPOP_ALGORITHMS", refused)])).unwrap_err();
            assert!(e.to_string().contains("dpop_algorithms"), "{refused}: {e}");
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = Config::load_from(None, &env(&[("AUTHFLOW_ACCESS_TTL_SECS", "soon")])).unwrap_err();
        assert!(e.to_string().contains("access_ttl_secs"), "{e}");
        let e = Config::load_from(None, &env(&[("AUTHFLOW_LISTEN", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = Config::load_from(None, &env(&[("AUTHFLOW_FINGERPRINT_ATTRIBUTES", "bad header")])).unwrap_err();
        assert!(e.to_string().contains("fingerprint_attributes"), "{e}");
        let e = Config::load_from(
            None,
            &env(&[("AUTHFLOW_ENVIRONMENT", "production"), ("AUTHFLOW_ISSUER", "https://a.example"), ("AUTHFLOW_DEV_ENDPOINTS", "true")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("dev_endpoints"), "{e}");
        let e = Config::load_from(None, &env(&[("AUTHFLOW_TRUST_FORWARDED_FOR", "true")])).unwrap_err();
        assert!(e.to_string().contains("xff_num_trusted_hops"), "the old setting points to its replacement: {e}");
        let e = Config::load_from(None, &env(&[("AUTHFLOW_XFF_NUM_TRUSTED_HOPS", "11")])).unwrap_err();
        assert!(e.to_string().contains("xff_num_trusted_hops"), "{e}");
    }

    /// Configuration is logged and printed with `{:?}`: no secret may show.
    #[test]
    fn debug_output_holds_no_secret() {
        let kek = crate::kek::generate_key();
        let c = Config::load_from(
            None,
            &env(&[
                ("AUTHFLOW_DATABASE_URL", "postgres://authflow:db-pass-7Hq2@db.internal:5432/authflow"),
                ("AUTHFLOW_MAILER", "smtp"),
                ("AUTHFLOW_SMTP_HOST", "relay.internal"),
                ("AUTHFLOW_SMTP_USERNAME", "mailer"),
                ("AUTHFLOW_SMTP_PASSWORD", "smtp-pass-9Xw4"),
                ("AUTHFLOW_KEK", &kek),
            ]),
        )
        .unwrap();
        let shown = format!("{c:?} {c:#?}");
        for secret in ["db-pass-7Hq2", "smtp-pass-9Xw4", kek.trim()] {
            assert!(!shown.contains(secret), "`{secret}` appears in {shown}");
        }
        // What is not secret still shows, so the output stays useful.
        assert!(shown.contains("relay.internal") && shown.contains("mailer"), "{shown}");
    }

    #[test]
    fn file_unknown_field_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9\"\nlisten_adress = \"x\"\n").unwrap();
        let e = Config::load_from(Some(&path), &[]).unwrap_err();
        assert!(e.to_string().contains("listen_adress"), "{e}");
        std::fs::write(&path, "access_ttl_secs = \"soon\"\n").unwrap();
        let e = Config::load_from(Some(&path), &[]).unwrap_err();
        assert!(e.to_string().contains("access_ttl_secs") && e.to_string().contains("integer"), "{e}");
        std::fs::write(&path, "listen = \"127.0.0.1:9\"\nissuer = \"https://a.example\"\n").unwrap();
        let c = Config::load_from(Some(&path), &[]).unwrap();
        assert_eq!(c.listen.port(), 9);
    }
}
