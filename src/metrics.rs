//! Every statistic the filter exports. In Envoy they appear under
//! `wasmcustom.authflow.*` in `/stats` (and `wasmcustom_authflow_*` in
//! `/stats/prometheus`). Defining the same name in every worker VM yields
//! the same Envoy stat, so counters add up across workers.

use std::collections::HashMap;

use authflow_filter_core::deny::DenyReason;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

#[derive(Default)]
pub struct Metrics {
    ids: HashMap<&'static str, u32>,
    denied: HashMap<&'static str, u32>,
}

pub const ALLOWED: &str = "authflow.allowed";
pub const ALLOWED_ANONYMOUS: &str = "authflow.allowed_anonymous";
pub const CACHE_HIT: &str = "authflow.token_cache.hit";
pub const CACHE_MISS: &str = "authflow.token_cache.miss";
pub const JWKS_FETCH_OK: &str = "authflow.jwks.fetch_ok";
pub const JWKS_FETCH_FAILED: &str = "authflow.jwks.fetch_failed";
pub const JWKS_NOT_MODIFIED: &str = "authflow.jwks.not_modified";
pub const JWKS_REJECTED: &str = "authflow.jwks.rejected";
pub const KEYS_LOADED: &str = "authflow.jwks.keys_loaded";
pub const REVOCATION_FETCH_OK: &str = "authflow.revocations.fetch_ok";
pub const REVOCATION_FETCH_FAILED: &str = "authflow.revocations.fetch_failed";
pub const REVOCATION_NOT_MODIFIED: &str = "authflow.revocations.not_modified";
pub const REVOCATION_REJECTED: &str = "authflow.revocations.rejected";
pub const REVOCATION_ENTRIES: &str = "authflow.revocations.entries";
pub const REVOCATION_STALE_ALLOWED: &str = "authflow.revocations.stale_allowed";
pub const DEVICE_MISMATCH_REPORTED: &str = "authflow.device.mismatch_reported";
pub const DEVICE_SECRET_MISSING: &str = "authflow.device.secret_missing";
pub const PUBLIC_INVALID_TOKEN: &str = "authflow.public_route_invalid_token";
pub const FAILED_OPEN: &str = "authflow.failed_open";
pub const KEY_WAITS: &str = "authflow.key_waits";

const COUNTERS: [&str; 18] = [
    ALLOWED, ALLOWED_ANONYMOUS, CACHE_HIT, CACHE_MISS, JWKS_FETCH_OK, JWKS_FETCH_FAILED, JWKS_NOT_MODIFIED,
    JWKS_REJECTED, REVOCATION_FETCH_OK, REVOCATION_FETCH_FAILED, REVOCATION_NOT_MODIFIED, REVOCATION_REJECTED,
    REVOCATION_STALE_ALLOWED, DEVICE_MISMATCH_REPORTED, DEVICE_SECRET_MISSING, PUBLIC_INVALID_TOKEN, FAILED_OPEN,
    KEY_WAITS,
];
const GAUGES: [&str; 2] = [KEYS_LOADED, REVOCATION_ENTRIES];

impl Metrics {
    pub fn define() -> Self {
        let mut m = Metrics::default();
        for name in COUNTERS {
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, name) {
                m.ids.insert(name, id);
            }
        }
        for name in GAUGES {
            if let Ok(id) = hostcalls::define_metric(MetricType::Gauge, name) {
                m.ids.insert(name, id);
            }
        }
        for reason in DenyReason::ALL {
            let name = format!("authflow.denied.{}", reason.label());
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, &name) {
                m.denied.insert(reason.label(), id);
            }
        }
        m
    }

    pub fn inc(&self, name: &str) {
        if let Some(id) = self.ids.get(name) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }

    pub fn set(&self, name: &str, value: u64) {
        if let Some(id) = self.ids.get(name) {
            let _ = hostcalls::record_metric(*id, value);
        }
    }

    pub fn denied(&self, reason: DenyReason) {
        if let Some(id) = self.denied.get(reason.label()) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}

