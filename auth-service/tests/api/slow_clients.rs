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

/// A body past the limit is answered 413, and the client gets to send its
/// whole body and read that answer. A server that answers and closes while
/// the body is still coming leaves unread data behind and its kernel resets
/// the connection: the client's next write fails, and a proxy in front
/// (Envoy) then drops the connection without reading the answer and says 503.
/// Declared lengths and chunked bodies, from just past the limit to 8 MiB.
#[tokio::test]
async fn an_oversized_body_gets_its_413_not_a_reset() {
    let app = spawn_app().await;
    for len in [64 * 1024, 1 << 20, 4 << 20] {
        for chunked in [false, true] {
            let stream = TcpStream::connect(app.running.addr).await.unwrap();
            let (mut read, mut write) = stream.into_split();
            let framing = if chunked {
                "transfer-encoding: chunked".to_owned()
            } else {
                format!("content-length: {len}")
            };
            let head = format!(
                "POST /v1/auth/signin HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
            );
            // The body is sent as a client would: all of it, while the answer
            // is read on the other half.
            let sender = tokio::spawn(async move {
                write.write_all(head.as_bytes()).await?;
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..len / chunk.len() {
                    if chunked {
                        write
                            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                            .await?;
                        write.write_all(&chunk).await?;
                        write.write_all(b"\r\n").await?;
                    } else {
                        write.write_all(&chunk).await?;
                    }
                    // At the pace of a proxy's flow control: the body comes
                    // in pieces, not all at once.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if chunked {
                    write.write_all(b"0\r\n\r\n").await?;
                }
                Ok::<_, std::io::Error>(write)
            });
            let sent = sender.await.unwrap();
            let mut answer = Vec::new();
            let read_result =
                tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut answer))
                    .await
                    .expect("the answer came within 20 s");
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with("HTTP/1.1 413") && answer.contains("payload_too_large"),
                "{len} bytes (chunked: {chunked}): {read_result:?} {answer:?}"
            );
            // A proxy in front stops at its first failed write and never
            // reads the answer: the whole body must be taken.
            assert!(
                sent.is_ok(),
                "{len} bytes (chunked: {chunked}): the body was cut off: {sent:?}, answer {answer:?}"
            );
        }
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// A client that declares an oversized body and waits for `100 Continue`
/// gets its 413 at once and never has to send the body; one that declares
/// more than the service reads past the limit is answered from its head too.
#[tokio::test]
async fn an_oversized_declared_body_is_refused_from_its_head() {
    let app = spawn_app().await;
    for (length, expect) in [(1u64 << 20, "expect: 100-continue\r\n"), (1 << 30, "")] {
        let mut stream = TcpStream::connect(app.running.addr).await.unwrap();
        let head = format!(
            "POST /v1/auth/signin HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n{expect}\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answered without the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{length} bytes, {expect:?}: {answer:?}"
        );
    }
}

/// A client that asks for answers and never reads them is let go once they
/// stop moving for longer than a head may take: otherwise its connection (a
/// task, a socket, megabytes of kernel send buffer) stays forever, and a few
/// thousand such connections, opened at leisure, use up the service's file
/// descriptors and the host's socket memory. Pipelined requests for the
/// OpenAPI document (tens of kilobytes each) fill every buffer on the way.
#[tokio::test]
async fn answers_never_read_are_given_up() {
    let app = spawn_app_with(|c| c.server.header_read_timeout = Duration::from_secs(1)).await;
    const REQUESTS: usize = 200;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.running.addr).await.unwrap();
    stream
        .write_all(&b"GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n".repeat(REQUESTS))
        .await
        .unwrap();
    // Reads nothing for a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 65536];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection is still open");
    let answers = received
        .windows(b"HTTP/1.1 200".len())
        .filter(|w| *w == b"HTTP/1.1 200")
        .count();
    assert!(
        answers < REQUESTS,
        "all {answers} answers ({} bytes) were sent after 5 s unread: the connection was held",
        received.len()
    );
}
