//! The facts of one request the decision needs, read in place from the one
//! buffer the proxy hands over.
//!
//! Why a buffer and not a list of strings: copying every header into its own
//! `String` cost more than the whole cached-token decision inside Envoy (a
//! dozen allocations per request), and the SDK's own conversion aborts the VM
//! on a header value that is not UTF-8. Here the proxy-wasm map encoding is
//! validated once and read without copying; a value that is not UTF-8 reads
//! as [`NOT_UTF8`], which is never a valid token, cookie or fingerprint input.

use crate::config::{DeviceMode, FilterConfig};

/// What a header value that is not UTF-8 reads as (bytes ≥ 0x80 are legal
/// `obs-text` in HTTP/1, and no token or fingerprint contains them).
pub const NOT_UTF8: &str = "\u{FFFD}";

/// Header pairs in one buffer: per pair, the name and value lengths (u32 LE
/// each), then the name and value bytes. Built by [`HeaderBlock::push`] (so
/// every length inside is known to fit) or converted from the proxy-wasm map
/// encoding by [`HeaderBlock::parse`]; the buffer can be reused for the next
/// request ([`HeaderBlock::reuse`], [`HeaderBlock::into_buffer`]).
#[derive(Clone, Debug, Default)]
pub struct HeaderBlock {
    bytes: Vec<u8>,
    pairs: usize,
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

impl HeaderBlock {
    /// An empty block writing into `buffer` (its contents are dropped, its capacity kept).
    pub fn reuse(mut buffer: Vec<u8>) -> HeaderBlock {
        buffer.clear();
        HeaderBlock {
            bytes: buffer,
            pairs: 0,
        }
    }

    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }

    /// The memory the block holds (its buffer's capacity).
    pub fn held_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// Appends a pair. A name or value over 4 GiB cannot come from a proxy; it is skipped.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let (Ok(name_len), Ok(value_len)) = (u32::try_from(name.len()), u32::try_from(value.len()))
        else {
            return;
        };
        self.bytes.reserve(8 + name.len() + value.len());
        self.bytes.extend_from_slice(&name_len.to_le_bytes());
        self.bytes.extend_from_slice(&value_len.to_le_bytes());
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.pairs += 1;
    }

    /// Converts the proxy-wasm map encoding (pair count, then name and value
    /// lengths per pair, then each name and value followed by a NUL byte),
    /// checking it end to end; `None` if anything is out of bounds or not
    /// NUL-terminated. An empty buffer is an empty map.
    pub fn parse(encoded: &[u8]) -> Option<HeaderBlock> {
        HeaderBlock::parse_into(Vec::with_capacity(encoded.len()), encoded)
    }

    /// [`HeaderBlock::parse`] into `buffer` (see [`HeaderBlock::reuse`]).
    pub fn parse_into(buffer: Vec<u8>, encoded: &[u8]) -> Option<HeaderBlock> {
        let mut block = HeaderBlock::reuse(buffer);
        if encoded.is_empty() {
            return Some(block);
        }
        let pairs = read_u32(encoded, 0)?;
        let mut data = pairs.checked_mul(8)?.checked_add(4)?;
        if data > encoded.len() {
            return None;
        }
        for i in 0..pairs {
            let mut take = |len_at: usize| -> Option<&[u8]> {
                let start = data;
                let end = data.checked_add(read_u32(encoded, len_at)?)?;
                if *encoded.get(end)? != 0 {
                    return None;
                }
                data = end + 1;
                encoded.get(start..end)
            };
            let name = take(4 + 8 * i)?;
            let value = take(8 + 8 * i)?;
            block.push(name, value);
        }
        Some(block)
    }

    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> HeaderBlock {
        let mut block = HeaderBlock::default();
        for (n, v) in pairs {
            block.push(n.as_ref(), v.as_ref());
        }
        block
    }

    /// Every (name, value) pair in order, as bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut at = 0usize;
        (0..self.pairs).map_while(move |_| {
            let name_len = read_u32(&self.bytes, at)?;
            let value_len = read_u32(&self.bytes, at + 4)?;
            let name_at = at + 8;
            let value_at = name_at.checked_add(name_len)?;
            at = value_at.checked_add(value_len)?;
            Some((
                self.bytes.get(name_at..value_at)?,
                self.bytes.get(value_at..at)?,
            ))
        })
    }

    /// Every value of a header (exact, lower-case name); a value that is not
    /// UTF-8 reads as [`NOT_UTF8`].
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(n, _)| *n == name.as_bytes())
            .map(|(_, v)| std::str::from_utf8(v).unwrap_or(NOT_UTF8))
    }

    pub fn first<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.values(name).next()
    }

    pub fn len(&self) -> usize {
        self.pairs
    }

    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }
}

