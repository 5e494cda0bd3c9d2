//! Several filter configurations in one Envoy process (two listeners, two
//! HTTP filter chains, several Istio WasmPlugins, an LDS update whose new VMs
//! start while the old ones drain). Everything the filter keeps in the
//! process's shared data is seen by every configuration: a document fetched
//! for one issuer through one source is shared by every configuration that
//! trusts that issuer through that source (`fetch::shared_key`), whatever
//! else the configurations say. Each worker here is driven the way the glue
//! (`src/provider.rs`) drives the engine and the shared slots.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_contract::revocation::{RevocationFeed, RevokedToken};
use authflow_contract::KeySet;
use authflow_filter_core::deny::DenyReason;
use authflow_filter_core::fetch::{Document, DocumentFetch, FeedBody, ListBounds};
use authflow_filter_core::revocation_sync::FreshStamp;
use authflow_filter_core::shared_slot::SharedSlot;
use authflow_filter_core::{Engine, FilterConfig, Outcome, ProviderId};
use jwt_simple::prelude::*;
use serde_json::json;
use support::{bearer, Process, ISS};

const NOW: u64 = 1_900_000_000;
const ID: ProviderId = ProviderId::FIRST;

fn config(extra: serde_json::Value) -> FilterConfig {
    let mut c = json!({
        "providers": [{
            "name": "main", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations"}
        }]
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    FilterConfig::from_json(c.to_string().as_bytes()).unwrap()
}

/// One worker VM of one configuration, with its view of the shared list.
struct Worker {
    engine: Engine,
    fetch: DocumentFetch,
    base: SharedSlot,
    overlay: SharedSlot,
    id: u64,
}

impl Worker {
    fn new(config: FilterConfig, keys: &KeySet, id: u64, now_ms: u64) -> Worker {
        let p = config.provider(ID).unwrap();
        let fetch = DocumentFetch::new(
            Document::Revocations,
            &p.issuer,
            p.revocations.clone().unwrap(),
            ListBounds::from(&config.revocation),
        );
        let mut engine = Engine::new(config, now_ms);
        engine.set_keys(ID, keys.clone());
        Worker {
            base: SharedSlot::new(fetch.shared_key.clone()),
            overlay: SharedSlot::new(format!("{}:overlay", fetch.shared_key)),
            fetch,
            engine,
            id,
        }
    }

    /// The glue's `adopt_shared_revocations`, on every tick.
    fn adopt_shared(&mut self, p: &Process, now_ms: u64) {
        if let Some(base) = self.base.take_if_changed(p) {
            self.overlay.forget_seen();
            self.engine.adopt_revocation_base(ID, base, now_ms);
        }
        if let Some(overlay) = self.overlay.take_if_changed(p) {
            if !self.engine.adopt_revocation_overlay(ID, overlay, now_ms) {
                self.overlay.forget_seen();
            }
        }
        if let Some(stamp) = self
            .base
            .value(p, "fresh")
            .and_then(|v| FreshStamp::parse(&v))
        {
            self.engine.revocations_current_at(ID, &stamp, now_ms);
        }
    }

    /// The glue's `on_feed` for a `200`: adopt, apply, publish, stamp.
    fn poll_answered(&mut self, p: &Process, body: FeedBody, now_ms: u64) -> bool {
        self.adopt_shared(p, now_ms);
        self.engine.revocation_poll(ID);
        let Ok(applied) = self.engine.apply_feed(ID, body, now_ms) else {
            return false;
        };
        let published = support::publish_list(
            &self.engine,
            ID,
            (&mut self.base, &mut self.overlay),
            p,
            applied.base_changed,
            (self.id, now_ms),
        );
        if published {
            let stamp = self.engine.fresh_stamp(ID, now_ms).unwrap();
            self.base.set_value(p, "fresh", &stamp.to_bytes());
        }
        published
    }
}

fn feed(cursor: &str, snapshot: bool, revoked: &[(&str, u64)]) -> FeedBody {
    FeedBody::Json(RevocationFeed {
        issuer: ISS.into(),
        cursor: cursor.into(),
        snapshot,
        revoked_tokens: revoked
            .iter()
            .map(|(jti, expires_at)| RevokedToken {
                jti: (*jti).into(),
                expires_at: *expires_at,
            })
            .collect(),
        ..Default::default()
    })
}

fn keys() -> (Ed25519KeyPair, KeySet) {
    let kp = Ed25519KeyPair::generate().with_key_id("k1");
    let jwks = format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk());
    let set = KeySet::parse(jwks.as_bytes()).unwrap();
    (kp, set)
}

fn token(kp: &Ed25519KeyPair, jti: &str, exp: u64) -> String {
    support::user_token(kp, Some(jti), exp - 900, exp)
}

/// Finding: a token passes a configuration until `exp` + its
/// `clock_skew_secs`, so its revocation must last that long in that
/// configuration's list. The list is pruned by whichever configuration's VM
/// holds the fetch lease, with *its* skew: a configuration with no skew
/// prunes the revocation at `exp`, and one that allows 300 s adopts the
/// pruned list and lets the revoked token through for 300 s.
#[test]
fn a_list_pruned_with_one_configurations_skew_keeps_anothers_revocations() {
    let process = Process::default();
    let (kp, keys) = keys();
    let exp = NOW + 100;
    let strict = config(json!({"clock_skew_secs": 0}));
    let lenient = config(json!({"clock_skew_secs": 300}));
    let mut fetcher = Worker::new(strict, &keys, 1, NOW * 1000);
    let mut other = Worker::new(lenient, &keys, 2, NOW * 1000);
    assert_eq!(
        fetcher.fetch.shared_key, other.fetch.shared_key,
        "one issuer through one source: the two configurations share the list"
    );

    assert!(fetcher.poll_answered(&process, feed("1", true, &[]), NOW * 1000));
    // The token is revoked (a delta: it lands in the overlay).
    assert!(fetcher.poll_answered(
        &process,
        feed("2", false, &[("stolen", exp)]),
        NOW * 1000 + 1_000
    ));
    other.adopt_shared(&process, NOW * 1000 + 1_000);
    let stolen = token(&kp, "stolen", exp);
    assert!(matches!(
        other.engine.evaluate(&bearer(&stolen), NOW * 1000 + 1_500, true),
        Outcome::Deny(ref d) if d.reason == DenyReason::TokenRevoked
    ));

    // Past `exp`: an unrelated revocation arrives, the fetcher's list forgets
    // "stolen" (its skew is 0) and shares that list.
    let later_ms = (exp + 10) * 1000;
    assert!(fetcher.poll_answered(
        &process,
        feed("3", false, &[("unrelated", exp + 900)]),
        later_ms
    ));
    other.adopt_shared(&process, later_ms);
    let o = other
        .engine
        .evaluate(&bearer(&stolen), later_ms + 500, true);
    assert!(
        matches!(o, Outcome::Deny(ref d) if d.reason == DenyReason::TokenRevoked),
        "the lenient configuration accepts the token until exp + 300 s: its revocation must hold as long, got {o:?}"
    );
}

impl Worker {
    /// The glue's `due_callouts` for the revocation feed, on one tick: whether
    /// this VM starts a poll now (it then holds the process-wide lease).
    fn tick_starts_poll(&mut self, p: &Process, now_ms: u64) -> bool {
        let ttl = self.fetch.lease_ttl_ms();
        let (fetch, base, id) = (&mut self.fetch, &self.base, self.id);
        if fetch.renews_lease_while_waiting() {
            base.acquire_lease(p, id, now_ms, ttl);
        }
        let start = fetch.should_start(now_ms, || base.acquire_lease(p, id, now_ms, ttl));
        if start {
            self.engine.revocation_poll(ID);
            fetch.started(id as u32, now_ms);
        }
        start
    }
}

/// Finding: the fetch lease is shared by every configuration that trusts
/// the issuer through the same source, whatever its polling. A configuration
/// that long-polls the feed (`wait_secs: 60`, with a staleness bound that
/// allows it) renews the lease on every tick while its poll is held, and its
/// list is only stamped current when the held poll ends. A configuration
/// with a tight bound (`max_staleness_secs: 10`, plain polling every second)
/// never gets the lease: its VMs never poll, its list is stale 50 s out of
/// every 60, and with `on_stale: deny` every token request is refused.
#[test]
fn a_long_polling_configuration_does_not_starve_a_tight_one() {
    let process = Process::default();
    let (kp, keys) = keys();
    let relaxed = config(json!({
        "providers": [{
            "name": "main", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations", "wait_secs": 60}
        }],
        "revocation": {"max_staleness_secs": 120}
    }));
    let tight = config(json!({
        "providers": [{
            "name": "main", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations", "wait_secs": 0}
        }],
        "revocation": {"max_staleness_secs": 10}
    }));
    let start_ms = NOW * 1000;
    let mut relaxed = Worker::new(relaxed, &keys, 1, start_ms);
    let mut tight = Worker::new(tight, &keys, 2, start_ms);

    // Both lists loaded from the relaxed configuration's first snapshot.
    assert!(relaxed.poll_answered(&process, feed("1", true, &[]), start_ms));
    tight.adopt_shared(&process, start_ms);

    // The relaxed configuration's VMs were there first (the tight one came
    // with a later listener, or a configuration update): its long poll is out.
    for step in 1..=5u64 {
        relaxed.tick_starts_poll(&process, start_ms + step * 20);
    }
    assert!(relaxed.fetch.in_flight().is_some());

    let t = token(&kp, "jti-1", NOW + 900);
    let mut tight_polls = 0;
    // 30 s of ticks (every 100 ms). The feed has no news: the relaxed
    // configuration's long poll is held for its 60 s; a plain poll is
    // answered `304` at once.
    for step in 1..=300u64 {
        let now_ms = start_ms + step * 100;
        relaxed.tick_starts_poll(&process, now_ms);
        tight.adopt_shared(&process, now_ms);
        if tight.tick_starts_poll(&process, now_ms) {
            tight_polls += 1;
            let has_list = tight.engine.revocation_entries(ID) > 0
                || tight
                    .engine
                    .provider(ID)
                    .is_some_and(|p| p.revocations.cursor().is_some());
            if !has_list {
                // (Only if this configuration shares no list with the other.)
                tight.fetch.finished(
                    authflow_filter_core::fetch::FetchEnd::Fresh { etag: None },
                    now_ms,
                    0.5,
                );
                assert!(tight.poll_answered(&process, feed("1", true, &[]), now_ms));
                continue;
            }
            tight.fetch.finished(
                authflow_filter_core::fetch::FetchEnd::NotModified,
                now_ms,
                0.5,
            );
            if tight.engine.revocations_unchanged(ID, now_ms) {
                let stamp = tight.engine.fresh_stamp(ID, now_ms).unwrap();
                tight.base.set_value(&process, "fresh", &stamp.to_bytes());
            }
        }
    }
    let o = tight.engine.evaluate(&bearer(&t), start_ms + 30_000, true);
    assert!(
        matches!(o, Outcome::Allow(_)),
        "the tight configuration polled {tight_polls} times in 30 s; a valid token got {o:?}"
    );
}

/// Finding: `revocation.max_entries` bounds what a configuration's VMs hold
/// ("a feed that would push the list past its bound is refused whole"), but
/// a base another configuration shared was taken whatever its size: one
/// configuration with a large bound publishes, and the VMs of one with a
/// small bound hold the whole list (on a configuration update as well: the
/// new, smaller bound is ignored for as long as the old VMs' list is shared).
#[test]
fn a_shared_list_over_a_configurations_bound_is_not_taken() {
    let process = Process::default();
    let (_, keys) = keys();
    let large = config(json!({"revocation": {"max_entries": 1000}}));
    let small = config(json!({"revocation": {"max_entries": 5}}));
    let mut fetcher = Worker::new(large, &keys, 1, NOW * 1000);
    let mut other = Worker::new(small, &keys, 2, NOW * 1000);
    let names: Vec<String> = (0..20).map(|i| format!("jti-{i}")).collect();
    let revoked: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), NOW + 900)).collect();
    assert!(fetcher.poll_answered(&process, feed("1", true, &revoked), NOW * 1000));

    // Its own poll refuses such a list.
    let mut alone = Worker::new(
        config(json!({"revocation": {"max_entries": 5}})),
        &keys,
        3,
        NOW * 1000,
    );
    alone.engine.revocation_poll(ID);
    assert!(alone
        .engine
        .apply_feed(ID, feed("1", true, &revoked), NOW * 1000)
        .is_err());

    other.adopt_shared(&process, NOW * 1000);
    assert!(
        other.engine.revocation_entries(ID) <= 5,
        "took {} entries with max_entries 5",
        other.engine.revocation_entries(ID)
    );

    // Nor through the overlay.
    let mut small_base = Worker::new(
        config(json!({"revocation": {"max_entries": 5}})),
        &keys,
        4,
        NOW * 1000,
    );
    let process2 = Process::default();
    let mut big = Worker::new(
        config(json!({"revocation": {"max_entries": 1000}})),
        &keys,
        5,
        NOW * 1000,
    );
    assert!(big.poll_answered(&process2, feed("1", true, &revoked[..2]), NOW * 1000));
    assert!(big.poll_answered(&process2, feed("2", false, &revoked[2..]), NOW * 1000 + 10));
    small_base.adopt_shared(&process2, NOW * 1000 + 10);
    assert!(
        small_base.engine.revocation_entries(ID) <= 5,
        "took {} entries with max_entries 5",
        small_base.engine.revocation_entries(ID)
    );
}

