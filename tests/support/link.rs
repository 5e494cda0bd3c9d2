//! A TCP link on 127.0.0.1 to a local port, which a test can kill the way a
//! replica's container is killed: the connections across it are closed (the
//! process's kernel closes them), and its address stops answering, so a new
//! connection waits out the connect timeout instead of being refused (the
//! container's address is gone with it).

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
    /// Every socket of the link, so that killing or dropping it ends them all.
    sockets: Mutex<Vec<TcpStream>>,
}

/// The request line of a poll of the revocation feed.
const FEED_POLL: &[u8] = b"GET /v1/revocations";

impl Link {
    /// A link from a new port on 127.0.0.1 to 127.0.0.1:`to`.
    pub fn start(to: u16) -> Link {
        // The smallest accept queue, so that a few connections fill it once
        // the link is dead: then the kernel drops new connections' SYNs.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(1).unwrap();
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
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let polling = Arc::new(AtomicBool::new(false));
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
                    let (st, polling) = (st.clone(), polling.clone());
                    thread::spawn(move || pump(&st, from, into, upstream, &polling));
                }
                st.sockets.lock().unwrap().extend([client, server]);
            }
        });
        Link { port, state }
    }

    /// Closes every connection across the link, and from now on a new one
    /// waits until its connect timeout.
    pub fn kill(&self) {
        self.state.dead.store(true, Ordering::SeqCst);
        for s in self.state.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.state.held_polls.store(0, Ordering::SeqCst);
        // One connection the accepting thread takes and holds, two that fill its queue.
        let mut fillers = Vec::new();
        for _ in 0..3 {
            if let Ok(s) = TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], self.port)),
                Duration::from_millis(200),
            ) {
                fillers.push(s);
            }
        }
        self.state.sockets.lock().unwrap().extend(fillers);
    }

    /// Polls of the revocation feed held across the link right now.
    pub fn held_polls(&self) -> usize {
        self.state.held_polls.load(Ordering::SeqCst)
    }
}

/// Copies `from` into `into` until either side closes.
fn pump(
    st: &LinkState,
    mut from: TcpStream,
    mut into: TcpStream,
    upstream: bool,
    polling: &AtomicBool,
) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if st.dead.load(Ordering::SeqCst) {
            break;
        }
        if upstream && buf[..n].starts_with(FEED_POLL) && !polling.swap(true, Ordering::SeqCst) {
            st.held_polls.fetch_add(1, Ordering::SeqCst);
        }
        if !upstream && polling.swap(false, Ordering::SeqCst) {
            answered(st);
        }
        if into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = into.shutdown(Shutdown::Both);
    if polling.swap(false, Ordering::SeqCst) {
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
        for s in self.state.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread so that it sees `dropped`.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        );
    }
}
