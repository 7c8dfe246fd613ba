//! Keep-alive HTTP/1.1 connections to one worker. A connection goes back to the pool once its
//! response has been read to the end (hyper's `ready()` resolves then); a retired pool (the
//! worker is draining) keeps nothing, so the old worker sees its idle connections close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The body of a request sent upstream.
pub type ReqBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Most idle connections kept per worker and proxy thread.
const MAX_IDLE: usize = 256;
/// Idle lists per worker: one per proxy thread (up to this many), so that a connection is
/// used from the thread that drives it.
const SLOTS: usize = 16;

/// The idle connections to one worker.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    idle: [Mutex<Vec<SendRequest<ReqBody>>>; SLOTS],
    retired: AtomicBool,
}

/// A connection taken from the pool (or new).
#[derive(Debug)]
pub struct Conn {
    /// Sends one request at a time.
    pub sender: SendRequest<ReqBody>,
    /// It had served a request before: the worker may have closed it meanwhile.
    pub reused: bool,
}

impl Pool {
    /// An empty pool of connections to `addr`.
    pub fn new(addr: SocketAddr) -> Pool {
        Pool {
            addr,
            idle: std::array::from_fn(|_| Mutex::new(Vec::new())),
            retired: AtomicBool::new(false),
        }
    }

    /// An idle connection that is still open, else a new one (`fresh`: always a new one).
    pub async fn get(&self, fresh: bool) -> std::io::Result<Conn> {
        if !fresh {
            let own = super::thread_index() % SLOTS;
            // This thread's own first, then any other's rather than a new connection.
            let mut slot = own;
            loop {
                let Some(mut sender) = self.lock(slot).pop() else {
                    slot = (slot + 1) % SLOTS;
                    if slot == own {
                        break;
                    }
                    continue;
                };
                // A connection put back as its response ended may not have gone idle yet
                // (its task has yet to see the end): it will in a moment, or turn out closed.
                if sender.is_ready() || sender.ready().await.is_ok() {
                    return Ok(Conn {
                        sender,
                        reused: true,
                    });
                }
            }
        }
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection: {e}");
            }
        });
        Ok(Conn {
            sender,
            reused: false,
        })
    }

    /// Puts `sender` back now: its response has been read to the end and its request had
    /// no body left to send, so it is idle (or about to be, see [`Pool::get`]).
    pub fn put_back(&self, sender: SendRequest<ReqBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock(super::thread_index() % SLOTS);
        // Checked under the lock: `retire` sets the flag before it empties the pool.
        if !self.retired.load(Ordering::SeqCst) && idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// Puts `sender` back once its response has been read to the end.
    pub fn put_back_when_ready(self: &Arc<Self>, mut sender: SendRequest<ReqBody>) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put_back(sender);
            }
        });
    }

    /// Closes the idle connections and keeps no more.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        for slot in 0..SLOTS {
            self.lock(slot).clear();
        }
    }

    fn lock(&self, slot: usize) -> std::sync::MutexGuard<'_, Vec<SendRequest<ReqBody>>> {
        self.idle[slot].lock().unwrap_or_else(|p| p.into_inner())
    }
}
