//! The facts of one request the decision needs, copied out of the proxy once.

/// One incoming request, as the filter sees it (header names lower-case).
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// `:path` without the query string.
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
    /// Downstream peer address (`ip:port`), for the opt-in IP-prefix fingerprint attribute.
    pub client_address: Option<String>,
}

impl Request {
    pub fn from_headers(headers: Vec<(String, String)>, client_address: Option<String>) -> Self {
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let full_path = pseudo(":path");
        let path = full_path.split(['?', '#']).next().unwrap_or_default().to_owned();
        let host = pseudo(":authority").to_ascii_lowercase();
        Request { method: pseudo(":method"), path, host, headers, client_address }
    }

    /// Every value of a header (lower-case name).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header_values(name).next()
    }

    /// Value of a cookie, from any `cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header_values("cookie")
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    /// Host without a port, for route matching (`[::1]:80` → `[::1]`; a bare IPv6 address stays whole).
    pub fn host_without_port(&self) -> &str {
        match self.host.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && (h.ends_with(']') || !h.contains(':')) => h,
            _ => &self.host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(h: &[(&str, &str)]) -> Request {
        Request::from_headers(h.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(), None)
    }

    #[test]
    fn pseudo_headers_and_cookies() {
        let r = req(&[(":method", "GET"), (":path", "/a/b?x=1"), (":authority", "API.example:8080"), ("cookie", "a=1; tok=\"abc\""), ("cookie", "z=9")]);
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.host_without_port(), "api.example");
        assert_eq!(r.cookie("tok"), Some("abc"));
        assert_eq!(r.cookie("z"), Some("9"));
        assert_eq!(r.cookie("nope"), None);
        let r = req(&[(":authority", "[::1]:80")]);
        assert_eq!(r.host_without_port(), "[::1]");
        assert_eq!(req(&[(":authority", "::1")]).host_without_port(), "::1", "a bare IPv6 address has no port");
        assert_eq!(req(&[(":authority", "api")]).host_without_port(), "api");
        let r = req(&[]);
        assert_eq!(r.path, "");
    }
}
