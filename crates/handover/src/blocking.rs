//! The listener for a server without an async runtime: a thread per connection on
//! `std::net` streams, with the same drain as the rest of the library.
//!
//! [`Listener::into_blocking`] turns a listener into a [`BlockingListener`], whose
//! [`accept`](BlockingListener::accept) blocks the calling thread. When this process stops
//! accepting (a handover, a pause for one, a graceful stop) the thread is woken at once and
//! takes no further connection, though none arrives: it waits in `poll(2)` on the listening
//! socket and on an eventfd that the phase change rings. The shared socket is never
//! `shutdown(2)`, which would end accepting for every generation that holds it.
//!
//! Every [`BlockingConnection`] counts for the drain until it is dropped, so
//! [`crate::Running::wait`] waits for the connection threads, up to the drain deadline. A
//! keep-alive server learns it is draining from [`BlockingConnection::is_draining`] (answer
//! with `Connection: close` from then on) and waits for the next request with
//! [`BlockingConnection::wait_request`], which tells it to close a connection that stays idle
//! for the idle grace ([`crate::Builder::idle_grace`]) once the drain has begun: the drain of
//! `handover::http`, for a server that parses HTTP itself. `examples/blocking.rs` is one.
//!
//! Call these from threads of your own (`std::thread::spawn`), not from async tasks: the
//! accept waits on the library's accept gate with a blocking lock, which panics inside a
//! tokio runtime.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::drain::{ConnGuard, DrainReason, DrainSignal, Phase, PhaseBells};
use crate::listener::{Listener, Peer};
use crate::os::{self, AcceptError};

impl Listener {
    /// This listener for threads that block: see [`BlockingListener`]. Fails only if the
    /// eventfds it waits on cannot be created (out of file descriptors).
    pub fn into_blocking(self) -> io::Result<BlockingListener> {
        let bells = self.shared.phase_bells()?;
        Ok(BlockingListener {
            listener: self,
            bells,
        })
    }
}

/// A [`Listener`] whose [`accept`](Self::accept) blocks the calling thread. Clone it to
/// accept from several threads.
#[derive(Debug, Clone)]
pub struct BlockingListener {
    listener: Listener,
    bells: Arc<PhaseBells>,
}

impl BlockingListener {
    /// The address this socket is bound to (with the real port when `0` was asked for).
    pub fn local_addr(&self) -> &crate::ListenAddr {
        self.listener.local_addr()
    }

    /// The name under which the socket is passed to the next generation (`LISTEN_FDNAMES`).
    pub fn name(&self) -> &str {
        self.listener.name()
    }

    /// Waits for the next connection; `None` once a graceful stop has begun.
    ///
    /// Like [`Listener::accept`]: nothing is accepted before [`crate::Handover::ready`] has
    /// completed nor while handing over, and after a handover this keeps waiting instead of
    /// returning, since the process takes the listeners back should its successor crash
    /// while it drains; the process ends when [`crate::Running::wait`] returns. Leaving the
    /// serving phase wakes a thread blocked here at once, with no connection needed.
    ///
    /// An `Err` is a failed `accept(2)` other than a peer that went away (those are retried
    /// here), after the library's pause for it; the listener stays usable.
    pub fn accept(&self) -> Option<io::Result<(BlockingConnection, Peer)>> {
        let shared = &self.listener.shared;
        loop {
            let phase = shared.wait_phase_blocking(|p| {
                matches!(
                    p,
                    Phase::Serving
                        | Phase::Draining {
                            reason: DrainReason::Stopped,
                            ..
                        }
                )
            });
            if matches!(phase, Phase::Draining { .. }) {
                return None;
            }
            // Held while this thread may accept: whoever leaves `Serving` rings the bell,
            // then takes the write side, and so knows no accept is in progress once it has.
            let _gate = shared.accept_gate.blocking_read();
            if !matches!(*shared.phase.borrow(), Phase::Serving) {
                continue;
            }
            let [incoming, leaving] =
                match os::poll_readable([self.listener.as_fd(), self.bells.not_serving.fd()], None)
                {
                    Ok(ready) => ready,
                    Err(e) => return Some(Err(e)),
                };
            if leaving || !incoming {
                continue;
            }
            match os::accept_blocking_socket(self.listener.as_fd()) {
                Ok((socket, peer)) => {
                    let guard = shared.track();
                    let (io, peer) = match peer.as_socket() {
                        Some(addr) => {
                            let s = TcpStream::from(socket);
                            // Small responses should not wait for Nagle's algorithm.
                            let _ = s.set_nodelay(true);
                            (Stream::Tcp(s), Peer::Tcp(addr))
                        }
                        None => (Stream::Unix(UnixStream::from(socket)), Peer::Unix),
                    };
                    let bells = Arc::clone(&self.bells);
                    return Some(Ok((BlockingConnection { io, guard, bells }, peer)));
                }
                // Another generation or thread took it first.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => match os::after_accept_error_blocking("blocking listener", &e) {
                    AcceptError::PeerGone => continue,
                    _ => return Some(Err(e)),
                },
            }
        }
    }
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// What [`BlockingConnection::wait_request`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The peer sent something (or closed, or the connection failed): read it.
    Readable,
    /// The process is draining and the connection stayed idle for the idle grace (or the
    /// drain deadline came): close it.
    Close,
}

