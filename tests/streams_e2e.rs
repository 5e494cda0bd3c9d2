//! Streams that stay open (server-sent events here; a WebSocket or a gRPC
//! stream alike) through the real Envoy with the built filter and the real
//! auth service: a token is judged when its stream starts, and a logout
//! must end the stream it opened, not leave it flowing for hours.
// Tests may unwrap and panic: a failure should stop the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::stack::*;

/// Longer than the filter takes to learn a logout and look at its open
/// streams again, shorter than the age at which it judges them.
const SLOW_ANSWER: Duration = Duration::from_millis(700);

/// An upstream that answers every request with an event stream: an event
/// every 100 ms for at most 30 s, or until the connection goes; `/api/slow`
/// with a plain answer after [`SLOW_ANSWER`].
fn event_source() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(16) {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if seen.starts_with(b"GET /api/slow") {
                    std::thread::sleep(SLOW_ANSWER);
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone");
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let event = b"data: tick\n\n";
                for _ in 0..300 {
                    let chunk =
                        [format!("{:x}\r\n", event.len()).as_bytes(), event, b"\r\n"].concat();
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    port
}

/// The whole system with [`event_source`] as its backend.
fn stack() -> Stack {
    Stack::start_with_backend(
        StackOptions {
            issuer: "http://authflow.streams-e2e",
            service_env: &[],
            extra_clusters: &[],
        },
        event_source(),
        |_| {},
    )
}

/// An event stream opened through Envoy with the session's credentials.
struct Events(TcpStream);

impl Events {
    fn open(st: &Stack, s: &Session) -> Events {
        let mut conn = TcpStream::connect(("127.0.0.1", st.envoy.port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut request = String::from(
            "GET /api/events HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n",
        );
        for (name, value) in s.headers() {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        conn.write_all(request.as_bytes()).unwrap();
        let mut events = Events(conn);
        assert_eq!(
            events.next_ticks(Duration::from_secs(5)),
            Some(true),
            "the stream flows"
        );
        events
    }

    /// Reads for up to `within`: `Some(true)` once an event arrived,
    /// `Some(false)` when the stream ended first, `None` when neither.
    fn next_ticks(&mut self, within: Duration) -> Option<bool> {
        let until = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match self.0.read(&mut buf) {
                Ok(0) => return Some(false),
                Ok(n) if buf[..n].windows(4).any(|w| w == b"tick") => return Some(true),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(false),
            }
        }
        None
    }

    /// Whether the stream ends within `within` (events still arriving meanwhile are read).
    fn ends_within(&mut self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.next_ticks(until - Instant::now()) == Some(false) {
                return true;
            }
        }
        false
    }
}

/// A logout ends the event stream its token opened within a couple of
/// seconds (the feed's poll, then the filter's next look at its open
/// streams), while another session's stream flows on. Before, a stream let
/// through once flowed for as long as the backend kept it open.
#[test]
fn a_logout_ends_the_open_stream_its_token_opened() {
    let st = stack();
    st.sign_up("alice@streams.test");
    st.sign_up("bob@streams.test");
    let alice = st.sign_in("alice@streams.test");
    let bob = st.sign_in("bob@streams.test");
    let mut alices = Events::open(&st, &alice);
    let mut bobs = Events::open(&st, &bob);

    st.logout(&alice);
    assert!(
        alices.ends_within(Duration::from_secs(5)),
        "alice's stream still flows after her logout"
    );
    assert_eq!(
        bobs.next_ticks(Duration::from_secs(2)),
        Some(true),
        "bob's flows on"
    );
    assert!(st.envoy.stat("streams_ended") >= 1);
    assert!(st.refused("/api/events", &alice));
}

/// A request still in flight when its token is revoked was let through
/// before the revocation arrived, and the backend is acting on it: it gets
/// its answer (the logout request itself is one). Before, the filter's next
/// look at its open streams cut it off, and the client saw a reset.
#[test]
fn a_request_in_flight_when_its_token_is_revoked_gets_its_answer() {
    let st = stack();
    st.sign_up("erin@streams.test");
    let erin = st.sign_in("erin@streams.test");
    std::thread::scope(|s| {
        let slow = s.spawn(|| st.call("/api/slow", &erin));
        std::thread::sleep(Duration::from_millis(100));
        st.logout(&erin);
        let answer = slow.join().expect("the slow request was cut off");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, "done");
    });
    assert!(st.refused("/api/events", &erin));
    assert_eq!(st.envoy.stat("streams_ended"), 0);
}

/// One HTTP/2 connection carrying two sessions' event streams, as a CDN or
/// another proxy in front multiplexes many clients: a logout resets the one
/// stream its token opened, not the connection, so the other session's
/// stream flows on and the connection takes new requests.
#[test]
fn on_one_http2_connection_a_logout_resets_only_its_own_stream() {
    let st = stack();
    st.sign_up("carol@streams.test");
    st.sign_up("dave@streams.test");
    let carol = st.sign_in("carol@streams.test");
    let dave = st.sign_in("dave@streams.test");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", st.envoy.port))
            .await
            .unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let mut carols = h2_events(&mut client, &carol).await;
        let mut daves = h2_events(&mut client, &dave).await;

        let logout = carol.clone();
        let st = &st;
        std::thread::scope(|s| s.spawn(|| st.logout(&logout)).join().unwrap());
        assert!(
            h2_ends_within(&mut carols, Duration::from_secs(5)).await,
            "carol's stream still flows after her logout"
        );
        assert!(
            h2_ticks(&mut daves, Duration::from_secs(2)).await,
            "dave's stream, on the same connection, stopped with hers"
        );
        assert!(!connection.is_finished(), "the connection was closed");
        let mut again = h2_events(&mut client.ready().await.unwrap(), &dave).await;
        assert!(h2_ticks(&mut again, Duration::from_secs(2)).await);
    });
    assert!(st.envoy.stat("streams_ended") >= 1);
}

