//! Filter configuration: JSON from Envoy's plugin configuration (Istio's
//! `pluginConfig` arrives the same way). Bytes → serde structs that refuse
//! unknown fields (`raw`) → a validated [`FilterConfig`] the request path can
//! trust (`validate`; the runtime types are here). Any error names the field,
//! so the log line at `on_configure` says what to fix.

use authflow_contract::{fingerprint::DeviceAttribute, Algorithm, KeySet};
use serde::Deserialize;

use crate::header_spellings;
use crate::provider_id::{PerProvider, ProviderId};
use crate::unit_enum::deserialize_by_name;

/// Upper bounds on what the configuration may ask for.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;
pub const MAX_TOKEN_BYTES_LIMIT: usize = 64 * 1024;
/// The longest `key_wait_ms`: no request waits longer for keys or a first revocation list.
pub const MAX_KEY_WAIT_MS: u64 = 60_000;

mod raw;
mod validate;

/// What a route requires.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", expecting = "a policy")]
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
    /// This server's origins in `htu`'s comparison form (`https://host/`,
    /// with the port unless the default): a proof must name one. Empty: the
    /// host the client addressed (`:authority`) is taken as this server's.
    pub origins: Vec<String>,
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
    /// The `_`/`-` spellings of `headers` other than themselves (a
    /// CGI-style backend reads them as the same header): removed upstream
    /// beside a verified token. Derived once, here.
    pub header_spellings: Vec<String>,
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
    /// The default names ([`DEFAULT_IDENTITY_NAMES`]) this configuration does
    /// not set: still removed from every request, so a client's copy never
    /// reaches a backend that reads them by habit.
    pub unset_defaults: Vec<String>,
}

pub use authflow_contract::identity::DEFAULT_IDENTITY_NAMES;

impl IdentityHeaders {
    /// Every header name the filter owns: set from the token or removed, on
    /// each request let through.
    pub fn owned_names(&self) -> Vec<&str> {
        let mut names = self.all_names();
        names.extend(self.unset_defaults.iter().map(String::as_str));
        names
    }

