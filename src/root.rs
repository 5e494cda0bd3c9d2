//! The root context: parses the configuration once, then on every tick keeps
//! keys and revocation lists current (fetching when this VM holds the lease,
//! adopting what other VMs published otherwise) and settles paused requests.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

use authflow_contract::revocation::RevocationFeed;
use authflow_contract::KeySet;
use authflow_filter_core::config::JwksSource;
use authflow_filter_core::engine::Outcome;
use authflow_filter_core::request::HeaderReads;
use authflow_filter_core::{Engine, FilterConfig, Request};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::fetch::{self, Answer, Fetcher, Resource};
use crate::host;
use crate::http::{self, AuthflowHttp};
use crate::metrics::{self, Metrics};

const TICK: Duration = Duration::from_millis(100);

/// A request paused until its provider's keys arrive.
pub struct Waiter {
    pub context_id: u32,
    pub request: Request,
    pub provider: usize,
    /// Key generation when it started waiting: once it moves, evaluate for good.
    pub generation: u64,
    pub deadline_ms: u64,
}

/// Everything one VM's contexts share (one VM = one thread: `RefCell` is enough).
pub struct Vm {
    pub engine: Engine,
    /// The identity headers the filter owns: set or removed on every request it lets through.
    pub identity_names: Vec<String>,
    /// Which request headers the decisions read (fetched one by one, or the whole map).
    pub header_reads: HeaderReads,
    pub metrics: Metrics,
    pub waiting: Vec<Waiter>,
    /// Providers whose keys a request is waiting for (unknown kid or none yet).
    pub urgent: Vec<(usize, bool)>,
    pub jwks: Vec<Option<Fetcher>>,
    pub revocations: Vec<Option<Fetcher>>,
    /// The time as of the last tick (at most one tick old). Requests read this
    /// rather than asking the host: one host call fewer per request, and token
    /// times are whole seconds with a skew allowance anyway.
    pub clock_ms: u64,
    /// The last request's header buffer, reused by the next one.
    pub header_buffer: Vec<u8>,
}

pub struct AuthflowRoot {
    vm: Option<Rc<RefCell<Vm>>>,
    vm_id: u64,
    rng: u64,
}

impl AuthflowRoot {
    pub fn new() -> Self {
        // Random per VM (WASI random_get): identifies the lease holder.
        let seed = RandomState::new().hash_one(host::now_ms()) | 1;
        AuthflowRoot { vm: None, vm_id: seed, rng: seed }
    }

    fn jitter(&mut self) -> f64 {
        // xorshift64: jitter only needs to differ between VMs, not be secret.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 10_000) as f64 / 10_000.0
    }
}

impl Context for AuthflowRoot {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(vm_rc) = self.vm.clone() else { return };
        let jitter = self.jitter();
        let now = host::now_ms();
        let Ok(mut vm) = vm_rc.try_borrow_mut() else { return };
        let vm = &mut *vm;
        let headers = host::call_response_headers();
        let status = fetch::status_of(&headers);
        let found = find_call(vm, token_id);
        let Some((provider, resource)) = found else { return };
        let issuer = vm.engine.config.providers[provider].issuer.clone();
        let name = vm.engine.config.providers[provider].name.clone();
        match resource {
            Resource::Jwks => {
                let Some(f) = vm.jwks[provider].as_mut() else { return };
                f.in_flight = None;
                f.generation += 1;
                match fetch::jwks_answer(status, body_size, host::call_response_body) {
                    Answer::NotModified => {
                        f.schedule.succeeded(now);
                        vm.metrics.inc(metrics::JWKS_NOT_MODIFIED);
                    }
                    Answer::Fresh(set, bytes) => {
                        f.schedule.succeeded(now);
                        f.etag = headers.first("etag").map(str::to_owned);
                        f.slot.publish(&bytes, self.vm_id, now);
                        vm.metrics.inc(metrics::JWKS_FETCH_OK);
                        install_keys(vm, provider, set, &name);
                    }
                    Answer::Failed(why) => {
                        f.schedule.failed(now, jitter);
                        vm.metrics.inc(if status == 200 { metrics::JWKS_REJECTED } else { metrics::JWKS_FETCH_FAILED });
                        log::warn!("authflow: provider {name}: key fetch failed, keeping the last good keys: {why}");
                    }
                }
            }
            Resource::Revocations => {
                let Some(f) = vm.revocations[provider].as_mut() else { return };
                f.in_flight = None;
                f.generation += 1;
                match fetch::feed_answer(status, body_size, host::call_response_body) {
                    Answer::NotModified => {
                        f.schedule.succeeded(now);
                        f.slot.set_value("fresh", now.to_string().as_bytes());
                        vm.engine.providers[provider].revocations_fresh_at_ms = now;
                        vm.metrics.inc(metrics::REVOCATION_NOT_MODIFIED);
                    }
                    Answer::Fresh(feed, _) => {
                        let max = vm.engine.config.revocation.max_entries;
                        let state = &mut vm.engine.providers[provider];
                        match state.revocations.apply(feed, &issuer, max, now / 1000) {
                            Ok(()) => {
                                f.schedule.succeeded(now);
                                state.revocations_fresh_at_ms = now;
                                // Others get the merged list: a delta means nothing without its base.
                                if let Ok(snapshot) = serde_json::to_vec(&state.revocations.to_snapshot(&issuer)) {
                                    f.slot.publish(&snapshot, self.vm_id, now);
                                }
                                f.slot.set_value("fresh", now.to_string().as_bytes());
                                vm.metrics.inc(metrics::REVOCATION_FETCH_OK);
                                vm.metrics.set(metrics::REVOCATION_ENTRIES, state.revocations.len() as u64);
                            }
                            Err(e) => {
                                f.schedule.failed(now, jitter);
                                vm.metrics.inc(metrics::REVOCATION_REJECTED);
                                log::error!("authflow: provider {name}: revocation feed refused, keeping the last good list: {e}");
                            }
                        }
                    }
                    Answer::Failed(why) => {
                        f.schedule.failed(now, jitter);
                        vm.metrics.inc(metrics::REVOCATION_FETCH_FAILED);
                        log::warn!("authflow: provider {name}: revocation poll failed: {why}");
                    }
                }
            }
        }
        settle_waiters(vm, now);
    }
}

