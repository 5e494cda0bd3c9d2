//! The settings as written (file and environment), every field optional and
//! every section closed to unknown keys, and the one place they are checked
//! and turned into a [`Config`]. Secrets are wrapped the moment they are read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use authflow_contract::fingerprint::DeviceAttribute;
use authflow_contract::revocation::MAX_CLOCK_SKEW_SECS;
use authflow_contract::Algorithm;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use super::{
    AccountConfig, Config, DatabaseConfig, DpopConfig, Environment, KekConfig, KeyConfig,
    MailConfig, MailerConfig, MaintenanceConfig, PasswordConfig, RevocationConfig, ServerConfig,
    SessionConfig, SmtpTls, ThrottleConfig, TokenConfig,
};

/// A setting that failed validation: its dotted path and why.
#[derive(Debug)]
pub struct Invalid {
    pub path: &'static str,
    pub why: String,
}

fn bad(path: &'static str, why: impl std::fmt::Display) -> Invalid {
    Invalid {
        path,
        why: why.to_string(),
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub environment: Option<String>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub keys: RawKeys,
    #[serde(default)]
    pub accounts: RawAccounts,
    #[serde(default)]
    pub passwords: RawPasswords,
    #[serde(default)]
    pub throttle: RawThrottle,
    #[serde(default)]
    pub sessions: RawSessions,
    #[serde(default)]
    pub mail: RawMail,
    #[serde(default)]
    pub smtp: RawSmtp,
    #[serde(default)]
    pub maintenance: RawMaintenance,
    #[serde(default)]
    pub revocation: RawRevocation,
    #[serde(default)]
    pub kek: RawKek,
    #[serde(default)]
    pub dpop: RawDpop,
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    pub dev_endpoints: Option<bool>,
    pub body_limit_bytes: Option<usize>,
    pub xff_num_trusted_hops: Option<u32>,
    #[serde(default, deserialize_with = "list")]
    pub trusted_proxies: Option<Vec<String>>,
    /// Replaced by `xff_num_trusted_hops`; refused with a pointer to it.
    pub trust_forwarded_for: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// May carry the database password.
    pub url: Option<SecretString>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    pub issuer: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub audiences: Option<Vec<String>>,
    pub access_ttl_secs: Option<u64>,
    pub refresh_ttl_secs: Option<u64>,
    #[serde(default, deserialize_with = "list")]
    pub fingerprint_attributes: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub signing_alg: Option<String>,
    pub publish_lead_secs: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccounts {
    pub challenge_ttl_secs: Option<u64>,
    pub challenge_max_attempts: Option<u32>,
    pub email_token_ttl_secs: Option<u64>,
    pub reset_token_ttl_secs: Option<u64>,
    pub unverified_retention_days: Option<u64>,
    pub totp_issuer: Option<String>,
    pub pages_url: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPasswords {
    pub hash_memory_kib: Option<u32>,
    pub hash_iterations: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThrottle {
    pub account_max_failures: Option<u32>,
    pub ip_max_failures: Option<u32>,
    pub lockout_base_secs: Option<u64>,
    pub lockout_max_secs: Option<u64>,
    pub second_factor_max_failures: Option<u32>,
    pub second_factor_lockout_max_secs: Option<u64>,
    pub ip_max_signups: Option<u32>,
    pub ipv6_prefix_len: Option<u8>,
    pub refresh_max_per_hour: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    pub max_per_user: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    pub transport: Option<String>,
    pub from: Option<String>,
    pub max_per_recipient_per_hour: Option<u32>,
    pub max_per_client_per_hour: Option<u32>,
    pub max_signin_codes_per_hour: Option<u32>,
    pub delivery_timeout_secs: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// `starttls` (default), `implicit` or `none`.
    pub tls: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    pub interval_secs: Option<u64>,
    pub audit_retention_days: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    pub retention_secs: Option<u64>,
    pub max_waiters: Option<u32>,
    pub max_staleness_secs: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKek {
    /// 32 random bytes, base64; or `key_file`, a file holding that text.
    pub key: Option<SecretString>,
    pub key_file: Option<String>,
    #[serde(default, deserialize_with = "secret_list")]
    pub previous: Option<Vec<SecretString>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpop {
    /// `ES256`, `EdDSA` (both by default).
    #[serde(default, deserialize_with = "list")]
    pub algorithms: Option<Vec<String>>,
    pub require_nonce: Option<bool>,
    /// Origins of a proxy in front, besides the issuer's.
    #[serde(default, deserialize_with = "list")]
    pub origins: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub password_hash_concurrency: Option<u32>,
    pub password_hash_wait_ms: Option<u64>,
    pub background_tasks: Option<u32>,
}

/// A list: an array (file) or comma-separated text (environment).
fn list<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<String>>, D::Error> {
    struct ListVisitor;
    impl<'de> serde::de::Visitor<'de> for ListVisitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of strings (comma-separated in the environment)")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    de.deserialize_any(ListVisitor).map(Some)
}

fn secret_list<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<SecretString>>, D::Error> {
    Ok(list(de)?.map(|items| items.into_iter().map(SecretString::from).collect()))
}

fn secs(
    path: &'static str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, Invalid> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(bad(path, format!("{v} is outside {min}..={max} seconds")));
    }
    Ok(Duration::from_secs(v))
}

fn count<T: Copy + PartialOrd + std::fmt::Display>(
    path: &'static str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, Invalid> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(bad(path, format!("{v} is outside {min}..={max}")));
    }
    Ok(v)
}

impl RawConfig {
    pub fn validate(self) -> Result<Config, Invalid> {
        let environment = match self.environment.as_deref().unwrap_or("development") {
            "development" => Environment::Development,
            "production" => Environment::Production,
            other => {
                return Err(bad(
                    "environment",
                    format!("`{other}` is not development|production"),
                ))
            }
        };
        let server = self.server.validate(environment)?;
        let database = DatabaseConfig {
            url: self.database.url.unwrap_or_else(|| {
                SecretString::from(format!(
                    "sqlite://{}",
                    server.data_dir.join("authflow.db").display()
                ))
            }),
        };
        if crate::store::Backend::of_url(database.url.expose_secret()).is_none() {
            return Err(bad(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        let tokens = self.tokens.validate(environment)?;
        let throttle = self.throttle.validate(tokens.access_ttl)?;
        let accounts = self.accounts.validate(environment)?;
        // Mailed links default to the issuer's origin; an issuer with a path
        // (`/realms/main`) says the service is reached under that path, so the
        // pages may well not be at the origin's `/auth/…`: one-time tokens
        // would go to whatever serves it. Production names the origin.
        if environment == Environment::Production
            && accounts.pages_url.is_none()
            && accounts.pages_url(&tokens.issuer) != tokens.issuer
        {
            return Err(bad(
                "accounts.pages_url",
                "must be set in production when `tokens.issuer` has a path: the origin the \
                 pages (`/auth/…`) are served at, which mailed links start with",
            ));
        }
        Ok(Config {
            environment,
            server,
            database,
            tokens,
            keys: self.keys.validate()?,
            accounts,
            passwords: self.passwords.validate(environment)?,
            throttle,
            sessions: SessionConfig {
                // At most a quarter of the feed's delta bound: ending them all at
                // once leaves a filter on deltas, not a full snapshot.
                max_per_user: count(
                    "sessions.max_per_user",
                    self.sessions.max_per_user,
                    100,
                    1,
                    1000,
                )?,
            },
            mail: validate_mail(self.mail, self.smtp, environment)?,
            maintenance: MaintenanceConfig {
                interval: secs(
                    "maintenance.interval_secs",
                    self.maintenance.interval_secs,
                    30,
                    1,
                    3600,
                )?,
                audit_retention: Duration::from_secs(
                    86_400
                        * count(
                            "maintenance.audit_retention_days",
                            self.maintenance.audit_retention_days,
                            90,
                            1,
                            3650,
                        )?,
                ),
            },
            revocation: RevocationConfig {
                // Never shorter than this service's own tolerance on `exp`; the
                // default covers the largest skew a filter accepts.
                retention: secs(
                    "revocation.retention_secs",
                    self.revocation.retention_secs,
                    MAX_CLOCK_SKEW_SECS,
                    crate::tokens::TIME_TOLERANCE_SECS,
                    7 * 86_400,
                )?,
                max_waiters: count(
                    "revocation.max_waiters",
                    self.revocation.max_waiters,
                    10_000,
                    0,
                    1_000_000,
                )? as usize,
                max_staleness: secs(
                    "revocation.max_staleness_secs",
                    self.revocation.max_staleness_secs,
                    crate::feed::DEFAULT_MAX_STALENESS.as_secs(),
                    5,
                    3600,
                )?,
            },
            kek: self.kek.validate(environment)?,
            dpop: self.dpop.validate(environment)?,
            limits: self.limits.validate()?,
        })
    }
}

impl RawServer {
    fn validate(self, environment: Environment) -> Result<ServerConfig, Invalid> {
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:8081".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad(
                "server.listen",
                format!("`{listen_text}` is not an ip:port address"),
            )
        })?;
        // Off unless asked for by name: the outbox hands out sign-in codes and
        // reset tokens to whoever can reach the listener.
        let dev_endpoints = self.dev_endpoints.unwrap_or(false);
        if dev_endpoints && environment == Environment::Production {
            return Err(bad(
                "server.dev_endpoints",
                "cannot be enabled in production",
            ));
        }
        if self.trust_forwarded_for.is_some() {
            return Err(bad(
                "server.trust_forwarded_for",
                "was replaced by `server.xff_num_trusted_hops` (the number of proxies in front that append to x-forwarded-for; 1 behind the shipped Envoy)",
            ));
        }
        Ok(ServerConfig {
            listen,
            data_dir: PathBuf::from(self.data_dir.unwrap_or_else(|| "./.authflow-data".into())),
            dev_endpoints,
            body_limit_bytes: count(
                "server.body_limit_bytes",
                self.body_limit_bytes,
                16 * 1024,
                1024,
                1024 * 1024,
            )?,
            xff_num_trusted_hops: count(
                "server.xff_num_trusted_hops",
                self.xff_num_trusted_hops,
                0,
                0,
                authflow_contract::client_address::MAX_TRUSTED_HOPS,
            )?,
            trusted_proxies: {
                let proxies = trusted_proxies(self.trusted_proxies.unwrap_or_default())?;
                // Behind the listed proxies, with no hop read, every client is
                // the proxy's address: one client's failures throttle them all.
                if !proxies.is_empty() && self.xff_num_trusted_hops.unwrap_or(0) == 0 {
                    return Err(bad(
                        "server.trusted_proxies",
                        "has no effect with server.xff_num_trusted_hops = 0 (every client would be taken at its proxy's address, and throttled with all the others): set the hops (1 behind the shipped Envoy)",
                    ));
                }
                proxies
            },
            header_read_timeout: super::HEADER_READ_TIMEOUT,
            request_body_timeout: super::REQUEST_BODY_TIMEOUT,
        })
    }
}

/// `server.trusted_proxies`: CIDR ranges (`10.0.0.0/8`, `fd00::/8`) or
/// single addresses (`127.0.0.1`); not every address, by one range or
/// several (see [`holds_every_address`]).
fn trusted_proxies(entries: Vec<String>) -> Result<Vec<ipnet::IpNet>, Invalid> {
    let nets = parse_trusted_proxies(entries)?;
    if let Some(which) = holds_every_address(&nets) {
        return Err(bad(
            "server.trusted_proxies",
            format!("holds every {which} address: any client would choose the address it is throttled and audited under; list the proxies' own addresses or ranges"),
        ));
    }
    Ok(nets)
}

/// Whether `nets` together hold every IPv4 address (an IPv4 peer is also
/// compared as `::ffff:a.b.c.d`, so `::ffff:0:0/96` or `::/64` does) or every
/// IPv6 address: `Some("IPv4")` / `Some("IPv6")`.
fn holds_every_address(nets: &[ipnet::IpNet]) -> Option<&'static str> {
    use ipnet::IpNet;
    let mapped = ipnet::Ipv6Net::new(std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 96).ok()?;
    let mut v4: Vec<(u128, u128)> = Vec::new();
    let mut v6: Vec<(u128, u128)> = Vec::new();
    for net in nets {
        match net {
            IpNet::V4(n) => v4.push((
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            )),
            IpNet::V6(n) => {
                let (start, end) = (u128::from(n.network()), u128::from(n.broadcast()));
                v6.push((start, end));
                // The part of it within `::ffff:0:0/96`, as IPv4 addresses.
                let (m_start, m_end) =
                    (u128::from(mapped.network()), u128::from(mapped.broadcast()));
                let (lo, hi) = (start.max(m_start), end.min(m_end));
                if lo <= hi {
                    v4.push((lo - m_start, hi - m_start));
                }
            }
        }
    }
    let covers = |mut ranges: Vec<(u128, u128)>, last: u128| {
        ranges.sort_unstable();
        let mut next = 0u128;
        for (start, end) in ranges {
            if start > next {
                return false;
            }
            if end >= last {
                return true;
            }
            next = next.max(end + 1);
        }
        false
    };
    if covers(v4, u128::from(u32::MAX)) {
        return Some("IPv4");
    }
    if covers(v6, u128::MAX) {
        return Some("IPv6");
    }
    None
}

fn parse_trusted_proxies(entries: Vec<String>) -> Result<Vec<ipnet::IpNet>, Invalid> {
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    bad(
                        "server.trusted_proxies",
                        format!("`{entry}` is not an address or a CIDR range (e.g. 10.0.0.0/8, fd00::/8, 127.0.0.1)"),
                    )
                })
        })
        .collect()
}

