//! Just enough HTTP/1.1 for the fleet: one keep-alive connection, one request
//! at a time, `Content-Length` or chunked bodies. Ten thousand of these cost
//! a few hundred bytes of state each, which a general client would not.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest body read (a feed delta after one ban is a few hundred bytes; a
/// snapshot of a bench database a few kB).
const MAX_BODY: usize = 1 << 20;
const MAX_HEADER_LINE: usize = 8 << 10;

pub struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server said `Connection: close`.
    pub close: bool,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    pub async fn open(addr: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream: BufReader::with_capacity(2048, stream), host: addr.to_owned() })
    }

    /// Sends one request (`headers` as `name: value` lines without CRLF).
    pub async fn send(&mut self, method: &str, path: &str, headers: &[String], body: &[u8]) -> io::Result<()> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.get_mut().write_all(&bytes).await
    }

    async fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        let n = (&mut self.stream).take(MAX_HEADER_LINE as u64).read_line(&mut line).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        Ok(line.trim_end().to_owned())
    }

    /// Reads the answer to the request sent last.
    pub async fn receive(&mut self) -> io::Result<Response> {
        let status_line = self.line().await?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let (mut length, mut chunked, mut close) = (0usize, false, false);
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
            match name.as_str() {
                "content-length" => length = value.parse().map_err(|_| bad("bad content-length"))?,
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value.contains("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let size_line = self.line().await?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                if body.len() + size > MAX_BODY {
                    return Err(bad("body too large"));
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.stream.read_exact(&mut body[start..]).await?;
                self.line().await?;
            }
        } else if length > 0 {
            if length > MAX_BODY {
                return Err(bad("body too large"));
            }
            body.resize(length, 0);
            self.stream.read_exact(&mut body).await?;
        }
        Ok(Response { status, body, close })
    }
}
