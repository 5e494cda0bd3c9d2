//! The client address behind proxies, the way Envoy's `xff_num_trusted_hops`
//! defines it, for both the filter and the service (one definition).
//!
//! Every trusted proxy appends the address it received the request from to
//! `x-forwarded-for`; entries to the left of those are whatever the client
//! wrote. So with `trusted_hops = N`:
//!
//! - `N = 0`: the peer address of the connection (no proxy is trusted);
//! - `N ≥ 1`: the N-th entry from the right of `x-forwarded-for` — the address
//!   the outermost trusted proxy saw. If the header has fewer than N entries,
//!   or that entry is not an IP address, the peer address (as Envoy does).
//!
//! The first (leftmost) entry is never trusted: the client controls it.

use std::net::IpAddr;

use crate::ip_text::parse_ip;

/// Longest `x-forwarded-for` value considered; a longer one is ignored (peer used).
pub const MAX_FORWARDED_FOR_LEN: usize = 4096;
/// Largest accepted `xff_num_trusted_hops`.
pub const MAX_TRUSTED_HOPS: u32 = 10;

/// The client address for `trusted_hops` (see the module comment).
/// `forwarded_for` is the (comma-joined) `x-forwarded-for` value; `peer` the
/// connection's address as `ip` or `ip:port`.
pub fn client_address(forwarded_for: Option<&str>, peer: Option<&str>, trusted_hops: u32) -> Option<IpAddr> {
    let peer_ip = || peer.and_then(parse_ip);
    if trusted_hops == 0 {
        return peer_ip();
    }
    let Some(xff) = forwarded_for.filter(|v| v.len() <= MAX_FORWARDED_FOR_LEN) else { return peer_ip() };
    let hops = usize::try_from(trusted_hops).unwrap_or(usize::MAX);
    xff.rsplit(',').nth(hops - 1).and_then(|entry| parse_ip(entry.trim())).or_else(peer_ip)
}


#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn no_trusted_hop_is_the_peer() {
        assert_eq!(client_address(Some("198.51.100.1"), Some("10.0.0.1:5000"), 0), ip("10.0.0.1"));
        assert_eq!(client_address(None, Some("[2001:db8::1]:443"), 0), ip("2001:db8::1"));
        assert_eq!(client_address(None, None, 0), None);
    }

    #[test]
    fn counts_trusted_hops_from_the_right() {
        let xff = "198.51.100.1, 203.0.113.5,10.0.0.2";
        assert_eq!(client_address(Some(xff), Some("10.0.0.3"), 1), ip("10.0.0.2"));
        assert_eq!(client_address(Some(xff), Some("10.0.0.3"), 2), ip("203.0.113.5"));
        assert_eq!(client_address(Some(xff), Some("10.0.0.3"), 3), ip("198.51.100.1"));
    }

    #[test]
    fn the_client_written_part_is_never_picked() {
        // The client prepends anything it likes; one trusted hop still gives what that hop saw.
        for forged in ["1.2.3.4", "1.2.3.4, 5.6.7.8", "garbage"] {
            let xff = format!("{forged}, 203.0.113.5");
            assert_eq!(client_address(Some(&xff), Some("10.0.0.3"), 1), ip("203.0.113.5"));
        }
    }

    #[test]
    fn too_few_entries_or_junk_fall_back_to_the_peer() {
        assert_eq!(client_address(Some("203.0.113.5"), Some("10.0.0.3:1"), 2), ip("10.0.0.3"));
        assert_eq!(client_address(None, Some("10.0.0.3"), 1), ip("10.0.0.3"));
        assert_eq!(client_address(Some("not-an-ip"), Some("10.0.0.3"), 1), ip("10.0.0.3"));
        assert_eq!(client_address(Some(""), Some("10.0.0.3"), 1), ip("10.0.0.3"));
        let huge = "1.1.1.1,".repeat(1000);
        assert_eq!(client_address(Some(&huge), Some("10.0.0.3"), 1), ip("10.0.0.3"));
    }

    #[test]
    fn entries_with_ports_are_accepted() {
        assert_eq!(client_address(Some("203.0.113.5:4711"), None, 1), ip("203.0.113.5"));
        assert_eq!(client_address(Some("[2001:db8::7]:4711"), None, 1), ip("2001:db8::7"));
    }
}
