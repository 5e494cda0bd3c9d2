//! Every argon2id hash and verification the service runs, behind one limit.
//!
//! Each one holds `passwords.hash_memory_kib` of memory (19 MiB by default)
//! and a core while it runs, on tokio's blocking pool, which would grow to
//! hundreds of threads. So at most `limits.password_hash_concurrency` run at
//! once (a semaphore shared by every route), and a request that finds no free
//! slot within `limits.password_hash_wait_ms` is answered 503
//! `temporarily_unavailable` with `Retry-After` rather than queued: a flood of
//! sign-ins, sign-ups or client authentications costs a bounded amount of
//! memory and leaves the other endpoints their share of the machine.
//!
//! A slot is held by the blocking task itself, so a request whose client
//! went away still counts until its hash is done.
//!
//! A request that counts an attempt before its password is compared (sign-in,
//! sign-up, a legacy client secret) takes its slot first ([`PasswordWork::reserve`])
//! and counts only then: a 503 for want of a slot leaves no trace, so a flood
//! that keeps the slots busy cannot lock anyone out by making their
//! attempts fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::password::Hasher;
use crate::error::{ApiError, ApiResult};

/// `Retry-After` of a request refused for want of a slot: the queue is
/// usually gone within a few hashes.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// A hashing slot taken ahead of the work ([`PasswordWork::reserve`]);
/// given back when the hash or verification it is spent on ends, or when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

pub struct PasswordWork {
    hasher: Hasher,
    slots: Arc<Semaphore>,
    size: usize,
    wait: Duration,
    /// Requests refused for want of a slot.
    refused: AtomicU64,
}

