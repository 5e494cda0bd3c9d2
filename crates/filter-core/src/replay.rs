//! The DPoP replay store's layout in proxy-wasm shared data, so that a
//! proof's `jti` is accepted once across every worker VM of one Envoy
//! process. The glue reads a slot, asks [`record`] for its new value and
//! writes it back with the read's compare-and-swap token (retrying when
//! another worker wrote in between).
//!
//! A proof is filed under the time bucket of its `iat` (which its signature
//! fixes, so a replay lands in the same place) and a shard of its id. Slots
//! form a ring over buckets: a slot holding an older bucket is simply
//! overwritten, which evicts by age with no sweep. The ring spans more than
//! the longest acceptance window, so a bucket is only reused once no proof
//! filed in it could still be accepted. Each slot holds at most
//! [`ENTRIES_PER_SLOT`] ids; a full slot refuses (fail closed), counted as
//! `dpop_replay_store_full`, as does a slot whose every compare-and-swap is
//! lost to other workers' writes.
//!
//! Slot value: bucket number (u64 big-endian), then 8-byte proof ids.
//!
//! The host writes a key that does not exist yet whatever compare-and-swap
//! token comes with it, so two workers filing the first proof of an absent
//! slot could both succeed (the same proof accepted twice, or one's id lost).
//! Every slot is therefore created before any proof is filed
//! ([`create_slots`], when a VM is configured): from then on each write is a
//! compare-and-swap.

use authflow_contract::dpop::{DpopError, DEFAULT_FUTURE_SKEW_SECS};

use crate::config::MAX_DPOP_MAX_AGE_SECS;
use crate::dpop::ProofUse;
use crate::shared_slot::{SharedData, CREATE_ONLY};

/// Width of a time bucket.
pub const BUCKET_SECS: u64 = 5;
/// Shards per bucket (by the first byte of the proof id; a full one
/// overflows into the shard of its second byte).
pub const SHARDS: u64 = 64;
/// Proof ids one slot holds: 64 shards × 512 = 32768 proofs per 5 s bucket
/// (≈ 6500 new proofs a second per Envoy process), 4 KiB per slot.
pub const ENTRIES_PER_SLOT: usize = 512;
/// Buckets in the ring: the longest window (max age + future skew) and two spare.
pub const RING: u64 = (MAX_DPOP_MAX_AGE_SECS + DEFAULT_FUTURE_SKEW_SECS) / BUCKET_SECS + 2;

// A bucket is reused only once no proof filed in it can still be accepted.
const _: () =
    assert!(RING * BUCKET_SECS > MAX_DPOP_MAX_AGE_SECS + DEFAULT_FUTURE_SKEW_SECS + BUCKET_SECS);

const ID_LEN: usize = 8;
const HEADER_LEN: usize = 8;

/// Written once every slot exists: a VM configured later need not look at each.
pub const SLOTS_CREATED_KEY: &str = "authflow.dpop.replay.created";

/// The shared-data key of the slot a proof is filed in first, and its bucket.
pub fn slot_for(proof: &ProofUse) -> (String, u64) {
    let (keys, bucket) = slots_for(proof);
    let [first, _] = keys;
    (first, bucket)
}

/// The two slots a proof may be filed in (by the first and the second byte
/// of its id), and its bucket. The id is the client's to choose (its key and
/// `jti`), so a client can aim many proofs at one shard and fill it; with a
/// second choice, refusing another client's proofs means filling both of
/// its shards, and most of the store to refuse many.
pub fn slots_for(proof: &ProofUse) -> ([String; 2], u64) {
    let bucket = proof.iat / BUCKET_SECS;
    let shard = |byte: usize| u64::from(proof.id.get(byte).copied().unwrap_or(0)) % SHARDS;
    (
        [
            slot_key(bucket % RING, shard(0)),
            slot_key(bucket % RING, shard(1)),
        ],
        bucket,
    )
}

