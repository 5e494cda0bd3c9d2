//! What one VM's contexts share (one VM = one thread: `RefCell` is enough),
//! and the one place a request that lacks keys (or its provider's first
//! revocation list) is paused or answered, and a paused request is settled;
//! and the streams let through with a token, reset once it no longer holds.

use authflow_filter_core::engine::{Awaited, Decision};
use authflow_filter_core::fetch::{KeyWait, ListBounds};
use authflow_filter_core::header_spellings::underscore_spellings;
use authflow_filter_core::paused::{PausedRequest, PausedRequests};
use authflow_filter_core::request::HeaderReads;
use authflow_filter_core::signature::{self, SignatureChecker};
use authflow_filter_core::streams::OpenStreams;
use authflow_filter_core::timing;
use authflow_filter_core::{Engine, FilterConfig, PerProvider, Request};

use crate::host;
use crate::metrics::{Metric, Metrics};
use crate::nonce_key::NonceKeySource;
use crate::outcome::{carry_out, Carried};
use crate::provider::ProviderRuntime;

pub struct Vm {
    pub engine: Engine,
    /// One per configured provider, in configuration order.
    pub providers: PerProvider<ProviderRuntime>,
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
    /// Where the DPoP nonce key comes from (set at configuration, renewed on ticks).
    pub nonce_keys: NonceKeySource,
    /// The streams let through with a token and still open.
    pub streams: OpenStreams,
}

/// A request's fate at its headers.
pub enum Decided {
    /// Decided: carry this out (the request comes back for its buffer).
    Now(Request, Decision),
    /// Paused until its keys arrive (or the wait ends).
    Paused,
}

impl Vm {
    pub fn new(config: FilterConfig, now_ms: u64) -> Self {
        let bounds = ListBounds::from(&config.revocation);
        let providers = config
            .providers
            .map(|id, p| ProviderRuntime::new(id, p, bounds));
        let identity_names = config
            .identity
            .owned_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let identity_spellings = underscore_spellings(&config.identity.owned_names());
        let header_reads = HeaderReads::for_config(&config);
        timing::set_clock(host::now_ns);
        Vm {
            engine: Engine::new(config, now_ms)
                .with_signatures(host_signatures())
                .with_cache_key(host::random_key()),
            providers,
            identity_names,
            identity_spellings,
            header_reads,
            metrics: Metrics::define(),
            paused: PausedRequests::default(),
            clock_ms: now_ms,
            header_buffer: Vec::new(),
            nonce_keys: NonceKeySource::NotNeeded,
            streams: OpenStreams::default(),
        }
    }

    /// Decides a new request. One that lacks keys waits only when a fetch
    /// that could bring them is in flight or about to start, and only while
    /// the paused list has room; otherwise it is answered with the keys there are.
    pub fn decide(&mut self, context_id: u32, request: Request, now_ms: u64) -> Decided {
        let awaited = match self.engine.evaluate(&request, now_ms, true).settled() {
            Ok(decision) => return Decided::Now(request, decision),
            Err(awaited) => awaited,
        };
        match self.pause(context_id, request, awaited, now_ms) {
            Ok(()) => Decided::Paused,
            Err(Unpaused::NoFetchComing(request)) => {
                let decision = self.engine.decide_now(&request, now_ms);
                Decided::Now(request, decision)
            }
            Err(Unpaused::ListFull(request)) => {
                let decision = self
                    .engine
                    .decide_now_without_failing_open(&request, now_ms);
                Decided::Now(request, decision)
            }
        }
    }

