//! Filter configuration: JSON from Envoy's plugin configuration (Istio's
//! `pluginConfig` arrives the same way). Bytes → serde structs that refuse
//! unknown fields → a validated [`FilterConfig`] the request path can trust.
//! Any error names the field, so the log line at `on_configure` says what to fix.

use std::collections::BTreeSet;

use authflow_contract::revocation::MAX_CLOCK_SKEW_SECS;
use authflow_contract::{fingerprint::DeviceAttribute, Algorithm, KeySet};
use serde::Deserialize;

use crate::header_spellings;
use crate::provider_id::{PerProvider, ProviderId};
use crate::unit_enum::deserialize_by_name;

/// Upper bounds on what the configuration may ask for.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;
pub const MAX_TOKEN_BYTES_LIMIT: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    providers: Vec<RawProvider>,
    #[serde(default = "defaults::clock_skew_secs")]
    clock_skew_secs: u64,
    #[serde(default = "defaults::max_token_lifetime_secs")]
    max_token_lifetime_secs: u64,
    #[serde(default)]
    token_sources: Option<RawTokenSources>,
    #[serde(default = "defaults::max_token_bytes")]
    max_token_bytes: usize,
    #[serde(default)]
    identity_headers: Option<RawIdentityHeaders>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    case_insensitive_paths: bool,
    #[serde(default)]
    default_policy: Option<Policy>,
    #[serde(default)]
    default_providers: Vec<String>,
    #[serde(default)]
    failure_mode: FailureMode,
    #[serde(default = "defaults::retry_after_secs")]
    retry_after_secs: u32,
    #[serde(default = "defaults::cache_max_entries")]
    cache_max_entries: usize,
    #[serde(default = "defaults::key_wait_ms")]
    key_wait_ms: u64,
    #[serde(default)]
    device_binding: Option<RawDeviceBinding>,
    #[serde(default)]
    revocation: Option<RawRevocationPolicy>,
    #[serde(default)]
    forward_device_secret: bool,
    #[serde(default)]
    dpop_nonce_key_env: Option<String>,
    #[serde(default)]
    browser: RawBrowser,
}

/// Not an `Option` of a struct: each such instantiation costs Wasm, and an
/// absent section reads the same as one without `refresh_path`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBrowser {
    #[serde(default)]
    refresh_path: Option<String>,
}

mod defaults {
    pub fn clock_skew_secs() -> u64 { 30 }
    pub fn max_token_lifetime_secs() -> u64 { 24 * 3600 }
    pub fn max_token_bytes() -> usize { 8 * 1024 }
    pub fn retry_after_secs() -> u32 { 5 }
    pub fn cache_max_entries() -> usize { 10_000 }
    pub fn key_wait_ms() -> u64 { 3_000 }
    pub fn refresh_interval_secs() -> u64 { 300 }
    pub fn timeout_ms() -> u64 { 5_000 }
    pub fn min_refetch_interval_secs() -> u64 { 5 }
    pub fn poll_interval_ms() -> u64 { 1_000 }
    pub fn max_staleness_secs() -> u64 { 45 }
    pub fn refresh_path() -> String { authflow_contract::browser::REFRESH_PATH.to_owned() }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    algorithms: Vec<String>,
    #[serde(default)]
    required_claims: Vec<String>,
    #[serde(default)]
    token_type: Option<String>,
    jwks: RawJwksSource,
    #[serde(default)]
    revocations: Option<RawUpstream>,
    #[serde(default)]
    forward_token: bool,
    #[serde(default)]
    dpop: DpopMode,
    #[serde(default)]
    dpop_algorithms: Option<Vec<String>>,
    #[serde(default)]
    dpop_max_age_secs: Option<u64>,
    #[serde(default)]
    dpop_nonce: DpopNonce,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawJwksSource {
    Remote(RawUpstream),
    Inline(InlineKeys),
}

/// An inline JWKS, read into keys as the configuration is read (the error
/// is kept for `validate`, which names the field).
#[derive(Debug)]
struct InlineKeys(Result<KeySet, authflow_contract::jwk::JwksError>);

impl<'de> Deserialize<'de> for InlineKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let document = authflow_contract::json::borrowed::Json::deserialize(deserializer)?;
        Ok(InlineKeys(KeySet::from_document(&document)))
    }
}

/// `identity_headers.claims`: claim path → header name, as given (the
/// header name `None` where it is no string, for `validate_identity` to
/// name). Read as a JSON object by the reader the token's claims use too: a
/// path given twice is refused.
#[derive(Debug, Default)]
struct ClaimHeaders(Vec<(String, Option<String>)>);

