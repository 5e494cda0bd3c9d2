//! Failed-attempt throttling per account and per client address, with an
//! exponential lockout. Keys are the submitted email (whether or not such a
//! user exists, so a lockout reveals nothing) and the client address's
//! bucket ([`address_bucket`]: an IPv6 address by its prefix).
//!
//! A password attempt is counted *before* the password is compared
//! ([`Throttle::attempt`], one atomic statement): the attempt that reaches the
//! limit locks the key at once, so parallel guesses cannot all slip in before
//! a failure is counted; a right password takes its attempt back, and its
//! time: a key starts over once quiet (no failure) for a while, however many
//! right passwords came meanwhile (an office behind one address). While
//! locked, sign-in answers `429` with `Retry-After` before checking the
//! password. The counters live in the database (`Store::signin_attempt` and
//! friends), so every instance of the service counts the same failures and
//! honours the same locks, and a restart forgets nothing. This module is the
//! policy: how long a lock lasts, when a quiet period wipes the slate.
//! A database error refuses the request (fails closed), never skips the check.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use crate::store::{SigninAttempt, Store, StoreResult};

/// A password attempt counted against a key, to be taken back
/// ([`Throttle::undo`]) if it turns out to be no failure.
#[derive(Debug)]
pub struct Attempt {
    key: String,
    /// The lock this attempt wrote (it reached or passed the limit).
    lock: Option<i64>,
    /// Its number among the key's attempts (its time is undone only while it is the latest).
    seq: i64,
}

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

    /// A key whose last failure (an attempt not taken back) is older than this starts over.
    pub fn quiet_secs(&self) -> i64 {
        self.max_secs.saturating_mul(2)
    }

    /// The lock after the `failures`-th failure: from the `limit`-th on,
    /// base × 2^(failures − limit), capped at the maximum.
    pub fn lock_secs(&self, failures: u32, limit: u32) -> Option<i64> {
        let exponent = failures.checked_sub(limit)?.min(20);
        Some(
            self.base_secs
                .saturating_mul(1_i64 << exponent)
                .min(self.max_secs),
        )
    }

    /// Counts an attempt against `key` before anything is compared, locking
    /// the key when the count reaches `limit` (or passes it: the one attempt
    /// let through after a lock ran out); `Err(retry_after_secs)`, counting
    /// nothing, while the key is locked.
    pub async fn attempt(
        &self,
        store: &dyn Store,
        key: &str,
        limit: u32,
        now: i64,
    ) -> StoreResult<Result<Attempt, u64>> {
        Ok(
            match store
                .signin_attempt(
                    key,
                    now,
                    self.quiet_secs(),
                    limit,
                    self.base_secs,
                    self.max_secs,
                )
                .await?
            {
                SigninAttempt::Locked(until) => Err(u64::try_from(until - now).unwrap_or(1)),
                SigninAttempt::Counted {
                    failures,
                    locked_until,
                    seq,
                } => Ok(Attempt {
                    key: key.to_owned(),
                    lock: (failures >= limit).then_some(locked_until),
                    seq,
                }),
            },
        )
    }

    /// Takes back an attempt that was no failure, the lock it wrote, and its
    /// time (the quiet period runs from the last failure, not from it).
    pub async fn undo(&self, store: &dyn Store, attempt: &Attempt) -> StoreResult<()> {
        store
            .undo_signin_attempt(&attempt.key, attempt.lock, attempt.seq)
            .await
    }

    /// `Err(retry_after_secs)` when any key is locked at `now`.
    pub async fn check(
        &self,
        store: &dyn Store,
        keys: &[String],
        now: i64,
    ) -> StoreResult<Result<(), u64>> {
        let until = store.signin_locked_until(keys).await?;
        Ok(if until > now {
            Err(u64::try_from(until - now).unwrap_or(1))
        } else {
            Ok(())
        })
    }

    /// Counts a failure against `key` after the fact and locks it once past
    /// `limit` (for failures that are not password attempts: wrong
    /// second-factor codes against the client address).
    pub async fn failure(
        &self,
        store: &dyn Store,
        key: &str,
        limit: u32,
        now: i64,
    ) -> StoreResult<()> {
        let failures = store
            .count_signin_failure(key, now, self.quiet_secs())
            .await?;
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

/// The count of one account's sign-ins from a device it signed in on before
/// (`device_secret_hash`: its session's): apart from [`account_key`], so a
/// stranger's failures do not lock the owner out of its own device.
pub fn account_device_key(email: &str, device_secret_hash: &str) -> String {
    let short = device_secret_hash.get(..32).unwrap_or(device_secret_hash);
    format!("account:{email}:device:{short}")
}

/// The bucket of a client whose address is unknown (see [`address_bucket`]).
pub const UNKNOWN_CLIENT: &str = "unknown";

/// The bucket a client address counts in, for every per-address limit
/// (sign-in failures, sign-ups, client authentication, the mail budget): an
/// IPv4 address alone; an IPv6 address by its first `ipv6_prefix_len` bits
/// (`2001:db8:1:2::/64`), since one IPv6 client holds a whole /64 at least
/// and would otherwise get a fresh budget with every address in it; an
/// IPv4-mapped IPv6 address as its IPv4 address. An empty or unreadable
/// address (no peer, or the entry the trusted proxies append missing):
/// [`UNKNOWN_CLIENT`], one bucket for all such requests, never the proxy's.
pub fn address_bucket(address: &str, ipv6_prefix_len: u8) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let len = ipv6_prefix_len.min(128);
                let mask = u128::MAX.checked_shl(u32::from(128 - len)).unwrap_or(0);
                format!("{}/{len}", Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
        Err(_) => UNKNOWN_CLIENT.to_owned(),
    }
}

/// Sign-in failures (and other failed proofs) of a client address's bucket.
pub fn ip_key(bucket: &str) -> String {
    format!("ip:{bucket}")
}

/// Sign-ups from a client address's bucket: counted apart from its sign-in failures.
pub fn signup_key(bucket: &str) -> String {
    format!("signup:ip:{bucket}")
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

    #[test]
    fn address_buckets() {
        assert_eq!(address_bucket("203.0.113.5", 64), "203.0.113.5");
        assert_eq!(address_bucket("::ffff:203.0.113.5", 64), "203.0.113.5");
        assert_eq!(address_bucket("2001:db8:1:2::1", 64), "2001:db8:1:2::/64");
        assert_eq!(
            address_bucket("2001:db8:1:2:ffff:ffff:ffff:ffff", 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            address_bucket("2001:db8:1:2:3:4:5:6", 56),
            "2001:db8:1::/56"
        );
        assert_eq!(
            address_bucket("2001:db8:1:2:3:4:5:6", 128),
            "2001:db8:1:2:3:4:5:6/128"
        );
        assert_eq!(address_bucket("2001:db8::1", 0), "::/0");
        assert_eq!(address_bucket("", 64), UNKNOWN_CLIENT);
        assert_eq!(address_bucket("junk", 64), UNKNOWN_CLIENT);
    }
}