impl RawTokens {
    fn validate(self, environment: Environment) -> Result<TokenConfig, Invalid> {
        let issuer = self
            .issuer
            .unwrap_or_else(|| "http://127.0.0.1:8081".into());
        if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
            || issuer.ends_with('/')
        {
            return Err(bad(
                "tokens.issuer",
                format!("`{issuer}` must be an http(s) URL without a trailing slash"),
            ));
        }
        issuer_url(&issuer)?;
        if environment == Environment::Production && !issuer.starts_with("https://") {
            return Err(bad("tokens.issuer", "must be https:// in production"));
        }
        // The revocation feed's header carries the issuer, and every filter
        // refuses a provider whose issuer is longer.
        let limit = authflow_contract::revocation::blob::MAX_ISSUER_LEN;
        if issuer.len() > limit {
            return Err(bad(
                "tokens.issuer",
                format!("is {} bytes; at most {limit}", issuer.len()),
            ));
        }
        // The demo's audience is the default in development only: a
        // production token names the services it is for, or any other
        // deployment that kept the default would accept it.
        if environment == Environment::Production && self.audiences.is_none() {
            return Err(bad(
                "tokens.audiences",
                "must be set in production (the audiences your filters require, e.g. `api.example.com`); \
                 the default `authflow-demo` is the demo's",
            ));
        }
        let audiences = self
            .audiences
            .unwrap_or_else(|| vec!["authflow-demo".into()]);
        if audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(bad(
                "tokens.audiences",
                "needs at least one non-empty audience",
            ));
        }
        // At least 15 s: a client refreshes as its access token expires, and
        // a session keeps 256 rotations (`store::ROTATED_REFRESH_TOKENS_KEPT`),
        // the most the per-session refresh limit may allow an hour.
        let access_ttl = secs(
            "tokens.access_ttl_secs",
            self.access_ttl_secs,
            900,
            15,
            86_400,
        )?;
        let refresh_ttl = secs(
            "tokens.refresh_ttl_secs",
            self.refresh_ttl_secs,
            30 * 86_400,
            60,
            365 * 86_400,
        )?;
        if refresh_ttl <= access_ttl {
            return Err(bad(
                "tokens.refresh_ttl_secs",
                "must be longer than tokens.access_ttl_secs",
            ));
        }
        let attribute_names = self
            .fingerprint_attributes
            .unwrap_or_else(|| vec!["user-agent".into(), "accept-language".into()]);
        let fingerprint_attributes = attribute_names
            .iter()
            .map(|n| DeviceAttribute::parse(n).map_err(|e| bad("tokens.fingerprint_attributes", e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TokenConfig {
            issuer,
            audiences,
            access_ttl,
            refresh_ttl,
            fingerprint_attributes,
        })
    }
}

/// `tokens.issuer` beyond its scheme: a URL with a host, without user
/// info, query, fragment, whitespace or backslash, written as its own
/// canonical form (lower-case scheme and host, no default port): it is
/// compared byte for byte by every filter, and without `accounts.pages_url`
/// it is where the mailed one-time links point.
fn issuer_url(issuer: &str) -> Result<(), Invalid> {
    const PATH: &str = "tokens.issuer";
    let refused = |what: &str| {
        bad(
            PATH,
            format!("must be an http(s) URL such as https://auth.example.com (no trailing slash): {what}"),
        )
    };
    if issuer
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(refused("it holds whitespace or a backslash"));
    }
    let url = url::Url::parse(issuer).map_err(|e| refused(&format!("it is not a URL ({e})")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refused("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refused("it has user info (`user@`)"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(refused("it has a query (`?`) or a fragment (`#`)"));
    }
    let canonical = url.as_str();
    let canonical = if url.path() == "/" {
        canonical.strip_suffix('/').unwrap_or(canonical)
    } else {
        canonical
    };
    if canonical != issuer {
        return Err(bad(
            PATH,
            format!("`{issuer}` is not written as URLs are compared; write `{canonical}` (lower-case scheme and host, no default port)"),
        ));
    }
    Ok(())
}

impl RawKeys {
    fn validate(self) -> Result<KeyConfig, Invalid> {
        let signing_alg = match self.signing_alg.as_deref().unwrap_or("EdDSA") {
            "EdDSA" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(bad(
                    "keys.signing_alg",
                    format!("`{other}` is not EdDSA|ES256"),
                ))
            }
        };
        Ok(KeyConfig {
            signing_alg,
            publish_lead: publish_lead(self.publish_lead_secs)?,
        })
    }
}

/// The shortest `keys.publish_lead_secs`: a rotated-in key must be in every
/// instance's JWKS (each reloads the keys every second) and fetched by every
/// filter (one that meets an unknown `kid` refetches the JWKS at most every
/// `min_refetch_interval_secs`, 5 s by default) before it signs, or the
/// tokens it signs meanwhile are refused as signed by an unknown key.
const MIN_PUBLISH_LEAD_SECS: u64 = 10;

fn publish_lead(value: Option<u64>) -> Result<Duration, Invalid> {
    const PATH: &str = "keys.publish_lead_secs";
    if let Some(v) = value.filter(|v| *v < MIN_PUBLISH_LEAD_SECS) {
        return Err(bad(
            PATH,
            format!(
                "{v} s is too short; at least {MIN_PUBLISH_LEAD_SECS}: a new signing key must reach \
                 every instance (keys are reloaded every second) and every filter (an unknown kid \
                 refetches the JWKS at most every min_refetch_interval_secs, 5 s by default) \
                 before it signs, or the tokens it signs meanwhile are refused"
            ),
        ));
    }
    secs(PATH, value, 60, MIN_PUBLISH_LEAD_SECS, 86_400)
}

impl RawAccounts {
    fn validate(self, environment: Environment) -> Result<AccountConfig, Invalid> {
        let totp_issuer = self.totp_issuer.unwrap_or_else(|| "authflow".into());
        if totp_issuer.is_empty() || totp_issuer.contains(':') {
            return Err(bad(
                "accounts.totp_issuer",
                "must be non-empty and contain no `:`",
            ));
        }
        Ok(AccountConfig {
            challenge_ttl: secs(
                "accounts.challenge_ttl_secs",
                self.challenge_ttl_secs,
                300,
                30,
                3600,
            )?,
            challenge_max_attempts: count(
                "accounts.challenge_max_attempts",
                self.challenge_max_attempts,
                5,
                1,
                20,
            )?,
            email_token_ttl: secs(
                "accounts.email_token_ttl_secs",
                self.email_token_ttl_secs,
                86_400,
                60,
                30 * 86_400,
            )?,
            reset_token_ttl: secs(
                "accounts.reset_token_ttl_secs",
                self.reset_token_ttl_secs,
                1800,
                60,
                86_400,
            )?,
            unverified_retention: Duration::from_secs(
                86_400
                    * count(
                        "accounts.unverified_retention_days",
                        self.unverified_retention_days,
                        7,
                        1,
                        3650,
                    )?,
            ),
            totp_issuer,
            pages_url: self
                .pages_url
                .map(|url| pages_origin(&url, environment))
                .transpose()?,
        })
    }
}

/// `accounts.pages_url`, checked and written as `scheme://host[:port]`.
/// Mailed links are this origin followed by a page's path (`/auth/…`, served
/// at the root: the forms post there and the cookies are `__Host-`) and a
/// one-time token, so anything beyond the origin would make a broken or
/// misleading link; in production the tokens travel over https only.
fn pages_origin(text: &str, environment: Environment) -> Result<String, Invalid> {
    http_origin(
        "accounts.pages_url",
        text,
        environment,
        " the pages are at /auth/… on it;",
        "mailed links carry one-time tokens (email verification, password reset)",
    )
}

/// An http(s) origin (`scheme://host[:port]`), checked and written in its
/// canonical form (lower-case, no default port); https in production, where
/// `why_https` says why. `hint` follows the expected shape in a refusal.
fn http_origin(
    path: &'static str,
    text: &str,
    environment: Environment,
    hint: &str,
    why_https: &str,
) -> Result<String, Invalid> {
    // Not repeated in the message: user info may hold a password.
    let refused = |what: &str| {
        bad(
            path,
            format!(
                "must be an http(s) origin such as https://example.com (scheme://host[:port];{hint} \
                 nothing after it): {what}"
            ),
        )
    };
    if !(text.starts_with("https://") || text.starts_with("http://")) {
        return Err(refused("it does not start with https:// or http://"));
    }
    if text.chars().any(|c| c.is_whitespace() || c == '\\') {
        return Err(refused("it holds whitespace or a backslash"));
    }
    let url = url::Url::parse(text).map_err(|e| refused(&format!("it is not a URL ({e})")))?;
    if url.host().is_none() {
        return Err(refused("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refused("it has user info (`user@`)"));
    }
    if url.path() != "/" {
        return Err(refused(&format!("it has a path (`{}`)", url.path())));
    }
    if url.query().is_some() {
        return Err(refused("it has a query (`?`)"));
    }
    if url.fragment().is_some() {
        return Err(refused("it has a fragment (`#`)"));
    }
    if environment == Environment::Production && url.scheme() != "https" {
        return Err(bad(
            path,
            format!("must be https:// in production: {why_https}"),
        ));
    }
    Ok(url.origin().ascii_serialization())
}

impl RawThrottle {
    /// `access_ttl`: a client refreshes once per access-token lifetime, so
    /// the refresh limit's default leaves room for two (within its cap), and
    /// a limit set below one is refused.
    fn validate(self, access_ttl: Duration) -> Result<ThrottleConfig, Invalid> {
        let lockout_base = secs(
            "throttle.lockout_base_secs",
            self.lockout_base_secs,
            30,
            1,
            3600,
        )?;
        let lockout_max = secs(
            "throttle.lockout_max_secs",
            self.lockout_max_secs,
            900,
            1,
            86_400,
        )?;
        if lockout_max < lockout_base {
            return Err(bad(
                "throttle.lockout_max_secs",
                "must be at least throttle.lockout_base_secs",
            ));
        }
        let second_factor_lockout_max = secs(
            "throttle.second_factor_lockout_max_secs",
            self.second_factor_lockout_max_secs,
            86_400,
            1,
            30 * 86_400,
        )?;
        // The second factor's lockout starts at `lockout_base` and doubles up to this cap.
        if second_factor_lockout_max < lockout_base {
            return Err(bad(
                "throttle.second_factor_lockout_max_secs",
                "must be at least throttle.lockout_base_secs (the second factor's first lockout)",
            ));
        }
        Ok(ThrottleConfig {
            account_max_failures: count(
                "throttle.account_max_failures",
                self.account_max_failures,
                5,
                1,
                1000,
            )?,
            ip_max_failures: count(
                "throttle.ip_max_failures",
                self.ip_max_failures,
                50,
                1,
                100_000,
            )?,
            lockout_base,
            lockout_max,
            second_factor_max_failures: count(
                "throttle.second_factor_max_failures",
                self.second_factor_max_failures,
                5,
                1,
                20,
            )?,
            second_factor_lockout_max,
            ip_max_signups: count(
                "throttle.ip_max_signups",
                self.ip_max_signups,
                10,
                1,
                100_000,
            )?,
            ipv6_prefix_len: count(
                "throttle.ipv6_prefix_len",
                self.ipv6_prefix_len,
                64,
                32,
                128,
            )?,
            refresh_max_per_hour: refresh_max_per_hour(self.refresh_max_per_hour, access_ttl)?,
        })
    }
}

/// `throttle.refresh_max_per_hour`: by default 120, or two refreshes per
/// access-token lifetime where that is more (a client refreshes as its
/// access token expires), at most the cap; a value set below one refresh
/// per lifetime would throttle every client of the deployment.
fn refresh_max_per_hour(value: Option<u32>, access_ttl: Duration) -> Result<u32, Invalid> {
    const PATH: &str = "throttle.refresh_max_per_hour";
    let cap = crate::store::ROTATED_REFRESH_TOKENS_KEPT;
    let per_lifetime =
        u32::try_from(3600u64.div_ceil(access_ttl.as_secs().max(1))).unwrap_or(u32::MAX);
    let default = per_lifetime.saturating_mul(2).clamp(120, cap);
    let v = count(PATH, value, default, 1, cap)?;
    if v < per_lifetime.min(cap) {
        return Err(bad(
            PATH,
            format!("{v} is below one refresh per access-token lifetime (tokens.access_ttl_secs: {per_lifetime} an hour)"),
        ));
    }
    Ok(v)
}

fn validate_mail(
    mail: RawMail,
    smtp: RawSmtp,
    environment: Environment,
) -> Result<MailConfig, Invalid> {
    let transport = match mail.transport.as_deref().unwrap_or("dev-outbox") {
        // Production: sign-in codes and reset links in clear files nobody
        // delivers (and nothing prunes), on a disk anyone can fill by signing up.
        "dev-outbox" if environment == Environment::Production => {
            return Err(bad(
                "mail.transport",
                "`dev-outbox` only writes mail to files (sign-in codes and reset links in clear, never delivered): \
                 in production set mail.transport = smtp",
            ))
        }
        "dev-outbox" => MailerConfig::DevOutbox,
        "smtp" => smtp.validate(environment)?,
        other => {
            return Err(bad(
                "mail.transport",
                format!("`{other}` is not dev-outbox|smtp"),
            ))
        }
    };
    // A relay that checks the sender's domain refuses `.invalid`: every
    // sign-in code and reset link would be lost, each only logged.
    if environment == Environment::Production && mail.from.is_none() {
        return Err(bad(
            "mail.from",
            "in production set the sender your relay accepts (e.g. `authflow <no-reply@example.com>`)",
        ));
    }
    Ok(MailConfig {
        transport,
        from: mail
            .from
            .unwrap_or_else(|| "authflow <no-reply@authflow.invalid>".into()),
        max_per_recipient_per_hour: count(
            "mail.max_per_recipient_per_hour",
            mail.max_per_recipient_per_hour,
            5,
            1,
            1000,
        )?,
        max_per_client_per_hour: count(
            "mail.max_per_client_per_hour",
            mail.max_per_client_per_hour,
            20,
            1,
            100_000,
        )?,
        max_signin_codes_per_hour: count(
            "mail.max_signin_codes_per_hour",
            mail.max_signin_codes_per_hour,
            10,
            1,
            1000,
        )?,
        delivery_timeout: secs(
            "mail.delivery_timeout_secs",
            mail.delivery_timeout_secs,
            20,
            1,
            300,
        )?,
    })
}

impl RawSmtp {
    /// The relay when `mail.transport = "smtp"`. TLS is on unless `tls =
    /// "none"` is written out, and even then a password is sent in clear
    /// only to a relay on this machine (a loopback address) — and in
    /// production no mail at all to another: it carries sign-in codes and
    /// reset links, each as good as the password.
    fn validate(self, environment: Environment) -> Result<MailerConfig, Invalid> {
        let host = self
            .host
            .ok_or_else(|| bad("smtp.host", "required when mail.transport = smtp"))?;
        let tls = match self.tls.as_deref().unwrap_or("starttls") {
            "starttls" => SmtpTls::StartTls,
            "implicit" => SmtpTls::Implicit,
            "none" => SmtpTls::None,
            other => {
                return Err(bad(
                    "smtp.tls",
                    format!("`{other}` is not starttls|implicit|none"),
                ))
            }
        };
        if tls == SmtpTls::None {
            if self.ca_file.is_some() {
                return Err(bad(
                    "smtp.ca_file",
                    "has no use with smtp.tls = none (no TLS, no certificate to check)",
                ));
            }
            if environment == Environment::Production && !crate::tls::is_loopback_host(&host) {
                return Err(bad(
                    "smtp.tls",
                    format!(
                        "`none` would send sign-in codes and reset links in clear to {host}: in production use starttls or \
                         implicit (without TLS, mail goes only to a relay on a loopback address)"
                    ),
                ));
            }
            if (self.username.is_some() || self.password.is_some())
                && !crate::tls::is_loopback_host(&host)
            {
                return Err(bad(
                    "smtp.tls",
                    format!(
                        "`none` would send smtp.username and smtp.password in clear to {host}: use starttls or implicit \
                         (without TLS, credentials go only to a relay on a loopback address)"
                    ),
                ));
            }
        } else if rustls::pki_types::ServerName::try_from(host.as_str()).is_err() {
            return Err(bad("smtp.host", format!("`{host}` is not a host name or IP address a TLS certificate can be checked against")));
        }
        // One without the other would send mail unauthenticated without a word.
        match (&self.username, &self.password) {
            (Some(_), None) => return Err(bad("smtp.password", "required with smtp.username")),
            (None, Some(_)) => return Err(bad("smtp.username", "required with smtp.password")),
            _ => {}
        }
        let ca_file = match self.ca_file {
            Some(path) => {
                let path = PathBuf::from(path);
                crate::tls::read_ca_file(&path).map_err(|e| bad("smtp.ca_file", e))?;
                Some(path)
            }
            None => None,
        };
        Ok(MailerConfig::Smtp {
            port: self
                .port
                .unwrap_or(if tls == SmtpTls::Implicit { 465 } else { 25 }),
            host,
            username: self.username,
            password: self.password,
            tls,
            ca_file,
        })
    }
}

impl RawPasswords {
    fn validate(self, environment: Environment) -> Result<PasswordConfig, Invalid> {
        let hash_memory_kib = count(
            "passwords.hash_memory_kib",
            self.hash_memory_kib,
            19_456,
            1024,
            1024 * 1024,
        )?;
        let hash_iterations = count("passwords.hash_iterations", self.hash_iterations, 2, 1, 16)?;
        // OWASP's argon2id floor (m=19 MiB t=2 … m=7 MiB t=5: about 36 MiB·passes
        // and at least 7 MiB): below it a stolen database is cheap to crack.
        // Development keeps the low settings that make tests fast.
        let work = u64::from(hash_memory_kib) * u64::from(hash_iterations);
        if environment == Environment::Production && (hash_memory_kib < 7_168 || work < 35_840) {
            return Err(bad(
                "passwords.hash_memory_kib",
                format!(
                    "{hash_memory_kib} KiB × {hash_iterations} passes is below the production \
                     floor (at least 7168 KiB and 35840 KiB·passes, e.g. 19456 × 2)"
                ),
            ));
        }
        Ok(PasswordConfig {
            hash_memory_kib,
            hash_iterations,
        })
    }
}

impl RawKek {
    fn validate(self, environment: Environment) -> Result<KekConfig, Invalid> {
        let current = match (&self.key, &self.key_file) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "kek.key_file",
                    "set either `kek.key` or `kek.key_file`, not both",
                ))
            }
            (Some(text), None) => {
                Some(crate::kek::parse_key(text.expose_secret()).map_err(|e| bad("kek.key", e))?)
            }
            (None, Some(path)) => {
                if environment == Environment::Production {
                    refuse_world_readable("kek.key_file", path)?;
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad("kek.key_file", format!("cannot read {path}: {e}")))?;
                Some(
                    crate::kek::parse_key(&text)
                        .map_err(|e| bad("kek.key_file", format!("{path}: {e}")))?,
                )
            }
            (None, None) => None,
        };
        let previous = self
            .previous
            .iter()
            .flatten()
            .map(|k| {
                crate::kek::parse_previous_key(k.expose_secret())
                    .map_err(|e| bad("kek.previous", e))
            })
            .collect::<Result<_, _>>()?;
        Ok(KekConfig { current, previous })
    }
}

