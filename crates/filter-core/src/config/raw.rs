//! The configuration's JSON schema as given: serde structs that refuse
//! unknown fields, with their defaults. `validate` turns them into the
//! runtime types of `super`.

use authflow_contract::KeySet;
use serde::Deserialize;

use super::{
    DeviceMode, DpopMode, DpopNonce, FailureMode, MissingFingerprint, Policy, StalePolicy,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawConfig {
    pub(super) providers: Vec<RawProvider>,
    #[serde(default = "defaults::clock_skew_secs")]
    pub(super) clock_skew_secs: u64,
    #[serde(default = "defaults::max_token_lifetime_secs")]
    pub(super) max_token_lifetime_secs: u64,
    #[serde(default)]
    pub(super) token_sources: Option<RawTokenSources>,
    #[serde(default = "defaults::max_token_bytes")]
    pub(super) max_token_bytes: usize,
    #[serde(default)]
    pub(super) identity_headers: Option<RawIdentityHeaders>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) case_insensitive_paths: bool,
    #[serde(default)]
    pub(super) default_policy: Option<Policy>,
    #[serde(default)]
    pub(super) default_providers: Vec<String>,
    #[serde(default)]
    pub(super) failure_mode: FailureMode,
    #[serde(default = "defaults::retry_after_secs")]
    pub(super) retry_after_secs: u32,
    #[serde(default = "defaults::cache_max_entries")]
    pub(super) cache_max_entries: usize,
    #[serde(default = "defaults::key_wait_ms")]
    pub(super) key_wait_ms: u64,
    #[serde(default)]
    pub(super) device_binding: Option<RawDeviceBinding>,
    #[serde(default)]
    pub(super) revocation: Option<RawRevocationPolicy>,
    #[serde(default)]
    pub(super) forward_device_secret: bool,
    #[serde(default)]
    pub(super) dpop_nonce_key_env: Option<String>,
    #[serde(default)]
    pub(super) browser: RawBrowser,
}

/// Not an `Option` of a struct: each such instantiation costs Wasm, and an
/// absent section reads the same as one without `refresh_path`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawBrowser {
    #[serde(default)]
    pub(super) refresh_path: Option<String>,
}

