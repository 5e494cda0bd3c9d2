//! IP addresses as text: `ip`, `ip:port` and `[ipv6]:port`, read the way
//! Rust's `std::net` reads them (the tests compare the two), for the client
//! address and its prefix. A parser of its own because std's (`IpAddr` and
//! `SocketAddr` from text) is 5 KB of the filter's module (docs/bench.md,
//! "Module size"). Scope ids (`%eth0`) are not accepted: a client address
//! never has one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address of `ip`, `ip:port` or `[ipv6]:port` (the port is checked, not kept).
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, port) = crate::text::split_once(rest, "]:")?;
        return valid_port(port)
            .then(|| parse_v6(ip))
            .flatten()
            .map(IpAddr::V6);
    }
    if let Some(v4) = parse_v4(text) {
        return Some(IpAddr::V4(v4));
    }
    if let Some(v6) = parse_v6(text) {
        return Some(IpAddr::V6(v6));
    }
    let (ip, port) = text.rsplit_once(':')?;
    valid_port(port)
        .then(|| parse_v4(ip))
        .flatten()
        .map(IpAddr::V4)
}

/// Four decimal octets, no leading zeros (as std: `01.2.3.4` is refused).
pub fn parse_v4(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty()
            || part.len() > 3
            || !part.bytes().all(|b| b.is_ascii_digit())
            || (part.len() > 1 && part.starts_with('0'))
        {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// Eight hex groups, or fewer around one `::`; the last 32 bits may be written as IPv4.
pub fn parse_v6(text: &str) -> Option<Ipv6Addr> {
    let mut groups = [0u16; 8];
    match crate::text::split_once(text, "::") {
        None => {
            let n = read_groups(text, &mut groups, true)?;
            (n == 8).then_some(())?;
        }
        Some((head, tail)) => {
            let mut tail_groups = [0u16; 8];
            let h = if head.is_empty() {
                0
            } else {
                read_groups(head, &mut groups, false)?
            };
            let t = if tail.is_empty() {
                0
            } else {
                read_groups(tail, &mut tail_groups, true)?
            };
            if h + t > 7 {
                return None;
            }
            for (slot, g) in groups
                .iter_mut()
                .skip(8 - t)
                .zip(tail_groups.iter().take(t))
            {
                *slot = *g;
            }
        }
    }
    Some(Ipv6Addr::from(groups))
}

/// Reads `:`-separated groups into `out`; the last part may be IPv4 (two
/// groups) when `v4_last`. The number of groups read, `None` when malformed.
fn read_groups(text: &str, out: &mut [u16; 8], v4_last: bool) -> Option<usize> {
    let mut n = 0;
    let mut parts = text.split(':').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        if last && v4_last && part.contains('.') {
            let [a, b, c, d] = parse_v4(part)?.octets();
            for g in [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])] {
                *out.get_mut(n)? = g;
                n += 1;
            }
            return Some(n);
        }
        if part.is_empty() || part.len() > 4 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *out.get_mut(n)? = u16::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    Some(n)
}

fn valid_port(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// What std makes of the same text.
    fn std_reading(text: &str) -> Option<IpAddr> {
        text.parse::<IpAddr>()
            .ok()
            .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
    }

    const CORPUS: &[&str] = &[
        "",
        "1.2.3.4",
        "255.255.255.255",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "0.0.0.0",
        "1.2.3.4:80",
        "1.2.3.4:",
        "1.2.3.4:65535",
        "1.2.3.4:65536",
        "1.2.3.4:+1",
        "+1.2.3.4",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1..3.4",
        "::",
        "::1",
        "1::",
        "1::2",
        "2001:db8::7",
        "2001:db8:0:0:0:0:0:7",
        "2001:db8::0:0:0:0:0:7",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8::",
        ":::",
        "1:::2",
        "::ffff:1.2.3.4",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "::1.2.3.4",
        "1.2.3.4::",
        "::1.2.3.4:5",
        "12345::",
        "abcd::ef01",
        "ABCD::EF01",
        "g::1",
        "+1::",
        "[::1]:80",
        "[::1]",
        "[::1]:",
        "[1.2.3.4]:80",
        "[2001:db8::7]:4711",
        "[::1]:99999",
        "::1:80",
        "1:2",
        ":1::",
        "1::2:",
        "fe80::1%2",
        "[::ffff:1.2.3.4]:1",
        "1.2.3.4:0080",
        "[::1]:00080",
        "0:0:0:0:0:0:0:0",
        "::0.0.0.0",
        "1::2::3",
        "::ffff:1.2.3",
        "::ffff:1.2.3.04",
    ];

    #[test]
    fn reads_every_corpus_entry_as_std_does() {
        for text in CORPUS {
            assert_eq!(parse_ip(text), std_reading(text), "{text:?}");
        }
    }

    #[test]
    fn reads_random_texts_as_std_does() {
        // Short texts over the characters addresses are made of: most are
        // malformed, some valid; a xorshift keeps the run reproducible.
        const ALPHABET: &[u8] = b"0123456789abcdefABCDEF:.[]0120:::..";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| char::from(ALPHABET[(next() % ALPHABET.len() as u64) as usize]))
                .collect();
            assert_eq!(parse_ip(&text), std_reading(&text), "{text:?}");
        }
    }
}