/// An event stream opened on `client` with the session's credentials; its first event arrived.
async fn h2_events(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    s: &Session,
) -> h2::RecvStream {
    let mut request =
        http::Request::get("http://127.0.0.1/api/events").header("accept", "text/event-stream");
    for (name, value) in s.headers() {
        request = request.header(name, value);
    }
    let (response, _) = client
        .send_request(request.body(()).unwrap(), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    assert!(
        h2_ticks(&mut body, Duration::from_secs(5)).await,
        "the stream flows"
    );
    body
}

/// Whether an event arrives on `body` within `within`.
async fn h2_ticks(body: &mut h2::RecvStream, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, body.data()).await,
        Ok(Some(Ok(chunk))) if { let _ = body.flow_control().release_capacity(chunk.len()); true }
    )
}

/// Whether `body` ends (reset or finished) within `within`, events read meanwhile.
async fn h2_ends_within(body: &mut h2::RecvStream, within: Duration) -> bool {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, body.data()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_))) => return true,
            Ok(Some(Ok(chunk))) => {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
        }
    }
}

/// The filter's configuration as an ECDS resource (as Istio's `WasmPlugin`
/// delivers it), version `version`.
fn ecds(filter: &serde_json::Value, version: u32) -> serde_json::Value {
    use serde_json::json;
    let doc = support::envoy_config(filter, &[], 1, 2);
    let wasm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"]
        .clone();
    json!({"version_info": version.to_string(), "resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": "authflow", "typed_config": wasm}]})
}

/// A change of the filter's configuration delivered by ECDS drains nothing:
/// a stream opened before it stays open on the filter instance it started
/// with. A logout must still end it.
#[test]
fn a_logout_ends_a_stream_opened_before_a_configuration_change() {
    use serde_json::json;
    use support::{eventually, free_port, Envoy};
    let issuer = "http://authflow.streams-e2e";
    let auth = support::AuthService::start(issuer, &[]);
    let source = event_source();
    let dir = std::env::temp_dir().join(format!(
        "authflow-ecds-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ecds.json");
    let push = |doc: &serde_json::Value| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, doc.to_string()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let filter = filter_config(issuer);
    push(&ecds(&filter, 1));
    let clusters = vec![
        ("backend".to_owned(), source),
        ("authflow_auth".to_owned(), auth.port),
    ];
    let p = path.clone();
    let envoy = Envoy::start_doc(2, move |port, admin| {
        let routes = support::routes_to(
            "authflow_auth",
            &["/v1/auth/", "/v1/admin/", "/.well-known/", "/auth/"],
        );
        let mut doc =
            support::envoy_config_with_routes(&json!({}), &clusters, &routes, port, admin);
        doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"][0] = json!({"name": "authflow", "config_discovery": {
                "config_source": {"path_config_source": {"path": p.to_string_lossy()},
                    "resource_api_version": "V3"},
                "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]}});
        doc["node"] = json!({"id": "streams", "cluster": "streams"});
        doc
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let st = Stack::from_parts(
        auth,
        envoy,
        authflow_echo::EchoServer::start("127.0.0.1:0").unwrap(),
    );
    st.sign_up("carol@streams.test");
    let carol = st.sign_in("carol@streams.test");
    let mut carols = Events::open(&st, &carol);

    let reloads = || {
        st.envoy
            .envoy_stat("extension_config_discovery.http_filter.authflow.config_reload")
    };
    let before = reloads();
    let mut changed = filter.clone();
    changed["clock_skew_secs"] = json!(1);
    push(&ecds(&changed, 2));
    assert!(
        eventually(Duration::from_secs(10), || reloads() > before),
        "the new configuration was taken: {}",
        st.envoy.log()
    );
    assert_eq!(
        carols.next_ticks(Duration::from_secs(2)),
        Some(true),
        "it flows on"
    );
    st.logout(&carol);
    assert!(
        carols.ends_within(Duration::from_secs(6)),
        "carol's stream, opened before the configuration change, still flows after her logout"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A signing key whose private half leaked is withdrawn: the stream a token
/// it signed opened ends once the filter's key set has lost the key (the
/// early fetch the successor's first token brings), not when that token
/// expires, which a forger holding the key sets as far off as the filter
/// allows. Another session's stream, of the successor key, flows on.
#[test]
fn a_stream_ends_when_the_key_that_signed_its_token_is_withdrawn() {
    let st = stack();
    st.sign_up("kim@streams.test");
    let kim = st.sign_in("kim@streams.test");
    let mut kims = Events::open(&st, &kim);
    let leaked = kim.kid();
    let out = st.auth.cli(&["keys", "withdraw", "--kid", &leaked]);
    assert!(out.contains(&leaked), "{out}");
    // The running service signs with the successor within its key reload.
    let mut after = st.sign_in("kim@streams.test");
    for _ in 0..20 {
        if after.kid() != leaked {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        after = st.sign_in("kim@streams.test");
    }
    assert_ne!(after.kid(), leaked, "the successor signs");
    assert_eq!(
        st.call("/api/slow", &after).status,
        200,
        "the successor's token passes (the filter fetched the new key set)"
    );
    assert!(
        kims.ends_within(Duration::from_secs(5)),
        "the stream of the withdrawn key's token still flows"
    );
    assert!(st.envoy.stat("streams_ended") >= 1);
}