pub(super) mod defaults {
    pub fn clock_skew_secs() -> u64 {
        30
    }
    pub fn max_token_lifetime_secs() -> u64 {
        24 * 3600
    }
    pub fn max_token_bytes() -> usize {
        8 * 1024
    }
    pub fn retry_after_secs() -> u32 {
        5
    }
    pub fn cache_max_entries() -> usize {
        10_000
    }
    pub fn key_wait_ms() -> u64 {
        3_000
    }
    pub fn refresh_interval_secs() -> u64 {
        300
    }
    pub fn timeout_ms() -> u64 {
        5_000
    }
    pub fn min_refetch_interval_secs() -> u64 {
        5
    }
    pub fn poll_interval_ms() -> u64 {
        1_000
    }
    pub fn max_staleness_secs() -> u64 {
        45
    }
    pub fn refresh_path() -> String {
        authflow_contract::browser::REFRESH_PATH.to_owned()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawProvider {
    pub(super) name: String,
    pub(super) issuer: String,
    #[serde(default)]
    pub(super) audiences: Vec<String>,
    pub(super) algorithms: Vec<String>,
    #[serde(default)]
    pub(super) required_claims: Vec<String>,
    #[serde(default)]
    pub(super) token_type: Option<String>,
    pub(super) jwks: RawJwksSource,
    #[serde(default)]
    pub(super) revocations: Option<RawUpstream>,
    #[serde(default)]
    pub(super) forward_token: bool,
    #[serde(default)]
    pub(super) dpop: DpopMode,
    #[serde(default)]
    pub(super) dpop_algorithms: Option<Vec<String>>,
    #[serde(default)]
    pub(super) dpop_max_age_secs: Option<u64>,
    #[serde(default)]
    pub(super) dpop_nonce: DpopNonce,
    #[serde(default)]
    pub(super) dpop_origins: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "`inline` or `remote`"
)]
pub(super) enum RawJwksSource {
    Remote(RawUpstream),
    Inline(InlineKeys),
}

/// An inline JWKS, read into keys as the configuration is read (the error
/// is kept for `validate`, which names the field).
#[derive(Debug)]
pub(super) struct InlineKeys(pub(super) Result<KeySet, authflow_contract::jwk::JwksError>);

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
pub(super) struct ClaimHeaders(pub(super) Vec<(String, Option<String>)>);

impl<'de> Deserialize<'de> for ClaimHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = authflow_contract::json::borrowed::Object::deserialize(deserializer)?;
        Ok(ClaimHeaders(
            object
                .members()
                .map(|(path, header)| (path.to_owned(), header.as_str().map(str::to_owned)))
                .collect(),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawUpstream {
    pub(super) cluster: String,
    pub(super) path: String,
    #[serde(default)]
    pub(super) authority: Option<String>,
    #[serde(default)]
    pub(super) refresh_interval_secs: Option<u64>,
    #[serde(default)]
    pub(super) poll_interval_ms: Option<u64>,
    #[serde(default = "defaults::timeout_ms")]
    pub(super) timeout_ms: u64,
    /// Keys only (5 s when absent): the feed is never refetched early.
    #[serde(default)]
    pub(super) min_refetch_interval_secs: Option<u64>,
    /// Revocations only: seconds the service may hold a poll (a long poll).
    #[serde(default)]
    pub(super) wait_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawTokenSources {
    #[serde(default = "yes")]
    pub(super) authorization_bearer: bool,
    #[serde(default)]
    pub(super) cookies: Vec<String>,
    #[serde(default)]
    pub(super) headers: Vec<String>,
}

pub(super) fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawIdentityHeaders {
    #[serde(default)]
    pub(super) subject: Option<String>,
    #[serde(default)]
    pub(super) issuer: Option<String>,
    #[serde(default)]
    pub(super) roles: Option<String>,
    #[serde(default)]
    pub(super) scopes: Option<String>,
    #[serde(default)]
    pub(super) session: Option<String>,
    /// The service account calling (a verified service-account token's `client_id`).
    #[serde(default)]
    pub(super) client_id: Option<String>,
    /// claim path (dots for nesting) → header name; each value is checked
    /// to be a string by `validate_identity`.
    #[serde(default)]
    pub(super) claims: ClaimHeaders,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawRoute {
    #[serde(rename = "match")]
    pub(super) matcher: RawRouteMatch,
    pub(super) policy: Policy,
    #[serde(default)]
    pub(super) forward_credentials: bool,
    #[serde(default)]
    pub(super) browser_redirect: bool,
    #[serde(default)]
    pub(super) providers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawRouteMatch {
    #[serde(default)]
    pub(super) prefix: Option<String>,
    #[serde(default)]
    pub(super) path_prefix: Option<String>,
    #[serde(default)]
    pub(super) exact: Option<String>,
    #[serde(default)]
    pub(super) methods: Vec<String>,
    #[serde(default)]
    pub(super) host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawDeviceBinding {
    pub(super) mode: DeviceMode,
    #[serde(default = "default_device_attributes")]
    pub(super) attributes: Vec<String>,
    #[serde(default)]
    pub(super) tokens_without_fingerprint: MissingFingerprint,
    #[serde(default)]
    pub(super) xff_num_trusted_hops: u32,
}

pub(super) fn default_device_attributes() -> Vec<String> {
    vec!["user-agent".into(), "accept-language".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawRevocationPolicy {
    #[serde(default = "defaults::max_staleness_secs")]
    pub(super) max_staleness_secs: u64,
    #[serde(default)]
    pub(super) on_stale: StalePolicy,
    #[serde(default = "default_max_entries")]
    pub(super) max_entries: usize,
}

pub(super) fn default_max_entries() -> usize {
    1_000_000
}
