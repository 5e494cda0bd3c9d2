//! A TCP relay to the database, standing for the network path to it: it can
//! silence every connection open through it ([`Relay::cut`]: a primary gone
//! with its host, a partition, a virtual IP moved to the promoted standby)
//! or carry bytes slowly ([`Relay::throttle`]: a database far away, or a
//! link shared with bulk traffic).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub struct Relay {
    pub port: u16,
    cut_before: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
    /// Bytes a second each direction of each connection carries; 0: as fast as it can.
    rate: Arc<AtomicU64>,
}

impl Relay {
    /// A relay on a free port of 127.0.0.1 to `host:port`.
    pub async fn start(host: &str, port: u16) -> Self {
        let to = (host.to_owned(), port);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            cut_before: Arc::new(AtomicU64::new(0)),
            next: Arc::new(AtomicU64::new(1)),
            rate: Arc::new(AtomicU64::new(0)),
        };
        let (cut, next, rate) = (
            Arc::clone(&relay.cut_before),
            Arc::clone(&relay.next),
            Arc::clone(&relay.rate),
        );
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let id = next.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = tokio::net::TcpStream::connect((to.0.as_str(), to.1)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (r, w) in [
                    (
                        Box::new(cr) as Box<dyn AsyncRead + Send + Unpin>,
                        Box::new(sw) as Box<dyn AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    tokio::spawn(pass_on(id, r, w, Arc::clone(&cut), Arc::clone(&rate)));
                }
            }
        });
        relay
    }

    /// Silences every connection open now; new ones go through.
    pub fn cut(&self) {
        self.cut_before
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// From now on, every connection carries at most `bytes_per_sec` each way.
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::SeqCst);
    }
}

/// Copies one direction of connection `id`.
async fn pass_on(
    id: u64,
    mut r: Box<dyn AsyncRead + Send + Unpin>,
    mut w: Box<dyn AsyncWrite + Send + Unpin>,
    cut_before: Arc<AtomicU64>,
    rate: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let rate = rate.load(Ordering::SeqCst);
        // Throttled: small chunks, so the bytes come at a steady pace.
        let chunk = if rate == 0 { buf.len() } else { 1024 };
        let Ok(k) = r.read(&mut buf[..chunk]).await else {
            return;
        };
        if k == 0 {
            return;
        }
        if id < cut_before.load(Ordering::SeqCst) {
            // Silenced: hold both ends open, relay nothing.
            std::future::pending::<()>().await;
        }
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(k as f64 / rate as f64)).await;
        }
        if w.write_all(&buf[..k]).await.is_err() {
            return;
        }
    }
}