/// Which request headers a configuration's decisions read. Each header read
/// from the proxy is a host call, and the whole map costs several: the glue
/// reads only these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderReads {
    /// The whole map. The proxy hands over only the first copy of a header
    /// read by name (it joins a few into one value: `authorization`,
    /// `user-agent`, the pseudo-headers — but not `cookie`), so every header
    /// that may come several times and matters must be read this way: token
    /// headers configured by name, `cookie` (a token cookie in the second
    /// `Cookie` header, or a second value for it, must be seen), and the
    /// device header, cookie and fingerprint attributes — and the device
    /// cookie whenever it is not forwarded (see `crate::forward`: every copy
    /// of `cookie` must be seen to rewrite it without that cookie).
    All,
    /// These names, one value each.
    Only(Vec<String>),
}

impl HeaderReads {
    pub fn for_config(config: &FilterConfig) -> HeaderReads {
        let sources = &config.token_sources;
        if !sources.headers.is_empty()
            || !sources.cookies.is_empty()
            || config.device.mode != DeviceMode::Off
            || !config.forward_device_secret
            // Every copy of `DPoP` must be seen: a second proof is refused (RFC 9449 §4.3).
            || config.providers.iter().any(|p| p.dpop.mode != crate::config::DpopMode::Off)
            // Every copy of `accept`: a browser navigation may list `text/html` in any.
            || config.browser.is_some()
            // Every copy of the headers a backend may take another path, host
            // or method from (see `crate::policy`): route rules judge them all.
            || !config.routes.is_empty()
        {
            return HeaderReads::All;
        }
        let mut names: Vec<String> = Vec::new();
        if sources.authorization_bearer {
            names.push("authorization".to_owned());
            // A second token in the query is refused (`extract`): read where it is.
            names.push(":path".to_owned());
        }
        HeaderReads::Only(names)
    }
}

/// One incoming request, as the filter sees it (header names lower-case).
#[derive(Clone, Debug, Default)]
pub struct Request {
    headers: HeaderBlock,
    /// Downstream peer address (`ip:port`), for the opt-in IP-prefix fingerprint attribute.
    pub client_address: Option<String>,
}

impl Request {
    pub fn new(headers: HeaderBlock, client_address: Option<String>) -> Self {
        Request {
            headers,
            client_address,
        }
    }

    pub fn from_headers(headers: Vec<(String, String)>, client_address: Option<String>) -> Self {
        Request::new(HeaderBlock::from_pairs(&headers), client_address)
    }

    /// A request of these header pairs (pseudo-headers included), for the
    /// unit tests of the modules that read requests.
    #[cfg(test)]
    pub(crate) fn of(headers: &[(&str, &str)]) -> Self {
        Self::from_headers(
            headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            None,
        )
    }

    /// The headers back, for their buffer to serve the next request.
    pub fn into_headers(self) -> HeaderBlock {
        self.headers
    }

    /// The headers as read (all of them when the configuration reads the whole map).
    pub fn headers(&self) -> &HeaderBlock {
        &self.headers
    }

    /// Every value of a header (lower-case name); a value that is not UTF-8 reads as [`NOT_UTF8`].
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.values(name)
    }

    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header_values(name).next()
    }

    /// Whether a header of this name, in any case, is among the headers read.
    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Whether every header of the request is known, so one not seen is not
    /// there: the whole map was read (`reads`) and the read worked (an empty
    /// map is a failed read; a request always has its pseudo-headers).
    pub fn has_every_header(&self, reads: &HeaderReads) -> bool {
        *reads == HeaderReads::All && !self.headers.is_empty()
    }

    pub fn method(&self) -> &str {
        self.header(":method").unwrap_or_default()
    }

    /// `:path` without the query string or fragment.
    pub fn path(&self) -> &str {
        crate::path::without_query(self.header(":path").unwrap_or_default())
    }

    /// Every value of a header (lower-case name) as its bytes.
    pub fn header_bytes<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// Every value of a cookie, from every `cookie` header (see `authflow_contract::cookie`).
    pub fn cookie_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        authflow_contract::cookie::values(self.header_bytes("cookie"), name)
    }

    /// `:authority` as route rules compare it: see `host_name`.
    pub fn host_without_port(&self) -> &str {
        host_name(self.header(":authority").unwrap_or_default())
    }

    /// `:authority` as a lax backend reads it: see `loose_host_name`.
    pub fn loose_host_name(&self) -> &str {
        loose_host_name(self.header(":authority").unwrap_or_default())
    }
}