fn find_call(vm: &Vm, token_id: u32) -> Option<(usize, Resource)> {
    let hit = |list: &Vec<Option<Fetcher>>| {
        list.iter().position(|f| f.as_ref().and_then(|f| f.in_flight).is_some_and(|(t, _)| t == token_id))
    };
    hit(&vm.jwks).map(|p| (p, Resource::Jwks)).or_else(|| hit(&vm.revocations).map(|p| (p, Resource::Revocations)))
}

fn install_keys(vm: &mut Vm, provider: usize, set: KeySet, name: &str) {
    let count = set.keys.len();
    if set.skipped > 0 {
        log::info!("authflow: provider {name}: {count} keys loaded, {} unusable keys skipped", set.skipped);
    }
    vm.engine.set_keys(provider, set);
    let total: usize = vm.engine.providers.iter().filter_map(|p| p.keys.as_ref()).map(|k| k.keys.len()).sum();
    vm.metrics.set(metrics::KEYS_LOADED, total as u64);
}

/// Settles paused requests whose keys arrived, whose fetch ended, or whose wait ran out.
pub fn settle_waiters(vm: &mut Vm, now_ms: u64) {
    if vm.waiting.is_empty() {
        return;
    }
    let waiting = std::mem::take(&mut vm.waiting);
    for w in waiting {
        let generation = vm.jwks.get(w.provider).and_then(Option::as_ref).map_or(0, |f| f.generation);
        let final_round = generation != w.generation || now_ms >= w.deadline_ms;
        let outcome = vm.engine.evaluate(&w.request, now_ms, !final_round);
        if matches!(outcome, Outcome::AwaitKeys { .. }) {
            vm.waiting.push(w);
            continue;
        }
        if host::act_on(w.context_id) {
            http::carry_out(vm, &w.request, outcome, true);
        }
    }
}

