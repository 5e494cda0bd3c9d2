//! What one VM's contexts share (one VM = one thread: `RefCell` is enough),
//! and the one place a request that lacks keys is paused or answered, and a
//! paused request is settled.

use authflow_filter_core::engine::Outcome;
use authflow_filter_core::fetch::{KeyNeed, KeyWait};
use authflow_filter_core::header_spellings::underscore_spellings;
use authflow_filter_core::paused::{PausedRequest, PausedRequests};
use authflow_filter_core::request::HeaderReads;
use authflow_filter_core::signature::{self, SignatureChecker};
use authflow_filter_core::{Engine, FilterConfig, Request};

use crate::host;
use crate::metrics::{Metric, Metrics};
use crate::outcome::carry_out;
use crate::provider::ProviderRuntime;

pub struct Vm {
    pub engine: Engine,
    /// One per configured provider, in configuration order.
    pub providers: Vec<ProviderRuntime>,
    /// The identity headers the filter owns: set or removed on every request it lets through.
    pub identity_names: Vec<String>,
    /// Their other `-`/`_` spellings, removed from every request let through.
    pub identity_spellings: Vec<String>,
    /// Which request headers the decisions read (fetched one by one, or the whole map).
    pub header_reads: HeaderReads,
    pub metrics: Metrics,
    pub paused: PausedRequests,
    /// The time as of the last tick (at most one tick old). Requests read this
    /// rather than asking the host: one host call fewer per request, and token
    /// times are whole seconds with a skew allowance anyway.
    pub clock_ms: u64,
    /// The last request's header buffer, reused by the next one.
    pub header_buffer: Vec<u8>,
}

/// A request's fate at its headers.
pub enum Decided {
    /// Decided: carry this out (the request comes back for its buffer).
    Now(Request, Outcome),
    /// Paused until its keys arrive (or the wait ends).
    Paused,
}

impl Vm {
    pub fn new(config: FilterConfig, now_ms: u64) -> Self {
        let providers = config.providers.iter().enumerate().map(|(i, p)| ProviderRuntime::new(i, p)).collect();
        let identity_names = config.identity.all_names().into_iter().map(str::to_owned).collect();
        let identity_spellings = underscore_spellings(&config.identity.all_names());
        let header_reads = HeaderReads::for_config(&config);
        Vm {
            engine: Engine::new(config, now_ms).with_signatures(host_signatures()),
            providers,
            identity_names,
            identity_spellings,
            header_reads,
            metrics: Metrics::define(),
            paused: PausedRequests::default(),
            clock_ms: now_ms,
            header_buffer: Vec::new(),
        }
    }

    /// Decides a new request. One that lacks keys waits only when a fetch
    /// that could bring them is in flight or about to start, and only while
    /// the paused list has room; otherwise it is answered with the keys there are.
    pub fn decide(&mut self, context_id: u32, request: Request, now_ms: u64) -> Decided {
        let (provider, unknown_kid) = match self.engine.evaluate(&request, now_ms, true) {
            Outcome::AwaitKeys { provider, unknown_kid } => (provider, unknown_kid),
            outcome => return Decided::Now(request, outcome),
        };
        let need = if unknown_kid { KeyNeed::UnknownKid } else { KeyNeed::NotLoaded };
        let mut request = request;
        if let Some(runtime) = self.providers.get_mut(provider) {
            if runtime.key_wait(need, now_ms) == KeyWait::Pause {
                let paused = PausedRequest {
                    context_id,
                    request,
                    provider,
                    generation: runtime.key_generation(),
                    deadline_ms: now_ms.saturating_add(self.engine.config.key_wait_ms),
                };
                match self.paused.push(paused) {
                    Ok(()) => {
                        self.metrics.inc(Metric::KeyWaits);
                        return Decided::Paused;
                    }
                    Err(overflow) => {
                        self.metrics.inc(Metric::KeyWaitsOverflow);
                        request = overflow.request;
                    }
                }
            }
        }
        let outcome = self.engine.evaluate(&request, now_ms, false);
        Decided::Now(request, outcome)
    }

    /// Settles paused requests whose key fetch ended or whose wait ran out.
    pub fn settle_paused(&mut self, now_ms: u64) {
        if self.paused.is_empty() {
            return;
        }
        for p in self.paused.take_all() {
            let generation = self.providers.get(p.provider).map_or(0, ProviderRuntime::key_generation);
            let final_round = p.final_round(generation, now_ms);
            let outcome = self.engine.evaluate(&p.request, now_ms, !final_round);
            if matches!(outcome, Outcome::AwaitKeys { .. }) {
                // Back where it was: the list only shrank since `take_all`.
                let _ = self.paused.push(p);
                continue;
            }
            if host::act_on(p.context_id) {
                carry_out(self, &p.request, outcome, true);
            }
        }
    }
}

/// Signatures checked by Envoy's `verify_signature` (BoringSSL) where the host
/// proves able, by the filter's own verifiers elsewhere.
fn host_signatures() -> SignatureChecker {
    SignatureChecker::with_host(Box::new(|arguments: &[u8]| host::call_foreign_function(signature::FOREIGN_FUNCTION, arguments)))
}
