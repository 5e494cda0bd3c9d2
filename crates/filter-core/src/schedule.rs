//! When to fetch next: the configured interval while all is well, exponential
//! backoff with jitter after failures (so a fleet of sidecars does not hammer
//! a recovering auth service in lock-step).

#[derive(Debug, Clone)]
pub struct FetchSchedule {
    interval_ms: u64,
    failures: u32,
    next_due_ms: u64,
    /// When `next_due_ms` was set: a clock reading before it stepped back.
    set_at_ms: u64,
    last_early_ms: Option<u64>,
    min_early_interval_ms: u64,
}

/// Longest wait between retries after failures.
const MAX_BACKOFF_MS: u64 = 60_000;
const FIRST_BACKOFF_MS: u64 = 250;

impl FetchSchedule {
    /// Due immediately.
    pub fn new(interval_ms: u64, min_early_interval_ms: u64) -> Self {
        FetchSchedule {
            interval_ms,
            failures: 0,
            next_due_ms: 0,
            set_at_ms: 0,
            last_early_ms: None,
            min_early_interval_ms,
        }
    }

    /// Due, or the wall clock stepped back since the wait was set: the fetch
    /// is not put off by the step (on a VM alone, nothing else would fetch).
    pub fn is_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_due_ms || now_ms < self.set_at_ms
    }

    fn due_at(&mut self, now_ms: u64, due_ms: u64) {
        self.set_at_ms = now_ms;
        self.next_due_ms = due_ms;
    }

    pub fn succeeded(&mut self, now_ms: u64) {
        self.succeeded_next_at(now_ms, now_ms.saturating_add(self.interval_ms));
    }

    /// Succeeded, and the next fetch is due at `due_ms` (a long poll goes on
    /// at once instead of after the interval).
    pub fn succeeded_next_at(&mut self, now_ms: u64, due_ms: u64) {
        self.failures = 0;
        self.due_at(now_ms, due_ms);
    }

    /// `jitter` in [0, 1): supplied by the caller so this stays deterministic in tests.
    pub fn failed(&mut self, now_ms: u64, jitter: f64) {
        self.failures = self.failures.saturating_add(1);
        let exp = FIRST_BACKOFF_MS.saturating_mul(1u64 << self.failures.min(16).saturating_sub(1));
        let cap = exp
            .min(MAX_BACKOFF_MS)
            .min(self.interval_ms.max(FIRST_BACKOFF_MS));
        // "Equal jitter": half fixed, half random.
        let wait = cap / 2 + ((cap / 2) as f64 * jitter.clamp(0.0, 1.0)) as u64;
        self.due_at(now_ms, now_ms.saturating_add(wait.max(1)));
    }

    /// Try again at `now_ms + wait_ms` without counting a failure (the host
    /// could not start the fetch yet; nothing was asked of the upstream).
    pub fn postpone(&mut self, now_ms: u64, wait_ms: u64) {
        self.due_at(now_ms, now_ms.saturating_add(wait_ms));
    }

    /// Whether [`request_early`](Self::request_early) would grant an early fetch now:
    /// never while backing off (an unknown `kid` is no reason to hammer a
    /// failing upstream). Once the backoff's wait is over it may: a VM
    /// without the fetch lease fetches only early, so a failure it counted
    /// would otherwise stay counted, and stop its early fetches, for good.
    pub fn may_fetch_early(&self, now_ms: u64) -> bool {
        // An early fetch "later" than now: the clock stepped back.
        (self.failures == 0 || self.is_due(now_ms))
            && self.last_early_ms.is_none_or(|t| {
                now_ms < t || now_ms >= t.saturating_add(self.min_early_interval_ms)
            })
    }

    /// An early fetch (unknown `kid`), at most once per `min_early_interval_ms`.
    pub fn request_early(&mut self, now_ms: u64) -> bool {
        if !self.may_fetch_early(now_ms) {
            return false;
        }
        self.last_early_ms = Some(now_ms);
        self.due_at(now_ms, now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_backoff_and_early_rate_limit() {
        let mut s = FetchSchedule::new(10_000, 5_000);
        assert!(s.is_due(0));
        s.succeeded(0);
        assert!(!s.is_due(9_999));
        assert!(s.is_due(10_000));
        s.failed(10_000, 0.0);
        assert!(s.is_due(10_125));
        s.failed(10_125, 1.0);
        assert!(!s.is_due(10_125 + 249));
        for _ in 0..30 {
            s.failed(0, 1.0);
        }
        assert!(s.is_due(10_000), "backoff never exceeds the interval");
        s.succeeded(20_000);
        assert!(s.request_early(21_000));
        assert!(s.is_due(21_000));
        s.succeeded(21_000);
        assert!(!s.request_early(22_000), "rate limited");
        assert!(s.request_early(26_000));
    }

    /// A step back shorter than the interval (or the backoff's cap) was
    /// taken for an ordinary wait: on a VM alone (one Envoy worker) the next
    /// fetch came that much later, the revocation list going stale with the
    /// service up. Any step back since the wait was set makes it due.
    #[test]
    fn any_step_back_since_the_wait_was_set_makes_it_due() {
        let mut s = FetchSchedule::new(60_000, 0);
        s.succeeded(100_000);
        assert!(!s.is_due(159_999));
        assert!(s.is_due(100_000 - 50_000), "stepped back 50 s");
        assert!(s.is_due(99_999), "stepped back 1 ms");
        s.failed(200_000, 0.5);
        assert!(!s.is_due(200_001));
        assert!(s.is_due(199_000), "stepped back during a backoff");
        s.postpone(300_000, 200);
        assert!(s.is_due(299_999), "stepped back while postponed");
        s.succeeded_next_at(400_000, 400_100);
        assert!(!s.is_due(400_050) && s.is_due(399_000), "after a long poll");
    }
}