impl RootContext for AuthflowRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = proxy_wasm::hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match FilterConfig::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                // Returning false makes Envoy refuse the filter: a broken config never serves traffic.
                log::error!("authflow: {e}");
                return false;
            }
        };
        let now = host::now_ms();
        let jwks = config
            .providers
            .iter()
            .map(|p| match &p.jwks {
                JwksSource::Remote(u) => Some(Fetcher::new(u.clone(), &p.issuer, Resource::Jwks)),
                JwksSource::Inline(_) => None,
            })
            .collect();
        let revocations = config
            .providers
            .iter()
            .map(|p| p.revocations.clone().map(|u| Fetcher::new(u, &p.issuer, Resource::Revocations)))
            .collect();
        let names: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
        let identity_names = config.identity.all_names().into_iter().map(str::to_owned).collect();
        let header_reads = HeaderReads::for_config(&config);
        let engine = Engine::new(config, now);
        let metrics = Metrics::define();
        let vm = Vm { engine, identity_names, header_reads, metrics, waiting: Vec::new(), urgent: Vec::new(), jwks, revocations, clock_ms: now, header_buffer: Vec::new() };
        self.vm = Some(Rc::new(RefCell::new(vm)));
        self.set_tick_period(TICK);
        log::info!("authflow: configured with providers {names:?}");
        // Do not wait for the first tick to load keys. Only keys: the lease-based
        // polls wait for ticks, because Envoy may configure (and then discard) a
        // VM that will never tick, and it must not take a lease with it.
        if let Some(vm_rc) = self.vm.clone() {
            if let Ok(mut vm) = vm_rc.try_borrow_mut() {
                for p in 0..vm.engine.config.providers.len() {
                    self.tick_jwks(&mut vm, p, now);
                }
            }
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(vm_rc) = self.vm.clone() else { return };
        let now = host::now_ms();
        let Ok(mut vm) = vm_rc.try_borrow_mut() else { return };
        let vm = &mut *vm;
        vm.clock_ms = now;
        for p in 0..vm.engine.config.providers.len() {
            self.tick_jwks(vm, p, now);
            self.tick_revocations(vm, p, now);
        }
        vm.urgent.clear();
        settle_waiters(vm, now);
        vm.metrics.flush();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let vm = self.vm.clone()?;
        Some(Box::new(AuthflowHttp::new(vm, context_id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl AuthflowRoot {
    fn tick_jwks(&mut self, vm: &mut Vm, p: usize, now: u64) {
        let name = vm.engine.config.providers[p].name.clone();
        // Some(true): a request waits on an unknown kid; Some(false): on keys not loaded yet.
        let urgent = vm.urgent.iter().filter(|(q, _)| *q == p).map(|(_, unknown_kid)| *unknown_kid).reduce(|a, b| a || b);
        let Some(f) = vm.jwks[p].as_mut() else { return };
        f.expire_in_flight(now);
        // Adopt what another VM fetched. This does not end anyone's wait: that
        // document may predate the key a paused request is waiting for.
        if let Some(bytes) = f.slot.take_if_changed() {
            if let Ok(set) = KeySet::parse(&bytes) {
                install_keys(vm, p, set, &name);
            }
        }
        let have_keys = vm.engine.providers[p].keys.is_some();
        let Some(f) = vm.jwks[p].as_mut() else { return };
        if f.in_flight.is_some() {
            return;
        }
        let should_fetch = match urgent {
            // An unknown kid: one early refetch, rate limited.
            Some(true) => f.schedule.request_early(now),
            // Nothing loaded yet in this VM: fetch for ourselves when the backoff allows.
            _ if !have_keys => f.schedule.is_due(now),
            _ => f.schedule.is_due(now) && f.slot.acquire_lease(self.vm_id, now, f.lease_ttl_ms()),
        };
        if !should_fetch {
            return;
        }
        let etag = if have_keys { f.etag.clone() } else { None };
        let extra: Vec<(&str, &str)> = etag.as_deref().map(|e| ("if-none-match", e)).into_iter().collect();
        let u = &f.upstream;
        match host::dispatch_get(&u.cluster, &u.authority, &u.path, &extra, u.timeout_ms) {
            Ok(token) => f.in_flight = Some((token, now + u.timeout_ms + 1_000)),
            Err(s) => {
                let jitter = self.jitter();
                f.schedule.failed(now, jitter);
                f.generation += 1;
                vm.metrics.inc(metrics::JWKS_FETCH_FAILED);
                log::warn!("authflow: provider {name}: cannot call cluster {}: {s:?}", f.upstream.cluster);
            }
        }
    }

    fn tick_revocations(&mut self, vm: &mut Vm, p: usize, now: u64) {
        let issuer = vm.engine.config.providers[p].issuer.clone();
        let max = vm.engine.config.revocation.max_entries;
        let Some(f) = vm.revocations[p].as_mut() else { return };
        f.expire_in_flight(now);
        let state = &mut vm.engine.providers[p];
        if let Some(bytes) = f.slot.take_if_changed() {
            if let Ok(feed) = serde_json::from_slice::<RevocationFeed>(&bytes) {
                let mut next = authflow_filter_core::revocation::RevocationSet::default();
                if next.apply(feed, &issuer, max, now / 1000).is_ok() {
                    state.revocations = next;
                    vm.metrics.set(metrics::REVOCATION_ENTRIES, state.revocations.len() as u64);
                }
            }
        }
        if let Some(fresh) = f.slot.value("fresh").and_then(|v| String::from_utf8(v).ok()).and_then(|v| v.parse::<u64>().ok()) {
            state.revocations_fresh_at_ms = state.revocations_fresh_at_ms.max(fresh);
        }
        if f.in_flight.is_some() || !f.schedule.is_due(now) || !f.slot.acquire_lease(self.vm_id, now, f.lease_ttl_ms()) {
            return;
        }
        let path = fetch::feed_path(&f.upstream.path, state.revocations.cursor());
        let u = &f.upstream;
        match host::dispatch_get(&u.cluster, &u.authority, &path, &[], u.timeout_ms) {
            Ok(token) => f.in_flight = Some((token, now + u.timeout_ms + 1_000)),
            Err(s) => {
                let jitter = self.jitter();
                f.schedule.failed(now, jitter);
                vm.metrics.inc(metrics::REVOCATION_FETCH_FAILED);
                log::warn!("authflow: cannot call cluster {} for revocations: {s:?}", f.upstream.cluster);
            }
        }
    }
}
