//! One provider's background side in one VM: the fetches of its key set and
//! revocation list, adopting what other VMs shared of them, and applying a
//! callout's answer. The decisions (when to fetch, whether a request waits,
//! what a refused dispatch means) are `authflow_filter_core::fetch`'s; this
//! carries them out against the host and reports what to do next.

use authflow_contract::KeySet;
use authflow_filter_core::config::{JwksSource, Provider};
use authflow_filter_core::fetch::{
    feed_answer, feed_path, jwks_answer, status_of, Answer, Document, DocumentFetch, FetchEnd,
    KeyNeed, KeyWait, ListBounds, Refusal, FEED_ACCEPT,
};
use authflow_filter_core::revocation_sync::FreshStamp;
use authflow_filter_core::{Engine, ProviderId};
use proxy_wasm::types::Status;

use crate::host;
use crate::metrics::{Metric, Metrics};
use crate::shared::SharedSlot;

/// A document's fetch state and where the worker VMs share it.
struct SharedFetch {
    fetch: DocumentFetch,
    slot: SharedSlot,
}

impl SharedFetch {
    fn new(
        document: Document,
        issuer: &str,
        upstream: authflow_filter_core::config::Upstream,
        bounds: ListBounds,
    ) -> Self {
        let fetch = DocumentFetch::new(document, issuer, upstream, bounds);
        let slot = SharedSlot::new(fetch.shared_key.clone());
        SharedFetch { fetch, slot }
    }
}

/// A callout to start now.
pub struct Callout {
    pub document: Document,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub if_none_match: Option<String>,
    pub accept: Option<&'static str>,
    pub timeout_ms: u64,
}

/// What the VM around a provider lends it for one step.
pub struct Env<'a> {
    pub engine: &'a mut Engine,
    pub metrics: &'a Metrics,
    /// Identifies this VM as a lease holder.
    pub vm_id: u64,
    pub now_ms: u64,
    /// In [0, 1): spreads retries of a fleet apart.
    pub jitter: f64,
}

pub struct ProviderRuntime {
    /// Names the provider in the configuration and the engine.
    id: ProviderId,
    name: String,
    jwks: Option<SharedFetch>,
    revocations: Option<SharedFetch>,
    /// Where the revocation list's overlay (what deltas added since its
    /// base) is shared; the base goes into `revocations`' own slot.
    revocation_overlay: Option<SharedSlot>,
}