fn slot_key(ring_position: u64, shard: u64) -> String {
    format!("authflow.dpop.replay.{ring_position}.{shard}")
}

/// Creates, empty, every slot that does not exist yet. Two VMs doing this
/// at once write the same empty values. A slot another VM created (and
/// maybe filed a proof in) between this VM's read and its write is left
/// alone: the write carries [`CREATE_ONLY`] as its compare-and-swap token,
/// which the host ignores for a key that does not exist and refuses for
/// one that does (token 0 would overwrite it, and the proof with it). The mark names the layout
/// it was made for, so a module with another ring (shared data outlives a
/// module update) creates its missing slots; it is written only once every
/// slot was seen.
pub fn create_slots(store: &impl SharedData) {
    let layout = format!("{RING}x{SHARDS}");
    if matches!(store.get(SLOTS_CREATED_KEY), Some((Some(mark), _)) if mark == layout.as_bytes()) {
        return;
    }
    let mut every_slot_seen = true;
    for (position, shard) in (0..RING).flat_map(|p| (0..SHARDS).map(move |s| (p, s))) {
        let key = slot_key(position, shard);
        match store.get(&key) {
            Some((Some(_), _)) => {}
            Some((None, _)) => every_slot_seen &= store.set(&key, &[], CREATE_ONLY),
            None => every_slot_seen = false,
        }
    }
    if every_slot_seen {
        store.set(SLOTS_CREATED_KEY, layout.as_bytes(), 0);
    }
}

/// Files `proof` once across every worker: `Ok` the first time, the refusal
/// after. A write raced by another worker is retried on the new value; a
/// store that cannot be read or written, or a slot never created, refuses
/// (fail closed: such a write could not be compare-and-swapped).
///
/// A proof goes to its first slot while that has room, else to its second.
/// Within a bucket a slot only fills up, so every worker makes the same
/// choice: an id is in its first slot, or in its second with the first full,
/// and each write is still one compare-and-swap on one slot. Only a full
/// first slot sends a proof on: one that keeps losing its compare-and-swaps
/// there (other workers filing theirs) is refused, as a full store is. Filed
/// in its second slot while the first had room, the same proof would find
/// room in its first slot again, and be accepted twice.
pub fn record_once(store: &impl SharedData, proof: &ProofUse) -> Result<(), DpopError> {
    const ATTEMPTS: usize = 16;
    let (keys, bucket) = slots_for(proof);
    'slots: for key in &keys {
        for _ in 0..ATTEMPTS {
            let Some((Some(current), cas)) = store.get(key) else {
                return Err(DpopError::ReplayStoreFull);
            };
            let value = match record(Some(&current), bucket, proof) {
                Ok(value) => value,
                Err(DpopError::ReplayStoreFull) => continue 'slots,
                Err(refused) => return Err(refused),
            };
            if store.set(key, &value, cas) {
                return Ok(());
            }
        }
        // Every attempt lost to another worker's write: this slot has room.
        return Err(DpopError::ReplayStoreFull);
    }
    Err(DpopError::ReplayStoreFull)
}

