//! The fetch lease the worker VMs of one Envoy share: the VM holding it does
//! the periodic fetch of a document, so a process polls once per interval,
//! not once per worker. Stored in shared data as `holder:until_ms`; the glue
//! writes it with compare-and-swap, so two VMs cannot both take a free lease.

/// What `vm_id` should write to hold the lease until `now_ms + ttl_ms`, or
/// `None` while another VM holds it. A lease not renewed in time (its holder
/// stopped ticking) or unreadable is free.
pub fn claim(current: Option<&[u8]>, vm_id: u64, now_ms: u64, ttl_ms: u64) -> Option<String> {
    let (holder, until_ms) = current.and_then(parse).unwrap_or((0, 0));
    // A lease far longer than any VM takes: the clock stepped back; free.
    if holder != vm_id && until_ms > now_ms && until_ms - now_ms <= ttl_ms.saturating_mul(2) {
        return None;
    }
    Some(format!("{vm_id}:{}", now_ms.saturating_add(ttl_ms)))
}

fn parse(value: &[u8]) -> Option<(u64, u64)> {
    let (holder, until) = std::str::from_utf8(value).ok()?.split_once(':')?;
    Some((holder.parse().ok()?, until.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_until_it_stops_renewing() {
        let taken = claim(None, 7, 1_000, 500).unwrap();
        assert_eq!(taken, "7:1500");
        assert_eq!(
            claim(Some(taken.as_bytes()), 9, 1_499, 500),
            None,
            "held by another VM"
        );
        assert_eq!(
            claim(Some(taken.as_bytes()), 7, 1_200, 500).as_deref(),
            Some("7:1700"),
            "the holder renews"
        );
        assert_eq!(
            claim(Some(taken.as_bytes()), 9, 1_500, 500).as_deref(),
            Some("9:2000"),
            "expired: taken over"
        );
        assert_eq!(
            claim(Some(b"garbage"), 9, 0, 500).as_deref(),
            Some("9:500"),
            "unreadable: free"
        );
    }
}
