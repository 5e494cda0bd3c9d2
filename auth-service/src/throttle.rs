//! Failed-attempt throttling per account and per client address, with an
//! exponential lockout. Keys are the submitted email (whether or not such a
//! user exists, so a lockout reveals nothing) and the client IP.
//!
//! While locked, sign-in answers `429` with `Retry-After` before checking the
//! password. The counters live in the database (`Store::count_signin_failure`
//! and friends), so every instance of the service counts the same failures
//! and honours the same locks, and a restart forgets nothing. This module is
//! the policy: how long a lock lasts, when a quiet period wipes the slate.
//! A database error refuses the request (fails closed), never skips the check.

use std::time::Duration;

use crate::store::{Store, StoreResult};

pub struct Throttle {
    base_secs: i64,
    max_secs: i64,
}

impl Throttle {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base_secs: i64::try_from(base.as_secs()).unwrap_or(30),
            max_secs: i64::try_from(max.as_secs()).unwrap_or(900),
        }
    }

    /// A key whose last failure is older than this starts over.
    pub fn quiet_secs(&self) -> i64 {
        self.max_secs.saturating_mul(2)
    }

    /// The lock after the `failures`-th failure: from the `limit`-th on,
    /// base × 2^(failures − limit), capped at the maximum.
    pub fn lock_secs(&self, failures: u32, limit: u32) -> Option<i64> {
        let exponent = failures.checked_sub(limit)?.min(20);
        Some(self.base_secs.saturating_mul(1_i64 << exponent).min(self.max_secs))
    }

    /// `Err(retry_after_secs)` when any key is locked at `now`.
    pub async fn check(&self, store: &dyn Store, keys: &[String], now: i64) -> StoreResult<Result<(), u64>> {
        let until = store.signin_locked_until(keys).await?;
        Ok(if until > now { Err(u64::try_from(until - now).unwrap_or(1)) } else { Ok(()) })
    }

    /// Counts a failure against `key` and locks it once past `limit`.
    pub async fn failure(&self, store: &dyn Store, key: &str, limit: u32, now: i64) -> StoreResult<()> {
        let failures = store.count_signin_failure(key, now, self.quiet_secs()).await?;
        if let Some(lock) = self.lock_secs(failures, limit) {
            store.lock_signin(key, now.saturating_add(lock)).await?;
        }
        Ok(())
    }

    pub async fn success(&self, store: &dyn Store, key: &str) -> StoreResult<()> {
        store.clear_signin_failures(key).await
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
    fn locks_from_the_limit_with_backoff_up_to_the_cap() {
        let t = Throttle::new(Duration::from_secs(10), Duration::from_secs(100));
        assert_eq!(t.lock_secs(2, 3), None);
        assert_eq!(t.lock_secs(3, 3), Some(10));
        assert_eq!(t.lock_secs(4, 3), Some(20));
        assert_eq!(t.lock_secs(13, 3), Some(100));
        assert_eq!(t.lock_secs(u32::MAX, 3), Some(100));
        assert_eq!(t.quiet_secs(), 200);
    }
}
