//! A document one worker VM fetched, shared with every other worker of the
//! Envoy process through proxy-wasm shared data (each worker runs its own
//! VM; a field of the root context is per worker):
//!
//! - **Lease**: the VM that wins a compare-and-swap on `…:lease` does the
//!   periodic fetch, so one Envoy process polls once per interval, not once
//!   per worker. A lease not renewed in time (its holder stalled) is taken
//!   over by the next VM that looks.
//! - **Publication**: the fetched document goes into `…:data`, then a small
//!   `…:version` key changes (compare-and-swap: two VMs publishing at once
//!   still leave every VM with one copy); other VMs read only the version
//!   on each tick and copy the (possibly large) data only when it moved.
//! - **No step back**: a VM publishes only over the version it last saw. A
//!   worker that stalled past its lease and then got its late answer would
//!   otherwise replace what the new lease holder published since with an
//!   older list, which every other worker would then take and keep until
//!   the next change.

use crate::lease;

/// The compare-and-swap token that creates a key only if it is absent. The
/// host numbers its writes from 1 across every key, so an existing key
/// holds this token only after some 4 billion writes in the process, at
/// that very moment: as close to "create if absent" as the ABI allows.
pub const CREATE_ONLY: u32 = u32::MAX;

/// Proxy-wasm shared data (the glue's host calls; a map with the host's
/// rules in tests).
pub trait SharedData {
    /// The value (`None`: no such key) and its compare-and-swap token;
    /// `None` when the host failed.
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, u32)>;
    /// Writes unless `cas` is non-zero and the key was written since; a
    /// key that does not exist is written whatever `cas` says.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> bool;
}

/// Why a document was not published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotPublished {
    /// Another VM published since this one last looked: its copy stands,
    /// and this VM takes it on its next look.
    Superseded,
    /// The host refused a read or a write.
    Host,
}

pub struct SharedSlot {
    prefix: String,
    /// The version this VM last published or took (`None`: none yet, or forgotten).
    seen_version: Option<Vec<u8>>,
    /// Publications by this VM: two in one millisecond still differ.
    published: u64,
}

impl SharedSlot {
    /// `prefix`: what the shared document is (`crate::fetch::shared_key`).
    pub fn new(prefix: String) -> Self {
        SharedSlot {
            prefix,
            seen_version: None,
            published: 0,
        }
    }

    /// Tries to hold the fetch lease until `now_ms + ttl_ms`. True: this VM fetches.
    pub fn acquire_lease(
        &self,
        store: &impl SharedData,
        vm_id: u64,
        now_ms: u64,
        ttl_ms: u64,
    ) -> bool {
        let key = format!("{}:lease", self.prefix);
        let Some((current, cas)) = store.get(&key) else {
            return false;
        };
        let Some(current) = current else {
            // The host writes a key that does not exist whatever the cas,
            // so two VMs could both take a lease never written: create it
            // free, and claim it on a later look with compare-and-swap.
            let _ = store.set(&key, &[], 0);
            return false;
        };
        let Some(value) = lease::claim(Some(&current), vm_id, now_ms, ttl_ms) else {
            return false;
        };
        store.set(&key, value.as_bytes(), cas)
    }

