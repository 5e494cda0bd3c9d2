//! Worker VMs sharing one revocation list, the way the glue (`src/provider.rs`)
//! drives the engine and the shared slots: a poll's answer is applied only
//! after the VM took in what the others published since (`on_feed` calls
//! the revocation part of `adopt_shared` first).
//!
//! The hazard: the worker holding the fetch lease stalls or gets a slow
//! answer, its lease runs out, the next holder applies and publishes a newer
//! list (a revocation `r2`); then the first worker's late answer arrives.
//! Applied as it came, that older list would replace the shared one in
//! every worker and be stamped fresh, and `r2` would pass everywhere until
//! the next poll round.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authflow_contract::revocation::{Probe, RevocationFeed, RevokedToken};
use authflow_filter_core::fetch::FeedBody;
use authflow_filter_core::shared_slot::SharedSlot;
use authflow_filter_core::{Engine, FilterConfig, ProviderId};
use support::Process;

const ISS: &str = "https://auth.test";
const NOW_MS: u64 = 1_900_000_000_000;
const KEY: &str = "authflow:revocations:p";
const ID: ProviderId = ProviderId::FIRST;

/// One worker VM: its engine and its view of the shared base and overlay.
struct Worker {
    engine: Engine,
    base: SharedSlot,
    overlay: SharedSlot,
    id: u64,
}

impl Worker {
    fn new(id: u64) -> Worker {
        let config = serde_json::json!({"providers": [{"name": "p", "issuer": ISS, "audiences": ["api"], "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations"}}]});
        let engine = Engine::new(
            FilterConfig::from_json(config.to_string().as_bytes()).unwrap(),
            NOW_MS,
        );
        Worker {
            engine,
            base: SharedSlot::new(KEY.into()),
            overlay: SharedSlot::new(format!("{KEY}:overlay")),
            id,
        }
    }

    /// What the glue does on each tick, and first thing on a poll's answer.
    fn adopt_shared(&mut self, p: &Process) {
        if let Some(base) = self.base.take_if_changed(p) {
            self.overlay.forget_seen();
            self.engine.adopt_revocation_base(ID, base, NOW_MS);
        }
        if let Some(overlay) = self.overlay.take_if_changed(p) {
            if !self.engine.adopt_revocation_overlay(ID, overlay, NOW_MS) {
                self.overlay.forget_seen();
            }
        }
    }

    /// The glue's `on_feed` for a `200`: take in what is shared, apply, publish.
    /// Whether the answer was applied and published.
    fn answer(&mut self, p: &Process, body: FeedBody, now: u64) -> bool {
        self.adopt_shared(p);
        let Ok(applied) = self.engine.apply_feed(ID, body, now) else {
            return false;
        };
        support::publish_list(
            &self.engine,
            ID,
            (&mut self.base, &mut self.overlay),
            p,
            applied.base_changed,
            (self.id, now),
        )
    }

    fn revokes(&self, jti: &str) -> bool {
        let probe = Probe {
            jti: Some(jti),
            ..Probe::default()
        };
        self.engine
            .provider(ID)
            .unwrap()
            .revocations
            .set()
            .check(&probe, 0, NOW_MS / 1000)
            .is_some()
    }
}

fn feed(cursor: &str, snapshot: bool, jtis: &[&str]) -> FeedBody {
    let revoked_tokens = jtis
        .iter()
        .map(|j| RevokedToken {
            jti: (*j).into(),
            expires_at: NOW_MS / 1000 + 900,
        })
        .collect();
    FeedBody::Json(RevocationFeed {
        issuer: ISS.into(),
        cursor: cursor.into(),
        snapshot,
        revoked_tokens,
        ..Default::default()
    })
}

/// The late answer is the first worker's first snapshot: it never saw a
/// shared list, so nothing of its own tells it that it is older.
#[test]
fn a_late_first_snapshot_does_not_roll_back_the_shared_list() {
    let p = Process::default();
    let (mut late, mut next, mut other) = (Worker::new(1), Worker::new(2), Worker::new(3));
    assert_eq!(
        late.engine.revocation_poll(ID),
        None,
        "asks for a snapshot; the answer is slow"
    );
    next.engine.revocation_poll(ID);
    assert!(next.answer(&p, feed("e.1", true, &["a"]), NOW_MS + 10));
    next.engine.revocation_poll(ID);
    assert!(next.answer(&p, feed("e.2", false, &["r2"]), NOW_MS + 20));
    other.adopt_shared(&p);
    assert!(other.revokes("r2"));

    assert!(
        !late.answer(&p, feed("e.1", true, &["a"]), NOW_MS + 30),
        "the late, older snapshot is refused"
    );
    assert!(late.revokes("r2"), "and the worker holds the newer list");
    other.adopt_shared(&p);
    assert!(other.revokes("r2"), "nothing older was published");
}

/// The late answer is a snapshot (a lost cursor, a new epoch) on a worker
/// whose base is still the shared one: only overlays moved since.
#[test]
fn a_late_snapshot_does_not_go_over_newer_overlays() {
    let p = Process::default();
    let (mut late, mut next, mut other) = (Worker::new(1), Worker::new(2), Worker::new(3));
    late.engine.revocation_poll(ID);
    assert!(late.answer(&p, feed("e.1", true, &["a"]), NOW_MS));
    next.adopt_shared(&p);
    other.adopt_shared(&p);
    assert_eq!(
        late.engine.revocation_poll(ID).as_deref(),
        Some("e.1"),
        "its answer will be late"
    );
    assert_eq!(next.engine.revocation_poll(ID).as_deref(), Some("e.1"));
    assert!(
        next.answer(&p, feed("e.2", false, &["r2"]), NOW_MS + 10),
        "an overlay only"
    );
    other.adopt_shared(&p);
    assert!(other.revokes("r2"));

    assert!(!late.answer(&p, feed("f.1", true, &["a"]), NOW_MS + 20));
    other.adopt_shared(&p);
    assert!(other.revokes("r2") && late.revokes("r2"));
    // A late delta from the old cursor is refused the same way.
    late.engine.revocation_poll(ID);
    next.engine.revocation_poll(ID);
    assert!(next.answer(&p, feed("e.3", false, &["r3"]), NOW_MS + 30));
    assert!(!late.answer(&p, feed("e.3", false, &[]), NOW_MS + 40));
    assert!(late.revokes("r3"));
}

/// Why the glue looks first: applied by a worker that has not looked, the
/// same late snapshot is taken (the engine knows only copies it adopted).
#[test]
fn without_looking_first_the_late_snapshot_would_be_taken() {
    let p = Process::default();
    let (mut late, mut next) = (Worker::new(1), Worker::new(2));
    late.engine.revocation_poll(ID);
    next.engine.revocation_poll(ID);
    assert!(next.answer(&p, feed("e.1", true, &["a", "r2"]), NOW_MS + 10));
    assert!(late
        .engine
        .apply_feed(ID, feed("e.0", true, &["a"]), NOW_MS + 20)
        .is_ok());
    assert!(!late.revokes("r2"));
}