impl<'de> Deserialize<'de> for ClaimHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = authflow_contract::json::borrowed::Object::deserialize(deserializer)?;
        Ok(ClaimHeaders(object.members().map(|(path, header)| (path.to_owned(), header.as_str().map(str::to_owned))).collect()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    cluster: String,
    path: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    refresh_interval_secs: Option<u64>,
    #[serde(default)]
    poll_interval_ms: Option<u64>,
    #[serde(default = "defaults::timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "defaults::min_refetch_interval_secs")]
    min_refetch_interval_secs: u64,
    /// Revocations only: seconds the service may hold a poll (a long poll).
    #[serde(default)]
    wait_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenSources {
    #[serde(default = "yes")]
    authorization_bearer: bool,
    #[serde(default)]
    cookies: Vec<String>,
    #[serde(default)]
    headers: Vec<String>,
}

fn yes() -> bool { true }

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityHeaders {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    roles: Option<String>,
    #[serde(default)]
    scopes: Option<String>,
    #[serde(default)]
    session: Option<String>,
    /// The service account calling (a verified service-account token's `client_id`).
    #[serde(default)]
    client_id: Option<String>,
    /// claim path (dots for nesting) → header name; each value is checked
    /// to be a string by `validate_identity`.
    #[serde(default)]
    claims: ClaimHeaders,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match")]
    matcher: RawRouteMatch,
    policy: Policy,
    #[serde(default)]
    forward_credentials: bool,
    #[serde(default)]
    browser_redirect: bool,
    #[serde(default)]
    providers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteMatch {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviceBinding {
    mode: DeviceMode,
    #[serde(default = "default_device_attributes")]
    attributes: Vec<String>,
    #[serde(default)]
    tokens_without_fingerprint: MissingFingerprint,
    #[serde(default)]
    xff_num_trusted_hops: u32,
}

fn default_device_attributes() -> Vec<String> {
    vec!["user-agent".into(), "accept-language".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevocationPolicy {
    #[serde(default = "defaults::max_staleness_secs")]
    max_staleness_secs: u64,
    #[serde(default)]
    on_stale: StalePolicy,
    #[serde(default = "default_max_entries")]
    max_entries: usize,
}

fn default_max_entries() -> usize { 1_000_000 }

/// What a route requires.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Policy {
    /// No token needed; a presented token is still verified and, if valid, its identity forwarded.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid user token: no service-account token (see
    /// `authflow_contract::claims::is_service_token`).
    User,
    /// A valid user token holding at least one of these roles. Roles are a
    /// user's: a service-account token never passes, whatever it carries.
    RolesAny(Vec<String>),
    /// A valid service-account token of one of these client ids.
    ClientIdsAny(Vec<String>),
    /// A valid token (user or service account) holding every one of these scopes.
    ScopesAll(Vec<String>),
}

impl Policy {
    /// Whether `failure_mode: fail_open` may pass this policy unverified:
    /// it asks only that there is a caller, and nothing the token claims.
    pub fn opens_without_keys(&self) -> bool {
        matches!(self, Policy::Public | Policy::Authenticated | Policy::User)
    }
}

/// What to do when the token's provider has no keys (none ever loaded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// `503` + `Retry-After`: nothing passes unverified.
    #[default]
    FailClosed,
    /// Only while no provider at all ever loaded keys (the auth system is
    /// down at start): a request whose token names a provider the route
    /// admits passes unauthenticated (no identity headers) on a route that
    /// asks for nothing more than a caller (`authenticated`, `user`). Roles,
    /// scopes and client ids cannot be read from an unverified token: those
    /// routes answer as under `FailClosed`, and so does every route once any
    /// provider holds keys. For staged roll-outs only.
    FailOpen,
}
deserialize_by_name!(FailureMode { "fail_closed" => FailClosed, "fail_open" => FailOpen });

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceMode {
    /// A token whose `dfp` does not match the request is refused (401).
    Enforce,
    /// Mismatches are counted and logged; the request passes.
    Report,
    #[default]
    Off,
}
deserialize_by_name!(DeviceMode { "enforce" => Enforce, "report" => Report, "off" => Off });

/// Tokens with no `dfp` claim (e.g. from another identity provider).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingFingerprint {
    #[default]
    Allow,
    Deny,
}
deserialize_by_name!(MissingFingerprint { "allow" => Allow, "deny" => Deny });

/// When the revocation list could not be refreshed for longer than allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StalePolicy {
    /// `503`: a revoked token must not slip through an outage.
    #[default]
    Deny,
    /// Keep serving on the last good list, counting every such request.
    Allow,
}
deserialize_by_name!(StalePolicy { "deny" => Deny, "allow" => Allow });

// ---- validated runtime types ----

#[derive(Clone, Debug)]
pub struct FilterConfig {
    pub providers: PerProvider<Provider>,
    pub clock_skew_secs: u64,
    pub max_token_lifetime_secs: u64,
    pub token_sources: TokenSources,
    pub max_token_bytes: usize,
    pub identity: IdentityHeaders,
    pub routes: Vec<Route>,
    /// Route paths match ignoring ASCII case (for case-insensitive backends).
    pub case_insensitive_paths: bool,
    pub default_policy: Policy,
    /// Whose tokens pass the default policy (as a route's `providers`).
    pub default_providers: Vec<ProviderId>,
    pub failure_mode: FailureMode,
    pub retry_after_secs: u32,
    pub cache_max_entries: usize,
    pub key_wait_ms: u64,
    pub device: DeviceBinding,
    pub revocation: RevocationPolicy,
    /// Forward the device secret (`x-authflow-device`, the device cookie)
    /// upstream; off by default: it is a credential for the auth service only.
    pub forward_device_secret: bool,
    /// The environment variable of the Wasm VM holding the DPoP nonce key
    /// (base64, at least 32 bytes), so every replica issues and accepts the
    /// same nonces. Unset: a random key per Envoy process.
    pub dpop_nonce_key_env: Option<String>,
    /// Browser sign-in (see `crate::browser`): set when the `browser` section
    /// is given or a route has `browser_redirect`.
    pub browser: Option<BrowserSignIn>,
}

/// Where browsers refused on a `browser_redirect` route are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserSignIn {
    /// The auth service's refresh endpoint, a same-origin path without a
    /// query: the filter appends `?return_to=…`.
    pub refresh_path: String,
}

#[derive(Clone, Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub required_claims: Vec<String>,
    pub token_type: Option<String>,
    pub jwks: JwksSource,
    pub revocations: Option<Upstream>,
    /// Keep this provider's verified token in the request sent upstream
    /// (like `jwt_authn`'s `forward`); off by default: it is removed.
    pub forward_token: bool,
    pub dpop: DpopPolicy,
}

/// Whether a provider's tokens may or must be DPoP-bound (RFC 9449).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DpopMode {
    /// The default: the `DPoP` scheme is refused (400), and so is a bound
    /// token (`cnf.jkt`) presented as `Bearer`. Costs nothing per request.
    #[default]
    Off,
    /// Bearer tokens pass; DPoP-bound tokens need a valid proof on every request.
    Allowed,
    /// Only DPoP-bound tokens with a valid proof pass.
    Required,
}
deserialize_by_name!(DpopMode { "off" => Off, "allowed" => Allowed, "required" => Required });

/// Whether a provider's DPoP proofs must carry a server nonce (RFC 9449 §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DpopNonce {
    #[default]
    Off,
    /// A proof without a current nonce of this filter is refused with
    /// `use_dpop_nonce` and a fresh one in `DPoP-Nonce`.
    Required,
}
deserialize_by_name!(DpopNonce { "off" => Off, "required" => Required });

/// A provider's DPoP settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopPolicy {
    pub mode: DpopMode,
    /// Proof algorithms accepted (ES256, EdDSA).
    pub algorithms: Vec<Algorithm>,
    /// How old a proof's `iat` may be.
    pub max_age_secs: u64,
    pub nonce: DpopNonce,
}

/// The longest `dpop_max_age_secs`: the replay store keeps every proof this long.
pub const MAX_DPOP_MAX_AGE_SECS: u64 = 300;

#[derive(Clone, Debug)]
pub enum JwksSource {
    Remote(Upstream),
    Inline(KeySet),
}

/// An HTTP resource fetched through a named Envoy cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    /// How often to fetch when all is well.
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Floor between two early refetches (unknown `kid`), so random kids cannot cause a storm.
    pub min_refetch_interval_ms: u64,
    /// How long the service may hold a fetch until something changes (a
    /// long poll; the revocation feed's `wait`); 0: plain polling. The
    /// callout's timeout is this plus `timeout_ms`.
    pub wait_ms: u64,
}

#[derive(Clone, Debug)]
pub struct TokenSources {
    pub authorization_bearer: bool,
    pub cookies: Vec<String>,
    pub headers: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct IdentityHeaders {
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub roles: Option<String>,
    pub scopes: Option<String>,
    pub session: Option<String>,
    pub client_id: Option<String>,
    /// (claim path split on dots, header)
    pub claims: Vec<(Vec<String>, String)>,
}

impl IdentityHeaders {
    /// Every header name the filter owns: removed from each incoming request.
    pub fn all_names(&self) -> Vec<&str> {
        [&self.subject, &self.issuer, &self.roles, &self.scopes, &self.session, &self.client_id]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(self.claims.iter().map(|(_, h)| h.as_str()))
            .collect()
    }
}

#[derive(Clone, Debug)]
pub struct Route {
    pub path: PathMatch,
    pub methods: Vec<String>,
    pub host: Option<String>,
    pub policy: Policy,
    /// The token and the device secret reach this route's upstream as sent
    /// (e.g. the auth service's own API: logout, refresh, admin calls).
    pub forward_credentials: bool,
    /// A browser navigation refused with 401 here is sent to sign in
    /// (`302` to `browser.refresh_path`) instead; see `crate::browser`.
    pub browser_redirect: bool,
    /// Only tokens of these providers pass (like `jwt_authn`'s per-route
    /// `provider_name`). Empty only where it cannot mix issuers: on a public
    /// route, or with a single provider (which it then means); with several,
    /// a non-public route must name them (see `admitted_providers`). Another
    /// issuer's roles, scopes or `sub` mean nothing on a route not for it.
    pub providers: Vec<ProviderId>,
}

/// How a route matches the normalized request path (see `crate::path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Plain string prefix: `/api/admin` also matches `/api/adminx`.
    Prefix(String),
    /// Whole segments only (Envoy's `path_separated_prefix`): `/api/admin`
    /// matches `/api/admin` and `/api/admin/x`, not `/api/adminx`.
    PathPrefix(String),
}