    /// Publishes `data` for the other VMs, unless another VM published since
    /// this one last looked ([`forget_seen`](Self::forget_seen) first: whatever was published).
    ///
    /// The data and its version are two keys, written one after the other:
    /// two VMs publishing at once could leave the data of one under the
    /// version of the other, and the VM whose version stood would keep its
    /// own copy while every other VM took the other one. So the version is
    /// written with compare-and-swap against the one read before the data
    /// went in. When that fails another VM published meanwhile, and which
    /// copy the data key holds is unknown: this VM announces a new version
    /// without condition (the last version written then always follows the
    /// last data written) and takes whatever stands on its next look, as
    /// every other VM does. The VMs end with one copy; if it is the older,
    /// the lease holder polls on from it.
    pub fn publish(
        &mut self,
        store: &impl SharedData,
        data: &[u8],
        vm_id: u64,
        now_ms: u64,
    ) -> Result<(), NotPublished> {
        let version_key = format!("{}:version", self.prefix);
        let (current, cas) = self.version_to_replace(store, &version_key)?;
        if !current.is_empty()
            && self
                .seen_version
                .as_ref()
                .is_some_and(|seen| *seen != current)
        {
            return Err(NotPublished::Superseded);
        }
        if !store.set(&format!("{}:data", self.prefix), data, 0) {
            return Err(NotPublished::Host);
        }
        self.published += 1;
        let version = format!("{vm_id}:{now_ms}:{}", self.published).into_bytes();
        if store.set(&version_key, &version, cas) {
            self.seen_version = Some(version);
            return Ok(());
        }
        let _ = store.set(&version_key, &version, 0);
        self.seen_version = None;
        Err(NotPublished::Superseded)
    }

    /// The published version (empty: none yet) and its compare-and-swap
    /// token. The host writes a key that does not exist whatever the token
    /// says, so a missing version key is first created empty (leaving one
    /// another VM created meanwhile as it is): only a key that exists can be
    /// compare-and-swapped.
    fn version_to_replace(
        &self,
        store: &impl SharedData,
        version_key: &str,
    ) -> Result<(Vec<u8>, u32), NotPublished> {
        match store.get(version_key).ok_or(NotPublished::Host)? {
            (Some(current), cas) => Ok((current, cas)),
            (None, _) => {
                let _ = store.set(version_key, &[], CREATE_ONLY);
                match store.get(version_key).ok_or(NotPublished::Host)? {
                    (Some(current), cas) => Ok((current, cas)),
                    (None, _) => Err(NotPublished::Host),
                }
            }
        }
    }

    /// The published data, if it changed since this VM last looked.
    pub fn take_if_changed(&mut self, store: &impl SharedData) -> Option<Vec<u8>> {
        let version = store
            .get(&format!("{}:version", self.prefix))?
            .0
            .filter(|v| !v.is_empty())?;
        if self.seen_version.as_ref() == Some(&version) {
            return None;
        }
        let (data, _) = store.get(&format!("{}:data", self.prefix))?;
        self.seen_version = Some(version);
        data
    }

    /// Takes the published data again on the next look, changed or not;
    /// the next publication goes over whatever is published.
    pub fn forget_seen(&mut self) {
        self.seen_version = None;
    }

    /// A small side value (e.g. a timestamp) under `…:<name>`.
    pub fn set_value(&self, store: &impl SharedData, name: &str, value: &[u8]) {
        let _ = store.set(&format!("{}:{name}", self.prefix), value, 0);
    }

    pub fn value(&self, store: &impl SharedData, name: &str) -> Option<Vec<u8>> {
        store.get(&format!("{}:{name}", self.prefix))?.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::{Condvar, Mutex};

    /// Shared data with the host's rules, for the workers of one process.
    #[derive(Default)]
    struct Process(RefCell<HashMap<String, (Vec<u8>, u32)>>);

    impl SharedData for Process {
        fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, u32)> {
            Some(
                self.0
                    .borrow()
                    .get(key)
                    .map_or((None, 0), |(v, cas)| (Some(v.clone()), *cas)),
            )
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
            let mut map = self.0.borrow_mut();
            let current = map.get(key).map(|(_, c)| *c);
            if current.is_some_and(|current| cas != 0 && cas != current) {
                return false;
            }
            map.insert(key.to_owned(), (value.to_vec(), current.unwrap_or(0) + 1));
            true
        }
    }

    fn worker() -> SharedSlot {
        SharedSlot::new("authflow.revocations.p".into())
    }