/// A connection accepted by a [`BlockingListener`], in blocking mode. It counts as live for
/// the drain until it is dropped; read and write it as a stream (`&BlockingConnection` too).
#[derive(Debug)]
pub struct BlockingConnection {
    io: Stream,
    guard: ConnGuard,
    bells: Arc<PhaseBells>,
}

impl BlockingConnection {
    /// Whether this process has started draining. A server that can tell its peer to go
    /// elsewhere does so from then on (HTTP/1: `Connection: close` on the next response).
    pub fn is_draining(&self) -> bool {
        self.guard.shared().is_draining()
    }

    /// A handle on the drain that outlives the connection (it is cheap to clone).
    pub fn drain_signal(&self) -> DrainSignal {
        DrainSignal::new(Arc::clone(self.guard.shared()))
    }

    /// Blocks until the peer sends something ([`Next::Readable`]), or, once this process is
    /// draining, until the connection has been idle for the idle grace
    /// ([`crate::Builder::idle_grace`], counted from when the drain began or from this call,
    /// whichever is later) or the drain deadline has come ([`Next::Close`]).
    ///
    /// Call it between requests: a request in progress is never cut short, and a busy
    /// keep-alive client, told `Connection: close`, leaves before the grace is over. The
    /// drain's start wakes a thread blocked here at once.
    pub fn wait_request(&self) -> io::Result<Next> {
        let shared = self.guard.shared();
        loop {
            if let Some(deadline) = shared.drain_deadline() {
                let left = deadline
                    .into_std()
                    .saturating_duration_since(Instant::now());
                let [readable] =
                    os::poll_readable([self.as_fd()], Some(shared.idle_grace.min(left)))?;
                return Ok(if readable {
                    Next::Readable
                } else {
                    Next::Close
                });
            }
            let [readable, _draining] =
                os::poll_readable([self.as_fd(), self.bells.draining.fd()], None)?;
            if readable {
                return Ok(Next::Readable);
            }
            // Else the drain began (or a resume silenced the bell again): look again.
        }
    }

    /// The TCP stream, when this is a TCP connection.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.io {
            Stream::Tcp(s) => Some(s),
            Stream::Unix(_) => None,
        }
    }

    /// The Unix stream, when this is a connection on a Unix socket.
    pub fn as_unix(&self) -> Option<&UnixStream> {
        match &self.io {
            Stream::Unix(s) => Some(s),
            Stream::Tcp(_) => None,
        }
    }

    /// Bounds each read (`None`: no bound), as `TcpStream::set_read_timeout`.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.io {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    /// Bounds each write (`None`: no bound), as `TcpStream::set_write_timeout`.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.io {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    /// Shuts down one or both directions of this connection (not the listening socket).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match &self.io {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl AsFd for BlockingConnection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.io {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for &BlockingConnection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.io {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &BlockingConnection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.io {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &self.io {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for BlockingConnection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for BlockingConnection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