#[derive(Clone, Debug)]
pub struct DeviceBinding {
    pub mode: DeviceMode,
    pub attributes: Vec<DeviceAttribute>,
    pub tokens_without_fingerprint: MissingFingerprint,
    /// For `client-ip-prefix`: 0 = Envoy's client address (`source.address`,
    /// which already applies Envoy's own `xff_num_trusted_hops`); N = the
    /// N-th `x-forwarded-for` entry from the right (see the contract).
    pub xff_num_trusted_hops: u32,
}

#[derive(Clone, Debug)]
pub struct RevocationPolicy {
    pub max_staleness_ms: u64,
    pub on_stale: StalePolicy,
    pub max_entries: usize,
}

/// A configuration error, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid authflow configuration: {}", self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl FilterConfig {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return err(format!("configuration is {} bytes, over the {MAX_CONFIG_BYTES}-byte limit", bytes.len()));
        }
        // serde_json's message names the unknown/mistyped field and its position.
        let raw: RawConfig = authflow_contract::json::from_slice(bytes).map_err(|e| ConfigError(e.to_string()))?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.providers.is_empty() {
            return err("`providers`: at least one provider is required");
        }
        let revocation = match raw.revocation {
            None => RevocationPolicy {
                max_staleness_ms: defaults::max_staleness_secs() * 1000,
                on_stale: StalePolicy::Deny,
                max_entries: default_max_entries(),
            },
            Some(r) => {
                if r.max_staleness_secs == 0 {
                    return err("`revocation.max_staleness_secs`: must be positive");
                }
                if r.max_entries == 0 || r.max_entries > 10_000_000 {
                    return err("`revocation.max_entries`: between 1 and 10000000");
                }
                RevocationPolicy {
                    max_staleness_ms: r.max_staleness_secs.saturating_mul(1000),
                    on_stale: r.on_stale,
                    max_entries: r.max_entries,
                }
            }
        };
        let mut providers = Vec::with_capacity(raw.providers.len());
        let mut issuers = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (i, p) in raw.providers.into_iter().enumerate() {
            let provider = validate_provider(p, &revocation).map_err(|e| ConfigError(format!("`providers[{i}]`.{}", e.0)))?;
            if !issuers.insert(provider.issuer.clone()) {
                return err(format!("`providers[{i}].issuer`: issuer `{}` is configured twice", provider.issuer));
            }
            // Logs, stats and operators tell providers apart by name.
            if !names.insert(provider.name.clone()) {
                return err(format!("`providers[{i}].name`: provider name `{}` is used twice", provider.name));
            }
            providers.push(provider);
        }
        if raw.max_token_bytes < 64 || raw.max_token_bytes > MAX_TOKEN_BYTES_LIMIT {
            return err(format!("`max_token_bytes`: must be between 64 and {MAX_TOKEN_BYTES_LIMIT}"));
        }
        // The service keeps publishing a revocation this long past its token's
        // `exp` by default; a larger skew would let revoked tokens revive.
        if raw.clock_skew_secs > MAX_CLOCK_SKEW_SECS {
            return err(format!("`clock_skew_secs`: at most {MAX_CLOCK_SKEW_SECS}"));
        }
        if raw.max_token_lifetime_secs == 0 {
            return err("`max_token_lifetime_secs`: must be positive");
        }
        if raw.cache_max_entries > 1_000_000 {
            return err("`cache_max_entries`: at most 1000000");
        }
        if raw.key_wait_ms > 60_000 {
            return err("`key_wait_ms`: at most 60000");
        }
        let token_sources = match raw.token_sources {
            None => TokenSources { authorization_bearer: true, cookies: vec![], headers: vec![] },
            Some(t) => {
                for (i, c) in t.cookies.iter().enumerate() {
                    if !is_token(c) {
                        return err(format!("`token_sources.cookies[{i}]`: `{c}` is not a valid cookie name"));
                    }
                }
                let headers = header_names(&t.headers, "token_sources.headers")?;
                if !t.authorization_bearer && t.cookies.is_empty() && headers.is_empty() {
                    return err("`token_sources`: no source left to read a token from");
                }
                TokenSources { authorization_bearer: t.authorization_bearer, cookies: t.cookies, headers }
            }
        };
        let several = providers.len() > 1;
        let identity = validate_identity(raw.identity_headers, several, &token_sources.headers)?;
        let providers = PerProvider::from_vec(providers);
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            routes.push(validate_route(r, &providers).map_err(|e| ConfigError(format!("`routes[{i}]`.{}", e.0)))?);
        }
        let browser = validate_browser(raw.browser, &routes)?;
        let default_policy = raw.default_policy.unwrap_or(Policy::Authenticated);
        check_policy(&default_policy).map_err(|e| ConfigError(format!("`default_policy`: {}", e.0)))?;
        let default_providers = admitted_providers(&raw.default_providers, &providers, "`default_providers`")?;
        let device = match raw.device_binding {
            None => DeviceBinding {
                mode: DeviceMode::Off,
                attributes: vec![],
                tokens_without_fingerprint: MissingFingerprint::Allow,
                xff_num_trusted_hops: 0,
            },
            Some(d) => {
                let mut attributes = Vec::with_capacity(d.attributes.len());
                for (i, a) in d.attributes.iter().enumerate() {
                    attributes.push(
                        DeviceAttribute::parse(a)
                            .map_err(|e| ConfigError(format!("`device_binding.attributes[{i}]`: {e}")))?,
                    );
                }
                if attributes.len() > 16 {
                    return err("`device_binding.attributes`: at most 16");
                }
                if d.xff_num_trusted_hops > authflow_contract::client_address::MAX_TRUSTED_HOPS {
                    return err(format!(
                        "`device_binding.xff_num_trusted_hops`: at most {}",
                        authflow_contract::client_address::MAX_TRUSTED_HOPS
                    ));
                }
                DeviceBinding {
                    mode: d.mode,
                    attributes,
                    tokens_without_fingerprint: d.tokens_without_fingerprint,
                    xff_num_trusted_hops: d.xff_num_trusted_hops,
                }
            }
        };
        Ok(FilterConfig {
            providers,
            clock_skew_secs: raw.clock_skew_secs,
            max_token_lifetime_secs: raw.max_token_lifetime_secs,
            token_sources,
            max_token_bytes: raw.max_token_bytes,
            identity,
            routes,
            case_insensitive_paths: raw.case_insensitive_paths,
            default_policy,
            default_providers,
            failure_mode: raw.failure_mode,
            retry_after_secs: raw.retry_after_secs,
            cache_max_entries: raw.cache_max_entries,
            key_wait_ms: raw.key_wait_ms,
            device,
            revocation,
            forward_device_secret: raw.forward_device_secret,
            dpop_nonce_key_env: validate_env_name(raw.dpop_nonce_key_env)?,
            browser,
        })
    }

    pub fn provider_for_issuer(&self, issuer: &str) -> Option<ProviderId> {
        self.providers.find(|p| p.issuer == issuer)
    }

    pub fn provider(&self, id: ProviderId) -> Option<&Provider> {
        self.providers.get(id)
    }
}

