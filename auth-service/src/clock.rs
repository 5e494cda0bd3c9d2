//! The one clock of the service.

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