impl ProviderRuntime {
    /// `bounds`: the configuration's `revocation` policy's (see `shared_key`).
    pub fn new(id: ProviderId, provider: &Provider, bounds: ListBounds) -> Self {
        let jwks = match &provider.jwks {
            JwksSource::Remote(u) => Some(SharedFetch::new(
                Document::Jwks,
                &provider.issuer,
                u.clone(),
                ListBounds::default(),
            )),
            JwksSource::Inline(_) => None,
        };
        let revocations = provider
            .revocations
            .clone()
            .map(|u| SharedFetch::new(Document::Revocations, &provider.issuer, u, bounds));
        let revocation_overlay = revocations
            .as_ref()
            .map(|s| SharedSlot::new(format!("{}:overlay", s.fetch.shared_key)));
        ProviderRuntime {
            id,
            name: provider.name.clone(),
            jwks,
            revocations,
            revocation_overlay,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves whenever a key fetch ends: requests paused for keys compare it.
    pub fn key_generation(&self) -> u64 {
        self.jwks.as_ref().map_or(0, |s| s.fetch.generation())
    }

    /// Whether a key fetch is out or about to be retried (the keys may still
    /// come): no reason to take the auth system for down.
    pub fn keys_still_coming(&self, now_ms: u64) -> bool {
        self.jwks
            .as_ref()
            .is_some_and(|s| s.fetch.still_coming(now_ms))
    }

    /// A request of this provider found no key: whether it should wait.
    pub fn key_wait(&mut self, need: KeyNeed, now_ms: u64) -> KeyWait {
        match self.jwks.as_mut() {
            Some(s) => s.fetch.key_wait(need, now_ms),
            // Inline keys never change: nothing to wait for.
            None => KeyWait::AnswerNow,
        }
    }

    /// Whether `token` is one of this provider's callouts, and for which document.
    pub fn callout_document(&self, token: u32) -> Option<Document> {
        [&self.jwks, &self.revocations]
            .into_iter()
            .flatten()
            .find(|s| s.fetch.is_call(token))
            .map(|s| s.fetch.document)
    }

    /// Takes over what another VM fetched and shared since the last look.
    /// This does not end anyone's wait for keys: that document may predate
    /// the key a paused request is waiting for.
    pub fn adopt_shared(&mut self, env: &mut Env) {
        if let Some(s) = self.jwks.as_mut() {
            if let Some(set) = s
                .slot
                .take_if_changed()
                .and_then(|bytes| s.fetch.adopt_shared_keys(&bytes))
            {
                install_keys(env, self.id, &self.name, set);
            }
        }
        self.adopt_shared_revocations(env);
    }

    /// The revocation part of [`adopt_shared`](Self::adopt_shared).
    fn adopt_shared_revocations(&mut self, env: &mut Env) {
        let (Some(s), Some(overlay)) =
            (self.revocations.as_mut(), self.revocation_overlay.as_mut())
        else {
            return;
        };
        let (engine, id) = (&mut *env.engine, self.id);
        // The base is searched where it lands: no parse into maps. The list
        // held is dropped only once the new copy has parsed.
        let mut base_changed = false;
        if let Some(bytes) = s.slot.take_if_changed() {
            base_changed = true;
            overlay.forget_seen();
            if !engine.adopt_revocation_base(id, bytes, env.now_ms) {
                // Kept, but stale from now on: the policy decides until a readable copy comes.
                log::warn!(
                    "authflow: provider {}: shared revocation list unreadable or over max_entries",
                    self.name
                );
            }
        }
        if let Some(bytes) = overlay.take_if_changed() {
            // An overlay of a base not adopted yet is taken after that base.
            if !engine.adopt_revocation_overlay(id, bytes, env.now_ms) {
                overlay.forget_seen();
            }
        }
        // The stamp first: when the list held forgot entries is its
        // builder's word, not the time this VM took it.
        if let Some(stamp) = s.slot.value("fresh").and_then(|v| FreshStamp::parse(&v)) {
            engine.revocations_current_at(id, &stamp, env.now_ms);
        }
        if engine.distrust_revocations_forgotten_ahead(id, env.now_ms) {
            log::warn!(
                "authflow: provider {}: clock stepped back; revocation list stale until a snapshot",
                self.name
            );
        }
        if base_changed {
            env.metrics.set(
                Metric::RevocationEntries,
                engine.revocation_entries(id) as u64,
            );
        }
    }

    /// The callouts to start now. Keys this VM does not hold yet it fetches
    /// for itself; periodic refreshes and revocation polls take the
    /// process-wide lease, so one VM per Envoy does them. Without `may_lease`
    /// (a VM being configured, which Envoy may discard before it ever ticks)
    /// no lease is taken: only keys this VM lacks are fetched.
    pub fn due_callouts(
        &mut self,
        engine: &mut Engine,
        vm_id: u64,
        now_ms: u64,
        may_lease: bool,
    ) -> Vec<Callout> {
        let mut due = Vec::new();
        if let Some(s) = self.jwks.as_mut() {
            let have_keys = engine.provider(self.id).is_some_and(|p| p.keys.is_some());
            let SharedFetch { fetch, slot } = s;
            let ttl = fetch.lease_ttl_ms();
            if fetch.should_start(now_ms, || {
                !have_keys || (may_lease && slot.acquire_lease(vm_id, now_ms, ttl))
            }) {
                let etag = fetch.if_none_match(have_keys);
                due.push(callout(fetch, fetch.upstream.path.clone(), etag));
            }
        }
        if let Some(s) = self.revocations.as_mut() {
            let SharedFetch { fetch, slot } = s;
            let ttl = fetch.lease_ttl_ms();
            if may_lease && fetch.renews_lease_while_waiting() {
                slot.acquire_lease(vm_id, now_ms, ttl);
            }
            if fetch.should_start(now_ms, || {
                may_lease && slot.acquire_lease(vm_id, now_ms, ttl)
            }) {
                // Remembered: the answer is judged against the list this poll is sent from.
                let cursor = engine.revocation_poll(self.id);
                let wait_ms = engine.revocation_wait_ms(
                    self.id,
                    now_ms,
                    fetch.upstream.wait_ms,
                    fetch.upstream.timeout_ms,
                );
                fetch.wait_sent_ms = wait_ms;
                let mut call = callout(
                    fetch,
                    feed_path(&fetch.upstream.path, cursor.as_deref(), wait_ms),
                    None,
                );
                // A service that holds it and never answers is given up on in time to try again.
                call.timeout_ms = fetch.upstream.timeout_ms.saturating_add(wait_ms);
                call.accept = Some(FEED_ACCEPT);
                due.push(call);
            }
        }
        due
    }

    /// What the host said to a callout of [`due_callouts`](Self::due_callouts).
    pub fn dispatched(&mut self, document: Document, result: Result<u32, Status>, env: &mut Env) {
        let name = &self.name;
        let shared = match document {
            Document::Jwks => self.jwks.as_mut(),
            Document::Revocations => self.revocations.as_mut(),
        };
        let Some(fetch) = shared.map(|s| &mut s.fetch) else {
            return;
        };
        match result {
            Ok(token) => fetch.started(token, env.now_ms),
            Err(status) => match fetch.refused(env.now_ms, env.jitter) {
                // Typically a STRICT_DNS cluster not resolved yet at startup.
                Refusal::Deferred => {
                    env.metrics.inc(pick(
                        document,
                        Metric::JwksDispatchDeferred,
                        Metric::RevocationDispatchDeferred,
                    ));
                    let cluster = &fetch.upstream.cluster;
                    log::debug!("authflow: provider {name}: cluster {cluster} not ready for {} ({status:?})", document.label());
                }
                Refusal::Failed => {
                    env.metrics.inc(pick(
                        document,
                        Metric::JwksFetchFailed,
                        Metric::RevocationFetchFailed,
                    ));
                    let cluster = &fetch.upstream.cluster;
                    log::warn!("authflow: provider {name}: cannot call cluster {cluster} for {}: {status:?}", document.label());
                }
            },
        }
    }

    /// Applies a callout's answer.
    pub fn on_answer(&mut self, document: Document, body_size: usize, env: &mut Env) {
        let headers = host::call_response_headers();
        let status = status_of(&headers);
        match document {
            Document::Jwks => self.on_jwks(
                status,
                headers.first("etag").map(str::to_owned),
                body_size,
                env,
            ),
            Document::Revocations => {
                self.on_feed(status, headers.first("content-type"), body_size, env)
            }
        }
    }

    fn on_jwks(&mut self, status: u32, etag: Option<String>, body_size: usize, env: &mut Env) {
        let Some(s) = self.jwks.as_mut() else { return };
        match jwks_answer(status, body_size, host::call_response_body) {
            Answer::NotModified => {
                // A 304 to a fetch that named no ETag confirms nothing: `finished` counts it failed.
                let confirmed = s.fetch.sent_etag();
                s.fetch
                    .finished(FetchEnd::NotModified, env.now_ms, env.jitter);
                if confirmed {
                    env.metrics.inc(Metric::JwksNotModified);
                } else {
                    env.metrics.inc(Metric::JwksRejected);
                    log::warn!(
                        "authflow: provider {}: key fetch failed: 304 without If-None-Match",
                        self.name
                    );
                }
            }
            Answer::Fresh(set, bytes) => {
                s.fetch
                    .finished(FetchEnd::Fresh { etag }, env.now_ms, env.jitter);
                s.slot.publish(&bytes, env.vm_id, env.now_ms);
                env.metrics.inc(Metric::JwksFetchOk);
                if set.keys.is_empty() {
                    // The issuer's word: every key it published before is withdrawn.
                    env.metrics.inc(Metric::JwksNoUsableKey);
                    log::warn!(
                        "authflow: provider {}: no usable key ({} skipped)",
                        self.name,
                        set.skipped
                    );
                }
                install_keys(env, self.id, &self.name, set);
            }
            Answer::Failed(why) => {
                s.fetch.finished(FetchEnd::Failed, env.now_ms, env.jitter);
                env.metrics.inc(if status == 200 {
                    Metric::JwksRejected
                } else {
                    Metric::JwksFetchFailed
                });
                log::warn!("authflow: provider {}: key fetch failed: {why}", self.name);
            }
        }
    }

    fn on_feed(
        &mut self,
        status: u32,
        content_type: Option<&str>,
        body_size: usize,
        env: &mut Env,
    ) {
        // What the other VMs shared first: a worker whose lease ran out while
        // its poll was out (a slow answer, a stalled thread) must not apply
        // that late answer over the newer list the next holder published
        // since, nor vouch for it. Taken in, that newer copy makes the
        // engine refuse the late answer (`Superseded`, `DeltaWithoutBase`)
        // and a late 304 leave the list's freshness alone.
        self.adopt_shared_revocations(env);
        let (Some(s), Some(overlay)) =
            (self.revocations.as_mut(), self.revocation_overlay.as_mut())
        else {
            return;
        };
        let now = env.now_ms;
        match feed_answer(status, content_type, body_size, host::call_response_body) {
            Answer::NotModified => {
                s.fetch.finished(FetchEnd::NotModified, now, env.jitter);
                // Only if the list is still the one the poll was sent from.
                if env.engine.revocations_unchanged(self.id, now) {
                    share_fresh_stamp(&s.slot, env.engine, self.id, now);
                }
                env.metrics.inc(Metric::RevocationNotModified);
            }
            Answer::Fresh(body, _) => match env.engine.apply_feed(self.id, body, now) {
                Ok(applied) => {
                    s.fetch.finished(applied.end, now, env.jitter);
                    let published =
                        env.engine
                            .revocation_blobs(self.id)
                            .is_some_and(|(base, delta)| {
                                if applied.base_changed {
                                    if !s.slot.publish(base, env.vm_id, now) {
                                        return false;
                                    }
                                    // The overlay of the base just published goes over any other.
                                    overlay.forget_seen();
                                }
                                overlay.publish(delta, env.vm_id, now)
                            });
                    // A worker superseded by a newer copy does not vouch for the shared list.
                    if published {
                        share_fresh_stamp(&s.slot, env.engine, self.id, now);
                    }
                    env.metrics.inc(Metric::RevocationFetchOk);
                    env.metrics.set(
                        Metric::RevocationEntries,
                        env.engine.revocation_entries(self.id) as u64,
                    );
                }
                Err(e) => {
                    s.fetch.finished(FetchEnd::Failed, now, env.jitter);
                    env.metrics.inc(Metric::RevocationRejected);
                    log::error!(
                        "authflow: provider {}: revocation feed refused: {e}",
                        self.name
                    );
                }
            },
            Answer::Failed(why) => {
                s.fetch.finished(FetchEnd::Failed, now, env.jitter);
                env.metrics.inc(Metric::RevocationFetchFailed);
                log::warn!(
                    "authflow: provider {}: revocation poll failed: {why}",
                    self.name
                );
            }
        }
    }
}

fn callout(fetch: &DocumentFetch, path: String, if_none_match: Option<String>) -> Callout {
    let u = &fetch.upstream;
    Callout {
        document: fetch.document,
        cluster: u.cluster.clone(),
        authority: u.authority.clone(),
        path,
        if_none_match,
        accept: None,
        timeout_ms: fetch.callout_timeout_ms(),
    }
}

/// Tells the other VMs that the list this VM polled from was current at `now_ms`.
fn share_fresh_stamp(slot: &SharedSlot, engine: &Engine, id: ProviderId, now_ms: u64) {
    if let Some(stamp) = engine.fresh_stamp(id, now_ms) {
        slot.set_value("fresh", &stamp.to_bytes());
    }
}

fn pick(document: Document, jwks: Metric, revocations: Metric) -> Metric {
    match document {
        Document::Jwks => jwks,
        Document::Revocations => revocations,
    }
}

fn install_keys(env: &mut Env, id: ProviderId, name: &str, set: KeySet) {
    if set.skipped > 0 {
        log::info!(
            "authflow: provider {name}: {} keys, {} skipped",
            set.keys.len(),
            set.skipped
        );
    }
    env.engine.set_keys(id, set);
    let total: usize = env
        .engine
        .providers()
        .filter_map(|p| p.keys.as_ref())
        .map(|k| k.keys.len())
        .sum();
    env.metrics.set(Metric::KeysLoaded, total as u64);
}