    /// Pauses a request until its keys or revocation list may have come, or
    /// hands it back when no key fetch is coming or the paused list is full.
    /// A revocation list always comes (this VM's poll, or another worker's
    /// copy on a tick), or the wait ends.
    fn pause(
        &mut self,
        context_id: u32,
        request: Request,
        awaited: Awaited,
        now_ms: u64,
    ) -> Result<(), Unpaused> {
        let Some(runtime) = self.providers.get_mut(awaited.provider()) else {
            return Err(Unpaused::NoFetchComing(request));
        };
        if let Awaited::Keys { need, .. } = awaited {
            if runtime.key_wait(need, now_ms) == KeyWait::AnswerNow {
                return Err(Unpaused::NoFetchComing(request));
            }
        }
        let paused = PausedRequest {
            context_id,
            request,
            provider: awaited.provider(),
            generation: runtime.key_generation(),
            deadline_ms: now_ms.saturating_add(self.engine.config.key_wait_ms),
        };
        match self.paused.push(paused) {
            Ok(()) => {
                self.metrics.inc(match awaited {
                    Awaited::Keys { .. } => Metric::KeyWaits,
                    Awaited::RevocationList { .. } => Metric::RevocationWaits,
                });
                Ok(())
            }
            Err(overflow) => {
                self.metrics.inc(Metric::KeyWaitsOverflow);
                Err(Unpaused::ListFull(overflow.request))
            }
        }
    }

    /// Settles paused requests whose key fetch ended or whose wait ran out.
    pub fn settle_paused(&mut self, now_ms: u64) {
        if self.paused.is_empty() {
            return;
        }
        for p in self.paused.take_all() {
            let generation = self
                .providers
                .get(p.provider)
                .map_or(0, ProviderRuntime::key_generation);
            let decision = match self.engine.evaluate(&p.request, now_ms, true).settled() {
                Ok(decision) => decision,
                // The wait ran out, or the key fetch it waited for ended
                // without its key: decided with what there is. (Keys that came
                // first may leave it waiting for the revocation list.)
                Err(awaited) if p.final_round(&awaited, generation, now_ms) => {
                    // A wait that ran out while the fetch is still out (a slow
                    // but live auth system at start) is no auth system down:
                    // never failed open.
                    let coming = self
                        .providers
                        .get(p.provider)
                        .is_some_and(|r| r.keys_still_coming(now_ms));
                    if coming {
                        self.engine
                            .decide_now_without_failing_open(&p.request, now_ms)
                    } else {
                        self.engine.decide_now(&p.request, now_ms)
                    }
                }
                Err(_) => {
                    // Back where it was: the list only shrank since `take_all`.
                    let _ = self.paused.push(p);
                    continue;
                }
            };
            if host::act_on(p.context_id) {
                let carried = carry_out(self, &p.request, decision, true);
                self.watch(p.context_id, carried);
            }
        }
    }

    /// Watches a stream that went on with a token while it stays open.
    pub fn watch(&mut self, context_id: u32, carried: Carried) {
        if let Carried::GoesOn(Some(token)) = carried {
            self.streams.opened(context_id, token);
        }
    }

    /// Resets every open stream whose token was revoked, or expired, since it
    /// began: a WebSocket or an event stream must not outlive a logout or a
    /// ban (`authflow_filter_core::streams`).
    pub fn end_streams(&mut self, now_ms: u64) {
        for (context_id, reason) in self.streams.sweep(&self.engine, now_ms) {
            if host::act_on(context_id) {
                host::reset_request();
                self.metrics.inc(Metric::StreamsEnded);
                log::info!("authflow: an open stream was reset: {}", reason.label());
            }
        }
    }
}

/// Why a request that would wait for keys (or a list) is answered now.
enum Unpaused {
    /// No fetch that could bring them is in flight or about to start.
    NoFetchComing(Request),
    /// The paused list is full.
    ListFull(Request),
}

/// Signatures checked by Envoy's `verify_signature` (BoringSSL) where the host
/// proves able, by the filter's own verifiers elsewhere.
fn host_signatures() -> SignatureChecker {
    SignatureChecker::with_host(Box::new(|arguments: &[u8]| {
        host::call_foreign_function(signature::FOREIGN_FUNCTION, arguments)
    }))
}
