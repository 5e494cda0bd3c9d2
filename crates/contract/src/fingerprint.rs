//! Device fingerprint (`dfp` claim): OWASP's "token sidejacking" defence.
//!
//! At sign-in the device receives a random secret (cookie or header). The token
//! carries `dfp = base64url(SHA-256(canonical string))`, where the canonical
//! string is built from that secret plus a configured, ordered list of request
//! attributes. The filter rebuilds it from each request, so a token copied off
//! the device is useless without the secret *and* the same attributes.
//!
//! Canonical form, version 1 (every field length-prefixed, so no value can
//! be crafted to look like another field):
//!
//! ```text
//! authflow-dfp-v1\n
//! secret:<len>:<device secret>\n
//! <attribute name>:<len>:<value>\n      (once per configured attribute, in order)
//! ```
//!
//! `<len>` is the byte length of the value in decimal. Header values are
//! trimmed of surrounding whitespace; a missing header is the empty value.
//! A header sent several times counts as its copies combined the way Envoy
//! combines them ([`combined_header_value`]: trimmed, empty ones skipped,
//! joined with `,`), so the value is the same whether a proxy on the way
//! joined the copies or passed them on one by one.
//!
//! The device secret is the `x-authflow-device` header when it has a value,
//! else the device cookie ([`device_secret`]); copies that disagree carry none.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const CANONICAL_VERSION: &str = "authflow-dfp-v1";
/// Name of the hardened cookie that carries the device secret to browsers. `__Host-`: only
/// this origin can set it (Secure, Path=/, no Domain), so a sibling subdomain cannot plant
/// its own device secret beside an attacker's refresh cookie (a sign-in forced on a victim).
pub const DEVICE_COOKIE: &str = "__Host-authflow-device";
/// Header that carries the device secret for non-browser clients.
pub const DEVICE_HEADER: &str = "x-authflow-device";
/// Longest device secret either side accepts (the service issues 43 chars).
pub const MAX_SECRET_LEN: usize = 128;
/// Longest attribute value that enters the fingerprint; longer values are cut
/// here identically on both sides, so a huge header cannot cost unbounded hashing.
pub const MAX_ATTRIBUTE_LEN: usize = 1024;

/// One request attribute that enters the fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceAttribute {
    /// A request header, by lower-case name (e.g. `user-agent`).
    Header(String),
    /// The client address cut to a network prefix (/24 for IPv4, /48 for
    /// IPv6). Opt-in only: mobile clients change address often.
    ClientIpPrefix,
}

impl DeviceAttribute {
    pub const CLIENT_IP_PREFIX: &'static str = "client-ip-prefix";

    /// Parses a configured attribute name: a header name or `client-ip-prefix`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let lower = name.trim().to_ascii_lowercase();
        if lower == Self::CLIENT_IP_PREFIX {
            return Ok(Self::ClientIpPrefix);
        }
        let valid = !lower.is_empty()
            && lower.len() <= 64
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self::Header(lower))
        } else {
            Err(format!(
                "`{name}` is not a header name or `client-ip-prefix`"
            ))
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Header(h) => h,
            Self::ClientIpPrefix => Self::CLIENT_IP_PREFIX,
        }
    }
}

/// Everything the fingerprint is computed from.
#[derive(Clone, Debug, Default)]
pub struct FingerprintInput<'a> {
    pub secret: &'a str,
    /// `(attribute name, value)` in configured order.
    pub attributes: Vec<(&'a str, &'a str)>,
}

impl FingerprintInput<'_> {
    pub fn canonical_string(&self) -> String {
        let mut out = String::with_capacity(64 + self.attributes.len() * 64);
        out.push_str(CANONICAL_VERSION);
        out.push('\n');
        push_field(&mut out, "secret", bounded(self.secret, MAX_SECRET_LEN));
        for (name, value) in &self.attributes {
            push_field(&mut out, name, bounded(value.trim(), MAX_ATTRIBUTE_LEN));
        }
        out
    }

    /// `base64url(SHA-256(canonical string))`, the value of the `dfp` claim.
    pub fn hash(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.canonical_string().as_bytes()))
    }
}

fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    out.push_str(&value.len().to_string());
    out.push(':');
    out.push_str(value);
    out.push('\n');
}

