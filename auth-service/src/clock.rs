//! The one clock of the service, and the bound it forgets by.

use std::sync::OnceLock;
use std::time::Instant;

/// Clock difference allowed between instances sharing the database: one
/// instance's maintenance task may prune a used one-time id (a client
/// assertion's or a DPoP proof's `jti`) while another, whose clock is behind by
/// less than this, would still accept it. Every such id is kept this much longer.
pub const INSTANCE_CLOCK_MARGIN_SECS: u64 = 60;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The time to forget by: what decides which revocations, used one-time
/// ids and sign-in failures are dropped for good. The wall clock, but never
/// ahead of where it stood when the process started plus what the
/// monotonic clock counted since. A wall clock stepped forward (by hand, or
/// by a bad time source) would otherwise delete in one pass what tokens
/// still valid once it is corrected need: a revocation deleted then is
/// gone for every filter. Forgetting later than needed costs only rows.
/// (A clock already ahead when the process starts is not caught.)
pub fn forget_now() -> i64 {
    static STARTED: OnceLock<ForgetClock> = OnceLock::new();
    STARTED.get_or_init(ForgetClock::start).now_at(now())
}

#[derive(Clone, Copy, Debug)]
struct ForgetClock {
    wall_at_start: i64,
    started: Instant,
}

impl ForgetClock {
    fn start() -> Self {
        ForgetClock {
            wall_at_start: now(),
            started: Instant::now(),
        }
    }

    fn now_at(self, wall: i64) -> i64 {
        let counted = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
        bounded(wall, self.wall_at_start, counted)
    }
}

/// `wall`, at most `wall_at_start + counted` (a second more: the two clocks
/// are read apart and round down).
fn bounded(wall: i64, wall_at_start: i64, counted: i64) -> i64 {
    wall.min(wall_at_start.saturating_add(counted).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_stepped_forward_does_not_move_what_is_forgotten() {
        let start = 1_900_000_000;
        // Running right: the wall clock.
        assert_eq!(bounded(start + 600, start, 600), start + 600);
        // Stepped an hour forward ten minutes in: where it should stand.
        assert_eq!(bounded(start + 600 + 3600, start, 600), start + 601);
        // Stepped back (corrected, or behind): the wall clock, the earlier.
        assert_eq!(bounded(start + 500, start, 600), start + 500);
    }

    #[test]
    fn the_bound_follows_the_wall_clock_on_this_machine() {
        let (before, forget, after) = (now(), forget_now(), now());
        assert!(
            forget <= after && forget + 1 >= before,
            "{before} {forget} {after}"
        );
    }
}
