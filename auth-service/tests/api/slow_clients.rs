//! Slow clients: a connection that never finishes its request head is
//! closed, so a few hundred idle sockets cannot pin the service's tasks
//! and file descriptors forever (slowloris).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Whether the server closed `stream` within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or any answer: keep reading until the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_dropped() {
    let app = spawn_app_with(|c| c.server.header_read_timeout = Duration::from_secs(1)).await;
    let addr = app.running.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: 1\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "a half-sent request head keeps its connection open"
    );
}

/// The timeout is on the head only: a request that takes longer to answer
/// (a long poll of the feed) is not cut off, and a connection that sends
/// its heads in time is kept alive between them.
#[tokio::test]
async fn a_slow_answer_is_not_cut_off() {
    let app = spawn_app_with(|c| c.server.header_read_timeout = Duration::from_secs(1)).await;
    let r = app.get("/v1/revocations").await;
    let cursor = r.json::<serde_json::Value>().await.unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    let r = app
        .http
        .get(app.url("/v1/revocations"))
        .query(&[("since", cursor.as_str()), ("wait", "3")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// The default holds a head that never ends for a bounded time.
#[test]
fn the_default_timeout_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), None, |_| {});
    assert!(config.server.header_read_timeout <= Duration::from_secs(30));
    assert!(config.server.header_read_timeout >= Duration::from_secs(5));
}

/// A body that stops arriving (or trickles) is given up at the body
/// deadline: the request is answered (a 4xx) and its task freed, instead of
/// waiting for the rest forever.
#[tokio::test]
async fn a_body_that_never_ends_is_given_up() {
    let app = spawn_app_with(|c| {
        c.server.header_read_timeout = Duration::from_secs(1);
        c.server.request_body_timeout = Duration::from_secs(2);
    })
    .await;
    for (path, content_type) in [
        ("/v1/auth/signin", "application/json"),
        ("/v1/oauth/token", "application/x-www-form-urlencoded"),
        ("/auth/signin", "application/x-www-form-urlencoded"),
    ] {
        let mut stream = TcpStream::connect(app.running.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: 1000\r\n\r\n{{\"em"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // A trickle: a byte now and then, each well inside any idle timeout.
        let mut answered = None;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if stream.write_all(b"a").await.is_err() {
                break;
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
            {
                answered = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
        }
        let answered = answered.unwrap_or_default();
        assert!(
            answered.starts_with("HTTP/1.1 4")
                || answered.is_empty()
                    && closed_within(&mut stream, Duration::from_millis(100)).await,
            "{path}: a trickled body held the request for 5 s: {answered:?}"
        );
    }
}
