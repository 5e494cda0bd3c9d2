//! The root context: parses the configuration once, then drives the
//! providers' background work — on every tick and on every callout answer —
//! and settles paused requests. What to do is decided in `provider` and
//! `authflow_filter_core::fetch`; this only calls the host.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use authflow_filter_core::config::DpopMode;
use authflow_filter_core::FilterConfig;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::host;
use crate::http::AuthflowHttp;
use crate::nonce_key::NonceKeySource;
use crate::provider::Env;
use crate::shared;
use crate::vm::Vm;

const TICK: Duration = Duration::from_millis(100);

pub struct AuthflowRoot {
    vm: Option<Rc<RefCell<Vm>>>,
    vm_id: u64,
    rng: u64,
}

impl AuthflowRoot {
    pub fn new() -> Self {
        // Random per VM: identifies the lease holder.
        let seed = host::random_key()[0] | 1;
        AuthflowRoot {
            vm: None,
            vm_id: seed,
            rng: seed,
        }
    }

    fn jitter(&mut self) -> f64 {
        // xorshift64: jitter only needs to differ between VMs, not be secret.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 10_000) as f64 / 10_000.0
    }

    /// Adopts what other VMs shared, may take fetch leases (when `ticking`),
    /// then starts every callout that is due.
    fn run_providers(&mut self, vm: &mut Vm, now_ms: u64, ticking: bool) {
        let jitter = self.jitter();
        let Vm {
            engine,
            providers,
            metrics,
            ..
        } = vm;
        for runtime in providers.iter_mut() {
            let mut env = Env {
                engine,
                metrics,
                vm_id: self.vm_id,
                now_ms,
                jitter,
            };
            runtime.adopt_shared(&mut env);
            for call in runtime.due_callouts(env.engine, self.vm_id, now_ms, ticking) {
                let extra: Vec<(&str, &str)> = [
                    ("if-none-match", call.if_none_match.as_deref()),
                    ("accept", call.accept),
                ]
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?)))
                .collect();
                let result = host::dispatch_get(
                    &call.cluster,
                    &call.authority,
                    &call.path,
                    &extra,
                    call.timeout_ms,
                );
                runtime.dispatched(call.document, result, &mut env);
            }
        }
    }
}

impl Context for AuthflowRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(vm_rc) = self.vm.clone() else { return };
        let jitter = self.jitter();
        let now = host::now_ms();
        let Ok(mut vm) = vm_rc.try_borrow_mut() else {
            return;
        };
        let vm = &mut *vm;
        // The requests' clock too: what this answer marks (a list current,
        // entries forgotten) is read by the requests up to the next tick,
        // which on a starved worker comes late.
        vm.clock_ms = now;
        let Vm {
            engine,
            providers,
            metrics,
            ..
        } = vm;
        let owner = providers
            .iter_mut()
            .find_map(|p| p.callout_document(token_id).map(|d| (p, d)));
        if let Some((runtime, document)) = owner {
            let mut env = Env {
                engine,
                metrics,
                vm_id: self.vm_id,
                now_ms: now,
                jitter,
            };
            runtime.on_answer(document, body_size, &mut env);
        }
        vm.settle_paused(now);
    }
}

impl RootContext for AuthflowRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = match FilterConfig::from_json(&host::plugin_configuration()) {
            Ok(c) => c,
            Err(e) => {
                // Returning false makes Envoy refuse the filter: a broken config never serves traffic.
                log::error!("authflow: {e}");
                return false;
            }
        };
        let now = host::now_ms();
        let mut vm = Vm::new(config, now);
        match NonceKeySource::configure(&mut vm.engine) {
            Ok(source) => vm.nonce_keys = source,
            Err(e) => {
                log::error!("authflow: {e}");
                return false;
            }
        }
        if vm
            .engine
            .config
            .providers
            .iter()
            .any(|p| p.dpop.mode != DpopMode::Off)
        {
            shared::create_replay_slots();
        }
        if !host::set_tick_period(TICK) {
            log::error!("authflow: no tick period: keys and revocations cannot refresh");
            return false;
        }
        // Joined rather than `{:?}`: Debug for strings links Unicode escape tables.
        let names: Vec<&str> = vm.providers.iter().map(|p| p.name()).collect();
        log::info!("authflow: configured with providers [{}]", names.join(", "));
        // Do not wait for the first tick: take the keys and revocation list
        // other workers already hold (a VM started in a running Envoy, e.g.
        // on a configuration change, serves with them at once), and fetch
        // keys not loaded yet. No lease is taken: Envoy may configure, and
        // then discard, a VM that will never tick.
        self.run_providers(&mut vm, now, false);
        self.vm = Some(Rc::new(RefCell::new(vm)));
        true
    }

    fn on_tick(&mut self) {
        let Some(vm_rc) = self.vm.clone() else { return };
        let now = host::now_ms();
        let Ok(mut vm) = vm_rc.try_borrow_mut() else {
            return;
        };
        let vm = &mut *vm;
        vm.clock_ms = now;
        self.run_providers(vm, now, true);
        vm.nonce_keys.refresh(&mut vm.engine);
        vm.settle_paused(now);
        vm.end_streams(now);
        vm.metrics.count_signatures(&vm.engine.signatures);
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
