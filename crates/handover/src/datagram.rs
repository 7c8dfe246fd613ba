//! UDP services: a datagram socket shared by the generations, read only by the one serving.
//!
//! A datagram socket has no accept: every generation holding it could read from its one
//! receive queue. So reading is gated like `Listener::accept`: [`Datagram::recv_from`] reads
//! only while this process serves, stops when it pauses for a handover (before the successor
//! is told to go ahead, so two generations never read at once), and returns `None` once the
//! drain has begun. Datagrams that arrive meanwhile wait in the shared receive queue for the
//! successor; none is read twice and none is dropped by the handover itself.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::Socket;
use tokio::net::UdpSocket;

use crate::addr::ListenAddr;
use crate::drain::{ConnGuard, DrainSignal, Phase, ServingState};

/// A UDP socket handed out by [`crate::Handover::datagram`], passed to the next generation
/// like the listeners (fds 3.., named in `LISTEN_FDNAMES`, `udp_IP_PORT` by default).
///
/// - [`Datagram::recv_from`] waits until [`crate::Handover::ready`] has completed, and
///   returns `None` once this process has handed over or begun a graceful stop: the
///   datagrams after that wait in the socket's receive queue, which every generation shares,
///   for the new process.
/// - [`Datagram::send_to`] works until the process exits, so requests read before the
///   handover are still answered.
/// - The drain counts it like one connection (all clones together): [`crate::Running::wait`]
///   returns once the application has dropped every clone, or at the drain deadline. Drop it
///   when `recv_from` returns `None` and the answers in progress are sent.
///
/// Unlike [`crate::Listener::accept`], `recv_from` does not wait after a handover: a UDP
/// service has no connections to finish, so its process should be free to exit at once. A
/// process that takes the listeners back after its successor crashed (see the crate docs)
/// therefore serves its stream listeners again but not this socket, which it has dropped.
///
/// ```no_run
/// # async fn serve(socket: handover::Datagram) {
/// let mut buf = [0u8; 1500];
/// while let Some(r) = socket.recv_from(&mut buf).await {
///     let Ok((n, peer)) = r else { continue };
///     let _ = socket.send_to(&buf[..n], peer).await;
/// }
/// // Handed over (or stopping): dropping `socket` lets the process exit.
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Datagram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    socket: UdpSocket,
    name: String,
    addr: ListenAddr,
    shared: Arc<ServingState>,
    /// Keeps the drain waiting until the last clone is dropped.
    _guard: ConnGuard,
}

impl Datagram {
    /// Wraps a bound (or inherited) UDP socket, already non-blocking.
    pub(crate) fn new(socket: Socket, name: String, shared: Arc<ServingState>) -> io::Result<Self> {
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        let addr = ListenAddr::Udp(socket.local_addr()?);
        let guard = shared.track();
        Ok(Datagram {
            inner: Arc::new(Inner {
                socket,
                name,
                addr,
                shared,
                _guard: guard,
            }),
        })
    }