/// Cuts to at most `max` bytes on a char boundary.
fn bounded(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// The fingerprint value of a header from all its copies, in order: each
/// trimmed, empty ones skipped, joined with `,` (RFC 9110 §5.3 field
/// combination, byte for byte what Envoy does with a repeated `user-agent`).
/// Stops growing past [`MAX_ATTRIBUTE_LEN`], where the canonical form cuts anyway.
pub fn combined_header_value<'a>(
    copies: impl IntoIterator<Item = &'a str>,
) -> std::borrow::Cow<'a, str> {
    use std::borrow::Cow;
    let mut copies = copies.into_iter().map(str::trim).filter(|c| !c.is_empty());
    let Some(first) = copies.next() else {
        return Cow::Borrowed("");
    };
    let mut combined: Option<String> = None;
    for copy in copies {
        let c = combined.get_or_insert_with(|| first.to_owned());
        if c.len() > MAX_ATTRIBUTE_LEN {
            break;
        }
        c.push(',');
        c.push_str(copy);
    }
    combined.map_or(Cow::Borrowed(first), Cow::Owned)
}

/// The device secret a request carries, from every copy of the device header
/// and every `cookie` header: the header if any copy has a value, else the
/// cookie. `None` when there is none, when copies disagree, when it is
/// blank, or when it is longer than [`MAX_SECRET_LEN`]. An empty header does not hide the cookie.
pub fn device_secret<'a>(
    header_copies: impl IntoIterator<Item = &'a str>,
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
) -> Option<&'a str> {
    let mut from_header: Option<&str> = None;
    for copy in header_copies
        .into_iter()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        match from_header {
            Some(seen) if seen != copy => return None,
            _ => from_header = Some(copy),
        }
    }
    let secret = match from_header {
        Some(s) => s,
        None => crate::cookie::single_value(cookie_headers, DEVICE_COOKIE).ok()??,
    };
    // A quoted cookie keeps the whitespace inside its quotes: blank is none.
    Some(secret).filter(|s| !s.trim().is_empty() && s.len() <= MAX_SECRET_LEN)
}

/// Compares a token's `dfp` with a recomputed one in constant time.
pub fn matches(claimed: &str, computed: &str) -> bool {
    claimed.len() == computed.len() && bool::from(claimed.as_bytes().ct_eq(computed.as_bytes()))
}

/// The network prefix of a client address: `a.b.c.0/24` or the first three
/// IPv6 groups `/48`. Accepts `ip`, `ip:port` and `[ipv6]:port`; anything
/// unparsable gives the empty string (so it fails to match, never panics).
pub fn client_ip_prefix(address: &str) -> String {
    crate::ip_text::parse_ip(address)
        .map(ip_prefix)
        .unwrap_or_default()
}

