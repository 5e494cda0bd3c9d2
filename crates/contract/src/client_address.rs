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
//!   or that entry is not an IP address, the client is unknown (`None`),
//!   never the peer: behind N trusted proxies the peer is the nearest proxy,
//!   and a client that could make its entry unreadable would otherwise be
//!   taken for it (sharing the proxy's throttling bucket, and showing the
//!   proxy in the audit).
//!
//! The entries are read from the right on the raw bytes of the header lines
//! (several lines are one list, as if joined with commas), and only the last
//! N are looked at, each up to [`MAX_ENTRY_LEN`] bytes: whatever the client
//! wrote further left — padding, bytes that are not ASCII, any length — costs
//! nothing and changes nothing.
//!
//! The first (leftmost) entry is never trusted: the client controls it.

use std::net::IpAddr;

use crate::ip_text::parse_ip;

/// Longest entry of `x-forwarded-for` read, surrounding spaces included
/// (`[ipv6]:port` is at most 47 bytes): a longer one is not an address, and
/// the entries to its left are not looked for.
pub const MAX_ENTRY_LEN: usize = 128;
/// Headers beside `x-forwarded-*` and `forwarded` that backends take a
/// client's address from (the edge removes a client's own copies: the
/// shipped Istio gateway's `request_headers_to_remove`).
pub const ADDRESS_HEADERS: [&str; 7] = [
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
];
/// Largest accepted `xff_num_trusted_hops`.
pub const MAX_TRUSTED_HOPS: u32 = 10;

/// The client address for `trusted_hops` (see the module comment).
/// `forwarded_for` is the (comma-joined) `x-forwarded-for` value; `peer` the
/// connection's address as `ip` or `ip:port`. `None`: no peer (0 hops), or
/// the entry `trusted_hops` from the right is missing or not an address.
pub fn client_address(
    forwarded_for: Option<&str>,
    peer: Option<&str>,
    trusted_hops: u32,
) -> Option<IpAddr> {
    client_address_in_lines(forwarded_for.map(str::as_bytes), peer, trusted_hops)
}

