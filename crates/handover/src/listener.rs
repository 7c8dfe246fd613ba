//! Listening sockets: bind new ones, validate inherited ones, match requests to them, and
//! accept connections only while this generation is the one serving.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::addr::ListenAddr;
use crate::drain::{ConnGuard, DrainReason, DrainSignal, Phase, ServingState};
use crate::env::InheritedFd;
use crate::error::Error;
use crate::os;

/// A socket received from the previous generation (or systemd), checked but not yet claimed.
#[derive(Debug)]
pub(crate) struct InheritedSocket {
    pub socket: Socket,
    pub name: Option<String>,
    pub addr: ListenAddr,
    /// The lineage created its socket file, so the final generation removes it.
    pub owned: bool,
}

/// Checks that each inherited fd is a socket we can serve (a listening stream socket, or a UDP
/// socket as systemd's `ListenDatagram=` passes it), and takes ownership of it (close-on-exec,
/// non-blocking). Which kind was asked for is checked when it is claimed.
pub(crate) fn adopt_inherited(
    fds: &[InheritedFd],
    owned: &[RawFd],
) -> Result<Vec<InheritedSocket>, Error> {
    let mut out = Vec::with_capacity(fds.len());
    for f in fds {
        let bad = |reason: String| Error::Inherited {
            fd: f.fd,
            name: f.name.clone(),
            reason,
        };
        match os::is_socket(f.fd) {
            Err(e) => return Err(bad(format!("is not open ({e})"))),
            Ok(false) => return Err(bad("is not a socket".into())),
            Ok(true) => {}
        }
        let socket: Socket = os::claim_inherited(f.fd);
        // Until validation passes, do not close an fd we may not end up owning.
        let socket = scopeguard_forget_on_error(socket, |s| {
            let kind = s.r#type()?;
            if kind == Type::STREAM {
                if !s.is_listener()? {
                    return Ok(Err("is a socket that is not listening".to_string()));
                }
            } else if kind != Type::DGRAM {
                return Ok(Err("is neither a stream nor a datagram socket".to_string()));
            }
            s.set_cloexec(true)?;
            // O_NONBLOCK is shared by every process holding this socket; tokio needs it, and
            // every generation of a handover server sets it the same way.
            s.set_nonblocking(true)?;
            Ok(Ok(()))
        })
        .map_err(&bad)?;
        let local = socket
            .local_addr()
            .map_err(|e| bad(format!("has no local address: {e}")))?;
        let datagram = socket.r#type().is_ok_and(|t| t == Type::DGRAM);
        let addr = match (sockaddr_to_listen_addr(&local), datagram) {
            (Some(ListenAddr::Tcp(sa)), true) => ListenAddr::Udp(sa),
            (Some(ListenAddr::Unix(_)), true) => {
                return Err(bad(
                    "is a Unix datagram socket; only UDP datagram sockets are served".into(),
                ))
            }
            (Some(addr), _) => addr,
            (None, true) => return Err(bad("is a datagram socket that is not UDP".into())),
            (None, false) => return Err(bad("is neither a TCP nor a Unix socket".into())),
        };
        out.push(InheritedSocket {
            socket,
            name: f.name.clone(),
            addr,
            owned: owned.contains(&f.fd),
        });
    }
    Ok(out)
}

/// Runs checks on a freshly wrapped socket; on failure the fd is released without closing, so
/// an fd that is not ours stays as it was.
fn scopeguard_forget_on_error(
    socket: Socket,
    check: impl FnOnce(&Socket) -> io::Result<Result<(), String>>,
) -> Result<Socket, String> {
    match check(&socket) {
        Ok(Ok(())) => Ok(socket),
        Ok(Err(reason)) => {
            std::mem::forget(socket);
            Err(reason)
        }
        Err(e) => {
            std::mem::forget(socket);
            Err(format!("cannot be inspected: {e}"))
        }
    }
}

/// The address of a stream socket (a datagram socket's IP address is made `Udp` by the caller).
fn sockaddr_to_listen_addr(a: &SockAddr) -> Option<ListenAddr> {
    if let Some(sa) = a.as_socket() {
        return Some(ListenAddr::Tcp(sa));
    }
    a.as_pathname().map(|p| ListenAddr::Unix(p.to_path_buf()))
}

