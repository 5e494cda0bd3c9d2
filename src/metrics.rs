//! Every statistic the filter exports. In Envoy they appear under
//! `wasmcustom.authflow.*` in `/stats` (and `wasmcustom_authflow_*` in
//! `/stats/prometheus`). Defining the same name in every worker VM yields
//! the same Envoy stat, so counters add up across workers.
//!
//! Counters are added up in the VM and flushed to Envoy on each root tick
//! (every 100 ms): a host call per counter per request would cost more than
//! the whole decision on a cached token.

use std::cell::Cell;

use authflow_contract::Algorithm;
use authflow_filter_core::deny::DenyReason;
use authflow_filter_core::signature::{Path, SignatureChecker};

use crate::host::{self, MetricKind};

/// One table gives each statistic its id (the enum), its name and its kind:
/// nothing to keep in step by hand.
macro_rules! statistics {
    ($($id:ident => $name:literal, $kind:ident;)*) => {
        /// A statistic; its discriminant is its row in [`TABLE`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Metric {
            $($id,)*
        }
        const TABLE: &[(&str, MetricKind)] = &[$(($name, MetricKind::$kind),)*];
    };
}

statistics! {
    Allowed => "authflow.allowed", Counter;
    AllowedAnonymous => "authflow.allowed_anonymous", Counter;
    CacheHit => "authflow.token_cache.hit", Counter;
    CacheMiss => "authflow.token_cache.miss", Counter;
    JwksFetchOk => "authflow.jwks.fetch_ok", Counter;
    JwksFetchFailed => "authflow.jwks.fetch_failed", Counter;
    JwksNotModified => "authflow.jwks.not_modified", Counter;
    JwksRejected => "authflow.jwks.rejected", Counter;
    JwksNoUsableKey => "authflow.jwks.no_usable_key", Counter;
    JwksDispatchDeferred => "authflow.jwks.dispatch_deferred", Counter;
    RevocationFetchOk => "authflow.revocations.fetch_ok", Counter;
    RevocationFetchFailed => "authflow.revocations.fetch_failed", Counter;
    RevocationNotModified => "authflow.revocations.not_modified", Counter;
    RevocationRejected => "authflow.revocations.rejected", Counter;
    RevocationDispatchDeferred => "authflow.revocations.dispatch_deferred", Counter;
    RevocationStaleAllowed => "authflow.revocations.stale_allowed", Counter;
    DeviceMismatchReported => "authflow.device.mismatch_reported", Counter;
    DeviceSecretMissing => "authflow.device.secret_missing", Counter;
    PublicInvalidToken => "authflow.public_route_invalid_token", Counter;
    FailedOpen => "authflow.failed_open", Counter;
    StreamsEnded => "authflow.streams_ended", Counter;
    BrowserRedirect => "authflow.browser_redirect", Counter;
    KeyWaits => "authflow.key_waits", Counter;
    KeyWaitsOverflow => "authflow.key_waits_overflow", Counter;
    RevocationWaits => "authflow.revocations.first_list_waits", Counter;
    SignatureHostEdDSA => "authflow.signature.host.eddsa", Counter;
    SignatureHostES256 => "authflow.signature.host.es256", Counter;
    SignatureHostRS256 => "authflow.signature.host.rs256", Counter;
    SignatureWasmEdDSA => "authflow.signature.wasm.eddsa", Counter;
    SignatureWasmES256 => "authflow.signature.wasm.es256", Counter;
    SignatureWasmRS256 => "authflow.signature.wasm.rs256", Counter;
    KeysLoaded => "authflow.jwks.keys_loaded", Gauge;
    RevocationEntries => "authflow.revocations.entries", Gauge;
}

#[derive(Default)]
pub struct Metrics {
    /// Host ids, indexed like [`TABLE`].
    ids: Vec<Option<u32>>,
    /// Indexed like `DenyReason::ALL`.
    denied: Vec<Option<u32>>,
    /// Increments not yet handed to Envoy, per metric / per deny reason.
    pending: Vec<Cell<u64>>,
    pending_denied: Vec<Cell<u64>>,
}

impl Metrics {
    pub fn define() -> Self {
        let ids = TABLE
            .iter()
            .map(|(name, kind)| host::define_metric(*kind, name))
            .collect();
        let denied = DenyReason::ALL
            .iter()
            .map(|r| {
                host::define_metric(
                    MetricKind::Counter,
                    &format!("authflow.denied.{}", r.label()),
                )
            })
            .collect();
        let pending = TABLE.iter().map(|_| Cell::new(0)).collect();
        let pending_denied = DenyReason::ALL.iter().map(|_| Cell::new(0)).collect();
        Metrics {
            ids,
            denied,
            pending,
            pending_denied,
        }
    }

    pub fn inc(&self, m: Metric) {
        self.add(m, 1);
    }

    pub fn add(&self, m: Metric, n: u64) {
        if let Some(c) = self.pending.get(m as usize) {
            c.set(c.get().saturating_add(n));
        }
    }

    /// Adds the signatures checked since the last call, by algorithm and verifier.
    pub fn count_signatures(&self, signatures: &SignatureChecker) {
        for (alg, path, n) in signatures.take_counts() {
            let m = match (path, alg) {
                (Path::Host, Algorithm::EdDSA) => Metric::SignatureHostEdDSA,
                (Path::Host, Algorithm::ES256) => Metric::SignatureHostES256,
                (Path::Host, Algorithm::RS256) => Metric::SignatureHostRS256,
                (Path::Wasm, Algorithm::EdDSA) => Metric::SignatureWasmEdDSA,
                (Path::Wasm, Algorithm::ES256) => Metric::SignatureWasmES256,
                (Path::Wasm, Algorithm::RS256) => Metric::SignatureWasmRS256,
            };
            self.add(m, n);
        }
    }

    /// Hands the pending increments to Envoy.
    pub fn flush(&self) {
        let flush = |ids: &[Option<u32>], pending: &[Cell<u64>]| {
            for (id, count) in ids.iter().zip(pending) {
                let n = count.replace(0);
                if let (Some(id), true) = (id, n > 0) {
                    host::increment_metric(*id, n);
                }
            }
        };
        flush(&self.ids, &self.pending);
        flush(&self.denied, &self.pending_denied);
    }

    /// Sets a gauge.
    pub fn set(&self, m: Metric, value: u64) {
        if let Some(Some(id)) = self.ids.get(m as usize) {
            host::record_metric(*id, value);
        }
    }

    pub fn denied(&self, reason: DenyReason) {
        let index = DenyReason::ALL.iter().position(|r| *r == reason);
        if let Some(c) = index.and_then(|i| self.pending_denied.get(i)) {
            c.set(c.get().saturating_add(1));
        }
    }
}