/// The slot's new value with `proof` filed in it, or why it is refused:
/// [`DpopError::Replayed`] when its id is there already,
/// [`DpopError::ReplayStoreFull`] when the slot is full, and
/// [`DpopError::Stale`] when the slot already moved on to a later bucket.
pub fn record(current: Option<&[u8]>, bucket: u64, proof: &ProofUse) -> Result<Vec<u8>, DpopError> {
    let fresh = || {
        let mut value = bucket.to_be_bytes().to_vec();
        value.extend_from_slice(&proof.id);
        value
    };
    let Some(current) = current else {
        return Ok(fresh());
    };
    let Some((header, ids)) = current.split_first_chunk::<HEADER_LEN>() else {
        return Ok(fresh());
    };
    let held = u64::from_be_bytes(*header);
    if held < bucket {
        return Ok(fresh());
    }
    if held > bucket {
        return Err(DpopError::Stale);
    }
    // Ids end on an id boundary. A ragged tail (a slot another build or a
    // torn write left) is dropped: an id appended after it would sit off the
    // boundary, and the same proof would not be found when it came again.
    let ids = ids
        .get(..ids.len() - ids.len() % ID_LEN)
        .unwrap_or_default();
    if ids.chunks_exact(ID_LEN).any(|id| id == proof.id) {
        return Err(DpopError::Replayed);
    }
    if ids.len() / ID_LEN >= ENTRIES_PER_SLOT {
        return Err(DpopError::ReplayStoreFull);
    }
    let mut value = Vec::with_capacity(HEADER_LEN + ids.len() + ID_LEN);
    value.extend_from_slice(header);
    value.extend_from_slice(ids);
    value.extend_from_slice(&proof.id);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use super::*;
    use crate::provider_id::ProviderId;

    fn proof(id: u64, iat: u64) -> ProofUse {
        ProofUse {
            id: id.to_be_bytes(),
            iat,
            provider: ProviderId::FIRST,
            renew_nonce: false,
            public_route: false,
        }
    }

    /// A slot whose ids do not end on an id boundary (shared data outlives a
    /// module reload: another build, or a torn write, may have left it so):
    /// a proof filed in it must still be found when it comes again.
    #[test]
    fn a_proof_filed_in_a_ragged_slot_is_refused_the_second_time() {
        let p = proof(1, 1000);
        let (_, bucket) = slot_for(&p);
        let mut ragged = bucket.to_be_bytes().to_vec();
        ragged.extend_from_slice(&[0xaa; 11]);
        let filed = record(Some(&ragged), bucket, &p).unwrap();
        assert_eq!(record(Some(&filed), bucket, &p), Err(DpopError::Replayed));
    }

    #[test]
    fn a_proof_is_accepted_once() {
        let p = proof(1, 1000);
        let (_, bucket) = slot_for(&p);
        let v = record(None, bucket, &p).unwrap();
        assert_eq!(record(Some(&v), bucket, &p), Err(DpopError::Replayed));
        let v2 = record(Some(&v), bucket, &proof(2, 1000)).unwrap();
        assert_eq!(record(Some(&v2), bucket, &p), Err(DpopError::Replayed));
        assert_eq!(
            record(Some(&v2), bucket, &proof(2, 1000)),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn old_buckets_are_evicted_and_newer_ones_refuse_older_proofs() {
        let old = proof(1, 1000);
        let (key_old, b_old) = slot_for(&old);
        let v = record(None, b_old, &old).unwrap();
        // The same slot a ring later: the old bucket's ids are gone.
        let later = proof(1, 1000 + RING * BUCKET_SECS);
        let (key_later, b_later) = slot_for(&later);
        assert_eq!(key_old, key_later);
        let v = record(Some(&v), b_later, &later).unwrap();
        assert_eq!(v.len(), HEADER_LEN + ID_LEN);
        assert_eq!(record(Some(&v), b_old, &old), Err(DpopError::Stale));
    }

    #[test]
    fn a_full_slot_fails_closed() {
        let first = proof(0, 1000);
        let (_, bucket) = slot_for(&first);
        let mut v = record(None, bucket, &first).unwrap();
        for i in 1..ENTRIES_PER_SLOT as u64 {
            v = record(Some(&v), bucket, &proof(i, 1000)).unwrap();
        }
        assert_eq!(
            record(Some(&v), bucket, &proof(u64::MAX, 1000)),
            Err(DpopError::ReplayStoreFull)
        );
    }

    /// Shared data with the host's rules (proxy-wasm-cpp-host
    /// `SharedData::set`): a key that exists is written only with its
    /// current token or 0; a new key whatever the token. `on_get` runs
    /// inside every read (of the key read) until it is cleared: other
    /// workers acting between a read and its write.
    struct Host {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: Cell<u32>,
        on_get: RefCell<Option<OtherWorkers>>,
    }

    type OtherWorkers = Box<dyn FnMut(&Host, &str)>;

    impl Host {
        fn new() -> Self {
            Host {
                map: RefCell::default(),
                next_cas: Cell::new(1),
                on_get: RefCell::default(),
            }
        }
    }

    impl SharedData for Host {
        fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, u32)> {
            let found = self.map.borrow().get(key).cloned();
            let meanwhile = self.on_get.borrow_mut().take();
            if let Some(mut other_workers) = meanwhile {
                other_workers(self, key);
                // Unless they cleared it (or set another) meanwhile.
                self.on_get.borrow_mut().get_or_insert(other_workers);
            }
            Some(found.map_or((None, 0), |(v, cas)| (Some(v), cas)))
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
            let mut map = self.map.borrow_mut();
            if map
                .get(key)
                .is_some_and(|(_, current)| cas != 0 && cas != *current)
            {
                return false;
            }
            self.next_cas.set(self.next_cas.get() + 1);
            map.insert(key.to_owned(), (value.to_vec(), self.next_cas.get()));
            true
        }
    }

    #[test]
    fn two_workers_racing_on_one_proof_accept_it_once() {
        let p = proof(7, 1000);
        let host = Host::new();
        create_slots(&host);
        // Worker A reads the slot; worker B files the same proof before A writes.
        let other = p;
        let once = Cell::new(true);
        *host.on_get.borrow_mut() = Some(Box::new(move |h: &Host, _: &str| {
            if once.replace(false) {
                assert_eq!(record_once(h, &other), Ok(()));
            }
        }));
        assert_eq!(record_once(&host, &p), Err(DpopError::Replayed));
        assert_eq!(
            record_once(&host, &proof(8, 1000)),
            Ok(()),
            "another proof still goes in"
        );
    }

    #[test]
    fn a_slot_never_created_refuses_rather_than_write_blind() {
        // Without its slot, A's write and B's could both succeed.
        let host = Host::new();
        assert_eq!(
            record_once(&host, &proof(7, 1000)),
            Err(DpopError::ReplayStoreFull)
        );
        create_slots(&host);
        assert_eq!(record_once(&host, &proof(7, 1000)), Ok(()));
        assert_eq!(
            host.map.borrow().len() as u64,
            RING * SHARDS + 1,
            "every slot, and the mark"
        );
        // A VM configured later leaves the slots (and the proofs in them) alone.
        create_slots(&host);
        assert_eq!(
            record_once(&host, &proof(7, 1000)),
            Err(DpopError::Replayed)
        );
        // A mark of another layout (a module with another ring, before an
        // update): the missing slots are created, the existing ones kept.
        let elsewhere = proof(5 << 56, 1000);
        let (key, _) = slot_for(&elsewhere);
        assert_ne!(key, slot_for(&proof(7, 1000)).0);
        host.map.borrow_mut().remove(&key);
        host.set(SLOTS_CREATED_KEY, b"9x9", 0);
        create_slots(&host);
        assert_eq!(record_once(&host, &elsewhere), Ok(()));
        assert_eq!(
            record_once(&host, &proof(7, 1000)),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn a_client_filling_one_shard_refuses_no_one_else() {
        let host = Host::new();
        create_slots(&host);
        // Proofs aimed at one shard (ids the client chose, all with first byte 9).
        let aimed = |i: u64| proof((9 << 56) | i, 1000);
        for i in 0..ENTRIES_PER_SLOT as u64 {
            assert_eq!(record_once(&host, &aimed(i)), Ok(()));
        }
        // Another client's proof of that shard overflows into its second one,
        // and is still accepted once only.
        let victim = proof((9 << 56) | (20 << 48) | 7, 1000);
        assert_eq!(record_once(&host, &victim), Ok(()));
        assert_eq!(record_once(&host, &victim), Err(DpopError::Replayed));
        // A proof filed in its first slot before it filled is still found there.
        assert_eq!(record_once(&host, &aimed(3)), Err(DpopError::Replayed));
        // Both of its shards full: refused (fail closed).
        let second_full = |i: u64| proof((9 << 56) | (20 << 48) | (1 << 40) | i, 1000);
        for i in 1..ENTRIES_PER_SLOT as u64 {
            assert_eq!(record_once(&host, &second_full(i)), Ok(()));
        }
        assert_eq!(
            record_once(&host, &proof((9 << 56) | (20 << 48) | (2 << 40), 1000)),
            Err(DpopError::ReplayStoreFull)
        );
    }

    /// Another worker files its own proof in `key` (the slot's token moves on).
    fn file_another(h: &Host, key: &str, id: u64) {
        let Some((Some(current), cas)) = h.get(key) else {
            panic!("{key} exists")
        };
        let (_, bucket) = slot_for(&proof(id, 1000));
        let value = record(Some(&current), bucket, &proof(id, 1000)).unwrap();
        assert!(h.set(key, &value, cas));
    }

    #[test]
    fn a_proof_that_loses_every_write_to_its_first_slot_is_refused_not_moved() {
        let host = Host::new();
        create_slots(&host);
        let p = proof((1 << 56) | (2 << 48) | 42, 1000);
        let ([first, second], _) = slots_for(&p);
        // Other workers keep filing their own proofs in the first slot between
        // each of this worker's reads and writes: the slot is far from full.
        let busy = first.clone();
        let n = Cell::new(0u64);
        *host.on_get.borrow_mut() = Some(Box::new(move |h: &Host, key: &str| {
            if key == busy {
                n.set(n.get() + 1);
                let meanwhile = h.on_get.borrow_mut().take();
                file_another(h, key, (0xAA << 56) | n.get());
                *h.on_get.borrow_mut() = meanwhile;
            }
        }));
        assert_eq!(
            record_once(&host, &p),
            Err(DpopError::ReplayStoreFull),
            "refused (fail closed), not filed in its second slot"
        );
        assert!(
            host.map.borrow()[&second].0.is_empty(),
            "the second slot is untouched"
        );
        *host.on_get.borrow_mut() = None;
        // Once the contention is over: accepted once.
        assert_eq!(record_once(&host, &p), Ok(()));
        assert_eq!(record_once(&host, &p), Err(DpopError::Replayed));
    }

    #[test]
    fn a_vm_creating_the_slots_late_keeps_a_proof_another_vm_filed() {
        let host = Host::new();
        let p = proof(7, 1000);
        let (key, _) = slot_for(&p);
        // This VM reads the proof's slot (absent); meanwhile another VM, whose
        // own `create_slots` ran, creates it and accepts `p`.
        let target = key.clone();
        *host.on_get.borrow_mut() = Some(Box::new(move |h: &Host, k: &str| {
            if k == target && !h.map.borrow().contains_key(k) {
                assert!(h.set(k, &[], 0));
                let meanwhile = h.on_get.borrow_mut().take();
                assert_eq!(record_once(h, &p), Ok(()));
                *h.on_get.borrow_mut() = meanwhile;
            }
        }));
        create_slots(&host);
        *host.on_get.borrow_mut() = None;
        assert_eq!(
            record_once(&host, &p),
            Err(DpopError::Replayed),
            "the proof the other VM accepted stays filed"
        );
        // The mark waits for a run that saw every slot; the next one writes it.
        assert!(!host.map.borrow().contains_key(SLOTS_CREATED_KEY));
        create_slots(&host);
        assert!(host.map.borrow().contains_key(SLOTS_CREATED_KEY));
        assert_eq!(record_once(&host, &p), Err(DpopError::Replayed));
    }

    #[test]
    fn garbage_in_a_slot_is_replaced() {
        let p = proof(1, 1000);
        let (_, bucket) = slot_for(&p);
        assert_eq!(
            record(Some(&[1, 2, 3]), bucket, &p).unwrap().len(),
            HEADER_LEN + ID_LEN
        );
    }
}