    /// The header names this configuration sets.
    pub fn all_names(&self) -> Vec<&str> {
        [
            &self.subject,
            &self.issuer,
            &self.roles,
            &self.scopes,
            &self.session,
            &self.client_id,
        ]
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
            return err(format!(
                "configuration is {} bytes, over the {MAX_CONFIG_BYTES}-byte limit",
                bytes.len()
            ));
        }
        // serde_json's message names the unknown/mistyped field and its position.
        let raw: raw::RawConfig =
            authflow_contract::json::from_slice(bytes).map_err(|e| ConfigError(e.to_string()))?;
        Self::validate(raw)
    }

    pub fn provider_for_issuer(&self, issuer: &str) -> Option<ProviderId> {
        self.providers.find(|p| p.issuer == issuer)
    }

    pub fn provider(&self, id: ProviderId) -> Option<&Provider> {
        self.providers.get(id)
    }
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
        assert!(
            c.identity.all_names().contains(&"x-auth-client-id"),
            "owned: stripped from every request"
        );
        let JwksSource::Remote(u) = &c.provider(ProviderId::FIRST).unwrap().jwks else {
            panic!()
        };
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

    /// A staleness bound of a day (or 10^12 s) quietly turned `on_stale:
    /// deny` into serving revoked tokens from a cut-off filter for that long;
    /// the service bounds its own at an hour too. A `Retry-After` of 0 asks a
    /// client to retry in a loop.
    #[test]
    fn staleness_and_retry_after_are_bounded() {
        let feed = serde_json::json!({"providers": [{"name": "p", "issuer": "i", "audiences": ["api"],
            "algorithms": ["EdDSA"], "jwks": {"remote": {"cluster": "c", "path": "/j"}},
            "revocations": {"cluster": "c", "path": "/r"}}]});
        for (patch, named) in [
            (
                serde_json::json!({"revocation": {"max_staleness_secs": 3601}}),
                "revocation.max_staleness_secs",
            ),
            (
                serde_json::json!({"revocation": {"max_staleness_secs": 1_000_000_000_000_u64}}),
                "revocation.max_staleness_secs",
            ),
            (
                serde_json::json!({"retry_after_secs": 0}),
                "retry_after_secs",
            ),
            (
                serde_json::json!({"retry_after_secs": 3601}),
                "retry_after_secs",
            ),
        ] {
            let mut c = feed.clone();
            json_merge(&mut c, patch.clone());
            let e = with(c).unwrap_err();
            assert!(e.0.contains(named) && e.0.contains("3600"), "{patch}: {e}");
        }
        let mut c = feed;
        json_merge(
            &mut c,
            serde_json::json!({"revocation": {"max_staleness_secs": 3600}, "retry_after_secs": 3600}),
        );
        assert!(with(c).is_ok());
    }

    #[test]
    fn an_issuer_longer_than_the_revocation_layout_holds_is_refused() {
        let issuer = |len: usize| {
            let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
            v["providers"][0]["issuer"] = format!("https://{}", "a".repeat(len - 8)).into();
            FilterConfig::from_json(v.to_string().as_bytes())
        };
        assert!(issuer(1024).is_ok());
        let e = issuer(1025).unwrap_err();
        assert!(e.0.contains("issuer: at most 1024 bytes"), "{e}");
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

    /// A list allowed more entries than the largest snapshot the filter
    /// reads would grow by deltas, and then never load whole again (a new
    /// worker, an outage, a new epoch): every route on it stale for good.
    #[test]
    fn a_list_larger_than_a_snapshot_can_carry_is_refused() {
        use authflow_contract::revocation::MAX_LIST_ENTRIES;
        let bounded = |max_entries: usize| {
            let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
            v["providers"][0]["revocations"] = serde_json::json!({"cluster": "auth", "path": "/r"});
            v["revocation"] = serde_json::json!({ "max_entries": max_entries });
            FilterConfig::from_json(v.to_string().as_bytes())
        };
        assert_eq!(
            bounded(MAX_LIST_ENTRIES).unwrap().revocation.max_entries,
            2_000_000
        );
        let e = bounded(MAX_LIST_ENTRIES + 1).unwrap_err();
        assert!(
            e.0.contains("`revocation.max_entries`: between 1 and 2000000"),
            "{e}"
        );
    }

    /// First match wins: a rule after one that matches all it matches never
    /// applies, and its requests get the earlier rule's policy (`/api`
    /// public before `/api/admin` for admins opens the admin API to all).
    /// Refused at load, naming both; the narrower rule first is taken.
    #[test]
    fn a_rule_an_earlier_one_covers_is_refused() {
        let routes = |earlier: serde_json::Value, later: serde_json::Value| {
            with(serde_json::json!({"routes": [
                {"match": earlier, "policy": "public"},
                {"match": later, "policy": {"roles_any": ["admin"]}},
            ]}))
        };
        let shadowed = [
            (
                serde_json::json!({"prefix": "/api"}),
                serde_json::json!({"prefix": "/api/admin"}),
            ),
            (
                serde_json::json!({"prefix": "/api"}),
                serde_json::json!({"exact": "/api"}),
            ),
            (
                serde_json::json!({"prefix": "/"}),
                serde_json::json!({"path_prefix": "/x", "methods": ["POST"]}),
            ),
            (
                serde_json::json!({"path_prefix": "/api"}),
                serde_json::json!({"path_prefix": "/api/admin"}),
            ),
            (
                serde_json::json!({"path_prefix": "/api"}),
                serde_json::json!({"prefix": "/api/a"}),
            ),
            (
                serde_json::json!({"path_prefix": "/api"}),
                serde_json::json!({"exact": "/api"}),
            ),
            (
                serde_json::json!({"exact": "/a"}),
                serde_json::json!({"exact": "/a"}),
            ),
            (
                serde_json::json!({"prefix": "/a", "methods": ["GET"]}),
                serde_json::json!({"prefix": "/a/b", "methods": ["head", "GET"]}),
            ),
            (
                serde_json::json!({"prefix": "/a"}),
                serde_json::json!({"prefix": "/a/b", "host": "admin.example"}),
            ),
            (
                serde_json::json!({"prefix": "/a", "host": "ADMIN.example"}),
                serde_json::json!({"prefix": "/a/b", "host": "admin.example"}),
            ),
        ];
        for (earlier, later) in shadowed {
            let e = routes(earlier.clone(), later.clone()).unwrap_err();
            assert!(
                e.0.contains("`routes[1]`: never applies: `routes[0]` matches all it does"),
                "{earlier} {later}: {e}"
            );
        }
        let apart = [
            (
                serde_json::json!({"prefix": "/api/admin"}),
                serde_json::json!({"prefix": "/api"}),
            ),
            (
                serde_json::json!({"path_prefix": "/api"}),
                serde_json::json!({"prefix": "/api"}),
            ),
            (
                serde_json::json!({"path_prefix": "/api"}),
                serde_json::json!({"prefix": "/apix"}),
            ),
            (
                serde_json::json!({"exact": "/api"}),
                serde_json::json!({"path_prefix": "/api"}),
            ),
            (
                serde_json::json!({"prefix": "/a", "methods": ["POST"]}),
                serde_json::json!({"prefix": "/a/b"}),
            ),
            (
                serde_json::json!({"prefix": "/a", "methods": ["HEAD"]}),
                serde_json::json!({"prefix": "/a", "methods": ["GET"]}),
            ),
            (
                serde_json::json!({"prefix": "/a", "host": "pub.example"}),
                serde_json::json!({"prefix": "/a/b"}),
            ),
            (
                serde_json::json!({"prefix": "/a", "host": "pub.example"}),
                serde_json::json!({"prefix": "/a", "host": "admin.example"}),
            ),
            (
                serde_json::json!({"prefix": "/A"}),
                serde_json::json!({"prefix": "/a/b"}),
            ),
        ];
        for (earlier, later) in apart {
            assert!(
                routes(earlier.clone(), later.clone()).is_ok(),
                "{earlier} {later}"
            );
        }
        // Compared as requests are: in any case under `case_insensitive_paths`.
        let e = with(
            serde_json::json!({"case_insensitive_paths": true, "routes": [
                {"match": {"prefix": "/A"}, "policy": "public"},
                {"match": {"prefix": "/a/b"}, "policy": "authenticated"},
            ]}),
        )
        .unwrap_err();
        assert!(e.0.contains("never applies"), "{e}");
    }

    /// A staleness policy written with no feed to apply it to would check
    /// nothing while its author believes tokens are checked for revocation.
    #[test]
    fn a_revocation_policy_without_a_feed_is_refused() {
        let e = with(serde_json::json!({"revocation": {"on_stale": "deny"}})).unwrap_err();
        assert!(e.0.contains("no provider has a `revocations` feed"), "{e}");
    }

    #[test]
    fn every_mode_name_reads_as_its_variant() {
        let device = |mode: &str, missing: &str| {
            let c = with(serde_json::json!({"device_binding": {"mode": mode, "tokens_without_fingerprint": missing}})).unwrap();
            (c.device.mode, c.device.tokens_without_fingerprint)
        };
        assert_eq!(
            device("enforce", "deny"),
            (DeviceMode::Enforce, MissingFingerprint::Deny)
        );
        assert_eq!(
            device("report", "allow"),
            (DeviceMode::Report, MissingFingerprint::Allow)
        );
        assert_eq!(
            device("off", "allow"),
            (DeviceMode::Off, MissingFingerprint::Allow)
        );
        let failure = |mode: &str| {
            with(serde_json::json!({"failure_mode": mode}))
                .unwrap()
                .failure_mode
        };
        assert_eq!(failure("fail_closed"), FailureMode::FailClosed);
        assert_eq!(failure("fail_open"), FailureMode::FailOpen);
        let stale = |policy: &str| {
            let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
            v["providers"][0]["revocations"] =
                serde_json::json!({"cluster": "auth", "path": "/v1/revocations"});
            v["revocation"] = serde_json::json!({"on_stale": policy});
            FilterConfig::from_json(v.to_string().as_bytes())
                .unwrap()
                .revocation
                .on_stale
        };
        assert_eq!(stale("deny"), StalePolicy::Deny);
        assert_eq!(stale("allow"), StalePolicy::Allow);
        let dpop = |mode: &str, nonce: &str| {
            let c = with(serde_json::json!({"providers": [{"name": "a", "issuer": "i", "audiences": ["api"], "algorithms": ["EdDSA"],
                "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}}, "dpop": mode, "dpop_nonce": nonce}]}))
            .unwrap();
            let p = c.provider(ProviderId::FIRST).unwrap();
            (p.dpop.mode, p.dpop.nonce)
        };
        assert_eq!(dpop("off", "off"), (DpopMode::Off, DpopNonce::Off));
        assert_eq!(
            dpop("allowed", "required"),
            (DpopMode::Allowed, DpopNonce::Required)
        );
        assert_eq!(
            dpop("required", "off"),
            (DpopMode::Required, DpopNonce::Off)
        );
        let e = with(serde_json::json!({"device_binding": {"mode": "Enforce"}})).unwrap_err();
        assert!(
            e.0.contains("unknown variant `Enforce`, expected one of `enforce`, `report`, `off`"),
            "{e}"
        );
    }

    /// Finding: a token header name with more `-`/`_` than its spellings
    /// are made for was accepted, and then had none: its `_` spellings
    /// (`x_a_b_…`, the same header to a CGI-style backend, never read as a
    /// token) went upstream beside the verified token.
    #[test]
    fn a_token_header_name_has_every_spelling_or_is_refused() {
        let name = "x-a-b-c-d-e-f-g";
        match with(serde_json::json!({"token_sources": {"headers": [name]}})) {
            Ok(c) => assert!(
                c.token_sources
                    .header_spellings
                    .iter()
                    .any(|s| s == "x_a_b_c_d_e_f_g"),
                "accepted without its spellings"
            ),
            Err(e) => assert!(
                e.0.contains("token_sources.headers") && e.0.contains("more than 6"),
                "{e}"
            ),
        }
        assert!(with(serde_json::json!({"token_sources": {"headers": ["x-a-b-c-d-e-f"]}})).is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let e = with(serde_json::json!({"bogus": 1})).unwrap_err();
        assert!(e.0.contains("unknown field `bogus`"), "{e}");
        let e = with(serde_json::json!({"identity_headers": {"subject": "x-a-b-c-d-e-f-g"}}))
            .unwrap_err();
        assert!(
            e.0.contains("identity_headers") && e.0.contains("more than 6"),
            "{e}"
        );
        let e = with(serde_json::json!({"providers": [{"name": "x", "issuer": "i", "audiences": ["api"], "algorithms": ["HS256"], "jwks": {"inline": {"keys": []}}}]})).unwrap_err();
        assert!(
            e.0.contains("providers[0]`.algorithms") && e.0.contains("HS256"),
            "{e}"
        );
        let e = with(serde_json::json!({"routes": [{"match": {"prefix": "/a", "exact": "/b"}, "policy": "public"}]})).unwrap_err();
        assert!(e.0.contains("routes[0]"), "{e}");
        let e = with(serde_json::json!({"routes": [{"match": {"prefix": "/a"}, "policy": {"roles_any": []}}]})).unwrap_err();
        assert!(e.0.contains("routes[0]`.policy"), "{e}");
        let e = with(serde_json::json!({"routes": [{"match": {"prefix": "/a"}, "policy": {"client_ids_any": [""]}}]})).unwrap_err();
        assert!(e.0.contains("routes[0]`.policy"), "{e}");
        let e =
            with(serde_json::json!({"identity_headers": {"subject": "bad header"}})).unwrap_err();
        assert!(e.0.contains("identity_headers.subject"), "{e}");
        let e =
            with(serde_json::json!({"identity_headers": {"claims": {"org.team": 7}}})).unwrap_err();
        assert!(
            e.0.contains("identity_headers.claims.org.team") && e.0.contains("header name"),
            "{e}"
        );
        // A name given twice is refused, not read as its last copy.
        let twice = MINIMAL.replacen(
            "{",
            r#"{"identity_headers": {"claims": {"org.team": "x-team", "org.team": "x-other"}},"#,
            1,
        );
        let e = FilterConfig::from_json(twice.as_bytes()).unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
        // Where a wrong value sits, by its path in the document; a field given
        // twice anywhere is refused, whichever type reads it.
        let misspelt = MINIMAL.replace(r#""remote": {"cluster""#, r#""remote": {"clustr""#);
        let e = FilterConfig::from_json(misspelt.as_bytes()).unwrap_err();
        assert!(
            e.0.contains("providers[0].jwks.remote: unknown field `clustr`"),
            "{e}"
        );
        let e = FilterConfig::from_json(
            MINIMAL
                .replace(
                    r#""issuer""#,
                    r#""issuer": "https://other.example", "issuer""#,
                )
                .as_bytes(),
        )
        .unwrap_err();
        assert!(e.0.contains("a member name appears twice"), "{e}");
        let e = FilterConfig::from_json(
            MINIMAL
                .replace(r#""path""#, r#""path": "/a", "path""#)
                .as_bytes(),
        )
        .unwrap_err();
        assert!(e.0.contains("a member name appears twice"), "{e}");
        let e = with(serde_json::json!({"max_token_bytes": 10})).unwrap_err();
        assert!(e.0.contains("max_token_bytes"), "{e}");
        let e = with(
            serde_json::json!({"device_binding": {"mode": "enforce", "attributes": ["no good"]}}),
        )
        .unwrap_err();
        assert!(e.0.contains("device_binding.attributes[0]"), "{e}");
        // A value of the wrong type is told by what was expected, in the
        // configuration's words (not the names of the filter's own types).
        for (field, expected) in [
            (serde_json::json!({"browser": "x"}), "expected an object"),
            (
                serde_json::json!({"routes": [{"match": 1, "policy": "public"}]}),
                "expected an object",
            ),
            (
                serde_json::json!({"routes": [{"match": {"prefix": "/a"}, "policy": 1}]}),
                "expected a policy",
            ),
        ] {
            let e = with(field).unwrap_err();
            assert!(e.0.contains(expected) && !e.0.contains("Raw"), "{e}");
        }
        assert!(FilterConfig::from_json(b"not json").is_err());
        assert!(FilterConfig::from_json(br#"{"providers": []}"#)
            .unwrap_err()
            .0
            .contains("providers"));
    }

    /// The default identity names a section of one's own leaves out stay the
    /// filter's (removed), except one the section sets in another spelling or
    /// a token header (a credential, removed as one).
    #[test]
    fn default_identity_names_left_out_are_still_owned() {
        let c = with(serde_json::json!({
            "identity_headers": {"subject": "x_auth_user", "claims": {"org.team": "x-team"}},
            "token_sources": {"headers": ["x-auth-session"]}
        }))
        .unwrap();
        assert_eq!(
            c.identity.owned_names(),
            vec![
                "x_auth_user",
                "x-team",
                "x-auth-issuer",
                "x-auth-roles",
                "x-auth-scopes",
                "x-auth-client-id"
            ]
        );
        let defaults = with(serde_json::json!({})).unwrap();
        assert_eq!(defaults.identity.unset_defaults, vec!["x-auth-issuer"]);
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
        assert_eq!(
            c.routes[3].policy,
            Policy::ClientIdsAny(vec!["billing".into()])
        );
        assert_eq!(c.routes[4].policy, Policy::User);
        assert_eq!(c.routes[1].methods, vec!["POST"]);
        assert_eq!(c.routes[1].host.as_deref(), Some("api.example"));
        assert_eq!(
            c.routes[2].policy,
            Policy::ScopesAll(vec!["read".into(), "write".into()])
        );
        assert_eq!(
            c.identity.claims,
            vec![(
                vec!["org".to_string(), "team".to_string()],
                "x-team".to_string()
            )]
        );
        assert_eq!(c.identity.all_names(), vec!["x-user", "x-team"]);
        assert!(!c.case_insensitive_paths);
    }

    /// A role or scope name no verified token can carry (a token's roles are
    /// list items, its scopes RFC 6749 scope-tokens, else it is refused) would
    /// make a route no one passes, and a scope holding `"` or a space would
    /// garble the `scope` attribute of the 403 challenge (RFC 6750 §3).
    #[test]
    fn policy_names_no_token_can_carry_are_refused() {
        for policy in [
            serde_json::json!({"scopes_all": ["read write"]}),
            serde_json::json!({"scopes_all": ["a\"b"]}),
            serde_json::json!({"scopes_all": ["a\\b"]}),
            serde_json::json!({"scopes_all": ["lecture\u{e9}"]}),
            serde_json::json!({"roles_any": ["admin "]}),
            serde_json::json!({"roles_any": ["admin,ops"]}),
            serde_json::json!({"roles_any": ["ad\nmin"]}),
        ] {
            let routes = serde_json::json!([{"match": {"prefix": "/x"}, "policy": policy}]);
            assert!(
                with(serde_json::json!({ "routes": routes })).is_err(),
                "{policy}"
            );
            assert!(
                with(serde_json::json!({ "default_policy": policy })).is_err(),
                "default {policy}"
            );
        }
        for policy in [
            serde_json::json!({"scopes_all": ["reports:write", "a/b"]}),
            serde_json::json!({"roles_any": ["Domain Admins", "admin"]}),
        ] {
            let routes = serde_json::json!([{"match": {"prefix": "/x"}, "policy": policy}]);
            assert!(
                with(serde_json::json!({ "routes": routes })).is_ok(),
                "{policy}"
            );
        }
    }

    #[test]
    fn route_paths_are_checked() {
        let route = |m: serde_json::Value| {
            with(serde_json::json!({"routes": [{"match": m, "policy": "public"}]}))
        };
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
        assert!(
            with(serde_json::json!({"case_insensitive_paths": true}))
                .unwrap()
                .case_insensitive_paths
        );
    }

    /// Finding: a rule path written as a pattern (a wildcard, an OpenAPI
    /// template, a regex class) was taken literally and never matched a
    /// request (`{`, `}`, `[`, `]`, a space arrive percent-encoded; `*`
    /// is no wildcard), so the default policy applied where the operator
    /// wrote a stronger one: `/users/42/roles` passed with any token.
    #[test]
    fn a_route_path_written_as_a_pattern_is_refused() {
        for path in [
            "/admin/*",
            "/api/*/admin",
            "/users/{id}/roles",
            "/api/v[0-9]/admin",
            "/my admin",
        ] {
            let e = with(serde_json::json!({"routes": [{"match": {"prefix": path}, "policy": {"roles_any": ["admin"]}}]}))
                .map(|_| ())
                .unwrap_err();
            assert!(e.0.contains("routes[0]`.match"), "{path}: {e}");
        }
        // Characters a request path carries as they are.
        assert!(with(serde_json::json!({"routes": [{"match": {"prefix": "/a-b_c~d/e:f@g!$&'()+,="}, "policy": "public"}]})).is_ok());
    }

    #[test]
    fn route_providers_name_configured_providers() {
        let route = |providers: serde_json::Value, policy: &str| {
            with(
                serde_json::json!({"routes": [{"match": {"prefix": "/a"}, "policy": policy, "providers": providers}]}),
            )
        };
        let c = route(serde_json::json!(["authflow"]), "authenticated").unwrap();
        assert_eq!(c.routes[0].providers, vec![ProviderId::FIRST]);
        let e = route(serde_json::json!(["nobody"]), "authenticated").unwrap_err();
        assert!(
            e.0.contains("`routes[0]`.providers: no provider is named `nobody`"),
            "{e}"
        );
        // A public route may name them too: their identity alone reaches its backend.
        assert_eq!(
            route(serde_json::json!(["authflow"]), "public")
                .unwrap()
                .routes[0]
                .providers,
            vec![ProviderId::FIRST]
        );
    }

    /// Identity header names that are one header to a backend folding `-`
    /// and `_` (CGI: `HTTP_X_AUTH_USER`) are refused: a claim could fill the subject.
    #[test]
    fn identity_headers_differ_by_more_than_dash_and_underscore() {
        let e = with(serde_json::json!({"identity_headers": {"subject": "x-auth-user", "claims": {"nickname": "x_auth_user"}}})).unwrap_err();
        assert!(
            e.0.contains("mapped twice") && e.0.contains("`-` and `_` count as one"),
            "{e}"
        );
        let e = with(serde_json::json!({"identity_headers": {"subject": "x-auth-user", "roles": "X_Auth_Roles", "claims": {"grp": "x-auth-roles"}}})).unwrap_err();
        assert!(e.0.contains("mapped twice"), "{e}");
        assert!(with(serde_json::json!({"identity_headers": {"subject": "x-auth-user", "claims": {"nickname": "x-auth-nick"}}})).is_ok());
        // Nor a header that frames the message or carries credentials, in any spelling.
        for reserved in [
            "content-length",
            "Transfer-Encoding",
            "x_forwarded_for",
            "dpop",
            "x-authflow-device",
            "cookie",
            "x_token",
        ] {
            let e = with(
                serde_json::json!({"token_sources": {"headers": ["x-token"]},
                "identity_headers": {"subject": "x-auth-user", "claims": {"size": reserved}}}),
            )
            .unwrap_err();
            assert!(
                e.0.contains("cannot be an identity header"),
                "{reserved}: {e}"
            );
        }
    }

    /// Finding: a claim could be mapped to a header the route decision
    /// judges (`x-original-url`, `x-http-method-override`, `forwarded`), or
    /// one Envoy's router or a backend's proxy handling obeys (`x-envoy-*`,
    /// `x-forwarded-proto`): the filter judged the client's copy, then set
    /// the claim's value, which the backend took as the path, method or host
    /// to serve. Refused, in any spelling.
    #[test]
    fn no_identity_header_is_one_the_request_is_judged_or_routed_by() {
        for judged in [
            "x-original-url",
            "X_Rewrite_Url",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-forwarded-host",
            "forwarded",
            "x-forwarded-proto",
            "x_forwarded_prefix",
            "x-real-ip",
            "x-envoy-upstream-rq-timeout-ms",
            "X-Envoy-Original-Path",
            "proxy-connection",
            "content-type",
        ] {
            let e = with(
                serde_json::json!({"identity_headers": {"subject": "x-auth-user", "claims": {"website": judged}}}),
            )
            .unwrap_err();
            assert!(
                e.0.contains("cannot be an identity header"),
                "{judged}: {e}"
            );
        }
        assert!(with(serde_json::json!({"identity_headers": {"subject": "x-auth-user", "claims": {"website": "x-auth-website"}}})).is_ok());
    }

    #[test]
    fn route_hosts_are_checked() {
        let host = |h: &str| {
            with(
                serde_json::json!({"routes": [{"match": {"prefix": "/", "host": h}, "policy": "public"}]}),
            )
        };
        assert_eq!(
            host("Admin.Example.").unwrap().routes[0].host.as_deref(),
            Some("admin.example"),
            "one trailing dot dropped"
        );
        assert_eq!(
            host("[::1]").unwrap().routes[0].host.as_deref(),
            Some("[::1]")
        );
        // The request's port is dropped before matching: these could never match.
        for (bad, why) in [
            ("admin.example:8443", "port"),
            ("[::1]:80", "port"),
            ("*.example.com", "wildcard"),
            ("", "empty"),
            (".", "empty"),
            // Requests naming the address so are refused: so is the rule.
            ("167772165", "IPv4"),
            ("010.0.0.5", "IPv4"),
            ("example.123", "IPv4"),
        ] {
            let e = host(bad).unwrap_err();
            assert!(
                e.0.contains("`routes[0]`.match.host") && e.0.contains(why),
                "{bad}: {e}"
            );
        }
    }

    /// Finding: a host rule copied from a URL (`https://admin.example`,
    /// `admin.example/`) or written in Unicode (requests carry the IDN's
    /// `xn--` form) was accepted and never matched: the default policy
    /// applied on that host instead of the rule's.
    #[test]
    fn a_route_host_that_is_no_host_name_is_refused() {
        for bad in [
            "https://admin.example",
            "admin.example/",
            "admin.example/api",
            "b\u{fc}cher.example",
            "admin example",
            "user@admin.example",
        ] {
            let e = with(serde_json::json!({"routes": [{"match": {"prefix": "/", "host": bad}, "policy": {"roles_any": ["admin"]}}]}))
                .map(|_| ())
                .unwrap_err();
            assert!(e.0.contains("`routes[0]`.match.host"), "{bad}: {e}");
        }
        for fine in [
            "xn--bcher-kva.example",
            "internal_svc.local",
            "10.0.0.1",
            "[2001:db8::1]",
        ] {
            assert!(with(serde_json::json!({"routes": [{"match": {"prefix": "/", "host": fine}, "policy": "public"}]})).is_ok(), "{fine}");
        }
    }

    #[test]
    fn early_refetch_floor_is_at_least_a_second() {
        let jwks = |min: u64| {
            serde_json::json!({"providers": [{"name": "p", "issuer": "i", "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "c", "path": "/j", "min_refetch_interval_secs": min}}}]})
        };
        let e = with(jwks(0)).unwrap_err();
        assert!(
            e.0.contains("jwks.remote.min_refetch_interval_secs") && e.0.contains("at least 1"),
            "{e}"
        );
        let c = with(jwks(1)).unwrap();
        let JwksSource::Remote(u) = &c.provider(ProviderId::FIRST).unwrap().jwks else {
            panic!()
        };
        assert_eq!(u.min_refetch_interval_ms, 1_000);
        // Only keys are refetched early (on an unknown `kid`): under the
        // revocation feed the setting would do nothing, so it is refused.
        let e = with(serde_json::json!({"providers": [{"name": "p", "issuer": "i", "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "c", "path": "/j"}},
            "revocations": {"cluster": "c", "path": "/r", "min_refetch_interval_secs": 10}}]}))
        .unwrap_err();
        assert!(e.0.contains("revocations.min_refetch_interval_secs"), "{e}");
    }

    #[test]
    fn revocation_wait_fits_under_the_staleness_bound() {
        let feed = |revocations: serde_json::Value, policy: serde_json::Value| {
            let mut r = serde_json::json!({"cluster": "c", "path": "/r"});
            json_merge(&mut r, revocations);
            with(
                serde_json::json!({"providers": [{"name": "p", "issuer": "i", "audiences": ["api"], "algorithms": ["EdDSA"],
                "jwks": {"remote": {"cluster": "c", "path": "/j"}}, "revocations": r}], "revocation": policy}),
            )
        };
        let wait = |c: FilterConfig| {
            c.provider(ProviderId::FIRST)
                .unwrap()
                .revocations
                .as_ref()
                .unwrap()
                .wait_ms
        };
        let none = serde_json::json!({});
        assert_eq!(
            wait(feed(none.clone(), serde_json::Value::Null).unwrap()),
            30_000,
            "default: 30 s + 5 s under 45 s"
        );
        assert_eq!(
            wait(feed(none.clone(), serde_json::json!({"max_staleness_secs": 10})).unwrap()),
            4_000,
            "default shrinks to fit"
        );
        assert_eq!(
            wait(feed(none.clone(), serde_json::json!({"max_staleness_secs": 5})).unwrap()),
            0,
            "no room: plain polling"
        );
        // Polls further apart than the list may age: stale between them,
        // every authenticated request 503 (or revocations unenforced).
        for (interval, staleness) in [(60_000, 45), (45_000, 45), (2_000, 2)] {
            let e = feed(
                serde_json::json!({"poll_interval_ms": interval, "wait_secs": 0}),
                serde_json::json!({"max_staleness_secs": staleness}),
            )
            .unwrap_err();
            assert!(
                e.0.contains("revocations.poll_interval_ms") && e.0.contains("max_staleness_secs"),
                "{e}"
            );
        }
        assert!(feed(
            serde_json::json!({"poll_interval_ms": 40_000}),
            serde_json::Value::Null
        )
        .is_ok());
        assert_eq!(
            wait(feed(serde_json::json!({"wait_secs": 0}), serde_json::Value::Null).unwrap()),
            0
        );
        assert_eq!(
            wait(
                feed(
                    serde_json::json!({"wait_secs": 39}),
                    serde_json::Value::Null
                )
                .unwrap()
            ),
            39_000
        );
        let e = feed(
            serde_json::json!({"wait_secs": 40}),
            serde_json::Value::Null,
        )
        .unwrap_err();
        assert!(
            e.0.contains("revocations.wait_secs") && e.0.contains("max_staleness_secs"),
            "{e}"
        );
        let e = feed(
            serde_json::json!({"wait_secs": 61}),
            serde_json::json!({"max_staleness_secs": 600}),
        )
        .unwrap_err();
        assert!(e.0.contains("between 0 and 60"), "{e}");
        let e = with(
            serde_json::json!({"providers": [{"name": "p", "issuer": "i", "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "c", "path": "/j", "wait_secs": 5}}}]}),
        )
        .unwrap_err();
        assert!(e.0.contains("jwks.remote.wait_secs"), "{e}");
    }

    #[test]
    fn duplicate_provider_names_are_refused() {
        let a = serde_json::json!({"name": "main", "issuer": "https://a", "audiences": ["api"], "algorithms": ["ES256"], "jwks": {"remote": {"cluster": "c", "path": "/a"}}});
        let b = serde_json::json!({"name": "main", "issuer": "https://b", "audiences": ["api"], "algorithms": ["ES256"], "jwks": {"remote": {"cluster": "c", "path": "/b"}}});
        let e = with(serde_json::json!({"providers": [a, b]})).unwrap_err();
        assert!(
            e.0.contains("providers[1].name") && e.0.contains("`main`"),
            "{e}"
        );
    }

    #[test]
    fn browser_sign_in_is_checked() {
        let routes = |r: serde_json::Value| serde_json::json!({"routes": r});
        let app = serde_json::json!({"match": {"path_prefix": "/app"}, "policy": "authenticated", "browser_redirect": true});
        let auth = serde_json::json!({"match": {"path_prefix": "/auth"}, "policy": "public"});
        assert_eq!(
            with(serde_json::json!({})).unwrap().browser,
            None,
            "off unless asked for"
        );
        assert_eq!(
            with(serde_json::json!({"browser": {}})).unwrap().browser,
            None,
            "or a path is given"
        );
        let c = with(routes(serde_json::json!([auth.clone(), app.clone()]))).unwrap();
        assert_eq!(
            c.browser,
            Some(BrowserSignIn {
                refresh_path: "/auth/refresh".into()
            }),
            "the default refresh path"
        );
        assert!(c.routes[1].browser_redirect && !c.routes[0].browser_redirect);
        let mut patch = routes(serde_json::json!([app.clone()]));
        patch["browser"] = serde_json::json!({"refresh_path": "/signin/refresh"});
        assert_eq!(
            with(patch).unwrap().browser.unwrap().refresh_path,
            "/signin/refresh"
        );
        for bad in [
            "//evil.example/refresh",
            "https://evil.example/",
            "/auth/refresh?x=1",
            "/auth/../refresh",
            "/a\\b",
            "auth/refresh",
            "/auth/refresh#x",
            "/a b",
        ] {
            let e = with(serde_json::json!({"browser": {"refresh_path": bad}})).unwrap_err();
            assert!(e.0.contains("`browser.refresh_path`"), "{bad}: {e}");
        }
        let e = with(serde_json::json!({"browser": {"refresh_path": "/x", "refresh": "/x"}}))
            .unwrap_err();
        assert!(e.0.contains("unknown field `refresh`"), "{e}");
        assert!(with(serde_json::json!({"browser": {"refresh_path": 1}})).is_err());
        assert!(with(serde_json::json!({"browser": "/x"})).is_err());
        // A refresh path under a redirecting route would send browsers round in a loop.
        let all = serde_json::json!({"match": {"prefix": "/"}, "policy": "authenticated", "browser_redirect": true});
        let e = with(routes(serde_json::json!([all.clone()]))).unwrap_err();
        assert!(
            e.0.contains("`routes[0]`.browser_redirect") && e.0.contains("loop"),
            "{e}"
        );
        assert!(
            with(routes(serde_json::json!([auth, all]))).is_ok(),
            "the refresh path's own route comes first"
        );
        let public = serde_json::json!({"match": {"prefix": "/p"}, "policy": "public", "browser_redirect": true});
        let e = with(routes(serde_json::json!([public]))).unwrap_err();
        assert!(
            e.0.contains("`routes[0]`.browser_redirect") && e.0.contains("public"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_issuers_are_refused() {
        let p = serde_json::json!({"name": "a", "issuer": "i", "audiences": ["api"], "algorithms": ["ES256"], "jwks": {"remote": {"cluster": "c", "path": "/j"}}});
        let e = with(serde_json::json!({"providers": [p.clone(), p]})).unwrap_err();
        assert!(e.0.contains("configured twice"), "{e}");
    }

    /// Finding: a provider with neither `audiences` nor `token_type` took any
    /// token its issuer signs: an OpenID Connect ID token minted for a web
    /// client (`aud` its client id, `typ: JWT`), or another API's access
    /// token, passed as an access token for this one (RFC 8725 §3.9,
    /// §3.11). Such a provider is refused. Finding, later: a `token_type`
    /// alone (`at+jwt`) was taken as enough, but a hosted issuer mints
    /// `at+jwt` tokens for every API of a tenant, and each passed here (RFC
    /// 9068 §4: the audience must be checked). `audiences` is required, and
    /// none of its names may be empty (`aud: ""` would pass).
    #[test]
    fn a_provider_must_say_which_tokens_are_for_this_api() {
        let provider = |extra: serde_json::Value| {
            let mut p = serde_json::json!({"name": "a", "issuer": "https://i", "algorithms": ["ES256"], "jwks": {"remote": {"cluster": "c", "path": "/j"}}});
            for (k, v) in extra.as_object().unwrap() {
                p[k] = v.clone();
            }
            with(serde_json::json!({"providers": [p]}))
        };
        for lacking in [
            serde_json::json!({}),
            serde_json::json!({"audiences": []}),
            serde_json::json!({"token_type": "at+jwt"}),
            serde_json::json!({"audiences": ["api", ""]}),
        ] {
            let e = provider(lacking.clone()).unwrap_err();
            assert!(e.0.contains("`audiences`"), "{lacking}: {e}");
        }
        assert!(provider(serde_json::json!({"audiences": ["api"]})).is_ok());
        assert!(
            provider(serde_json::json!({"audiences": ["api"], "token_type": "at+jwt"})).is_ok()
        );
        let e = provider(serde_json::json!({"audiences": ["api"], "required_claims": ["sub", ""]}))
            .unwrap_err();
        assert!(e.0.contains("`required_claims`"), "{e}");
    }

    /// Finding: the rule above was met by a `token_type` every ID token
    /// carries (`typ: JWT`), so any token of the issuer still passed.
    #[test]
    fn a_generic_token_type_is_no_check() {
        let mut accepted = Vec::new();
        for typ in ["JWT", "jwt", "application/jwt"] {
            let p = serde_json::json!({"providers": [{"name": "a", "issuer": "https://i", "algorithms": ["ES256"],
                "jwks": {"remote": {"cluster": "c", "path": "/j"}}, "token_type": typ}]});
            if with(p).is_ok() {
                accepted.push(typ);
            }
        }
        assert!(
            accepted.is_empty(),
            "accepted as the only check: {accepted:?}"
        );
    }

    /// Finding: headers backends take the client's address or scheme from
    /// (Rails' `RemoteIp` reads `Client-IP`, Tornado `X-Scheme`) were outside
    /// the reserved names and prefixes.
    #[test]
    fn no_identity_header_is_one_a_backend_takes_the_client_address_from() {
        let mut accepted = Vec::new();
        for name in [
            "client-ip",
            "x-client-ip",
            "true-client-ip",
            "x-scheme",
            "x_cluster_client_ip",
        ] {
            let r = with(
                serde_json::json!({"identity_headers": {"subject": "x-auth-user", "claims": {"website": name}}}),
            );
            if r.is_ok() {
                accepted.push(name);
            }
        }
        assert!(
            accepted.is_empty(),
            "accepted as identity headers: {accepted:?}"
        );
    }
}