/// Binds a new listening socket (for `Udp`, a bound datagram socket; `backlog` does not apply).
/// Returns it with the path of a Unix socket file it created.
pub(crate) fn bind(addr: &ListenAddr, backlog: i32) -> io::Result<(Socket, Option<PathBuf>)> {
    match addr {
        ListenAddr::Udp(sa) => Ok((os::bind_udp(*sa)?, None)),
        ListenAddr::Tcp(sa) => {
            let socket = Socket::new(Domain::for_address(*sa), Type::STREAM.cloexec(), None)?;
            // Lets a restarted server bind while old connections sit in TIME_WAIT.
            socket.set_reuse_address(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&SockAddr::from(*sa))?;
            socket.listen(backlog)?;
            Ok((socket, None))
        }
        ListenAddr::Unix(path) => {
            os::remove_stale_socket(path, "another process is listening on this socket")?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
            socket.set_nonblocking(true)?;
            socket.bind(&SockAddr::unix(path)?)?;
            socket.listen(backlog)?;
            Ok((socket, Some(path.clone())))
        }
    }
}

/// One listening socket of this process, shared by its [`Listener`] handle and the registry
/// the upgrade reads from.
#[derive(Debug)]
pub(crate) struct ListenerInner {
    pub addr: ListenAddr,
    pub name: String,
    pub io: ListenerIo,
    /// A socket file the lineage created: removed at the final stop, never at an upgrade.
    pub owned_path: Option<PathBuf>,
}