/// Finding: the fetch lease is shared by every configuration that trusts the
/// issuer through the same source, and a lease holder whose polls keep
/// failing renews it on every retry (its backoff is never longer than the
/// lease). A configuration whose own bound refuses the feed (`revocation.max_entries`
/// smaller than the list has grown to; likewise a `timeout_ms` the feed does
/// not answer within) so holds the lease for good: the other configuration's
/// VMs never poll, nothing new is shared, and its list goes stale — with
/// `on_stale: deny` every token request on its listener is refused (with
/// `allow`, revocations stop being applied there).
#[test]
fn a_configuration_whose_polls_fail_does_not_starve_another() {
    let process = Process::default();
    let (kp, keys) = keys();
    let small = config(json!({"revocation": {"max_entries": 5, "max_staleness_secs": 10}}));
    let large = config(json!({"revocation": {"max_entries": 1000, "max_staleness_secs": 10}}));
    let start_ms = NOW * 1000;
    let mut small = Worker::new(small, &keys, 1, start_ms);
    let mut large = Worker::new(large, &keys, 2, start_ms);

    // The small configuration's VMs came first and hold the lease; its
    // snapshot fits its bound, and the large configuration takes it.
    for step in 1..=2u64 {
        small.tick_starts_poll(&process, start_ms + step);
    }
    assert!(small.fetch.in_flight().is_some());
    assert!(small.poll_answered(&process, feed("1", true, &[("a", NOW + 900)]), start_ms + 2));
    small.fetch.finished(
        authflow_filter_core::fetch::FetchEnd::Fresh { etag: None },
        start_ms + 2,
        0.5,
    );
    large.adopt_shared(&process, start_ms + 2);

    // Ten revocations come: the list is over the small configuration's bound.
    let names: Vec<String> = (0..10).map(|i| format!("jti-{i}")).collect();
    let delta: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), NOW + 900)).collect();
    let answer = |w: &mut Worker, now_ms: u64| {
        let cursor = w
            .engine
            .provider(ID)
            .and_then(|p| p.revocations.cursor().map(str::to_owned));
        if cursor.as_deref() == Some("2") {
            w.fetch.finished(
                authflow_filter_core::fetch::FetchEnd::NotModified,
                now_ms,
                0.5,
            );
            w.engine.revocation_poll(ID);
            if w.engine.revocations_unchanged(ID, now_ms) {
                let stamp = w.engine.fresh_stamp(ID, now_ms).unwrap();
                w.base.set_value(&process, "fresh", &stamp.to_bytes());
            }
            return;
        }
        // A poll with no cursor is answered the whole list.
        let mut whole = delta.clone();
        whole.push(("a", NOW + 900));
        let body = match cursor {
            Some(_) => feed("2", false, &delta),
            None => feed("2", true, &whole),
        };
        let end = if w.poll_answered(&process, body, now_ms) {
            authflow_filter_core::fetch::FetchEnd::Fresh { etag: None }
        } else {
            authflow_filter_core::fetch::FetchEnd::Failed
        };
        w.fetch.finished(end, now_ms, 0.5);
    };
    for step in 1..=300u64 {
        let now_ms = start_ms + 1_000 + step * 100;
        for w in [&mut small, &mut large] {
            w.adopt_shared(&process, now_ms);
            if w.tick_starts_poll(&process, now_ms) {
                answer(w, now_ms);
            }
        }
    }
    let at = start_ms + 31_000;
    let valid = token(&kp, "jti-valid", NOW + 900);
    let o = large.engine.evaluate(&bearer(&valid), at, true);
    assert!(
        matches!(o, Outcome::Allow(_)),
        "the large configuration's list went stale behind the other's failing polls: {o:?}"
    );
    let revoked = token(&kp, "jti-3", NOW + 900);
    let o = large.engine.evaluate(&bearer(&revoked), at, true);
    assert!(
        matches!(o, Outcome::Deny(ref d) if d.reason == DenyReason::TokenRevoked),
        "{o:?}"
    );
}
