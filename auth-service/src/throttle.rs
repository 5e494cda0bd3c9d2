//! Failed-attempt throttling per account and per client address, with an
//! exponential lockout. Keys are the submitted email (whether or not such a
//! user exists, so a lockout reveals nothing) and the client IP.
//!
//! While locked, sign-in answers `429` with `Retry-After` before checking the
//! password. State is in memory: a restart forgets lockouts, which only
//! helps an attacker once per restart; the audit log keeps every attempt.
//!
//! The map never holds more than its capacity: when full, expired entries go
//! first, then the entry whose lock ends soonest. A lock poisoned by a panic
//! elsewhere is recovered, never skipped (skipping would fail open).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Upper bound on tracked keys (see the module comment for what gives way).
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Copy, Default)]
struct Entry {
    failures: u32,
    locked_until: i64,
    last_failure: i64,
}

pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
    base_secs: i64,
    max_secs: i64,
    capacity: usize,
}

impl Throttle {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self::with_capacity(base, max, MAX_ENTRIES)
    }

    pub fn with_capacity(base: Duration, max: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            base_secs: i64::try_from(base.as_secs()).unwrap_or(30),
            max_secs: i64::try_from(max.as_secs()).unwrap_or(900),
            capacity: capacity.max(1),
        }
    }

    /// The map, even if a panicking thread poisoned the lock: its data is
    /// still a valid map (every update is a single insert or field write).
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tracked keys.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Err(retry_after_secs)` when any key is locked at `now`.
    pub fn check(&self, keys: &[&str], now: i64) -> Result<(), u64> {
        let entries = self.entries();
        let until = keys.iter().filter_map(|k| entries.get(*k)).map(|e| e.locked_until).max().unwrap_or(0);
        if until > now {
            Err(u64::try_from(until - now).unwrap_or(1))
        } else {
            Ok(())
        }
    }

    /// Counts a failure; from the `limit`-th on, locks for base × 2^(n - limit), capped.
    pub fn failure(&self, key: &str, limit: u32, now: i64) {
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            entries.retain(|_, e| e.locked_until > now);
            while entries.len() >= self.capacity {
                let soonest = entries.iter().min_by_key(|(_, e)| (e.locked_until, e.last_failure)).map(|(k, _)| k.clone());
                match soonest {
                    Some(k) => entries.remove(&k),
                    None => break,
                };
            }
        }
        let e = entries.entry(key.to_owned()).or_default();
        // A long quiet period wipes the slate.
        if now - e.last_failure > 2 * self.max_secs {
            *e = Entry::default();
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures >= limit {
            let exponent = (e.failures - limit).min(20);
            let lock = self.base_secs.saturating_mul(1_i64 << exponent).min(self.max_secs);
            e.locked_until = now + lock;
        }
    }

    pub fn success(&self, key: &str) {
        self.entries().remove(key);
    }
}

pub fn account_key(email: &str) -> String {
    format!("account:{email}")
}

pub fn ip_key(ip: &str) -> String {
    format!("ip:{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_with_backoff_and_resets_on_success() {
        let t = Throttle::new(Duration::from_secs(10), Duration::from_secs(100));
        for _ in 0..2 {
            t.failure("a", 3, 1000);
        }
        assert!(t.check(&["a"], 1000).is_ok());
        t.failure("a", 3, 1000);
        assert_eq!(t.check(&["a", "b"], 1000), Err(10));
        t.failure("a", 3, 1000);
        assert_eq!(t.check(&["a"], 1000), Err(20));
        for _ in 0..10 {
            t.failure("a", 3, 1000);
        }
        assert_eq!(t.check(&["a"], 1000), Err(100));
        assert!(t.check(&["a"], 1100).is_ok());
        t.success("a");
        t.failure("a", 3, 1200);
        assert!(t.check(&["a"], 1200).is_ok());
    }

    #[test]
    fn stays_bounded_when_every_entry_is_locked() {
        let t = Throttle::with_capacity(Duration::from_secs(10), Duration::from_secs(100), 10);
        for i in 0..50 {
            t.failure(&format!("k{i}"), 1, 1000);
        }
        assert!(t.len() <= 10, "{} entries", t.len());
        // The newest lock holds.
        assert!(t.check(&["k49"], 1000).is_err());
    }

    #[test]
    fn a_poisoned_lock_fails_closed() {
        let t = std::sync::Arc::new(Throttle::new(Duration::from_secs(10), Duration::from_secs(100)));
        t.failure("a", 1, 1000);
        let t2 = std::sync::Arc::clone(&t);
        let _ = std::thread::spawn(move || {
            let _guard = t2.entries.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(t.entries.is_poisoned());
        assert!(t.check(&["a"], 1000).is_err(), "a locked key stays locked");
        t.failure("b", 1, 1000);
        assert!(t.check(&["b"], 1000).is_err(), "failures still count");
    }
}