fn validate_provider(p: RawProvider, policy: &RevocationPolicy) -> Result<Provider, ConfigError> {
    if p.name.is_empty() || p.name.len() > 64 || !p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return err(format!("name: `{}` must be 1-64 letters, digits, `-` or `_`", p.name));
    }
    if p.issuer.is_empty() {
        return err("issuer: must not be empty");
    }
    if p.algorithms.is_empty() {
        return err("algorithms: list at least one of EdDSA, ES256, RS256");
    }
    let mut algorithms = Vec::new();
    for a in &p.algorithms {
        match Algorithm::parse(a) {
            Some(alg) => algorithms.push(alg),
            None => return err(format!("algorithms: `{a}` is not supported (EdDSA, ES256, RS256)")),
        }
    }
    let jwks = match p.jwks {
        RawJwksSource::Remote(u) => JwksSource::Remote(validate_upstream(u, "jwks.remote", defaults::refresh_interval_secs() * 1000, true)?),
        RawJwksSource::Inline(doc) => {
            let set = doc.0.map_err(|e| ConfigError(format!("jwks.inline: {e}")))?;
            JwksSource::Inline(set)
        }
    };
    let revocations = match p.revocations {
        None => None,
        Some(u) => {
            let wait_secs = u.wait_secs;
            let mut upstream = validate_upstream(u, "revocations", defaults::poll_interval_ms(), false)?;
            upstream.wait_ms = revocation_wait_ms(wait_secs, upstream.timeout_ms, policy.max_staleness_ms)?;
            Some(upstream)
        }
    };
    let dpop = validate_dpop(p.dpop, p.dpop_algorithms, p.dpop_max_age_secs, p.dpop_nonce)?;
    Ok(Provider {
        dpop,
        name: p.name,
        issuer: p.issuer,
        audiences: p.audiences,
        algorithms,
        required_claims: p.required_claims,
        token_type: p.token_type,
        jwks,
        revocations,
        forward_token: p.forward_token,
    })
}

fn validate_dpop(mode: DpopMode, algorithms: Option<Vec<String>>, max_age_secs: Option<u64>, nonce: DpopNonce) -> Result<DpopPolicy, ConfigError> {
    use authflow_contract::dpop::{DEFAULT_MAX_AGE_SECS, SUPPORTED_ALGORITHMS};
    let algorithms = match algorithms {
        None => SUPPORTED_ALGORITHMS.to_vec(),
        Some(names) if names.is_empty() => return err("dpop_algorithms: list at least one of ES256, EdDSA"),
        Some(names) => {
            let mut out = Vec::new();
            for name in &names {
                match Algorithm::parse(name).filter(|a| SUPPORTED_ALGORITHMS.contains(a)) {
                    Some(a) => out.push(a),
                    None => return err(format!("dpop_algorithms: `{name}` is not supported (ES256, EdDSA)")),
                }
            }
            out
        }
    };
    let max_age_secs = max_age_secs.unwrap_or(DEFAULT_MAX_AGE_SECS);
    if !(1..=MAX_DPOP_MAX_AGE_SECS).contains(&max_age_secs) {
        return err(format!("dpop_max_age_secs: must be 1-{MAX_DPOP_MAX_AGE_SECS}"));
    }
    if nonce == DpopNonce::Required && mode == DpopMode::Off {
        return err("dpop_nonce: `required` needs `dpop: allowed` or `required`");
    }
    Ok(DpopPolicy { mode, algorithms, max_age_secs, nonce })
}

/// `dpop_nonce_key_env`: a plain environment variable name.
fn validate_env_name(name: Option<String>) -> Result<Option<String>, ConfigError> {
    match name {
        Some(n) if n.is_empty() || n.len() > 128 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            err(format!("`dpop_nonce_key_env`: `{n}` must be 1-128 letters, digits or `_`"))
        }
        name => Ok(name),
    }
}

/// The longest `revocations.wait_secs` (the service's own bound).
pub const MAX_REVOCATION_WAIT_SECS: u64 = 60;
/// `revocations.wait_secs` when not set, if the staleness bound allows it:
/// an idle long poll re-arms 60 / 30 = 2 times a minute per sidecar.
const DEFAULT_REVOCATION_WAIT_SECS: u64 = 30;

/// How long the revocation feed may hold a poll. The list is only known
/// fresh when an answer arrives, so a held poll plus its network allowance
/// must end before the list counts as stale (`revocation.max_staleness_secs`).
fn revocation_wait_ms(wait_secs: Option<u64>, timeout_ms: u64, max_staleness_ms: u64) -> Result<u64, ConfigError> {
    let room_secs = max_staleness_ms.saturating_sub(timeout_ms).saturating_sub(1) / 1000;
    match wait_secs {
        None => Ok(DEFAULT_REVOCATION_WAIT_SECS.min(room_secs) * 1000),
        Some(0) => Ok(0),
        Some(s) if s > MAX_REVOCATION_WAIT_SECS => err(format!("revocations.wait_secs: between 0 and {MAX_REVOCATION_WAIT_SECS}")),
        Some(s) if s > room_secs => err(format!(
            "revocations.wait_secs: {s} s plus timeout_ms must stay under revocation.max_staleness_secs \
             (the list is fresh only when an answer arrives); at most {room_secs} here"
        )),
        Some(s) => Ok(s * 1000),
    }
}

fn validate_upstream(u: RawUpstream, field: &str, default_interval_ms: u64, seconds: bool) -> Result<Upstream, ConfigError> {
    if u.cluster.is_empty() {
        return err(format!("{field}.cluster: must name an Envoy cluster"));
    }
    if !u.path.starts_with('/') {
        return err(format!("{field}.path: must start with `/`"));
    }
    let interval_ms = match (seconds, u.refresh_interval_secs, u.poll_interval_ms) {
        (true, Some(s), None) => s.saturating_mul(1000),
        (true, None, None) => default_interval_ms,
        (false, None, Some(ms)) => ms,
        (false, None, None) => default_interval_ms,
        (true, _, Some(_)) => return err(format!("{field}.poll_interval_ms: not used here; use refresh_interval_secs")),
        (false, Some(_), _) => return err(format!("{field}.refresh_interval_secs: not used here; use poll_interval_ms")),
    };
    if !(100..=24 * 3600 * 1000).contains(&interval_ms) {
        return err(format!("{field}: refresh interval must be between 100 ms and 24 h"));
    }
    if u.timeout_ms == 0 || u.timeout_ms > 60_000 {
        return err(format!("{field}.timeout_ms: between 1 and 60000"));
    }
    if seconds && u.wait_secs.is_some() {
        return err(format!("{field}.wait_secs: only the revocation feed is long-polled"));
    }
    // The floor that keeps random `kid`s from turning into a fetch storm.
    if u.min_refetch_interval_secs == 0 {
        return err(format!("{field}.min_refetch_interval_secs: must be at least 1 (0 would let every unknown `kid` trigger a fetch)"));
    }
    Ok(Upstream {
        authority: u.authority.unwrap_or_else(|| u.cluster.clone()),
        cluster: u.cluster,
        path: u.path,
        interval_ms,
        timeout_ms: u.timeout_ms,
        min_refetch_interval_ms: u.min_refetch_interval_secs.saturating_mul(1000),
        // Set by the caller for the revocation feed (see `revocation_wait_ms`).
        wait_ms: 0,
    })
}

