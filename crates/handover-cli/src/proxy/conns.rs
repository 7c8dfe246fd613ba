//! The relay's keep-alive connections to workers. A worker connection belongs to one client
//! connection for its whole life: it is never handed to another client, so that whatever a
//! worker sends on it (a late answer, an answer to a request the worker read where the proxy
//! saw none) can only ever reach the client whose bytes it came from. While it is idle, bytes
//! or a close from the worker mark it poisoned and it is closed at once; it is also closed when
//! its worker is retired (so the old worker sees its idle connections go) or when its client
//! goes away.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::net::TcpStream;

use super::cut::Wait;
use super::inbuf::Inbuf;
use super::upstream::Upstream;

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

impl UpConn {
    /// A new connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<UpConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(UpConn {
            stream,
            buf: Inbuf::new(),
            reused: false,
        })
    }
}

/// A client connection's idle worker connection, kept for its next request.
#[derive(Debug)]
pub struct Held {
    conn: UpConn,
    up: Arc<Upstream>,
    /// Resolves when the worker is retired (registered once, not per request).
    retired: Wait,
}

/// Why an idle connection was let go.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The worker closed it (or reset it).
    Closed,
    /// The worker sent bytes with no request outstanding.
    Unsolicited(usize),
    /// The worker is being retired.
    Retired,
}

impl Held {
    /// Keeps `conn` (idle: its response read to the end, nothing more read) to `up`; `None`
    /// if it cannot be kept.
    pub fn keep(conn: UpConn, up: Arc<Upstream>) -> Option<Held> {
        if !conn.buf.is_empty() || up.is_retired() {
            return None; // the worker sent more than its response: not to be trusted again
        }
        let retired = up.retired();
        Some(Held { conn, up, retired })
    }

    /// The connection, for a request to worker `up` that this one is still clean for: it
    /// goes to the same worker, and nothing is known to have arrived on it.
    pub fn take_for(self, up: &Upstream) -> Option<UpConn> {
        if self.up.id != up.id {
            return None;
        }
        let mut cx = Context::from_waker(Waker::noop());
        // Idle, it has nothing to read: readable means closed or poisoned. Checked against
        // the reactor's last word, no syscall.
        if self.conn.stream.poll_read_ready(&mut cx).is_ready() {
            return None;
        }
        Some(UpConn {
            reused: true,
            ..self.conn
        })
    }

    /// Resolves when the connection must be dropped: the worker closed it, sent bytes
    /// unasked, or is retired. A wake-up with nothing to read is not one of these (it waits
    /// on).
    pub fn watch(&mut self) -> impl Future<Output = Dropped> + '_ {
        std::future::poll_fn(move |cx| self.poll_watch(cx))
    }

    fn poll_watch(&mut self, cx: &mut Context<'_>) -> Poll<Dropped> {
        if Pin::new(&mut self.retired).poll(cx).is_ready() {
            return Poll::Ready(Dropped::Retired);
        }
        loop {
            if self.conn.stream.poll_read_ready(cx).is_pending() {
                return Poll::Pending;
            }
            let mut probe = [0u8; 512];
            match self.conn.stream.try_read(&mut probe) {
                Ok(0) => return Poll::Ready(Dropped::Closed),
                Ok(n) => return Poll::Ready(Dropped::Unsolicited(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Poll::Ready(Dropped::Closed),
            }
        }
    }

    /// The worker this connection goes to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.up
    }
}
