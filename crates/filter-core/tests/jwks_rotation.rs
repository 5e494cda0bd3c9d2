//! Worker VMs sharing one key set, the way the glue (`src/provider.rs`)
//! drives `DocumentFetch`, the shared slot and the engine: `adopt_shared` on
//! each tick, `due_callouts` (the `If-None-Match` a VM sends), `on_jwks`.
//!
//! What key rotation, conditional requests and clock steps must not break.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_filter_core::config::Upstream;
use authflow_filter_core::engine::{Engine, Outcome};
use authflow_filter_core::fetch::{
    jwks_answer, Answer, Document, DocumentFetch, FetchEnd, KeyNeed, KeyWait, ListBounds,
};
use authflow_filter_core::shared_slot::SharedSlot;
use authflow_filter_core::{FilterConfig, ProviderId};
use jwt_simple::prelude::*;
use support::{bearer, Process, ISS};

const NOW: u64 = 1_900_000_000;
const T0: u64 = NOW * 1000;
const ID: ProviderId = ProviderId::FIRST;
const INTERVAL_MS: u64 = 300_000;

/// The auth service: serves its current set with a content-derived `ETag`
/// (as a hash of the document is), answering `304` to a matching `If-None-Match`.
struct Issuer {
    body: String,
}

impl Issuer {
    fn etag(&self) -> String {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        self.body.hash(&mut h);
        format!("\"{:x}\"", h.finish())
    }
    /// `(status, etag, body)`
    fn serve(&self, if_none_match: Option<&str>) -> (u32, Option<String>, Vec<u8>) {
        let etag = self.etag();
        if if_none_match == Some(etag.as_str()) {
            return (304, Some(etag), Vec::new());
        }
        (200, Some(etag), self.body.clone().into_bytes())
    }
}

fn upstream() -> Upstream {
    Upstream {
        cluster: "auth".into(),
        authority: "auth".into(),
        path: "/jwks".into(),
        interval_ms: INTERVAL_MS,
        timeout_ms: 5_000,
        min_refetch_interval_ms: 5_000,
        wait_ms: 0,
    }
}

struct Worker {
    vm_id: u64,
    engine: Engine,
    fetch: DocumentFetch,
    slot: SharedSlot,
    /// What the last callout carried as `If-None-Match`.
    sent: Option<String>,
}