/// `several`: more than one provider is configured, so the same `sub` may
/// be two people: the issuer always goes upstream (`x-auth-issuer` unless
/// `issuer` names another header), so backends can tell them apart.
/// `token_headers`: credentials too (a token header is removed, an identity
/// header set: one header cannot be both).
fn validate_identity(raw: Option<RawIdentityHeaders>, several: bool, token_headers: &[String]) -> Result<IdentityHeaders, ConfigError> {
    let raw = raw.unwrap_or(RawIdentityHeaders {
        subject: Some("x-auth-user".into()),
        issuer: None,
        roles: Some("x-auth-roles".into()),
        scopes: Some("x-auth-scopes".into()),
        session: Some("x-auth-session".into()),
        client_id: Some("x-auth-client-id".into()),
        claims: ClaimHeaders::default(),
    });
    let one = |v: Option<String>, field: &str| -> Result<Option<String>, ConfigError> {
        v.map(|h| header_name(&h).ok_or_else(|| ConfigError(format!("`identity_headers.{field}`: `{h}` is not a valid header name"))))
            .transpose()
    };
    let mut claims = Vec::new();
    for (path, header) in raw.claims.0 {
        let Some(header) = header else {
            return err(format!("`identity_headers.claims.{path}`: must be a header name (a string)"));
        };
        let h = header_name(&header)
            .ok_or_else(|| ConfigError(format!("`identity_headers.claims.{path}`: `{header}` is not a valid header name")))?;
        let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) || parts.len() > 8 {
            return err(format!("`identity_headers.claims`: `{path}` is not a claim path (dot-separated names)"));
        }
        claims.push((parts, h));
    }
    let identity = IdentityHeaders {
        subject: one(raw.subject, "subject")?,
        issuer: one(raw.issuer.or_else(|| several.then(|| "x-auth-issuer".into())), "issuer")?,
        roles: one(raw.roles, "roles")?,
        scopes: one(raw.scopes, "scopes")?,
        session: one(raw.session, "session")?,
        client_id: one(raw.client_id, "client_id")?,
        claims,
    };
    let names = identity.all_names();
    // Credentials, routing and message framing: a claim must not set them.
    const RESERVED: &[&str] = &[
        "authorization", "cookie", "host", "content-length", "transfer-encoding", "connection", "te", "upgrade",
        "keep-alive", "proxy-authorization", "x-forwarded-for", "dpop", authflow_contract::fingerprint::DEVICE_HEADER,
    ];
    for (i, n) in names.iter().enumerate() {
        // `x-auth-user` and `x_auth_user` are one header to a CGI-style backend
        // (both `HTTP_X_AUTH_USER`): a claim mapped to one would fill the other.
        if names.iter().take(i).any(|m| header_spellings::same_header(m, n)) {
            return err("`identity_headers`: the same header is mapped twice (`-` and `_` count as one)");
        }
        if n.starts_with(':')
            || RESERVED.iter().any(|r| header_spellings::same_header(r, n))
            || token_headers.iter().any(|t| header_spellings::same_header(t, n))
        {
            return err(format!("`identity_headers`: `{n}` cannot be an identity header"));
        }
        // Each `-`/`_` mix of the name is removed from every request (see `header_spellings`).
        if n.bytes().filter(|b| matches!(b, b'-' | b'_')).count() > header_spellings::MAX_SEPARATORS {
            return err(format!("`identity_headers`: `{n}` has more than {} `-` or `_`", header_spellings::MAX_SEPARATORS));
        }
    }
    Ok(identity)
}

fn validate_route(r: RawRoute, configured: &PerProvider<Provider>) -> Result<Route, ConfigError> {
    let path = match (r.matcher.prefix, r.matcher.path_prefix, r.matcher.exact) {
        (Some(p), None, None) => PathMatch::Prefix(p),
        (None, Some(p), None) if p.len() > 1 && p.ends_with('/') => {
            return err("match.path_prefix: no trailing `/` (it matches whole segments; `/a` covers `/a/…`)")
        }
        (None, Some(p), None) => PathMatch::PathPrefix(p),
        (None, None, Some(e)) => PathMatch::Exact(e),
        (None, None, None) => return err("match: `prefix`, `path_prefix` or `exact` is required"),
        _ => return err("match: give one of `prefix`, `path_prefix` or `exact`"),
    };
    let (PathMatch::Prefix(p) | PathMatch::PathPrefix(p) | PathMatch::Exact(p)) = &path;
    if !crate::path::is_normalized_rule_path(p) {
        return err(format!(
            "match: `{p}` must be a normalized path: start with `/`, no `//`, `.` or `..` segments, `%`, `\\`, `;`, `?` or `#` (requests are matched after normalization)"
        ));
    }
    let methods = r.matcher.methods.iter().map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>();
    if methods.iter().any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase())) {
        return err("match.methods: HTTP method names only");
    }
    let host = r.matcher.host.as_deref().map(validate_route_host).transpose()?;
    check_policy(&r.policy).map_err(|e| ConfigError(format!("policy: {}", e.0)))?;
    let providers = admitted_providers(&r.providers, configured, "providers")?;
    Ok(Route {
        path,
        methods,
        host,
        policy: r.policy,
        forward_credentials: r.forward_credentials,
        browser_redirect: r.browser_redirect,
        providers,
    })
}

/// The providers whose tokens may satisfy a policy (`field`: a route's
/// `providers`, or `default_providers`). With more than one provider
/// configured, every policy must name them: left empty it would take every
/// issuer's tokens, and one issuer's `sub`, roles or client id would pass as
/// another's (a partner's `u-alice` with `admin` as yours) — on a public
/// route too, where the identity still goes to the backend. On a public
/// route another provider's token is anonymous.
fn admitted_providers(names: &[String], configured: &PerProvider<Provider>, field: &str) -> Result<Vec<ProviderId>, ConfigError> {
    if names.is_empty() && configured.len() > 1 {
        return err(format!("{field}: required with several providers"));
    }
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        match configured.find(|p| p.name == *name) {
            Some(id) => ids.push(id),
            None => return err(format!("{field}: no provider is named `{name}`")),
        }
    }
    Ok(ids)
}

