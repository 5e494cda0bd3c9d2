//! Wakes the long polls of the revocation feed (`?since=C&wait=S`): a watch of
//! the feed head that [`Feed::sync`](crate::feed::Feed::sync) bumps once new
//! events are committed and loaded, whichever way this process learned of
//! them (its own write, the maintenance sync, or another instance's
//! notification through the database). Waiters park on it — no polling loop —
//! and their number is capped: past the cap a request is answered at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

pub struct FeedNotifier {
    head: watch::Sender<i64>,
    /// Bumped when the feed starts a new epoch: wakes every waiter.
    resets: watch::Sender<u64>,
    /// Set once the service stops: every waiter is answered at once, and no
    /// request parks any more (a parked poll would hold the stop for its `wait`).
    stopping: watch::Sender<bool>,
    waiters: AtomicUsize,
    max_waiters: usize,
}

/// A parked request's place under the cap, given back on drop.
pub struct WaiterSlot<'a>(&'a AtomicUsize);

impl Drop for WaiterSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FeedNotifier {
    pub fn new(head: i64, max_waiters: usize) -> Self {
        FeedNotifier {
            head: watch::Sender::new(head),
            resets: watch::Sender::new(0),
            stopping: watch::Sender::new(false),
            waiters: AtomicUsize::new(0),
            max_waiters,
        }
    }

    /// The head moved to `head` (only ever forwards): wakes every waiter behind it.
    pub fn bump(&self, head: i64) {
        self.head.send_if_modified(|current| {
            let moved = head > *current;
            if moved {
                *current = head;
            }
            moved
        });
    }

    /// Wakes every waiter whatever its cursor (a new epoch: their cursors
    /// name nothing any more), and starts the head over at `head`, the new
    /// epoch's: the old one's may be ahead of it, and a cursor of the new
    /// epoch must wait until the head passes it, not be "past" at once.
    pub fn new_epoch(&self, head: i64) {
        self.head.send_replace(head);
        self.resets.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Answers every waiter now and parks none from now on: the service is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// A place to wait, or `None` when `max_waiters` requests already wait
    /// or the service is stopping.
    pub fn try_park(&self) -> Option<WaiterSlot<'_>> {
        if *self.stopping.borrow() {
            return None;
        }
        let taken = self
            .waiters
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_waiters).then_some(n + 1)
            });
        taken.ok().map(|_| WaiterSlot(&self.waiters))
    }

    /// How many epochs have begun: read before a cursor is, and handed to
    /// [`Self::wait_past`], so that an epoch begun in between is not missed.
    pub fn epochs(&self) -> u64 {
        *self.resets.borrow()
    }

    /// Waits until the head is past `seq` or `wait` is over; whether it is
    /// past. An epoch begun since `epochs` (what [`Self::epochs`] said
    /// before `seq` was read) counts as past at once: the head it waits on
    /// is the new epoch's, which may never pass `seq`.
    pub async fn wait_past(
        &self,
        _slot: &WaiterSlot<'_>,
        seq: i64,
        epochs: u64,
        wait: Duration,
    ) -> bool {
        let mut head = self.head.subscribe();
        let mut resets = self.resets.subscribe();
        if *resets.borrow_and_update() != epochs {
            return true;
        }
        let mut stopping = self.stopping.subscribe();
        let passed = tokio::time::timeout(wait, async {
            tokio::select! {
                r = head.wait_for(|h| *h > seq) => r.is_ok(),
                r = resets.changed() => r.is_ok(),
                _ = stopping.wait_for(|stopping| *stopping) => false,
            }
        })
        .await
        .unwrap_or(false);
        passed
    }

    /// Requests parked right now.
    pub fn waiting(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bump_past_the_cursor_wakes_the_waiter_and_the_cap_holds() {
        let notifier = std::sync::Arc::new(FeedNotifier::new(5, 1));
        let slot = notifier.try_park().unwrap();
        assert!(notifier.try_park().is_none(), "over the cap");
        assert!(
            !notifier
                .wait_past(&slot, 5, 0, Duration::from_millis(20))
                .await,
            "nothing new: the wait runs out"
        );
        notifier.bump(4);
        assert!(
            !notifier
                .wait_past(&slot, 5, 0, Duration::from_millis(20))
                .await,
            "the head never moves back"
        );
        let n = std::sync::Arc::clone(&notifier);
        let bumper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            n.bump(6);
        });
        assert!(
            notifier
                .wait_past(&slot, 5, 0, Duration::from_secs(5))
                .await
        );
        bumper.await.unwrap();
        drop(slot);
        assert_eq!(notifier.waiting(), 0);
        assert!(notifier.try_park().is_some(), "the place is free again");
    }

    /// Finding: a new epoch begun after a poll read its cursor but before it
    /// parked was taken as already seen, and the poll waited on the new
    /// epoch's lower head for its whole `wait` (up to a minute) before its
    /// filter learned of the epoch and the revocations in it.
    #[tokio::test]
    async fn an_epoch_begun_before_the_wait_parks_ends_it_at_once() {
        let notifier = FeedNotifier::new(50, 4);
        let epochs = notifier.epochs();
        notifier.new_epoch(3);
        let slot = notifier.try_park().unwrap();
        let waited = tokio::time::timeout(
            Duration::from_secs(2),
            notifier.wait_past(&slot, 50, epochs, Duration::from_secs(30)),
        )
        .await;
        assert_eq!(waited, Ok(true));
    }
}