/// The key that opens every secret at rest, readable by every account on
/// the host, is as good as on disk in clear: refused, as ssh refuses such a
/// private key. Group read stays allowed (a volume's `fsGroup`).
fn refuse_world_readable(setting: &'static str, path: &str) -> Result<(), Invalid> {
    match open_to_every_account(std::path::Path::new(path)) {
        Some(mode) => Err(bad(
            setting,
            format!("{path} is open to every account (mode {mode:o}): `chmod o-rwx` it"),
        )),
        None => Ok(()),
    }
}

/// The mode of a file that grants anything to every account (`o+rwx`): the
/// one rule for a file holding a secret; `None` when it grants them nothing
/// (or cannot be read: reading it reports that).
pub(super) fn open_to_every_account(path: &std::path::Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o007 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

impl RawDpop {
    fn validate(self, environment: Environment) -> Result<DpopConfig, Invalid> {
        let names = self
            .algorithms
            .unwrap_or_else(|| vec!["ES256".into(), "EdDSA".into()]);
        let mut algorithms = Vec::new();
        for name in &names {
            let alg = match name.as_str() {
                "ES256" => Algorithm::ES256,
                "EdDSA" => Algorithm::EdDSA,
                other => {
                    return Err(bad(
                        "dpop.algorithms",
                        format!("`{other}` is not ES256|EdDSA"),
                    ))
                }
            };
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if algorithms.is_empty() {
            return Err(bad("dpop.algorithms", "needs at least one of ES256, EdDSA"));
        }
        let mut origins = Vec::new();
        for text in self.origins.unwrap_or_default() {
            let origin = http_origin(
                "dpop.origins",
                &text,
                environment,
                " a proxy's, whose clients name it in their proofs;",
                "a bound token's proofs cross it",
            )?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(DpopConfig {
            algorithms,
            require_nonce: self.require_nonce.unwrap_or(false),
            origins,
        })
    }
}

impl RawLimits {
    fn validate(self) -> Result<super::LimitsConfig, Invalid> {
        // Two per core: each holds `passwords.hash_memory_kib` and a core while it runs.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let default = u32::try_from(cores.saturating_mul(2))
            .unwrap_or(u32::MAX)
            .clamp(2, 4096);
        let concurrency = count(
            "limits.password_hash_concurrency",
            self.password_hash_concurrency,
            default,
            1,
            4096,
        )?;
        Ok(super::LimitsConfig {
            password_hash_concurrency: concurrency as usize,
            password_hash_wait: Duration::from_millis(count(
                "limits.password_hash_wait_ms",
                self.password_hash_wait_ms,
                500,
                0,
                10_000,
            )?),
            background_tasks: count(
                "limits.background_tasks",
                self.background_tasks,
                256,
                1,
                65_536,
            )? as usize,
        })
    }
}