/// A route's host as requests are compared with it (lower case, one trailing
/// dot dropped: see `request::host_name`). The request's port is dropped
/// before the compare and nothing is a pattern, so a host with a port, a
/// wildcard or an empty one would never match: refused.
fn validate_route_host(h: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| err(format!("match.host: `{h}` {why}"));
    if crate::request::without_port(h) != h {
        return bad("has a port: requests are matched on the host without its port");
    }
    if h.contains('*') {
        return bad("is a wildcard: only one exact host name matches");
    }
    match crate::request::host_name(h) {
        "" => bad("is empty"),
        name => Ok(name.to_ascii_lowercase()),
    }
}

/// The browser sign-in settings: the refresh path must be a safe
/// same-origin path (it becomes a `Location`), and a browser sent there
/// must not be sent there again (a redirect loop).
fn validate_browser(raw: RawBrowser, routes: &[Route]) -> Result<Option<BrowserSignIn>, ConfigError> {
    let refresh_path = match raw.refresh_path {
        Some(path) => path,
        None if routes.iter().any(|r| r.browser_redirect) => defaults::refresh_path(),
        None => return Ok(None),
    };
    if !authflow_contract::return_to::is_safe(&refresh_path) || refresh_path.bytes().any(|b| b == b'?' || b == b'#') {
        return err(format!("`browser.refresh_path`: `{refresh_path}` must be a safe same-origin path without a query"));
    }
    for (i, route) in routes.iter().enumerate() {
        if !crate::policy::path_matches(&route.path, &refresh_path, false) {
            continue;
        }
        if route.browser_redirect {
            return err(format!("`routes[{i}]`.browser_redirect: covers `browser.refresh_path`, a redirect loop"));
        }
        if route.methods.is_empty() && route.host.is_none() {
            break;
        }
    }
    for (i, route) in routes.iter().enumerate() {
        if route.browser_redirect && route.policy == Policy::Public {
            return err(format!("`routes[{i}]`.browser_redirect: a public route refuses no one"));
        }
    }
    Ok(Some(BrowserSignIn { refresh_path }))
}

fn check_policy(p: &Policy) -> Result<(), ConfigError> {
    match p {
        Policy::RolesAny(v) | Policy::ScopesAll(v) | Policy::ClientIdsAny(v) if v.is_empty() || v.iter().any(String::is_empty) => {
            err("roles_any / scopes_all / client_ids_any need at least one non-empty name")
        }
        _ => Ok(()),
    }
}

/// RFC 7230 token characters: valid header and cookie names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_name(s: &str) -> Option<String> {
    is_token(s).then(|| s.to_ascii_lowercase())
}

