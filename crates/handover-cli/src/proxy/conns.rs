//! Keep-alive HTTP/1.1 connections to one worker, for the relay. A connection is put back
//! once its response has been read to the end; each proxy thread keeps its own idle list
//! (a connection is registered with the reactor of the thread that opened it), and a retired
//! pool (the worker is draining) keeps nothing, so the old worker sees its idle connections
//! close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Waker};

use tokio::net::TcpStream;

use super::inbuf::Inbuf;

/// Most idle connections kept per worker and proxy thread.
const MAX_IDLE: usize = 256;
/// Idle lists per worker: one per proxy thread (up to this many).
const SLOTS: usize = 16;

/// A connection to a worker, with what has been read from it.
#[derive(Debug)]
pub struct UpConn {
    /// The connection.
    pub stream: TcpStream,
    /// Read but not yet passed on (empty while idle).
    pub buf: Inbuf,
    /// It had served a request before: the worker may have closed it meanwhile.
    pub reused: bool,
}

/// The idle connections to one worker.
#[derive(Debug)]
pub struct Conns {
    addr: SocketAddr,
    idle: [Mutex<Vec<UpConn>>; SLOTS],
    retired: AtomicBool,
}

impl Conns {
    /// No connections to `addr` yet.
    pub fn new(addr: SocketAddr) -> Conns {
        Conns {
            addr,
            idle: std::array::from_fn(|_| Mutex::new(Vec::new())),
            retired: AtomicBool::new(false),
        }
    }

    /// An idle connection of this thread's that is not known to be closed.
    pub fn take(&self) -> Option<UpConn> {
        let mut idle = self.lock(super::thread_index() % SLOTS);
        while let Some(c) = idle.pop() {
            // An idle connection has nothing to read: readable means the worker closed it
            // (or broke the protocol). Checked against the reactor's last word, no syscall.
            let mut cx = Context::from_waker(Waker::noop());
            if c.stream.poll_read_ready(&mut cx).is_pending() {
                return Some(UpConn { reused: true, ..c });
            }
        }
        None
    }

    /// A new connection.
    pub async fn connect(&self) -> std::io::Result<UpConn> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(UpConn {
            stream,
            buf: Inbuf::new(),
            reused: false,
        })
    }

    /// Keeps `c` (idle, its response read to the end) for a next request on this thread.
    pub fn put_back(&self, c: UpConn) {
        if !c.buf.is_empty() {
            return; // the worker sent more than its response: not to be trusted again
        }
        let mut idle = self.lock(super::thread_index() % SLOTS);
        // Checked under the lock: `retire` sets the flag before it empties the lists.
        if !self.retired.load(Ordering::SeqCst) && idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    /// Closes the idle connections and keeps no more.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        for slot in 0..SLOTS {
            let drained: Vec<UpConn> = std::mem::take(&mut *self.lock(slot));
            drop(drained);
        }
    }

    fn lock(&self, slot: usize) -> std::sync::MutexGuard<'_, Vec<UpConn>> {
        self.idle[slot].lock().unwrap_or_else(|p| p.into_inner())
    }
}
