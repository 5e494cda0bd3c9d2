//! A TCP link on 127.0.0.1 to a local port, which a test can kill the way
//! Docker kills a replica's container: the connections it carried end (the
//! process's kernel closes them) and its address stops answering, so a new
//! connection waits out the connect timeout instead of being refused (the
//! container's address is gone with it). Envoy's health probe learns of it
//! only when a probe times out (as in the compose stack, a second or two
//! after the kill): the connection the probes use is left silent. That is
//! the window in which requests meet the dead address.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

pub struct Link {
    pub port: u16,
    state: Arc<LinkState>,
}

#[derive(Default)]
struct LinkState {
    dead: AtomicBool,
    dropped: AtomicBool,
    /// Requests for the revocation feed sent across and not yet answered.
    held_polls: AtomicUsize,
    /// The connections carried: both sockets, and whether health probes use it.
    carried: Mutex<Vec<([TcpStream; 2], Arc<Connection>)>>,
    /// Connections made after the kill, left unanswered.
    unanswered: Mutex<Vec<TcpStream>>,
}

/// What is known of one carried connection.
#[derive(Default)]
struct Connection {
    /// Health probes (`GET /readyz`) went across it.
    probes: AtomicBool,
    /// A poll of the revocation feed is waiting for its answer.
    polling: AtomicBool,
}

/// The listening socket's backlog: room for Envoy's connections while alive.
const BACKLOG: i32 = 32;

/// The request lines told apart.
const FEED_POLL: &[u8] = b"GET /v1/revocations";
const HEALTH_PROBE: &[u8] = b"GET /readyz";

impl Link {
    /// A link from a new port on 127.0.0.1 to 127.0.0.1:`to`.
    pub fn start(to: u16) -> Link {
        // A short accept queue, which `kill` fills: then the kernel drops new
        // connections' SYNs.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(BACKLOG).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(LinkState::default());
        let st = state.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                while st.dead.load(Ordering::SeqCst) && !st.dropped.load(Ordering::SeqCst) {
                    // Accepts nothing more: the queue fills behind this one.
                    thread::sleep(Duration::from_millis(50));
                }
                if st.dropped.load(Ordering::SeqCst) {
                    return;
                }
                let server = TcpStream::connect(("127.0.0.1", to));
                if st.dead.load(Ordering::SeqCst) || server.is_err() {
                    st.unanswered.lock().unwrap().push(client);
                    continue;
                }
                let server = server.unwrap();
                let connection = Arc::new(Connection::default());
                for (from, into, upstream) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    ),
                    (
                        server.try_clone().unwrap(),
                        client.try_clone().unwrap(),
                        false,
                    ),
                ] {
                    let (st, connection) = (st.clone(), connection.clone());
                    thread::spawn(move || pump(&st, from, into, upstream, &connection));
                }
                st.carried
                    .lock()
                    .unwrap()
                    .push(([client, server], connection));
            }
        });
        Link { port, state }
    }

    /// Ends the connections the link carried (but the probes'), and from now
    /// on a new connection waits until its connect timeout.
    pub fn kill(&self) {
        self.state.dead.store(true, Ordering::SeqCst);
        // One connection the accepting thread takes and holds, then as many as
        // its queue holds (the backlog and one more): full once two connections
        // in a row get no answer (one may be only slow on a busy machine).
        let mut fillers = Vec::new();
        let mut unanswered = 0;
        while unanswered < 2 {
            match TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], self.port)),
                Duration::from_millis(250),
            ) {
                Ok(s) => {
                    fillers.push(s);
                    unanswered = 0;
                }
                Err(_) => unanswered += 1,
            }
            assert!(
                fillers.len() < 4 * BACKLOG as usize,
                "the link's queue never filled"
            );
        }
        self.state.unanswered.lock().unwrap().extend(fillers);
        // Only then the connections it carried: new ones Envoy opens in their
        // place find the queue full.
        for (sockets, connection) in self.state.carried.lock().unwrap().iter() {
            if !connection.probes.load(Ordering::SeqCst) {
                for s in sockets {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
        self.state.held_polls.store(0, Ordering::SeqCst);
    }

    /// Polls of the revocation feed held across the link right now.
    pub fn held_polls(&self) -> usize {
        self.state.held_polls.load(Ordering::SeqCst)
    }
}

/// Copies `from` into `into` until either side closes; once the link is
/// dead, a probes' connection only swallows what comes.
fn pump(st: &LinkState, mut from: TcpStream, mut into: TcpStream, upstream: bool, c: &Connection) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if st.dead.load(Ordering::SeqCst) {
            if c.probes.load(Ordering::SeqCst) {
                continue;
            }
            break;
        }
        if upstream && buf[..n].starts_with(HEALTH_PROBE) {
            c.probes.store(true, Ordering::SeqCst);
        }
        if upstream && buf[..n].starts_with(FEED_POLL) && !c.polling.swap(true, Ordering::SeqCst) {
            st.held_polls.fetch_add(1, Ordering::SeqCst);
        }
        if !upstream && c.polling.swap(false, Ordering::SeqCst) {
            answered(st);
        }
        if into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if !(st.dead.load(Ordering::SeqCst) && c.probes.load(Ordering::SeqCst)) {
        let _ = into.shutdown(Shutdown::Both);
    }
    if c.polling.swap(false, Ordering::SeqCst) {
        answered(st);
    }
}

/// A held poll was answered or its connection ended (none below zero: `kill` forgot them all).
fn answered(st: &LinkState) {
    let _ = st
        .held_polls
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.dropped.store(true, Ordering::SeqCst);
        for (sockets, _) in self.state.carried.lock().unwrap().drain(..) {
            for s in sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for s in self.state.unanswered.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread so that it sees `dropped`.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        );
    }
}