/// [`client_ip_prefix`] of an address already parsed. An IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`, what a dual-stack socket reports for an IPv4
/// peer) is its IPv4 address: its first three groups are `0:0:0` for every
/// IPv4 client, which would put the whole IPv4 Internet in one "network".
pub fn ip_prefix(ip: std::net::IpAddr) -> String {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        std::net::IpAddr::V6(v6) => match v6.segments() {
            [a, b, c, ..] => format!("{a:x}:{b:x}:{c:x}::/48"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        secret: String,
        attributes: Vec<(String, String)>,
        canonical: String,
        dfp: String,
        /// A header sent several times: its copies, which combine into the value in `attributes`.
        #[serde(default)]
        header_copies: Vec<(String, Vec<String>)>,
    }

    /// The vectors both sides are checked against (the service has its own test on them).
    #[test]
    fn matches_test_vectors() {
        let vectors: Vec<Vector> =
            serde_json::from_str(include_str!("../vectors/fingerprint.json")).unwrap();
        assert!(vectors.len() >= 4);
        for v in &vectors {
            let input = FingerprintInput {
                secret: &v.secret,
                attributes: v
                    .attributes
                    .iter()
                    .map(|(n, x)| (n.as_str(), x.as_str()))
                    .collect(),
            };
            assert_eq!(
                input.canonical_string(),
                v.canonical,
                "canonical of {}",
                v.name
            );
            assert_eq!(input.hash(), v.dfp, "dfp of {}", v.name);
            for (name, copies) in &v.header_copies {
                let value = v
                    .attributes
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, x)| x.as_str());
                assert_eq!(
                    Some(combined_header_value(copies.iter().map(String::as_str)).as_ref()),
                    value,
                    "{}: {name}",
                    v.name
                );
            }
        }
    }

    #[test]
    fn repeated_headers_combine_like_envoy() {
        assert_eq!(
            combined_header_value(["agent-one", "agent-two"]),
            "agent-one,agent-two"
        );
        assert_eq!(
            combined_header_value(["agent-one,agent-two"]),
            "agent-one,agent-two",
            "as Envoy forwards them"
        );
        assert_eq!(combined_header_value([" a ", "", "  ", "b"]), "a,b");
        assert_eq!(combined_header_value([" only "]), "only");
        assert_eq!(combined_header_value(std::iter::empty()), "");
        let long = "x".repeat(MAX_ATTRIBUTE_LEN);
        assert!(
            combined_header_value(std::iter::repeat_n(long.as_str(), 1000)).len()
                <= 2 * MAX_ATTRIBUTE_LEN + 1
        );
    }

    #[test]
    fn device_secret_from_header_or_cookie() {
        let cookie = format!("a=1; {DEVICE_COOKIE}=from-cookie");
        assert_eq!(
            device_secret(["from-header"], [cookie.as_bytes()]),
            Some("from-header")
        );
        assert_eq!(
            device_secret([""], [cookie.as_bytes()]),
            Some("from-cookie"),
            "an empty header does not hide the cookie"
        );
        assert_eq!(
            device_secret([], [b"a=1".as_slice(), cookie.as_bytes()]),
            Some("from-cookie"),
            "any cookie header"
        );
        assert_eq!(device_secret(["s", " s "], []), Some("s"));
        assert_eq!(
            device_secret(["s", "t"], [cookie.as_bytes()]),
            None,
            "copies that disagree"
        );
        let two = format!("{DEVICE_COOKIE}=x; {DEVICE_COOKIE}=y");
        assert_eq!(device_secret([], [two.as_bytes()]), None);
        let long = "s".repeat(MAX_SECRET_LEN + 1);
        assert_eq!(device_secret([long.as_str()], []), None);
        assert_eq!(device_secret([], []), None);
    }

    /// Inside quotes a cookie keeps its whitespace: a quoted value of spaces
    /// and a form feed is no secret, as a blank header is none.
    #[test]
    fn a_quoted_blank_cookie_is_no_device_secret() {
        for value in ["\" \"", "\"   \u{c}\"", "\"\t\""] {
            let cookie = format!("{DEVICE_COOKIE}={value}");
            assert_eq!(device_secret([], [cookie.as_bytes()]), None, "{value:?}");
        }
        let quoted = format!("{DEVICE_COOKIE}=\"s\"");
        assert_eq!(device_secret([], [quoted.as_bytes()]), Some("s"));
    }

    #[test]
    fn length_prefix_prevents_field_confusion() {
        let a = FingerprintInput {
            secret: "s",
            attributes: vec![("user-agent", "a\nx:1:b")],
        };
        let b = FingerprintInput {
            secret: "s",
            attributes: vec![("user-agent", "a"), ("x", "b")],
        };
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn oversized_values_are_bounded_on_a_char_boundary() {
        let long = "é".repeat(MAX_ATTRIBUTE_LEN);
        let input = FingerprintInput {
            secret: "s",
            attributes: vec![("user-agent", &long)],
        };
        let canonical = input.canonical_string();
        assert!(canonical.len() < MAX_ATTRIBUTE_LEN + 100);
    }

    #[test]
    fn constant_time_match() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
    }

    #[test]
    fn ip_prefixes() {
        assert_eq!(client_ip_prefix("203.0.113.77:5555"), "203.0.113.0/24");
        assert_eq!(client_ip_prefix("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(client_ip_prefix("[2001:db8:1:2::5]:443"), "2001:db8:1::/48");
        assert_eq!(client_ip_prefix("garbage"), "");
    }

    /// Finding: an IPv4-mapped IPv6 address (a dual-stack listener's view of
    /// an IPv4 peer, or an entry a dual-stack proxy wrote into
    /// `x-forwarded-for`) was cut to its first three groups, `0:0:0::/48`, the
    /// same for every IPv4 client: a token bound to `client-ip-prefix` then
    /// worked from any IPv4 network, and did not match the same client seen
    /// as plain IPv4 (Envoy reports mapped peers as IPv4).
    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_network() {
        assert_eq!(client_ip_prefix("::ffff:203.0.113.77"), "203.0.113.0/24");
        assert_eq!(
            client_ip_prefix("[::ffff:203.0.113.77]:5555"),
            client_ip_prefix("203.0.113.77:5555")
        );
        assert_ne!(
            client_ip_prefix("::ffff:203.0.113.77"),
            client_ip_prefix("::ffff:198.51.100.1"),
            "two IPv4 networks are not one"
        );
        // Not mapped: IPv4-compatible (deprecated) and ordinary IPv6 stay /48.
        assert_eq!(client_ip_prefix("::1.2.3.4"), "0:0:0::/48");
        assert_eq!(
            client_ip_prefix("2001:db8:1::ffff:1.2.3.4"),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn attribute_names() {
        assert_eq!(
            DeviceAttribute::parse("User-Agent").unwrap(),
            DeviceAttribute::Header("user-agent".into())
        );
        assert_eq!(
            DeviceAttribute::parse("client-ip-prefix").unwrap(),
            DeviceAttribute::ClientIpPrefix
        );
        assert!(DeviceAttribute::parse("bad header").is_err());
        assert!(DeviceAttribute::parse("").is_err());
    }
}