impl Worker {
    fn new(vm_id: u64) -> Worker {
        let config = serde_json::json!({"providers": [{"name": "p", "issuer": ISS, "audiences": ["api"],
            "algorithms": ["EdDSA"], "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}}}]});
        let engine = Engine::new(
            FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
            T0,
        );
        let fetch = DocumentFetch::new(Document::Jwks, ISS, upstream(), ListBounds::default());
        let slot = SharedSlot::new(fetch.shared_key.clone());
        Worker {
            vm_id,
            engine,
            fetch,
            slot,
            sent: None,
        }
    }

    fn have_keys(&self) -> bool {
        self.engine.provider(ID).is_some_and(|p| p.keys.is_some())
    }

    /// `ProviderRuntime::adopt_shared`, the key-set part.
    fn adopt_shared(&mut self, p: &Process) {
        if let Some(bytes) = self.slot.take_if_changed(p) {
            if let Some(set) = self.fetch.adopt_shared_keys(&bytes) {
                self.engine.set_keys(ID, set);
            }
        }
    }

    /// One tick: adopt, then `due_callouts` and the answer `on_jwks` applies.
    /// Whether a callout went out.
    fn tick(&mut self, p: &Process, issuer: &Issuer, now: u64) -> bool {
        self.adopt_shared(p);
        let have_keys = self.have_keys();
        let (vm_id, ttl) = (self.vm_id, self.fetch.lease_ttl_ms());
        let slot = &self.slot;
        if !self
            .fetch
            .should_start(now, || !have_keys || slot.acquire_lease(p, vm_id, now, ttl))
        {
            return false;
        }
        self.sent = self.fetch.if_none_match(have_keys);
        self.fetch.started(1, now);
        let (status, etag, body) = issuer.serve(self.sent.as_deref());
        self.on_jwks(p, status, etag, body, now + 20);
        true
    }

    /// `ProviderRuntime::on_jwks`.
    fn on_jwks(&mut self, p: &Process, status: u32, etag: Option<String>, body: Vec<u8>, now: u64) {
        match jwks_answer(status, body.len(), |_| Some(body.clone())) {
            Answer::NotModified => self.fetch.finished(FetchEnd::NotModified, now, 0.5),
            Answer::Fresh(set, bytes) => {
                self.fetch.finished(FetchEnd::Fresh { etag }, now, 0.5);
                let _ = self.slot.publish(p, &bytes, self.vm_id, now);
                self.engine.set_keys(ID, set);
            }
            Answer::Failed(_) => self.fetch.finished(FetchEnd::Failed, now, 0.5),
        }
    }

    fn accepts(&mut self, token: &str, now: u64) -> bool {
        matches!(
            self.engine.evaluate(&bearer(token), now, false),
            Outcome::Allow(_)
        )
    }
}

fn jwks(keys: &[&Ed25519KeyPair]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|k| k.public_key().to_jwk().to_string())
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

fn token(kp: &Ed25519KeyPair) -> String {
    support::user_token(kp, None, NOW - 10, NOW + 7_000)
}

/// Finding: a VM's `ETag` is that of the last set it fetched itself, not
/// of the set it holds (taken from another VM). A key published, picked up
/// by another worker's unknown-`kid` refetch, then withdrawn brings the
/// issuer's document (and its content-derived `ETag`) back to what the
/// lease holder last fetched: the holder's conditional refresh gets `304`
/// and every worker keeps the withdrawn key, round after round.
#[test]
fn a_key_withdrawn_after_another_worker_fetched_it_is_dropped_everywhere() {
    let k1 = Ed25519KeyPair::generate().with_key_id("k1");
    let k2 = Ed25519KeyPair::generate().with_key_id("k2");
    let p = Process::default();
    let mut issuer = Issuer { body: jwks(&[&k1]) };
    let (mut holder, mut other) = (Worker::new(1), Worker::new(2));

    // Start: the holder fetches for itself and shares; the other adopts.
    assert!(holder.tick(&p, &issuer, T0));
    assert!(
        !other.tick(&p, &issuer, T0 + 100),
        "keys adopted, none fetched"
    );
    // The lease exists from the next look on; the holder takes it.
    let _ = holder.tick(&p, &issuer, T0 + 200);
    assert!(other.have_keys());

    // The issuer adds k2 and signs with it: the first token lands on the other worker.
    issuer.body = jwks(&[&k1, &k2]);
    let t2 = token(&k2);
    assert!(!other.accepts(&t2, T0 + 1_000));
    assert_eq!(
        other.fetch.key_wait(KeyNeed::UnknownKid, T0 + 1_000),
        KeyWait::Pause
    );
    assert!(other.tick(&p, &issuer, T0 + 1_100), "early refetch");
    assert!(other.accepts(&t2, T0 + 1_200));
    let _ = holder.tick(&p, &issuer, T0 + 1_300);
    assert!(holder.accepts(&t2, T0 + 1_300), "holder adopted k2");

    // k2 is withdrawn: the document is what it was before.
    issuer.body = jwks(&[&k1]);
    // Several refresh rounds of the holder (the lease is renewed on each).
    let mut now = T0 + 1_300;
    for _ in 0..3 {
        now += INTERVAL_MS + 1_000;
        let _ = holder.tick(&p, &issuer, now);
        let _ = other.tick(&p, &issuer, now + 100);
    }
    assert!(
        !holder.accepts(&t2, now + 200),
        "the lease holder still accepts tokens of the withdrawn key (sent If-None-Match {:?})",
        holder.sent
    );
    assert!(
        !other.accepts(&t2, now + 200),
        "a worker still accepts tokens of the withdrawn key"
    );
    assert!(holder.accepts(&token(&k1), now + 200));
}

/// Finding: a `304` to a request that carried no `If-None-Match` (a VM
/// without keys sends none) is taken as "still current" and the VM, holding
/// nothing, waits a whole refresh interval before it asks again: every
/// request of that worker is refused (503) or fails open meanwhile.
#[test]
fn a_304_to_an_unconditional_request_is_not_a_success() {
    let p = Process::default();
    let mut w = Worker::new(1);
    assert!(w.fetch.should_start(T0, || true));
    w.sent = w.fetch.if_none_match(false);
    assert_eq!(w.sent, None);
    w.fetch.started(1, T0);
    // A broken upstream (or a cache in front of it) answers 304 all the same.
    w.on_jwks(&p, 304, None, Vec::new(), T0 + 20);
    assert!(!w.have_keys());
    assert_eq!(
        w.fetch.key_wait(KeyNeed::NotLoaded, T0 + 60_000),
        KeyWait::Pause,
        "a VM without keys retries on the failure backoff (≤ 60 s), not after the interval"
    );
    assert!(w.fetch.should_start(T0 + 60_000, || true));
}

/// Finding: the schedule is on the host's wall clock. When it steps back
/// (NTP correcting a clock that ran ahead, a VM restored from a snapshot)
/// by D, the next refresh is D + interval away and the unknown-`kid`
/// refetch is refused for D: a withdrawn key stays accepted all that time.
#[test]
fn a_clock_stepping_back_does_not_stop_the_refreshes() {
    let k1 = Ed25519KeyPair::generate().with_key_id("k1");
    let p = Process::default();
    let issuer = Issuer { body: jwks(&[&k1]) };
    let mut w = Worker::new(1);
    assert!(w.tick(&p, &issuer, T0));
    let _ = w.tick(&p, &issuer, T0 + 100);
    assert_eq!(
        w.fetch.key_wait(KeyNeed::UnknownKid, T0 + 10_000),
        KeyWait::Pause
    );
    assert!(w.tick(&p, &issuer, T0 + 10_000));
    // The clock steps back by a day.
    let back = T0 - 86_400_000;
    assert_eq!(
        w.fetch.key_wait(KeyNeed::UnknownKid, back + 10_000),
        KeyWait::Pause,
        "an unknown kid may still ask for a refetch"
    );
    let mut w = Worker::new(2);
    let p = Process::default();
    assert!(w.tick(&p, &issuer, T0));
    // A periodic refresh under the lease (its key is created on the first look).
    assert!(!w.tick(&p, &issuer, T0 + INTERVAL_MS + 100));
    assert!(
        w.tick(&p, &issuer, T0 + INTERVAL_MS + 200),
        "holds the lease"
    );
    assert!(
        w.tick(&p, &issuer, back + 1_000),
        "the periodic refresh comes at once after the step"
    );
}
