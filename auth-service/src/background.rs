//! Work a request leaves running after it is answered (a password-reset
//! mail, a verification link sent again), behind one limit.
//!
//! Such work runs after the answer so that the answer's timing does not tell
//! whether the address has an account. An anonymous flood of `forgot`
//! requests would otherwise start one task each, unbounded, every one
//! waiting on the database or the mail relay when either is slow. At most
//! `limits.background_tasks` run at once; a request that would start one
//! more is answered 503 `temporarily_unavailable` with `Retry-After` before
//! anything is looked up, so the refusal says nothing about the address.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use crate::error::{ApiError, ApiResult};

/// `Retry-After` of a request refused for want of a slot: mail tasks end
/// within the database's and the relay's timeouts.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

pub struct Background {
    slots: Arc<Semaphore>,
    size: usize,
    /// Work refused for want of a slot.
    refused: AtomicU64,
    /// Tasks running, with or without a slot: what a stopping service waits for.
    in_flight: Arc<InFlight>,
    /// Deliveries handed off by slot work ([`Background::hand_off`]), bounded
    /// apart, by the same limit.
    deliveries: Arc<Semaphore>,
}

#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One running task, counted until it ends (or is dropped at shutdown).
struct Counted(Arc<InFlight>);

impl Counted {
    fn new(in_flight: &Arc<InFlight>) -> Self {
        in_flight.count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(in_flight))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Background {
    /// At most `limit` tasks at once (at least one).
    pub fn new(limit: usize) -> Self {
        let size = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
            refused: AtomicU64::new(0),
            in_flight: Arc::default(),
            deliveries: Arc::new(Semaphore::new(size)),
        }
    }

    /// Starts `work` in the background, or 503 when `limits.background_tasks`
    /// are running already. The slot is held until `work` ends (a mail's
    /// delivery included: `Mailer::send` returns once the relay took it, or
    /// after `mail.delivery_timeout_secs`).
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) -> ApiResult<()> {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::TemporarilyUnavailable {
                retry_after_secs: BUSY_RETRY_AFTER_SECS,
            });
        };
        let counted = Counted::new(&self.in_flight);
        tokio::spawn(async move {
            work.await;
            drop(slot);
            drop(counted);
        });
        Ok(())
    }

    /// Starts `work` without a slot, never refused: the mail of a request
    /// whose caller is known and limited otherwise (a sign-in code, a
    /// security notice, a sign-up's link), which must neither wait for the
    /// relay nor be dropped when anonymous work fills the slots. Counted for
    /// [`Background::drain`] like the rest; it ends within the mail timeout.
    pub fn detach(&self, work: impl Future<Output = ()> + Send + 'static) {
        let counted = Counted::new(&self.in_flight);
        tokio::spawn(async move {
            work.await;
            drop(counted);
        });
    }

    /// Starts a mail's delivery apart from the slot work that made it (a
    /// reset link), which then gives its slot back at once: how long a slot
    /// is held must not depend on whether the address has an account (a mail
    /// to deliver), or, with the slots nearly full, the next request's 503
    /// would tell. Deliveries are bounded apart, by the same limit; past it
    /// (a hanging relay) the mail is dropped, counted as refused work: false.
    pub fn hand_off(&self, delivery: impl Future<Output = ()> + Send + 'static) -> bool {
        let Ok(slot) = Arc::clone(&self.deliveries).try_acquire_owned() else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let counted = Counted::new(&self.in_flight);
        tokio::spawn(async move {
            delivery.await;
            drop(slot);
            drop(counted);
        });
        true
    }

    /// Tasks running now, with or without a slot.
    pub fn in_flight(&self) -> usize {
        self.in_flight.count.load(Ordering::SeqCst)
    }

    /// Waits until no task runs, at most `bound`: at shutdown, once no
    /// request can start more, so that mails in flight (security notices
    /// among them) are delivered rather than dropped with the runtime.
    /// Whether every task ended.
    pub async fn drain(&self, bound: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.in_flight.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(bound, idle).await.is_ok()
    }

    /// Prometheus text for the limit: tasks running and work refused.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP authflow_background_busy_total Requests whose background work (a mail) was refused because limits.background_tasks were running.\n\
             # TYPE authflow_background_busy_total counter\nauthflow_background_busy_total {}\n\
             # HELP authflow_background_running Background tasks running (at most limits.background_tasks).\n\
             # TYPE authflow_background_running gauge\nauthflow_background_running {}\n",
            self.refused.load(Ordering::Relaxed),
            self.size.saturating_sub(self.slots.available_permits())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_past_the_limit_is_refused_until_a_slot_frees() {
        let background = Background::new(2);
        let (release, wait) = tokio::sync::watch::channel(false);
        for _ in 0..2 {
            let mut wait = wait.clone();
            background
                .spawn(async move {
                    let _ = wait.wait_for(|done| *done).await;
                })
                .unwrap();
        }
        assert!(matches!(
            background.spawn(async {}),
            Err(ApiError::TemporarilyUnavailable {
                retry_after_secs: 1
            })
        ));
        let metrics = background.render_metrics();
        assert!(
            metrics.contains("authflow_background_running 2\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("authflow_background_busy_total 1\n"),
            "{metrics}"
        );
        release.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while background.spawn(async {}).is_err() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the slots are given back when the work ends");
    }

    #[tokio::test]
    async fn drain_waits_for_running_work_up_to_its_bound() {
        let background = Background::new(1);
        assert!(background.drain(Duration::from_millis(10)).await);
        let (release, wait) = tokio::sync::watch::channel(false);
        let mut held = wait.clone();
        background
            .spawn(async move {
                let _ = held.wait_for(|done| *done).await;
            })
            .unwrap();
        let mut held = wait.clone();
        background.detach(async move {
            let _ = held.wait_for(|done| *done).await;
        });
        assert_eq!(background.in_flight(), 2);
        assert!(!background.drain(Duration::from_millis(50)).await);
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            release.send(true).unwrap();
        });
        assert!(background.drain(Duration::from_secs(5)).await);
        assert_eq!(background.in_flight(), 0);
        releaser.await.unwrap();
    }
}