/// [`client_address`] over the raw bytes of every `x-forwarded-for` line, in
/// the order received. The work is bounded by `trusted_hops` ×
/// [`MAX_ENTRY_LEN`] bytes (and as many lines), however long the lines are.
pub fn client_address_in_lines<'a, L>(
    lines: L,
    peer: Option<&str>,
    trusted_hops: u32,
) -> Option<IpAddr>
where
    L: IntoIterator<Item = &'a [u8]>,
    L::IntoIter: DoubleEndedIterator,
{
    if trusted_hops == 0 {
        return peer.and_then(parse_ip);
    }
    let wanted = usize::try_from(trusted_hops.min(MAX_TRUSTED_HOPS)).unwrap_or(1);
    // Entries passed over so far, counted from the right.
    let mut passed = 0usize;
    for line in lines.into_iter().rev() {
        let mut end = line.len();
        loop {
            // The entry ending at `end`: back to the comma before it, within the cap.
            let floor = end.saturating_sub(MAX_ENTRY_LEN + 1);
            let window = line.get(floor..end)?;
            let start = match window.iter().rposition(|&b| b == b',') {
                Some(comma) => floor + comma + 1,
                None if floor == 0 => 0,
                // No comma within the cap: an entry too long to be an address.
                None => return None,
            };
            passed += 1;
            if passed == wanted {
                let entry = std::str::from_utf8(line.get(start..end)?).ok()?;
                return parse_ip(entry.trim());
            }
            if start == 0 {
                break;
            }
            // Step over the comma.
            end = start - 1;
        }
    }
    // Fewer than `trusted_hops` entries.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn no_trusted_hop_is_the_peer() {
        assert_eq!(
            client_address(Some("198.51.100.1"), Some("10.0.0.1:5000"), 0),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(None, Some("[2001:db8::1]:443"), 0),
            ip("2001:db8::1")
        );
        assert_eq!(client_address(None, None, 0), None);
    }

    #[test]
    fn counts_trusted_hops_from_the_right() {
        let xff = "198.51.100.1, 203.0.113.5,10.0.0.2";
        assert_eq!(
            client_address(Some(xff), Some("10.0.0.3"), 1),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(Some(xff), Some("10.0.0.3"), 2),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_address(Some(xff), Some("10.0.0.3"), 3),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_client_written_part_is_never_picked() {
        // The client prepends anything it likes; one trusted hop still gives what that hop saw.
        for forged in ["1.2.3.4", "1.2.3.4, 5.6.7.8", "garbage"] {
            let xff = format!("{forged}, 203.0.113.5");
            assert_eq!(
                client_address(Some(&xff), Some("10.0.0.3"), 1),
                ip("203.0.113.5")
            );
        }
    }

    /// Behind trusted proxies the peer is the nearest proxy: a missing or
    /// unreadable entry makes the client unknown, never the proxy.
    #[test]
    fn too_few_entries_or_junk_are_an_unknown_client_not_the_peer() {
        assert_eq!(
            client_address(Some("203.0.113.5"), Some("10.0.0.3:1"), 2),
            None
        );
        assert_eq!(client_address(None, Some("10.0.0.3"), 1), None);
        assert_eq!(client_address(Some("not-an-ip"), Some("10.0.0.3"), 1), None);
        assert_eq!(client_address(Some(""), Some("10.0.0.3"), 1), None);
        let huge = "1.1.1.1,".repeat(1000);
        assert_eq!(client_address(Some(&huge), Some("10.0.0.3"), 1), None);
        assert_eq!(
            client_address(Some(&format!("{huge}1.1.1.2")), Some("10.0.0.3"), 1),
            ip("1.1.1.2")
        );
    }

    /// Whatever the client wrote left of the trusted entries — padding past
    /// any length, bytes that are not ASCII — does not hide the entry a
    /// trusted proxy appended.
    #[test]
    fn the_trusted_entries_are_read_from_the_right_on_raw_bytes() {
        let padded = format!("{}198.51.100.1, 203.0.113.5", " ".repeat(10_000));
        assert_eq!(
            client_address(Some(&padded), Some("10.0.0.3"), 1),
            ip("203.0.113.5")
        );
        let one_long_entry = format!("{}, 203.0.113.5", "9".repeat(1 << 20));
        assert_eq!(
            client_address(Some(&one_long_entry), Some("10.0.0.3"), 1),
            ip("203.0.113.5")
        );
        // Too long to be an address: the needed entry, or one to its right, makes the client unknown.
        assert_eq!(
            client_address(Some(&one_long_entry), Some("10.0.0.3"), 2),
            None
        );
        let padded_entry = format!("198.51.100.1,{}203.0.113.5", " ".repeat(MAX_ENTRY_LEN));
        assert_eq!(
            client_address(Some(&padded_entry), Some("10.0.0.3"), 1),
            None
        );
        let lines: [&[u8]; 3] = [b"\xff\xfe, 198.51.100.1", b"\xff, 192.0.2.90", b"10.0.0.2"];
        assert_eq!(
            client_address_in_lines(lines, Some("10.0.0.3"), 1),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address_in_lines(lines, Some("10.0.0.3"), 2),
            ip("192.0.2.90")
        );
        // A line boundary separates entries like a comma.
        assert_eq!(client_address_in_lines(lines, Some("10.0.0.3"), 3), None);
        assert_eq!(
            client_address_in_lines(lines, Some("10.0.0.3"), 4),
            ip("198.51.100.1")
        );
        assert_eq!(client_address_in_lines(lines, Some("10.0.0.3"), 5), None);
        let empty_last: [&[u8]; 2] = [b"203.0.113.5", b""];
        assert_eq!(
            client_address_in_lines(empty_last, Some("10.0.0.3"), 1),
            None
        );
        assert_eq!(
            client_address_in_lines(empty_last, Some("10.0.0.3"), 2),
            ip("203.0.113.5")
        );
        let none: [&[u8]; 0] = [];
        assert_eq!(client_address_in_lines(none, Some("10.0.0.3"), 1), None);
        assert_eq!(
            client_address_in_lines(none, Some("10.0.0.3"), 0),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn entries_with_ports_are_accepted() {
        assert_eq!(
            client_address(Some("203.0.113.5:4711"), None, 1),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_address(Some("[2001:db8::7]:4711"), None, 1),
            ip("2001:db8::7")
        );
    }
}