impl PasswordWork {
    /// `concurrency` hashes at once (at least one); a request waits at most `wait` for one.
    pub fn new(hasher: Hasher, concurrency: usize, wait: Duration) -> Self {
        let permits = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            hasher,
            slots: Arc::new(Semaphore::new(permits)),
            size: permits,
            wait,
            refused: AtomicU64::new(0),
        }
    }

    /// The argon2id hash (PHC string) of a new password.
    pub async fn hash(&self, password: String) -> ApiResult<String> {
        let slot = self.reserve().await?;
        self.hash_in(slot, password).await
    }

    /// Whether `stored` was made under another cost than the one configured now.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        self.hasher.needs_rehash(stored)
    }

    /// Whether `password` matches `stored`; `None` checks against a dummy
    /// hash (false, after the same work), so that "no such user" and "wrong
    /// password" cost the same.
    pub async fn verify(&self, password: String, stored: Option<String>) -> ApiResult<bool> {
        let slot = self.reserve().await?;
        self.verify_in(slot, password, stored).await
    }

    /// A slot for one hash or verification, waiting at most
    /// `limits.password_hash_wait_ms`; 503 `temporarily_unavailable` when
    /// none frees up. Taken before an attempt is counted, so that a refusal
    /// for want of a slot counts nothing.
    pub async fn reserve(&self) -> ApiResult<Slot> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => Ok(Slot { _permit: slot }),
            Err(_) if self.wait.is_zero() => Err(self.busy()),
            Err(_) => {
                match tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned()).await
                {
                    Ok(Ok(slot)) => Ok(Slot { _permit: slot }),
                    // Timed out, or the semaphore closed (it never is).
                    Ok(Err(_)) | Err(_) => Err(self.busy()),
                }
            }
        }
    }

    /// [`PasswordWork::hash`] in a slot already reserved.
    pub async fn hash_in(&self, slot: Slot, password: String) -> ApiResult<String> {
        self.run(slot, move |hasher| hasher.hash(&password))
            .await?
            .map_err(ApiError::internal)
    }

    /// [`PasswordWork::verify`] in a slot already reserved.
    pub async fn verify_in(
        &self,
        slot: Slot,
        password: String,
        stored: Option<String>,
    ) -> ApiResult<bool> {
        let (ok, pad) = self
            .run(slot, move |hasher| {
                hasher.verify_padded(&password, stored.as_deref())
            })
            .await?;
        // After the slot is given back: the wait holds no core and no slot.
        tokio::time::sleep(pad).await;
        Ok(ok)
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Prometheus text: refusals, and the slots in use.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP authflow_password_work_busy_total Requests answered 503 because every password-hashing slot stayed busy.\n\
             # TYPE authflow_password_work_busy_total counter\nauthflow_password_work_busy_total {}\n\
             # HELP authflow_password_work_running Password hashes and verifications running (at most limits.password_hash_concurrency).\n\
             # TYPE authflow_password_work_running gauge\nauthflow_password_work_running {}\n",
            self.refused.load(Ordering::Relaxed),
            self.size.saturating_sub(self.available())
        )
    }

    async fn run<T: Send + 'static>(
        &self,
        slot: Slot,
        work: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> ApiResult<T> {
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work(&hasher)
        })
        .await
        .map_err(ApiError::internal)
    }

    fn busy(&self) -> ApiError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        ApiError::TemporarilyUnavailable {
            retry_after_secs: BUSY_RETRY_AFTER_SECS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(concurrency: usize, wait: Duration) -> PasswordWork {
        PasswordWork::new(Hasher::new(1024, 1).unwrap(), concurrency, wait)
    }

    #[tokio::test]
    async fn hashes_and_verifies() {
        let w = work(2, Duration::from_millis(100));
        let stored = w.hash("correct horse battery".into()).await.unwrap();
        assert!(w
            .verify("correct horse battery".into(), Some(stored.clone()))
            .await
            .unwrap());
        assert!(!w
            .verify("wrong horse battery".into(), Some(stored))
            .await
            .unwrap());
        assert!(!w
            .verify("correct horse battery".into(), None)
            .await
            .unwrap());
        assert_eq!(w.available(), 2, "every slot is given back");
    }

    /// With every slot taken, a request waits its time and is refused with
    /// 503 + `Retry-After`; once a slot is free it runs.
    #[tokio::test]
    async fn refuses_when_every_slot_stays_busy() {
        for wait in [Duration::ZERO, Duration::from_millis(50)] {
            let w = work(1, wait);
            let held = Arc::clone(&w.slots).try_acquire_owned().unwrap();
            let started = std::time::Instant::now();
            let refused = w.verify("x".into(), None).await.unwrap_err();
            assert!(started.elapsed() >= wait);
            assert!(
                matches!(
                    refused,
                    ApiError::TemporarilyUnavailable {
                        retry_after_secs: 1
                    }
                ),
                "{refused:?}"
            );
            assert_eq!(
                refused.status(),
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            );
            let shown = w.render_metrics();
            assert!(
                shown.contains("authflow_password_work_busy_total 1\n")
                    && shown.contains("authflow_password_work_running 1\n"),
                "{shown}"
            );
            drop(held);
            assert!(!w.verify("x".into(), None).await.unwrap());
        }
    }

    /// A request that waits gets the slot as soon as it is freed.
    #[tokio::test]
    async fn a_waiting_request_gets_a_freed_slot() {
        let w = Arc::new(work(1, Duration::from_secs(5)));
        let held = Arc::clone(&w.slots).try_acquire_owned().unwrap();
        let waiting = tokio::spawn({
            let w = Arc::clone(&w);
            async move { w.verify("x".into(), None).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(!waiting.await.unwrap().unwrap());
    }

    /// A reserved slot is taken until the work spent on it ends, or until
    /// it is dropped unused; while it is held, others are refused.
    #[tokio::test]
    async fn a_reserved_slot_is_held_until_spent_or_dropped() {
        let w = work(1, Duration::ZERO);
        let slot = w.reserve().await.unwrap();
        assert_eq!(w.available(), 0);
        assert!(matches!(
            w.reserve().await,
            Err(ApiError::TemporarilyUnavailable { .. })
        ));
        assert!(!w.verify_in(slot, "x".into(), None).await.unwrap());
        assert_eq!(w.available(), 1);
        let slot = w.reserve().await.unwrap();
        drop(slot);
        assert_eq!(w.available(), 1);
        let stored = w
            .hash_in(w.reserve().await.unwrap(), "pw".into())
            .await
            .unwrap();
        assert!(w.verify("pw".into(), Some(stored)).await.unwrap());
    }
}
