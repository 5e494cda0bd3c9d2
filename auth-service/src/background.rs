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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// `Retry-After` of a request refused for want of a slot: mail tasks end
/// within the database's and the relay's timeouts.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

pub struct Background {
    slots: Arc<Semaphore>,
    size: usize,
    /// Work refused for want of a slot.
    refused: AtomicU64,
}

impl Background {
    /// At most `limit` tasks at once (at least one).
    pub fn new(limit: usize) -> Self {
        let size = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
            refused: AtomicU64::new(0),
        }
    }

    /// Starts `work` in the background, or 503 when `limits.background_tasks`
    /// are running already. The slot is held until `work` ends.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) -> ApiResult<()> {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::TemporarilyUnavailable {
                retry_after_secs: BUSY_RETRY_AFTER_SECS,
            });
        };
        tokio::spawn(async move {
            work.await;
            drop(slot);
        });
        Ok(())
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
    use std::time::Duration;

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
}