    /// Finding: a worker that stalled past its lease and then received its
    /// late answer published it over what the new lease holder had
    /// published since, and every other worker took the older list.
    #[test]
    fn a_worker_that_fell_behind_does_not_publish_over_a_newer_copy() {
        let process = Process::default();
        let (mut stalled, mut holder, mut reader) = (worker(), worker(), worker());
        stalled.publish(&process, b"list 1", 1, 1_000).unwrap();
        assert_eq!(
            holder.take_if_changed(&process).as_deref(),
            Some(&b"list 1"[..])
        );
        // The stalled worker's lease ran out; the next holder fetched and published.
        holder.publish(&process, b"list 2", 2, 5_000).unwrap();
        assert_eq!(
            stalled.publish(&process, b"list 1 and a late delta", 1, 6_000),
            Err(NotPublished::Superseded)
        );
        assert_eq!(
            reader.take_if_changed(&process).as_deref(),
            Some(&b"list 2"[..])
        );
        // The stalled worker takes the newer copy, and may publish after it.
        assert_eq!(
            stalled.take_if_changed(&process).as_deref(),
            Some(&b"list 2"[..])
        );
        stalled.publish(&process, b"list 3", 1, 7_000).unwrap();
        assert_eq!(
            reader.take_if_changed(&process).as_deref(),
            Some(&b"list 3"[..])
        );
        assert_eq!(
            holder.publish(&process, b"list 2 and more", 2, 7_500),
            Err(NotPublished::Superseded)
        );
    }

    #[test]
    fn a_worker_that_never_looked_or_forgot_publishes_over_anything() {
        let process = Process::default();
        let (mut first, mut second, mut reader) = (worker(), worker(), worker());
        first.publish(&process, b"keys", 1, 1_000).unwrap();
        second.publish(&process, b"keys again", 2, 1_000).unwrap();
        assert_eq!(
            reader.take_if_changed(&process).as_deref(),
            Some(&b"keys again"[..])
        );
        first.forget_seen();
        first.publish(&process, b"keys, forced", 1, 1_001).unwrap();
        assert_eq!(
            reader.take_if_changed(&process).as_deref(),
            Some(&b"keys, forced"[..])
        );
    }

    #[test]
    fn two_publications_in_one_millisecond_are_both_seen() {
        let process = Process::default();
        let (mut holder, mut reader) = (worker(), worker());
        holder.publish(&process, b"a", 1, 1_000).unwrap();
        assert_eq!(reader.take_if_changed(&process).as_deref(), Some(&b"a"[..]));
        holder.publish(&process, b"b", 1, 1_000).unwrap();
        assert_eq!(reader.take_if_changed(&process).as_deref(), Some(&b"b"[..]));
        assert_eq!(reader.take_if_changed(&process), None, "nothing new");
    }

    /// Shared data that two worker threads reach in a given order: each host
    /// call waits for its turn in `schedule` (the index of the worker whose
    /// call comes next). A worker that is done gives up its remaining turns.
    struct Interleaved {
        map: Mutex<HashMap<String, (Vec<u8>, u32)>>,
        turns: Mutex<(Vec<usize>, usize, [bool; 2])>,
        moved: Condvar,
    }

    impl Interleaved {
        fn new(map: HashMap<String, (Vec<u8>, u32)>, schedule: Vec<usize>) -> Self {
            Interleaved {
                map: Mutex::new(map),
                turns: Mutex::new((schedule, 0, [false; 2])),
                moved: Condvar::new(),
            }
        }

        fn in_turn<T>(
            &self,
            worker: usize,
            call: impl FnOnce(&mut HashMap<String, (Vec<u8>, u32)>) -> T,
        ) -> T {
            let mut turns = self.turns.lock().unwrap();
            loop {
                let (schedule, next, done) = &mut *turns;
                while *next < schedule.len() && done[schedule[*next]] {
                    *next += 1;
                }
                if *next >= schedule.len() || schedule[*next] == worker {
                    break;
                }
                turns = self.moved.wait(turns).unwrap();
            }
            let result = call(&mut self.map.lock().unwrap());
            turns.1 += 1;
            self.moved.notify_all();
            result
        }

