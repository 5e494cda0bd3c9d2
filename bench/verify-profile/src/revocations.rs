//! What keeping a million-entry revocation list current costs each worker
//! VM (`--revocations`): the worker that fetched a delta reads and applies
//! it; every other worker copies in the overlay the first one shares. Once
//! per `COMPACT_AT` revocations the overlay is merged into the base, which
//! every other worker then copies in whole. The compact feed's bytes, as the
//! auth service sends them and as the filter's glue hands them over.

use std::hint::black_box;
use std::ops::Range;
use std::time::Instant;

use authflow_contract::revocation::{blob, set, Blob, Change, RevocationFeed, RevokedToken, SetKey};
use authflow_filter_core::revocation::RevocationList;

use crate::{row, ISS};

const ENTRIES: usize = 1_000_000;
const PER_DELTA: usize = 10;
const MAX_ENTRIES: usize = 2_000_000;
const SKEW_SECS: u64 = 30;

fn feed(snapshot: bool, cursor: String, range: Range<usize>, now: u64) -> RevocationFeed {
    RevocationFeed {
        issuer: ISS.into(),
        cursor,
        snapshot,
        // A UUID-sized jti, as the auth service issues them.
        revoked_tokens: range.map(|i| RevokedToken { jti: format!("{i:08}-0000-4000-8000-000000000000"), expires_at: now + 900 }).collect(),
        ..Default::default()
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

pub fn profile(batches: usize, scale: usize) {
    println!("target: {} (revocations)", std::env::consts::ARCH);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let key = SetKey::derive(ISS, "e1");
    let delta = |d: usize| {
        let first = ENTRIES + (d - 1) * PER_DELTA;
        set::encode(&feed(false, format!("e1.{d}"), first..first + PER_DELTA, now), key).bytes().to_vec()
    };

    let mut fetcher = RevocationList::default();
    // Read into a buffer with spare room, as the glue reads a feed's body: the merges grow into it.
    let wire = set::encode(&feed(true, "e1.0".into(), 0..ENTRIES, now), key);
    let mut snapshot = Vec::with_capacity(wire.bytes().len() + blob::spare_room(wire.bytes().len()));
    snapshot.extend_from_slice(wire.bytes());
    let started = Instant::now();
    fetcher.apply_compact(Blob::parse(snapshot).expect("snapshot"), ISS, MAX_ENTRIES, SKEW_SECS, now).expect("applied");
    row(&format!("1M revocations: a snapshot read and applied ({:.1} MiB)", fetcher.bytes_held() as f64 / 1048576.0), ms(started) * 1e3);
    let mut other = RevocationList::default();
    let started = Instant::now();
    other.adopt_base(Blob::parse(fetcher.set().base().bytes().to_vec()).expect("base"));
    row("1M revocations: the base copied in by another worker", ms(started) * 1e3);

    // Deltas of ten, each applied by the fetching worker and then adopted by
    // another, as the overlay grows (it holds up to `COMPACT_AT` entries).
    let per_batch = 10 * scale;
    let mut next = 1;
    let (mut applied, mut adopted): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for _ in 0..batches {
        let (mut apply_s, mut adopt_s) = (0.0, 0.0);
        for _ in 0..per_batch {
            let body = delta(next);
            next += 1;
            let t = Instant::now();
            let change = fetcher.apply_compact(Blob::parse(body).expect("delta"), ISS, MAX_ENTRIES, SKEW_SECS, now).expect("applied");
            apply_s += t.elapsed().as_secs_f64();
            assert_eq!(change, Change::Overlay, "no compaction within the timed deltas");
            let shared = fetcher.set().overlay().bytes().to_vec();
            let t = Instant::now();
            assert!(black_box(other.adopt_overlay(Blob::parse(shared).expect("overlay"))));
            adopt_s += t.elapsed().as_secs_f64();
        }
        applied.push(apply_s * 1e6 / per_batch as f64);
        adopted.push(adopt_s * 1e6 / per_batch as f64);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let overlay = fetcher.set().overlay().bytes().len();
    row("1M revocations: a 10-entry delta read and applied (fetcher)", median(applied));
    row(&format!("1M revocations: its overlay copied in by another worker (≤ {} KiB)", overlay.div_ceil(1024)), median(adopted));
    assert_eq!(fetcher.len(), other.len());

    // The delta that takes the overlay past `COMPACT_AT`: merged into the base.
    let merge = loop {
        let body = delta(next);
        next += 1;
        let t = Instant::now();
        let change = fetcher.apply_compact(Blob::parse(body).expect("delta"), ISS, MAX_ENTRIES, SKEW_SECS, now).expect("applied");
        if change == Change::Base {
            break ms(t);
        }
    };
    row(&format!("1M revocations: the delta that merges (every {} entries)", set::COMPACT_AT), merge * 1e3);
    let base = fetcher.set().base().bytes().to_vec();
    let t = Instant::now();
    other.adopt_base(Blob::parse(base).expect("base"));
    row("1M revocations: the merged base copied in by another worker", ms(t) * 1e3);
    assert_eq!(fetcher.len(), other.len());
}