/// An authority as the laxest backends read it: up to a first `,` (Envoy
/// joins two HTTP/1 `Host` lines with one; a list reader keeps the first),
/// without whatever follows its last `:` when that is no IPv6 colon (Go's
/// `net.SplitHostPort` does not check that a port is digits), without one
/// trailing dot. The same as [`host_name`] for an authority `host[:digits]`.
pub(crate) fn loose_host_name(authority: &str) -> &str {
    let first = authority.split(',').next().unwrap_or_default().trim();
    let host = match first.rsplit_once(':') {
        Some((h, _)) if h.ends_with(']') || !h.contains(':') => h,
        _ => first,
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// An authority as Express's `req.hostname` reads it (what `vhost` routes
/// by): up to a first `,`, cut at its first `:`, port digits or not
/// (`admin.example:1:2` is `admin.example`), without one trailing dot. An
/// IPv6 literal loses only its port (`[::1]:80` is `[::1]`; no rule names
/// one, and Express's cut past its `]` differs only for a port not digits).
pub(crate) fn first_colon_host_name(authority: &str) -> &str {
    let first = authority.split(',').next().unwrap_or_default().trim();
    let host = match first.starts_with('[') {
        true => without_port(first),
        false => first.split(':').next().unwrap_or_default(),
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// An authority as route rules compare it (ignoring ASCII case): without a
/// port (`[::1]:80` → `[::1]`; a bare IPv6 address stays whole), and without
/// one trailing dot (`example.com.` is the same DNS name as `example.com`).
pub(crate) fn host_name(authority: &str) -> &str {
    let host = without_port(authority);
    host.strip_suffix('.').unwrap_or(host)
}

pub(crate) fn without_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        // An empty port (`host:`) is no port (RFC 3986 §3.2.3; Go's `net.SplitHostPort`).
        Some((h, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (h.ends_with(']') || !h.contains(':')) =>
        {
            h
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(h: &[(&str, &str)]) -> Request {
        Request::of(h)
    }

    #[test]
    fn pseudo_headers_and_cookies() {
        let r = req(&[
            (":method", "GET"),
            (":path", "/a/b?x=1"),
            (":authority", "API.example:8080"),
            ("cookie", "a=1; tok=\"abc\""),
            ("cookie", "z=9"),
        ]);
        assert_eq!(r.method(), "GET");
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.host_without_port(), "API.example");
        assert_eq!(r.cookie_values("tok").collect::<Vec<_>>(), ["abc"]);
        assert_eq!(
            r.cookie_values("z").collect::<Vec<_>>(),
            ["9"],
            "from the second cookie header"
        );
        assert_eq!(r.cookie_values("nope").next(), None);
        let r = req(&[(":authority", "[::1]:80")]);
        assert_eq!(r.host_without_port(), "[::1]");
        assert_eq!(
            req(&[(":authority", "::1")]).host_without_port(),
            "::1",
            "a bare IPv6 address has no port"
        );
        assert_eq!(req(&[(":authority", "api")]).host_without_port(), "api");
        // The same DNS name with its root dot: one is dropped, with or without a port.
        assert_eq!(
            req(&[(":authority", "api.example.")]).host_without_port(),
            "api.example"
        );
        assert_eq!(
            req(&[(":authority", "api.example.:8443")]).host_without_port(),
            "api.example"
        );
        assert_eq!(
            req(&[(":authority", "api.example..")]).host_without_port(),
            "api.example."
        );
        let r = req(&[]);
        assert_eq!(r.path(), "");
        assert_eq!(r.method(), "");
    }

    /// The proxy-wasm map encoding, as the proxy writes it.
    fn proxy_map(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            for part in [n, v] {
                out.extend_from_slice(part.as_bytes());
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn encoding_round_trips_and_parses() {
        let pairs = [
            ("authorization", "Bearer a.b.c"),
            ("x-empty", ""),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ];
        let parsed = HeaderBlock::parse(&proxy_map(&pairs)).expect("valid encoding");
        let back: Vec<(&[u8], &[u8])> = parsed.iter().collect();
        let want: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(back, want);
        assert_eq!(parsed.len(), 4);
        assert!(HeaderBlock::parse(&[]).expect("empty map").is_empty());
        // A reused buffer starts empty.
        let again = HeaderBlock::reuse(parsed.into_buffer());
        assert!(again.is_empty() && again.iter().next().is_none());
        let built = HeaderBlock::from_pairs(&pairs);
        assert_eq!(built.iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn malformed_encodings_are_refused_never_read_past_the_end() {
        let good = proxy_map(&[("a", "1"), ("bb", "22")]);
        // Every truncation, and every single-byte change to the length table or a terminator.
        for cut in 1..good.len() {
            assert!(
                HeaderBlock::parse(&good[..cut]).is_none(),
                "truncated at {cut}"
            );
        }
        for at in 0..good.len() {
            for byte in [0u8, 1, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[at] = byte;
                if let Some(b) = HeaderBlock::parse(&bad) {
                    // Accepted only if still self-consistent: every pair reads back.
                    assert_eq!(b.iter().count(), b.len());
                }
            }
        }
        assert!(HeaderBlock::parse(&[0xff, 0xff, 0xff, 0xff]).is_none());
    }

    #[test]
    fn values_that_are_not_utf8_read_as_a_marker() {
        let block = HeaderBlock::from_pairs(&[
            (b"x-odd".as_slice(), b"caf\xe9".as_slice()),
            (b"user-agent", b"curl"),
        ]);
        let r = Request::new(block, None);
        assert_eq!(r.header("x-odd"), Some(NOT_UTF8));
        assert_eq!(r.header("user-agent"), Some("curl"));
    }
}
