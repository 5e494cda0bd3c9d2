//! Echo backend: every request is answered `200` with JSON
//! `{"method", "path", "headers": {name: value}}`, so a caller (or a test)
//! sees exactly which identity headers the proxy forwarded.

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
        Ok(EchoServer { server, thread: Some(thread), addr })
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
    let mut headers = serde_json::Map::new();
    for h in request.headers() {
        let name = h.field.as_str().as_str().to_ascii_lowercase();
        let value = h.value.as_str().to_owned();
        match headers.get_mut(&name) {
            Some(serde_json::Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name, serde_json::Value::String(value));
            }
        }
    }
    let body = serde_json::json!({
        "method": request.method().as_str(),
        "path": request.url(),
        "headers": headers,
    });
    let mut response = tiny_http::Response::from_string(body.to_string());
    if let Ok(h) = tiny_http::Header::from_bytes(&b"content-type"[..], &b"application/json"[..]) {
        response.add_header(h);
    }
    response
}