        fn done(&self, worker: usize) {
            self.turns.lock().unwrap().2[worker] = true;
            self.moved.notify_all();
        }
    }

    /// One worker's view of [`Interleaved`].
    struct Turn<'a>(&'a Interleaved, usize);

    impl SharedData for Turn<'_> {
        fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, u32)> {
            self.0.in_turn(self.1, |map| {
                Some(
                    map.get(key)
                        .map_or((None, 0), |(v, cas)| (Some(v.clone()), *cas)),
                )
            })
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
            self.0.in_turn(self.1, |map| {
                let current = map.get(key).map(|(_, c)| *c);
                if current.is_some_and(|current| cas != 0 && cas != current) {
                    return false;
                }
                map.insert(key.to_owned(), (value.to_vec(), current.unwrap_or(0) + 1));
                true
            })
        }
    }

    /// Every order of `calls` host calls by each of two workers.
    fn schedules(calls: usize) -> Vec<Vec<usize>> {
        (0u32..1 << (2 * calls))
            .filter(|bits| bits.count_ones() as usize == calls)
            .map(|bits| (0..2 * calls).map(|i| (bits >> i) as usize & 1).collect())
            .collect()
    }

    /// Finding: two workers publishing at once (a lease holder and one whose
    /// lease ran out while its answer was in flight; two fresh workers each
    /// fetching keys) could leave the data of one under the version of the
    /// other. The one whose version stood then kept its own copy while every
    /// other worker took the other's, and nothing made them meet again. In
    /// every order of their host calls, the workers must end up holding
    /// one copy: whichever it is, the lease holder polls on from it.
    #[test]
    fn two_workers_publishing_at_once_leave_every_worker_with_one_copy() {
        for (first_saw, second_saw) in [(true, true), (false, false), (true, false)] {
            for schedule in schedules(6) {
                // Nothing published yet when neither saw a copy; a worker that
                // saw none (a new VM) and one that took list 0 otherwise.
                let setup = Process::default();
                let mut workers = [worker(), worker()];
                if first_saw {
                    worker().publish(&setup, b"list 0", 9, 500).unwrap();
                }
                for (w, saw) in workers.iter_mut().zip([first_saw, second_saw]) {
                    if saw {
                        w.take_if_changed(&setup).unwrap();
                    }
                }
                let process = Interleaved::new(setup.0.take(), schedule.clone());
                let lists: [&[u8]; 2] = [b"list 1", b"list 2"];
                std::thread::scope(|scope| {
                    for (i, w) in workers.iter_mut().enumerate() {
                        let process = &process;
                        scope.spawn(move || {
                            let _ = w.publish(&Turn(process, i), lists[i], i as u64, 1_000);
                            process.done(i);
                        });
                    }
                });
                let process = Process(RefCell::new(process.map.into_inner().unwrap()));
                let mut reader = worker();
                let shared = reader
                    .take_if_changed(&process)
                    .expect("something is published");
                for (i, w) in workers.iter_mut().enumerate() {
                    let held = w.take_if_changed(&process).unwrap_or(lists[i].to_vec());
                    assert_eq!(
                        String::from_utf8_lossy(&held),
                        String::from_utf8_lossy(&shared),
                        "worker {i} in order {schedule:?} (saw list 0: {first_saw}, {second_saw})"
                    );
                }
            }
        }
    }

    #[test]
    fn one_lease_holder_at_a_time() {
        let process = Process::default();
        let (a, b) = (worker(), worker());
        assert!(
            !a.acquire_lease(&process, 1, 1_000, 500),
            "the first look creates the lease free"
        );
        assert!(a.acquire_lease(&process, 1, 1_000, 500));
        assert!(!b.acquire_lease(&process, 2, 1_400, 500), "held");
        assert!(
            b.acquire_lease(&process, 2, 1_600, 500),
            "not renewed: taken over"
        );
        assert!(!a.acquire_lease(&process, 1, 1_700, 500));
    }
}