    /// The address this socket is bound to (`udp://IP:PORT`, with the real port when `0` was
    /// asked for).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.inner.addr
    }

    /// The name under which the socket is passed to the next generation (`LISTEN_FDNAMES`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Receives the next datagram into `buf`: its length and sender. `None` once this process
    /// has handed over or begun a graceful stop; until [`crate::Handover::ready`] has
    /// completed, and while a handover is being decided, it waits.
    ///
    /// A datagram longer than `buf` is truncated, as `recvfrom(2)` does. An `Err` is a failed
    /// `recvfrom(2)` (for example an ICMP error reported for an earlier `send_to`); the socket
    /// stays usable. Safe to cancel: a datagram is either returned or left in the queue.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>> {
        let shared = &self.inner.shared;
        let mut phase = shared.phase.subscribe();
        loop {
            let now = *phase
                .wait_for(|p| matches!(p, Phase::Serving | Phase::Draining { .. }))
                .await
                .ok()?;
            if matches!(now, Phase::Draining { .. }) {
                return None;
            }
            // As in `Listener::accept`: leaving `Serving` ends the wait, and the gate checked in
            // `poll_recv_gated` is what keeps a paused process from reading.
            let leave = phase.wait_for(|p| !matches!(p, Phase::Serving));
            let received = tokio::select! {
                biased;
                _ = leave => continue,
                r = std::future::poll_fn(|cx| self.poll_recv_gated(cx, buf)) => r,
            };
            match received {
                Some(r) => return Some(r),
                None => continue,
            }
        }
    }

    /// One `recvfrom(2)` attempt, only while serving, under the same gate as an accept (held
    /// for this poll alone). `Ready(None)`: not serving (any more).
    fn poll_recv_gated(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<Option<io::Result<(usize, SocketAddr)>>> {
        let shared = &self.inner.shared;
        let _gate = shared
            .accept_poll
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(*shared.phase.borrow(), Phase::Serving) {
            return std::task::Poll::Ready(None);
        }
        let mut read = tokio::io::ReadBuf::new(buf);
        self.inner
            .socket
            .poll_recv_from(cx, &mut read)
            .map(|r| Some(r.map(|peer| (read.filled().len(), peer))))
    }

    /// Sends `buf` to `target`. Works in every phase, until the process exits, so that the
    /// answers to datagrams read before a handover still go out.
    pub async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.inner.socket.send_to(buf, target).await
    }

    /// Resolves when this process starts draining (handing over or stopping).
    pub fn drain_signal(&self) -> DrainSignal {
        DrainSignal::new(Arc::clone(&self.inner.shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::DrainReason;
    use std::time::Duration;

    fn state() -> Arc<ServingState> {
        ServingState::new(
            Duration::from_secs(5),
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::ZERO,
        )
    }

    async fn pending_for_a_moment(socket: &Datagram) -> bool {
        let mut buf = [0u8; 16];
        tokio::time::timeout(Duration::from_millis(50), socket.recv_from(&mut buf))
            .await
            .is_err()
    }

    /// Reads only while serving; a datagram sent meanwhile stays queued for whoever reads
    /// next; `None` once draining; counted by the drain until the last clone is dropped.
    #[tokio::test]
    async fn reading_follows_the_serving_phase() {
        let shared = state();
        let socket = crate::os::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        // What the next generation holds: the same socket.
        let successor = std::net::UdpSocket::from(socket.try_clone().unwrap());
        let d = Datagram::new(socket, "udp".into(), Arc::clone(&shared)).unwrap();
        let ListenAddr::Udp(addr) = *d.local_addr() else {
            panic!("{:?}", d.local_addr())
        };
        assert_ne!(addr.port(), 0);
        assert_eq!(shared.conns.live(), 1);
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"early", addr).await.unwrap();
        assert!(pending_for_a_moment(&d).await, "read before ready");

        shared.phase.send_replace(Phase::Serving);
        let mut buf = [0u8; 32];
        let (n, peer) = d.recv_from(&mut buf).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"early");
        d.send_to(b"answer", peer).await.unwrap();

        let pauser = Arc::clone(&shared);
        let paused = tokio::task::spawn_blocking(move || pauser.pause_accepting_blocking());
        assert!(paused.await.unwrap());
        client.send_to(b"queued", addr).await.unwrap();
        assert!(pending_for_a_moment(&d).await, "read while paused");
        shared.resume_accepting();
        let (n, _) = d.recv_from(&mut buf).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"queued");

        let clone = d.clone();
        shared
            .stop_accepting(DrainReason::Upgraded { new_pid: 1 })
            .await;
        client.send_to(b"for the successor", addr).await.unwrap();
        assert!(d.recv_from(&mut buf).await.is_none());
        clone.send_to(b"still answering", peer).await.unwrap();
        drop(d);
        assert_eq!(shared.conns.live(), 1, "a clone is left");
        drop(clone);
        assert_eq!(shared.conns.live(), 0);
        successor.set_nonblocking(false).unwrap();
        successor
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (n, _) = successor.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"for the successor");
    }
}
