//! Every statistic the filter exports. In Envoy they appear under
//! `wasmcustom.authflow.*` in `/stats` (and `wasmcustom_authflow_*` in
//! `/stats/prometheus`). Defining the same name in every worker VM yields
//! the same Envoy stat, so counters add up across workers.
//!
//! Counters are added up in the VM and flushed to Envoy on each root tick
//! (every 100 ms): a host call per counter per request would cost more than
//! the whole decision on a cached token.

use std::cell::Cell;

use authflow_filter_core::deny::DenyReason;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// A statistic, by its index in [`NAMES`]: the request path looks ids up in an array, not by name.
#[derive(Clone, Copy)]
pub struct Metric(usize);

pub const ALLOWED: Metric = Metric(0);
pub const ALLOWED_ANONYMOUS: Metric = Metric(1);
pub const CACHE_HIT: Metric = Metric(2);
pub const CACHE_MISS: Metric = Metric(3);
pub const JWKS_FETCH_OK: Metric = Metric(4);
pub const JWKS_FETCH_FAILED: Metric = Metric(5);
pub const JWKS_NOT_MODIFIED: Metric = Metric(6);
pub const JWKS_REJECTED: Metric = Metric(7);
pub const REVOCATION_FETCH_OK: Metric = Metric(8);
pub const REVOCATION_FETCH_FAILED: Metric = Metric(9);
pub const REVOCATION_NOT_MODIFIED: Metric = Metric(10);
pub const REVOCATION_REJECTED: Metric = Metric(11);
pub const REVOCATION_STALE_ALLOWED: Metric = Metric(12);
pub const DEVICE_MISMATCH_REPORTED: Metric = Metric(13);
pub const DEVICE_SECRET_MISSING: Metric = Metric(14);
pub const PUBLIC_INVALID_TOKEN: Metric = Metric(15);
pub const FAILED_OPEN: Metric = Metric(16);
pub const KEY_WAITS: Metric = Metric(17);
pub const KEYS_LOADED: Metric = Metric(18);
pub const REVOCATION_ENTRIES: Metric = Metric(19);

/// Names in index order; the last [`GAUGES`] of them are gauges.
const NAMES: [&str; 20] = [
    "authflow.allowed",
    "authflow.allowed_anonymous",
    "authflow.token_cache.hit",
    "authflow.token_cache.miss",
    "authflow.jwks.fetch_ok",
    "authflow.jwks.fetch_failed",
    "authflow.jwks.not_modified",
    "authflow.jwks.rejected",
    "authflow.revocations.fetch_ok",
    "authflow.revocations.fetch_failed",
    "authflow.revocations.not_modified",
    "authflow.revocations.rejected",
    "authflow.revocations.stale_allowed",
    "authflow.device.mismatch_reported",
    "authflow.device.secret_missing",
    "authflow.public_route_invalid_token",
    "authflow.failed_open",
    "authflow.key_waits",
    "authflow.jwks.keys_loaded",
    "authflow.revocations.entries",
];
const GAUGES: usize = 2;

#[derive(Default)]
pub struct Metrics {
    ids: Vec<Option<u32>>,
    /// Indexed like `DenyReason::ALL`.
    denied: Vec<Option<u32>>,
    /// Increments not yet handed to Envoy, per metric / per deny reason.
    pending: Vec<Cell<u64>>,
    pending_denied: Vec<Cell<u64>>,
}

impl Metrics {
    pub fn define() -> Self {
        let ids = NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let kind = if i >= NAMES.len() - GAUGES { MetricType::Gauge } else { MetricType::Counter };
                hostcalls::define_metric(kind, name).ok()
            })
            .collect();
        let denied = DenyReason::ALL
            .iter()
            .map(|r| hostcalls::define_metric(MetricType::Counter, &format!("authflow.denied.{}", r.label())).ok())
            .collect();
        let pending = (0..NAMES.len()).map(|_| Cell::new(0)).collect();
        let pending_denied = (0..DenyReason::ALL.len()).map(|_| Cell::new(0)).collect();
        Metrics { ids, denied, pending, pending_denied }
    }

    pub fn inc(&self, m: Metric) {
        if let Some(c) = self.pending.get(m.0) {
            c.set(c.get().saturating_add(1));
        }
    }

    /// Hands the pending increments to Envoy.
    pub fn flush(&self) {
        let flush = |ids: &[Option<u32>], pending: &[Cell<u64>]| {
            for (id, count) in ids.iter().zip(pending) {
                let n = count.replace(0);
                if let (Some(id), true) = (id, n > 0) {
                    let _ = hostcalls::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
        };
        flush(&self.ids, &self.pending);
        flush(&self.denied, &self.pending_denied);
    }

    pub fn set(&self, m: Metric, value: u64) {
        if let Some(Some(id)) = self.ids.get(m.0) {
            let _ = hostcalls::record_metric(*id, value);
        }
    }

    pub fn denied(&self, reason: DenyReason) {
        let index = DenyReason::ALL.iter().position(|r| *r == reason);
        if let Some(c) = index.and_then(|i| self.pending_denied.get(i)) {
            c.set(c.get().saturating_add(1));
        }
    }
}