#[derive(Debug)]
pub(crate) enum ListenerIo {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl ListenerInner {
    pub(crate) fn from_socket(
        socket: Socket,
        addr: ListenAddr,
        name: String,
        owned_path: Option<PathBuf>,
    ) -> io::Result<Self> {
        let io = match addr {
            ListenAddr::Tcp(_) => ListenerIo::Tcp(TcpListener::from_std(socket.into())?),
            ListenAddr::Unix(_) => ListenerIo::Unix(UnixListener::from_std(socket.into())?),
            // `Handover::listen_named` hands datagram sockets to `Datagram` instead.
            ListenAddr::Udp(_) => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        };
        Ok(ListenerInner {
            addr,
            name,
            io,
            owned_path,
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        match &self.io {
            ListenerIo::Tcp(l) => l.as_raw_fd(),
            ListenerIo::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// A listening socket handed out by [`crate::Handover::listen`].
///
/// [`Listener::accept`] waits until [`crate::Handover::ready`] has completed, and returns
/// `None` once a graceful stop began (after a handover it waits, in case the process takes
/// over again). Every connection it returns is counted until dropped, so the drain knows when the
/// last one is done.
#[derive(Debug, Clone)]
pub struct Listener {
    pub(crate) inner: Arc<ListenerInner>,
    pub(crate) shared: Arc<ServingState>,
}

impl Listener {
    /// The address this socket is bound to (with the real port when `0` was asked for).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.inner.addr
    }

    /// The name under which the socket is passed to the next generation (`LISTEN_FDNAMES`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Accepts the next connection; `None` once a graceful stop has begun.
    ///
    /// After a handover it waits instead of returning: should the successor crash while this
    /// process still drains, this process takes the listeners back and accepts again (see the
    /// crate docs). The process ends when [`crate::Running::wait`] returns, not when this
    /// does.
    ///
    /// An `Err` is a failed `accept(2)` (for example `EMFILE`); the listener stays usable.
    pub async fn accept(&self) -> Option<io::Result<(Connection, Peer)>> {
        let mut phase = self.shared.phase.subscribe();
        loop {
            let now = *phase
                .wait_for(|p| {
                    matches!(
                        p,
                        Phase::Serving
                            | Phase::Draining {
                                reason: DrainReason::Stopped,
                                ..
                            }
                    )
                })
                .await
                .ok()?;
            if matches!(now, Phase::Draining { .. }) {
                return None;
            }
            // Leaving `Serving` (pause or drain) ends the wait for a connection, so that a
            // stop's `None` comes at once; the gate in `poll_accept_gated`, not this, is what
            // keeps a paused process from accepting.
            let leave = phase.wait_for(|p| !matches!(p, Phase::Serving));
            let accepted = tokio::select! {
                biased;
                _ = leave => continue,
                r = std::future::poll_fn(|cx| self.poll_accept_gated(cx)) => r,
            };
            if accepted.is_some() {
                return accepted;
            }
        }
    }

    /// One `accept(2)` attempt, only while serving: the phase is checked under the accept
    /// gate, which is held for this poll alone (see [`ServingState::accepts_stopped`]).
    /// `Ready(None)`: not serving (any more).
    ///
    /// The connection is counted before the gate is let go: a drain that has waited for the
    /// gate (a hand-off's pause, a stop) must find every connection accepted so far in the
    /// count, or it may end, and the process exit, with one accepted but not yet counted
    /// (its client gets a reset instead of an answer).
    fn poll_accept_gated(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<(Connection, Peer)>>> {
        let _gate = self
            .shared
            .accept_poll
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(*self.shared.phase.borrow(), Phase::Serving) {
            return Poll::Ready(None);
        }
        let r = match &self.inner.io {
            ListenerIo::Tcp(l) => l.poll_accept(cx).map_ok(|(s, peer)| {
                // Small responses should not wait for Nagle's algorithm.
                let _ = s.set_nodelay(true);
                (ConnIo::Tcp(s), Peer::Tcp(peer))
            }),
            ListenerIo::Unix(l) => l
                .poll_accept(cx)
                .map_ok(|(s, _)| (ConnIo::Unix(s), Peer::Unix)),
        };
        r.map(|r| {
            Some(r.map(|(io, peer)| {
                self.shared.note_accepted();
                let guard = self.shared.track();
                (Connection { io, guard }, peer)
            }))
        })
    }
}

/// The listening socket itself, for a server that accepts on its own (actix-web's
/// `HttpServer::listen` takes a `std::net::TcpListener`: give it a duplicate,
/// `listener.as_fd().try_clone_to_owned()`). Connections accepted that way bypass the
/// drain: such a server must stop accepting when [`crate::Running::draining`] resolves and
/// finish its own connections before [`crate::Running::wait`] lets the process end; see
/// `crates/handover-frameworks/examples/actix.rs`. Never `shutdown(2)` it, and keep it
/// non-blocking: both are shared with every generation that holds the socket.
impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self.inner` and stays open as long as `self` lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.inner.raw_fd()) }
    }
}

/// Who is on the other end of a [`Connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer.
    Tcp(std::net::SocketAddr),
    /// A peer on a Unix socket (usually unnamed).
    Unix,
}

#[derive(Debug)]
enum ConnIo {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An accepted connection. It counts as live for the drain until it is dropped.
#[derive(Debug)]
pub struct Connection {
    io: ConnIo,
    guard: ConnGuard,
}

impl Connection {
    /// Resolves when this process starts draining (stopping or handing over). A protocol
    /// that can say goodbye politely (a WebSocket close frame, a GOAWAY) should do so then.
    pub async fn draining(&self) {
        self.guard.shared().draining().await;
    }

    /// Whether this process has started draining.
    pub fn is_draining(&self) -> bool {
        self.guard.shared().is_draining()
    }

    /// A handle that outlives borrows of the connection (for example after splitting it).
    pub fn drain_signal(&self) -> DrainSignal {
        DrainSignal::new(Arc::clone(self.guard.shared()))
    }

    /// The TCP stream, when this is a TCP connection.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.io {
            ConnIo::Tcp(s) => Some(s),
            ConnIo::Unix(_) => None,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<ServingState> {
        self.guard.shared()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ConnIo::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ConnIo::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnIo::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_flush(cx),
            ConnIo::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ConnIo::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The `LISTEN_FDNAMES` prefix of the channels between generations that QUIC forwarding uses
/// (`quic/channel.rs` names them; a build without the `quic` feature closes them).
pub(crate) const CHANNEL_FD_PREFIX: &str = "quicfwd_g";

/// Claims the inherited channel fds: each must be an open socket; made close-on-exec.
pub(crate) fn adopt_channel_fds(
    fds: Vec<InheritedFd>,
) -> Result<Vec<(std::os::fd::OwnedFd, String)>, Error> {
    let mut out = Vec::with_capacity(fds.len());
    for f in fds {
        let bad = |reason: String| Error::Inherited {
            fd: f.fd,
            name: f.name.clone(),
            reason,
        };
        match os::is_socket(f.fd) {
            Err(e) => return Err(bad(format!("is not open ({e})"))),
            Ok(false) => return Err(bad("is not a socket".into())),
            Ok(true) => {}
        }
        let fd: std::os::fd::OwnedFd = os::claim_inherited(f.fd);
        socket2::SockRef::from(&fd)
            .set_cloexec(true)
            .map_err(|e| bad(format!("cannot set close-on-exec: {e}")))?;
        out.push((fd, f.name.clone().unwrap_or_default()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A runtime that nothing drives unless the test does, and a serving TCP listener on it.
    fn serving_listener() -> (
        tokio::runtime::Runtime,
        Arc<ServingState>,
        Listener,
        std::net::SocketAddr,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shared = ServingState::new(
            Duration::from_secs(30),
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::ZERO,
        );
        let (socket, _) = bind(&"127.0.0.1:0".parse::<ListenAddr>().unwrap(), 16).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let listener = {
            let _enter = rt.enter();
            let inner = ListenerInner::from_socket(socket, ListenAddr::Tcp(addr), "t".into(), None)
                .unwrap();
            Listener {
                inner: Arc::new(inner),
                shared: Arc::clone(&shared),
            }
        };
        shared.start_serving();
        (rt, shared, listener, addr)
    }

    /// A pause or stop waits for the accept gate and then counts on the drain's tally: a
    /// connection the accept took must be in it by the time the gated poll lets the gate go.
    /// (Counted a moment later, by the caller, a preempted accepting thread let the drain
    /// find zero, the process exit, and the client get a reset: 1 in ~5,000 connections on a
    /// loaded machine, through upgrades.)
    #[test]
    fn an_accepted_connection_is_counted_before_the_gate_is_let_go() {
        let (rt, shared, listener, addr) = serving_listener();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, counted) = rt.block_on(async {
            let gated = std::future::poll_fn(|cx| {
                listener
                    .poll_accept_gated(cx)
                    .map(|r| (r, shared.conns.live()))
            });
            tokio::time::timeout(Duration::from_secs(5), gated)
                .await
                .expect("the waiting connection was not accepted")
        });
        let conn = accepted.expect("serving").expect("accepted");
        assert_eq!(
            counted, 1,
            "the connection was not counted when the gate was let go"
        );
        drop(conn);
        assert_eq!(shared.conns.live(), 0);
    }

    /// A pause must not wait for the accepting task to be scheduled: on a loaded runtime that
    /// wait was most of the handover time. Here the runtime is not driven at all while the
    /// pause runs, so only a gate the parked accept does not hold lets it return.
    #[test]
    fn a_pause_returns_while_the_accepting_task_is_not_running() {
        let (rt, shared, listener, addr) = serving_listener();
        let accepting = rt.spawn(async move { listener.accept().await.map(|r| r.is_ok()) });
        // Long enough for the task to run up to its wait for a connection; then nothing
        // drives the runtime until the pause has returned.
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        assert!(
            !accepting.is_finished(),
            "accept returned with no connection"
        );

        let (tx, rx) = mpsc::channel();
        let pauser = Arc::clone(&shared);
        std::thread::spawn(move || tx.send(pauser.pause_accepting_blocking()));
        let paused = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the pause waited for the parked accept task to run");
        assert!(paused, "the pause found the process not serving");

        // Paused: a connection waits in the backlog and the accept takes nothing.
        let _client = std::net::TcpStream::connect(addr).unwrap();
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
        assert!(!accepting.is_finished(), "accepted while paused");
        shared.resume_accepting();
        let accepted =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), accepting).await });
        assert_eq!(
            accepted.expect("no accept after the resume").unwrap(),
            Some(true)
        );
    }
}
