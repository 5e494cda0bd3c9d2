//! Echo backend: every request is answered `200` with JSON
//! `{"method", "path", "headers": {name: value}}`, so a caller (or a test)
//! sees exactly which identity headers the proxy forwarded. A browser
//! navigation gets the same as an HTML page.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct EchoServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl EchoServer {
    /// Starts serving on `addr` (port 0 picks a free one) in a background thread.
    pub fn start(addr: &str) -> io::Result<Self> {
        let server = Arc::new(tiny_http::Server::http(addr).map_err(io::Error::other)?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("echo backend is not on an IP address"))?;
        let worker = Arc::clone(&server);
        let thread = std::thread::spawn(move || {
            for request in worker.incoming_requests() {
                let response = echo(&request);
                let _ = request.respond(response);
            }
        });
        Ok(EchoServer {
            server,
            thread: Some(thread),
            addr,
        })
    }

    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn echo(request: &tiny_http::Request) -> tiny_http::Response<io::Cursor<Vec<u8>>> {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_owned(),
            )
        })
        .collect();
    let page = render(request.method().as_str(), request.url(), &headers);
    let mut response = tiny_http::Response::from_string(page.body);
    for (name, value) in page.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    response
}

/// What the echo answers: a body and its headers.
pub struct Page {
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: String,
}

/// JSON `{"method", "path", "headers"}`; for a browser navigation (its
/// `accept` lists `text/html`) the same as a small HTML page, so a person
/// signed in through the filter sees who the backend was told they are.
pub fn render(method: &str, path: &str, headers: &[(String, String)]) -> Page {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        match merged.iter_mut().find(|(n, _)| n == name) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            None => merged.push((name.clone(), value.clone())),
        }
    }
    let wants_html = merged
        .iter()
        .any(|(n, v)| n == "accept" && v.to_ascii_lowercase().contains("text/html"));
    if wants_html {
        return Page {
            headers: vec![
                ("content-type", "text/html; charset=utf-8"),
                // Nothing to load, nothing to run: the page is text.
                (
                    "content-security-policy",
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            body: html(method, path, &merged),
        };
    }
    let map: serde_json::Map<String, serde_json::Value> = merged
        .into_iter()
        .map(|(n, v)| (n, serde_json::Value::String(v)))
        .collect();
    let body = serde_json::json!({ "method": method, "path": path, "headers": map });
    Page {
        headers: vec![("content-type", "application/json")],
        body: body.to_string(),
    }
}

/// Header values longer than this are cut in the HTML page (tokens in cookies).
const HTML_VALUE_CHARS: usize = 72;

fn html(method: &str, path: &str, headers: &[(String, String)]) -> String {
    let user = headers
        .iter()
        .find(|(n, _)| n == "x-auth-user")
        .map(|(_, v)| v.as_str());
    let mut rows = String::new();
    for (name, value) in headers {
        let mut shown: String = value.chars().take(HTML_VALUE_CHARS).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        let class = if name.starts_with("x-auth-") {
            " class=\"identity\""
        } else {
            ""
        };
        rows.push_str(&format!(
            "<tr{class}><th>{}</th><td>{}</td></tr>\n",
            escape(name),
            escape(&shown)
        ));
    }
    let who = match user {
        Some(u) => format!(
            "<p>The proxy says you are <strong id=\"x-auth-user\">{}</strong>.</p>",
            escape(u)
        ),
        None => "<p>No <code>x-auth-user</code> reached the backend.</p>".to_owned(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Echo backend</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}}table{{border-collapse:collapse}}\
th,td{{text-align:left;padding:.2rem .6rem;border-bottom:1px solid #ddd;font-family:monospace}}\
tr.identity{{background:#e8f4e8}}</style></head>\n<body><h1>Echo backend</h1>\n{who}\n\
<p><code>{} {}</code> arrived with these headers (identity headers set by the filter highlighted):</p>\n\
<table>\n{rows}</table>\n</body></html>\n",
        escape(method),
        escape(path)
    )
}

/// Text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn api_clients_get_json_with_repeated_headers_joined() {
        let page = render(
            "GET",
            "/api/hello",
            &h(&[("x-auth-user", "u1"), ("x-a", "1"), ("x-a", "2")]),
        );
        assert_eq!(page.headers, vec![("content-type", "application/json")]);
        let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(v["headers"]["x-auth-user"], "u1");
        assert_eq!(v["headers"]["x-a"], "1, 2");
        assert_eq!(v["path"], "/api/hello");
    }

    #[test]
    fn a_browser_navigation_gets_html_naming_the_user_with_everything_escaped() {
        let page = render(
            "GET",
            "/app/<x>",
            &h(&[
                ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
                ("x-auth-user", "<script>alert(1)</script>"),
            ]),
        );
        assert!(page
            .headers
            .contains(&("content-type", "text/html; charset=utf-8")));
        assert!(
            page.body.contains(
                "<strong id=\"x-auth-user\">&lt;script&gt;alert(1)&lt;/script&gt;</strong>"
            ),
            "{}",
            page.body
        );
        assert!(page.body.contains("/app/&lt;x&gt;"));
        assert!(!page.body.contains("<script>"));
    }

    #[test]
    fn long_values_are_cut_in_the_page() {
        let long = "t".repeat(500);
        let page = render(
            "GET",
            "/",
            &h(&[("accept", "text/html"), ("cookie", &long)]),
        );
        assert!(!page.body.contains(&long));
        assert!(page
            .body
            .contains(&format!("{}…", "t".repeat(HTML_VALUE_CHARS))));
    }
}