fn header_names(v: &[String], field: &str) -> Result<Vec<String>, ConfigError> {
    v.iter()
        .enumerate()
        .map(|(i, h)| header_name(h).ok_or_else(|| ConfigError(format!("`{field}[{i}]`: `{h}` is not a valid header name"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MINIMAL: &str = r#"{
        "providers": [{
            "name": "authflow", "issuer": "https://auth.example", "audiences": ["api"],
            "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "auth", "path": "/.well-known/jwks.json"}}
        }]
    }"#;

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.default_policy, Policy::Authenticated);
        assert_eq!(c.failure_mode, FailureMode::FailClosed);
        assert!(c.token_sources.authorization_bearer);
        assert_eq!(c.identity.subject.as_deref(), Some("x-auth-user"));
        assert_eq!(c.identity.client_id.as_deref(), Some("x-auth-client-id"));
        assert!(c.identity.all_names().contains(&"x-auth-client-id"), "owned: stripped from every request");
        let JwksSource::Remote(u) = &c.provider(ProviderId::FIRST).unwrap().jwks else { panic!() };
        assert_eq!(u.authority, "auth");
        assert_eq!(u.interval_ms, 300_000);
        assert_eq!(c.device.mode, DeviceMode::Off);
        assert_eq!(c.revocation.on_stale, StalePolicy::Deny);
    }

    fn with(patch: serde_json::Value) -> Result<FilterConfig, ConfigError> {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        json_merge(&mut v, patch);
        FilterConfig::from_json(v.to_string().as_bytes())
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn every_mode_name_reads_as_its_variant() {
        let device = |mode: &str, missing: &str| {
            let c = with(serde_json::json!({"device_binding": {"mode": mode, "tokens_without_fingerprint": missing}})).unwrap();
            (c.device.mode, c.device.tokens_without_fingerprint)
        };
        assert_eq!(device("enforce", "deny"), (DeviceMode::Enforce, MissingFingerprint::Deny));
        assert_eq!(device("report", "allow"), (DeviceMode::Report, MissingFingerprint::Allow));
        assert_eq!(device("off", "allow"), (DeviceMode::Off, MissingFingerprint::Allow));
        let failure = |mode: &str| with(serde_json::json!({"failure_mode": mode})).unwrap().failure_mode;
        assert_eq!(failure("fail_closed"), FailureMode::FailClosed);
        assert_eq!(failure("fail_open"), FailureMode::FailOpen);
        let stale = |policy: &str| with(serde_json::json!({"revocation": {"on_stale": policy}})).unwrap().revocation.on_stale;
        assert_eq!(stale("deny"), StalePolicy::Deny);
        assert_eq!(stale("allow"), StalePolicy::Allow);
        let dpop = |mode: &str, nonce: &str| {
            let c = with(serde_json::json!({"providers": [{"name": "a", "issuer": "i", "algorithms": ["EdDSA"],
                "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}}, "dpop": mode, "dpop_nonce": nonce}]}))
            .unwrap();
            let p = c.provider(ProviderId::FIRST).unwrap();
            (p.dpop.mode, p.dpop.nonce)
        };
        assert_eq!(dpop("off", "off"), (DpopMode::Off, DpopNonce::Off));
        assert_eq!(dpop("allowed", "required"), (DpopMode::Allowed, DpopNonce::Required));
        assert_eq!(dpop("required", "off"), (DpopMode::Required, DpopNonce::Off));
        let e = with(serde_json::json!({"device_binding": {"mode": "Enforce"}})).unwrap_err();
        assert!(e.0.contains("unknown variant `Enforce`, expected one of `enforce`, `report`, `off`"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let e = with(serde_json::json!({"bogus": 1})).unwrap_err();
        assert!(e.0.contains("unknown field `bogus`"), "{e}");
        let e = with(serde_json::json!({"identity_headers": {"subject": "x-a-b-c-d-e-f-g"}})).unwrap_err();
        assert!(e.0.contains("identity_headers") && e.0.contains("more than 6"), "{e}");
        let e = with(serde_json::json!({"providers": [{"name": "x", "issuer": "i", "algorithms": ["HS256"], "jwks": {"inline": {"keys": []}}}]})).unwrap_err();
        assert!(e.0.contains("providers[0]`.algorithms") && e.0.contains("HS256"), "{e}");
        let e = with(serde_json::json!({"routes": [{"match": {"prefix": "/a", "exact": "/b"}, "policy": "public"}]})).unwrap_err();
        assert!(e.0.contains("routes[0]"), "{e}");
        let e = with(serde_json::json!({"routes": [{"match": {"prefix": "/a"}, "policy": {"roles_any": []}}]})).unwrap_err();
        assert!(e.0.contains("routes[0]`.policy"), "{e}");
        let e = with(serde_json::json!({"routes": [{"match": {"prefix": "/a"}, "policy": {"client_ids_any": [""]}}]})).unwrap_err();
        assert!(e.0.contains("routes[0]`.policy"), "{e}");
        let e = with(serde_json::json!({"identity_headers": {"subject": "bad header"}})).unwrap_err();
        assert!(e.0.contains("identity_headers.subject"), "{e}");
        let e = with(serde_json::json!({"identity_headers": {"claims": {"org.team": 7}}})).unwrap_err();
        assert!(e.0.contains("identity_headers.claims.org.team") && e.0.contains("header name"), "{e}");
        // A name given twice is refused, not read as its last copy.
        let twice = MINIMAL.replacen("{", r#"{"identity_headers": {"claims": {"org.team": "x-team", "org.team": "x-other"}},"#, 1);
        let e = FilterConfig::from_json(twice.as_bytes()).unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
        // Where a wrong value sits, by its path in the document; a field given
        // twice anywhere is refused, whichever type reads it.
        let misspelt = MINIMAL.replace(r#""remote": {"cluster""#, r#""remote": {"clustr""#);
        let e = FilterConfig::from_json(misspelt.as_bytes()).unwrap_err();
        assert!(e.0.contains("providers[0].jwks.remote: unknown field `clustr`"), "{e}");
        let e = FilterConfig::from_json(MINIMAL.replace(r#""issuer""#, r#""issuer": "https://other.example", "issuer""#).as_bytes()).unwrap_err();
        assert!(e.0.contains("a member name appears twice"), "{e}");
        let e = FilterConfig::from_json(MINIMAL.replace(r#""path""#, r#""path": "/a", "path""#).as_bytes()).unwrap_err();
        assert!(e.0.contains("a member name appears twice"), "{e}");
        let e = with(serde_json::json!({"max_token_bytes": 10})).unwrap_err();
        assert!(e.0.contains("max_token_bytes"), "{e}");
        let e = with(serde_json::json!({"device_binding": {"mode": "enforce", "attributes": ["no good"]}})).unwrap_err();
        assert!(e.0.contains("device_binding.attributes[0]"), "{e}");
        assert!(FilterConfig::from_json(b"not json").is_err());
        assert!(FilterConfig::from_json(br#"{"providers": []}"#).unwrap_err().0.contains("providers"));
    }

    #[test]
    fn routes_and_policies_parse() {
        let c = with(serde_json::json!({
            "routes": [
                {"match": {"prefix": "/public"}, "policy": "public"},
                {"match": {"exact": "/admin", "methods": ["post"], "host": "API.example"}, "policy": {"roles_any": ["admin"]}},
                {"match": {"prefix": "/w"}, "policy": {"scopes_all": ["read", "write"]}},
                {"match": {"prefix": "/svc"}, "policy": {"client_ids_any": ["billing"]}},
                {"match": {"prefix": "/me"}, "policy": "user"}
            ],
            "identity_headers": {"subject": "x-user", "claims": {"org.team": "x-team"}}
        }))
        .unwrap();
        assert_eq!(c.routes.len(), 5);
        assert_eq!(c.routes[3].policy, Policy::ClientIdsAny(vec!["billing".into()]));
        assert_eq!(c.routes[4].policy, Policy::User);
        assert_eq!(c.routes[1].methods, vec!["POST"]);
        assert_eq!(c.routes[1].host.as_deref(), Some("api.example"));
        assert_eq!(c.routes[2].policy, Policy::ScopesAll(vec!["read".into(), "write".into()]));
        assert_eq!(c.identity.claims, vec![(vec!["org".to_string(), "team".to_string()], "x-team".to_string())]);
        assert_eq!(c.identity.all_names(), vec!["x-user", "x-team"]);
        assert!(!c.case_insensitive_paths);
    }

    #[test]
    fn route_paths_are_checked() {
        let route = |m: serde_json::Value| with(serde_json::json!({"routes": [{"match": m, "policy": "public"}]}));
        let c = route(serde_json::json!({"path_prefix": "/api/admin"})).unwrap();
        assert_eq!(c.routes[0].path, PathMatch::PathPrefix("/api/admin".into()));
        assert!(route(serde_json::json!({"path_prefix": "/"})).is_ok());
        assert!(route(serde_json::json!({"prefix": "/.well-known/"})).is_ok());
        for bad in [
            serde_json::json!({"path_prefix": "/api/"}),
            serde_json::json!({"prefix": "/a", "path_prefix": "/b"}),
            serde_json::json!({"prefix": "api"}),
            serde_json::json!({"exact": "/a/../b"}),
            serde_json::json!({"prefix": "/a//b"}),
            serde_json::json!({"prefix": "/a%2Fb"}),
            serde_json::json!({"exact": "/a?x=1"}),
        ] {
            let e = route(bad.clone()).unwrap_err();
            assert!(e.0.contains("routes[0]`.match"), "{bad}: {e}");
        }
        assert!(with(serde_json::json!({"case_insensitive_paths": true})).unwrap().case_insensitive_paths);
    }

    #[test]
    fn route_providers_name_configured_providers() {
        let route = |providers: serde_json::Value, policy: &str| {
            with(serde_json::json!({"routes": [{"match": {"prefix": "/a"}, "policy": policy, "providers": providers}]}))
        };
        let c = route(serde_json::json!(["authflow"]), "authenticated").unwrap();
        assert_eq!(c.routes[0].providers, vec![ProviderId::FIRST]);
        let e = route(serde_json::json!(["nobody"]), "authenticated").unwrap_err();
        assert!(e.0.contains("`routes[0]`.providers: no provider is named `nobody`"), "{e}");
        // A public route may name them too: their identity alone reaches its backend.
        assert_eq!(route(serde_json::json!(["authflow"]), "public").unwrap().routes[0].providers, vec![ProviderId::FIRST]);
    }

    /// Identity header names that are one header to a backend folding `-`
    /// and `_` (CGI: `HTTP_X_AUTH_USER`) are refused: a claim could fill the subject.
    #[test]
    fn identity_headers_differ_by_more_than_dash_and_underscore() {
        let e = with(serde_json::json!({"identity_headers": {"subject": "x-auth-user", "claims": {"nickname": "x_auth_user"}}})).unwrap_err();
        assert!(e.0.contains("mapped twice") && e.0.contains("`-` and `_` count as one"), "{e}");
        let e = with(serde_json::json!({"identity_headers": {"subject": "x-auth-user", "roles": "X_Auth_Roles", "claims": {"grp": "x-auth-roles"}}})).unwrap_err();
        assert!(e.0.contains("mapped twice"), "{e}");
        assert!(with(serde_json::json!({"identity_headers": {"subject": "x-auth-user", "claims": {"nickname": "x-auth-nick"}}})).is_ok());
        // Nor a header that frames the message or carries credentials, in any spelling.
        for reserved in ["content-length", "Transfer-Encoding", "x_forwarded_for", "dpop", "x-authflow-device", "cookie", "x_token"] {
            let e = with(serde_json::json!({"token_sources": {"headers": ["x-token"]},
                "identity_headers": {"subject": "x-auth-user", "claims": {"size": reserved}}})).unwrap_err();
            assert!(e.0.contains("cannot be an identity header"), "{reserved}: {e}");
        }
    }

    #[test]
    fn route_hosts_are_checked() {
        let host = |h: &str| with(serde_json::json!({"routes": [{"match": {"prefix": "/", "host": h}, "policy": "public"}]}));
        assert_eq!(host("Admin.Example.").unwrap().routes[0].host.as_deref(), Some("admin.example"), "one trailing dot dropped");
        assert_eq!(host("[::1]").unwrap().routes[0].host.as_deref(), Some("[::1]"));
        // The request's port is dropped before matching: these could never match.
        for (bad, why) in [("admin.example:8443", "port"), ("[::1]:80", "port"), ("*.example.com", "wildcard"), ("", "empty"), (".", "empty")] {
            let e = host(bad).unwrap_err();
            assert!(e.0.contains("`routes[0]`.match.host") && e.0.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn early_refetch_floor_is_at_least_a_second() {
        let jwks = |min: u64| serde_json::json!({"providers": [{"name": "p", "issuer": "i", "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "c", "path": "/j", "min_refetch_interval_secs": min}}}]});
        let e = with(jwks(0)).unwrap_err();
        assert!(e.0.contains("jwks.remote.min_refetch_interval_secs") && e.0.contains("at least 1"), "{e}");
        let c = with(jwks(1)).unwrap();
        let JwksSource::Remote(u) = &c.provider(ProviderId::FIRST).unwrap().jwks else { panic!() };
        assert_eq!(u.min_refetch_interval_ms, 1_000);
    }

    #[test]
    fn revocation_wait_fits_under_the_staleness_bound() {
        let feed = |revocations: serde_json::Value, policy: serde_json::Value| {
            let mut r = serde_json::json!({"cluster": "c", "path": "/r"});
            json_merge(&mut r, revocations);
            with(serde_json::json!({"providers": [{"name": "p", "issuer": "i", "algorithms": ["EdDSA"],
                "jwks": {"remote": {"cluster": "c", "path": "/j"}}, "revocations": r}], "revocation": policy}))
        };
        let wait = |c: FilterConfig| c.provider(ProviderId::FIRST).unwrap().revocations.as_ref().unwrap().wait_ms;
        let none = serde_json::json!({});
        assert_eq!(wait(feed(none.clone(), serde_json::Value::Null).unwrap()), 30_000, "default: 30 s + 5 s under 45 s");
        assert_eq!(wait(feed(none.clone(), serde_json::json!({"max_staleness_secs": 10})).unwrap()), 4_000, "default shrinks to fit");
        assert_eq!(wait(feed(none, serde_json::json!({"max_staleness_secs": 5})).unwrap()), 0, "no room: plain polling");
        assert_eq!(wait(feed(serde_json::json!({"wait_secs": 0}), serde_json::Value::Null).unwrap()), 0);
        assert_eq!(wait(feed(serde_json::json!({"wait_secs": 39}), serde_json::Value::Null).unwrap()), 39_000);
        let e = feed(serde_json::json!({"wait_secs": 40}), serde_json::Value::Null).unwrap_err();
        assert!(e.0.contains("revocations.wait_secs") && e.0.contains("max_staleness_secs"), "{e}");
        let e = feed(serde_json::json!({"wait_secs": 61}), serde_json::json!({"max_staleness_secs": 600})).unwrap_err();
        assert!(e.0.contains("between 0 and 60"), "{e}");
        let e = with(serde_json::json!({"providers": [{"name": "p", "issuer": "i", "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "c", "path": "/j", "wait_secs": 5}}}]})).unwrap_err();
        assert!(e.0.contains("jwks.remote.wait_secs"), "{e}");
    }

    #[test]
    fn duplicate_provider_names_are_refused() {
        let a = serde_json::json!({"name": "main", "issuer": "https://a", "algorithms": ["ES256"], "jwks": {"remote": {"cluster": "c", "path": "/a"}}});
        let b = serde_json::json!({"name": "main", "issuer": "https://b", "algorithms": ["ES256"], "jwks": {"remote": {"cluster": "c", "path": "/b"}}});
        let e = with(serde_json::json!({"providers": [a, b]})).unwrap_err();
        assert!(e.0.contains("providers[1].name") && e.0.contains("`main`"), "{e}");
    }

    #[test]
    fn browser_sign_in_is_checked() {
        let routes = |r: serde_json::Value| serde_json::json!({"routes": r});
        let app = serde_json::json!({"match": {"path_prefix": "/app"}, "policy": "authenticated", "browser_redirect": true});
        let auth = serde_json::json!({"match": {"path_prefix": "/auth"}, "policy": "public"});
        assert_eq!(with(serde_json::json!({})).unwrap().browser, None, "off unless asked for");
        assert_eq!(with(serde_json::json!({"browser": {}})).unwrap().browser, None, "or a path is given");
        let c = with(routes(serde_json::json!([auth.clone(), app.clone()]))).unwrap();
        assert_eq!(c.browser, Some(BrowserSignIn { refresh_path: "/auth/refresh".into() }), "the default refresh path");
        assert!(c.routes[1].browser_redirect && !c.routes[0].browser_redirect);
        let mut patch = routes(serde_json::json!([app.clone()]));
        patch["browser"] = serde_json::json!({"refresh_path": "/signin/refresh"});
        assert_eq!(with(patch).unwrap().browser.unwrap().refresh_path, "/signin/refresh");
        for bad in ["//evil.example/refresh", "https://evil.example/", "/auth/refresh?x=1", "/auth/../refresh", "/a\\b", "auth/refresh", "/auth/refresh#x", "/a b"] {
            let e = with(serde_json::json!({"browser": {"refresh_path": bad}})).unwrap_err();
            assert!(e.0.contains("`browser.refresh_path`"), "{bad}: {e}");
        }
        let e = with(serde_json::json!({"browser": {"refresh_path": "/x", "refresh": "/x"}})).unwrap_err();
        assert!(e.0.contains("unknown field `refresh`"), "{e}");
        assert!(with(serde_json::json!({"browser": {"refresh_path": 1}})).is_err());
        assert!(with(serde_json::json!({"browser": "/x"})).is_err());
        // A refresh path under a redirecting route would send browsers round in a loop.
        let all = serde_json::json!({"match": {"prefix": "/"}, "policy": "authenticated", "browser_redirect": true});
        let e = with(routes(serde_json::json!([all.clone()]))).unwrap_err();
        assert!(e.0.contains("`routes[0]`.browser_redirect") && e.0.contains("loop"), "{e}");
        assert!(with(routes(serde_json::json!([auth, all]))).is_ok(), "the refresh path's own route comes first");
        let public = serde_json::json!({"match": {"prefix": "/p"}, "policy": "public", "browser_redirect": true});
        let e = with(routes(serde_json::json!([public]))).unwrap_err();
        assert!(e.0.contains("`routes[0]`.browser_redirect") && e.0.contains("public"), "{e}");
    }

    #[test]
    fn duplicate_issuers_are_refused() {
        let p = serde_json::json!({"name": "a", "issuer": "i", "algorithms": ["ES256"], "jwks": {"remote": {"cluster": "c", "path": "/j"}}});
        let e = with(serde_json::json!({"providers": [p.clone(), p]})).unwrap_err();
        assert!(e.0.contains("configured twice"), "{e}");
    }
}
