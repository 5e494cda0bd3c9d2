//! What a worker VM's revocation list costs in memory, counted by the
//! allocator (bytes held, not time): 100k live entries in at most 3 MiB,
//! 1M in at most 30 MiB, and a delta of 10 entries on a 1M list allocating
//! next to nothing (it must not copy the list).
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use authflow_contract::revocation::{RevocationFeed, RevokedToken};
use authflow_filter_core::revocation::RevocationList;

/// Counts the bytes currently allocated and the most allocated since the last reset.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(live, Ordering::SeqCst);
        ALLOCATED.fetch_add(layout.size(), Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// One test at a time: the counters are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

const ISS: &str = "https://auth.example";
const NOW: u64 = 1_900_000_000;
const MIB: usize = 1024 * 1024;

fn feed(snapshot: bool, cursor: &str, range: std::ops::Range<usize>) -> RevocationFeed {
    RevocationFeed {
        issuer: ISS.into(),
        cursor: cursor.into(),
        snapshot,
        // A UUID-sized jti, as the auth service issues them.
        revoked_tokens: range
            .map(|i| RevokedToken {
                jti: format!("{i:08}-0000-4000-8000-000000000000"),
                expires_at: NOW + 900,
            })
            .collect(),
        ..Default::default()
    }
}

/// Bytes a list of `n` live entries holds once its feed is gone.
fn held_by(n: usize) -> (RevocationList, usize) {
    let before = LIVE.load(Ordering::SeqCst);
    let mut list = RevocationList::default();
    list.apply(feed(true, "1", 0..n), ISS, 2_000_000, 30, NOW)
        .unwrap();
    let held = LIVE.load(Ordering::SeqCst) - before;
    assert_eq!(list.len(), n);
    (list, held)
}

#[test]
fn a_hundred_thousand_entries_fit_in_3_mib() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_list, held) = held_by(100_000);
    println!("100k entries: {:.2} MiB held", held as f64 / MIB as f64);
    assert!(held <= 3 * MIB, "100k entries hold {held} bytes");
}

#[test]
fn a_million_entries_fit_in_30_mib_and_a_small_delta_does_not_copy_them() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut list, held) = held_by(1_000_000);
    println!("1M entries: {:.2} MiB held", held as f64 / MIB as f64);
    assert!(held <= 30 * MIB, "1M entries hold {held} bytes");

    let delta = feed(false, "2", 1_000_000..1_000_010);
    let (allocated, live) = (
        ALLOCATED.load(Ordering::SeqCst),
        LIVE.load(Ordering::SeqCst),
    );
    PEAK.store(live, Ordering::SeqCst);
    list.apply(delta, ISS, 2_000_000, 30, NOW).unwrap();
    let written = ALLOCATED.load(Ordering::SeqCst) - allocated;
    let peak = PEAK.load(Ordering::SeqCst) - live;
    println!("delta of 10 on 1M: {written} bytes allocated, peak +{peak} bytes");
    assert_eq!(list.len(), 1_000_010);
    assert!(
        written <= 256 * 1024,
        "a 10-entry delta allocated {written} bytes"
    );
}

/// Merging the overlay into a 1M-entry base (every `COMPACT_AT` revocations)
/// must not hold the old base and the new one at once: the VM's memory
/// would peak at twice the list and, in Wasm, never shrink back. A list that
/// came whole from a feed has no spare room, so its first compaction grows
/// the buffer, which may move it (counted so here: the default `realloc` is
/// a new block, a copy and a free); the room it then keeps lets the next
/// compactions merge in place.
#[test]
fn compacting_a_million_entries_stays_within_30_mib() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut list, held) = held_by(1_000_000);
    let n = authflow_contract::revocation::set::COMPACT_AT + 1;
    let mut next = 1_000_000;
    for round in 0..3 {
        let live = LIVE.load(Ordering::SeqCst);
        PEAK.store(live, Ordering::SeqCst);
        // One delta past the overlay's limit: the list compacts.
        list.apply(
            feed(false, &format!("c{round}"), next..next + n),
            ISS,
            2_000_000,
            30,
            NOW,
        )
        .unwrap();
        next += n;
        let peak = PEAK.load(Ordering::SeqCst) - live + held;
        println!(
            "compaction {round} of 1M entries: peak {:.2} MiB (list {:.2} MiB before the first)",
            peak as f64 / MIB as f64,
            held as f64 / MIB as f64
        );
        assert_eq!(list.len(), next);
        if round > 0 {
            assert!(
                peak <= 30 * MIB,
                "compaction {round} of 1M entries peaked at {peak} bytes"
            );
        }
    }
}

/// A snapshot read the way the filter reads a feed body (in chunks, into a
/// buffer with `spare_room`) compacts the first time in place too.
#[test]
fn a_snapshot_read_with_spare_room_compacts_in_place_the_first_time() {
    use authflow_contract::revocation::blob::spare_room;
    use authflow_contract::revocation::{set, Blob, SetKey};
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = LIVE.load(Ordering::SeqCst);
    let snapshot = feed(true, "1", 0..1_000_000);
    let wire = set::encode(&snapshot, SetKey::derive(ISS, "1"))
        .bytes()
        .to_vec();
    drop(snapshot);
    let mut body = Vec::with_capacity(wire.len() + spare_room(wire.len()));
    body.extend_from_slice(&wire);
    drop(wire);
    let mut list = RevocationList::default();
    list.apply_compact(Blob::parse(body).unwrap(), ISS, 2_000_000, 30, NOW)
        .unwrap();
    let live = LIVE.load(Ordering::SeqCst);
    PEAK.store(live, Ordering::SeqCst);
    let n = set::COMPACT_AT + 1;
    list.apply(
        feed(false, "2", 1_000_000..1_000_000 + n),
        ISS,
        2_000_000,
        30,
        NOW,
    )
    .unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    println!(
        "first compaction of a 1M snapshot read with room: peak {:.2} MiB (list and room held)",
        peak as f64 / MIB as f64
    );
    assert_eq!(list.len(), 1_000_000 + n);
    assert!(
        peak <= 30 * MIB,
        "the first compaction peaked at {peak} bytes"
    );
}
