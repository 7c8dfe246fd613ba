//! The `quinn::AsyncUdpSocket` every generation's endpoint runs on. It reads the shared UDP
//! socket while this generation serves and routes each datagram (`quic/route.rs`): its own go
//! to quinn, an older live generation's go to that process over its channel. Once it has
//! handed over it reads its successor's channel instead: the datagrams forwarded to it, with
//! their original source address. It always sends straight on the shared UDP socket.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Instant;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;

use crate::quic::route::{self, ForwardError, Sink, Table};
use crate::quic::wire::{self, Message};

/// Buffers of one UDP read: with GRO each holds up to 64 KiB of same-sized datagrams.
const SLOTS: usize = 4;
const SLOT_LEN: usize = 64 * 1024;
/// Room for the longest channel message.
const CHANNEL_MESSAGE_MAX: usize = wire::MAX_MESSAGE;
/// `InFlight` entries per message (at most `wire::MAX_IN_FLIGHT`), so that each stays well
/// under a Unix datagram's limit.
const IN_FLIGHT_PER_MESSAGE: usize = 512;

/// Counters of the routing socket, from [`crate::quic::Endpoint::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutingStats {
    /// Datagrams read from the shared UDP socket and given to this generation's endpoint.
    pub delivered: u64,
    /// Datagrams read from the shared UDP socket and sent on to an older generation.
    pub forwarded_out: u64,
    /// Datagrams an newer generation forwarded here, given to this generation's endpoint.
    pub forwarded_in: u64,
    /// Datagrams dropped: not QUIC, an older generation's channel full, a malformed message,
    /// or a forwarded datagram larger than the endpoint's receive buffer.
    pub dropped: u64,
    /// Older generations found gone while forwarding to them.
    pub dead_peers: u64,
}

#[derive(Debug, Default)]
struct Stats {
    delivered: AtomicU64,
    forwarded_out: AtomicU64,
    forwarded_in: AtomicU64,
    dropped: AtomicU64,
    dead_peers: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What this generation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing: not serving yet, or handed over without forwarding.
    Idle,
    /// The shared UDP socket: this generation serves.
    Udp,
    /// The successor's channel: this generation has handed over (or is about to).
    Channel,
}

/// A datagram read but not yet handed to quinn: a range of a slot.
#[derive(Debug, Clone, Copy)]
struct Segment {
    slot: usize,
    start: usize,
    len: usize,
    addr: SocketAddr,
    ecn: Option<EcnCodepoint>,
    dst_ip: Option<IpAddr>,
}

struct Router {
    mode: Mode,
    forwarding: bool,
    /// The endpoint's receive task, woken when the mode changes.
    waker: Option<Waker>,
    table: Table,
    /// Channels to older generations (the newest is the parent's), by generation.
    peers: HashMap<u64, UnixDatagram>,
    /// This generation's end of the channel to the successor being started.
    prepared: Option<UnixDatagram>,
    /// The same, once it was told to go ahead: read while handed over.
    child: Option<tokio::net::UnixDatagram>,
    slots: Vec<Box<[u8]>>,
    queue: VecDeque<Segment>,
    /// For encoding and receiving channel messages.
    scratch: Vec<u8>,
}

/// The routing socket (see the module docs).
pub(crate) struct RoutingSocket {
    io: tokio::net::UdpSocket,
    udp: UdpSocketState,
    /// The shared socket's name, for errors and logs.
    name: String,
    generation: u64,
    router: Mutex<Router>,
    stats: Stats,
}

impl fmt::Debug for RoutingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingSocket")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl RoutingSocket {
    /// Wraps the shared UDP socket (non-blocking) of `generation`. `peers` are the channels
    /// to older live generations; with `forwarding` off they are ignored and nothing is
    /// forwarded. It reads nothing until [`RoutingSocket::start_serving`].
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        name: String,
        generation: u64,
        table: Table,
        peers: HashMap<u64, UnixDatagram>,
        forwarding: bool,
    ) -> io::Result<Self> {
        let udp = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let mut table = table;
        let peers = if forwarding { peers } else { HashMap::new() };
        for g in peers.keys() {
            table.add_live(*g);
        }
        Ok(RoutingSocket {
            io,
            udp,
            name,
            generation,
            router: Mutex::new(Router {
                mode: Mode::Idle,
                forwarding,
                waker: None,
                table,
                peers,
                prepared: None,
                child: None,
                slots: (0..SLOTS)
                    .map(|_| vec![0u8; SLOT_LEN].into_boxed_slice())
                    .collect(),
                queue: VecDeque::new(),
                scratch: Vec::with_capacity(CHANNEL_MESSAGE_MAX),
            }),
            stats: Stats::default(),
        })
    }

    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router.lock().expect("not poisoned")
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> RoutingStats {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RoutingStats {
            delivered: get(&s.delivered),
            forwarded_out: get(&s.forwarded_out),
            forwarded_in: get(&s.forwarded_in),
            dropped: get(&s.dropped),
            dead_peers: get(&s.dead_peers),
        }
    }

    /// This generation serves (its `ready()` completed): read the handshakes in flight that the
    /// parent sent before its go-ahead, then read the shared socket.
    pub(crate) fn start_serving(&self, parent: Option<u64>) {
        let mut r = self.router();
        if let Some(p) = parent.filter(|_| r.forwarding) {
            self.read_in_flight(&mut r, p);
        }
        r.mode = Mode::Udp;
        wake(&mut r);
    }

    /// Reads every `InFlight` message queued on the parent's channel.
    fn read_in_flight(&self, r: &mut Router, parent: u64) {
        let Router {
            peers,
            scratch,
            table,
            ..
        } = r;
        let Some(chan) = peers.get(&parent) else {
            return;
        };
        scratch.resize(CHANNEL_MESSAGE_MAX, 0);
        let now = Instant::now();
        loop {
            let n = match chan.recv(scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(
                        "{}: cannot read the handshakes in flight from generation {parent}: {e}",
                        self.name
                    );
                    break;
                }
            };
            match wire::decode(&scratch[..n]) {
                Ok(Message::InFlight { handshakes }) => {
                    tracing::debug!(
                        "{}: {} handshakes in flight inherited",
                        self.name,
                        handshakes.len()
                    );
                    table.inherit(handshakes, now);
                }
                Ok(_) => tracing::warn!(
                    "{}: unexpected message from generation {parent} (not InFlight); ignored",
                    self.name
                ),
                Err(e) => tracing::warn!(
                    "{}: malformed message from generation {parent}: {e}; ignored",
                    self.name
                ),
            }
        }
    }

    /// Before the fork to `child`: a new channel, the lineage secret written into it (so it
    /// waits in the child's end), and the fds for the child: its end, named after this
    /// generation, then the ends to the older generations still alive.
    pub(crate) fn prepare(
        &self,
        child: u64,
        secret: &[u8; 32],
        fd_name: impl Fn(u64) -> String,
    ) -> io::Result<Vec<(std::os::fd::OwnedFd, String)>> {
        let mut r = self.router();
        if !r.forwarding {
            return Ok(Vec::new());
        }
        let (ours, theirs) = crate::quic::channel::pair()?;
        let mut msg = Vec::with_capacity(64);
        wire::encode(&Message::Keys { secret: *secret }, &mut msg);
        ours.send(&msg).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot send the keys to generation {child}: {e}"),
            )
        })?;
        let mut fds = vec![(theirs.into(), fd_name(self.generation))];
        let live: Vec<u64> = r.table.live().collect();
        for g in live {
            if let Some(c) = r.peers.get(&g) {
                fds.push((c.try_clone()?.into(), fd_name(g)));
            }
        }
        r.prepared = Some(ours);
        Ok(fds)
    }

    /// Accepting has paused: stop reading the shared socket (no read is in progress once the
    /// lock is held) and tell the successor the handshakes in flight; read its channel from
    /// now on.
    pub(crate) fn paused(&self) {
        let mut r = self.router();
        let Some(ours) = r.prepared.take() else {
            r.mode = Mode::Idle;
            return;
        };
        let handshakes = r.table.in_flight(Instant::now());
        let mut msg = Vec::new();
        for chunk in handshakes.chunks(IN_FLIGHT_PER_MESSAGE) {
            msg.clear();
            wire::encode(
                &Message::InFlight {
                    handshakes: chunk.to_vec(),
                },
                &mut msg,
            );
            if let Err(e) = ours.send(&msg) {
                tracing::warn!(
                    "{}: cannot hand {} handshakes in flight to the new generation: {e}",
                    self.name,
                    chunk.len()
                );
            }
        }
        match tokio::net::UnixDatagram::from_std(ours) {
            Ok(c) => {
                r.child = Some(c);
                r.mode = Mode::Channel;
            }
            Err(e) => {
                tracing::warn!(
                    "{}: cannot read the new generation's channel: {e}",
                    self.name
                );
                r.mode = Mode::Idle;
            }
        }
        wake(&mut r);
    }

    /// Serving again: the go-ahead failed, or the successor crashed.
    pub(crate) fn resumed(&self) {
        let mut r = self.router();
        r.prepared = None;
        r.child = None;
        r.mode = Mode::Udp;
        wake(&mut r);
    }

    /// The attempt failed before the pause: forget its channel.
    pub(crate) fn abandoned(&self) {
        self.router().prepared = None;
    }

    /// Reads the shared socket into the slots and routes what it read.
    fn read_udp(&self, r: &mut Router, cx: &mut Context) -> Poll<io::Result<()>> {
        loop {
            ready!(self.io.poll_recv_ready(cx))?;
            let mut metas = [RecvMeta::default(); SLOTS];
            let got = {
                let mut slots = r.slots.iter_mut();
                let mut bufs: [IoSliceMut<'_>; SLOTS] =
                    std::array::from_fn(|_| IoSliceMut::new(slots.next().expect("SLOTS slots")));
                self.io.try_io(Interest::READABLE, || {
                    self.udp.recv((&self.io).into(), &mut bufs, &mut metas)
                })
            };
            let n = match got {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let now = Instant::now();
            let Router {
                table,
                peers,
                slots,
                queue,
                scratch,
                forwarding,
                ..
            } = r;
            for (slot, meta) in metas[..n].iter().enumerate() {
                for (start, len) in split(meta.len, meta.stride) {
                    let seg = Segment {
                        slot,
                        start,
                        len,
                        addr: meta.addr,
                        ecn: meta.ecn,
                        dst_ip: meta.dst_ip,
                    };
                    if !*forwarding {
                        // Without forwarding, everything read here is this generation's.
                        queue.push_back(seg);
                        bump(&self.stats.delivered);
                        continue;
                    }
                    let mut sink = SocketSink {
                        seg,
                        queue,
                        peers,
                        scratch,
                        stats: &self.stats,
                    };
                    let datagram = &slots[slot][seg.start..seg.start + len];
                    route::dispatch(table, datagram, now, &mut sink);
                }
            }
            return Poll::Ready(Ok(()));
        }
    }

    /// Reads the successor's channel: forwarded datagrams straight into quinn's buffers.
    fn read_channel(
        &self,
        r: &mut Router,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Router { child, scratch, .. } = r;
        let Some(chan) = child.as_ref() else {
            return Poll::Pending;
        };
        scratch.resize(CHANNEL_MESSAGE_MAX, 0);
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            if filled == 0 {
                ready!(chan.poll_recv_ready(cx))?;
            }
            let n = match chan.try_recv(scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if filled == 0 {
                        continue;
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!("{}: reading the new generation's channel: {e}", self.name);
                    break;
                }
            };
            match wire::decode(&scratch[..n]) {
                // Cut to fit, it could not be authenticated: quinn would spend the work of
                // trying and throw it away. Dropped here, and counted.
                Ok(Message::Forward { payload, src, .. }) if payload.len() > bufs[filled].len() => {
                    tracing::debug!(
                        "{}: dropped a forwarded datagram from {src}: {} bytes, more than the endpoint's {}-byte buffer",
                        self.name,
                        payload.len(),
                        bufs[filled].len()
                    );
                    bump(&self.stats.dropped);
                }
                Ok(Message::Forward {
                    src,
                    dst_ip,
                    ecn,
                    payload,
                }) => {
                    let len = payload.len();
                    bufs[filled][..len].copy_from_slice(payload);
                    meta[filled] = recv_meta(src, len, EcnCodepoint::from_bits(ecn), dst_ip);
                    bump(&self.stats.forwarded_in);
                    filled += 1;
                }
                _ => bump(&self.stats.dropped),
            }
        }
        if filled == 0 {
            // Only malformed messages or a read error: wait for the next one.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(filled))
    }
}

/// The datagrams of one read of `len` bytes, as (start, length): with GRO, datagrams of
/// `stride` bytes each, the last one possibly shorter (a stride of 0 is read as 1, so that a
/// bad value cannot loop forever).
fn split(len: usize, stride: usize) -> impl Iterator<Item = (usize, usize)> {
    let stride = stride.max(1);
    (0..len)
        .step_by(stride)
        .map(move |start| (start, stride.min(len - start)))
}

fn recv_meta(
    addr: SocketAddr,
    len: usize,
    ecn: Option<EcnCodepoint>,
    dst_ip: Option<IpAddr>,
) -> RecvMeta {
    RecvMeta {
        addr,
        len,
        stride: len,
        ecn,
        dst_ip,
    }
}

fn wake(r: &mut Router) {
    if let Some(w) = r.waker.take() {
        w.wake();
    }
}

/// Carries out routing decisions for one segment of a slot.
struct SocketSink<'a> {
    seg: Segment,
    queue: &'a mut VecDeque<Segment>,
    peers: &'a HashMap<u64, UnixDatagram>,
    scratch: &'a mut Vec<u8>,
    stats: &'a Stats,
}

impl Sink for SocketSink<'_> {
    fn deliver(&mut self, _datagram: &[u8]) {
        self.queue.push_back(self.seg);
        bump(&self.stats.delivered);
    }

    fn forward(&mut self, generation: u64, datagram: &[u8]) -> Result<(), ForwardError> {
        let Some(chan) = self.peers.get(&generation) else {
            return Err(ForwardError::Dead);
        };
        self.scratch.clear();
        wire::encode(
            &Message::Forward {
                src: self.seg.addr,
                dst_ip: self.seg.dst_ip,
                ecn: self.seg.ecn.map_or(0, |e| e as u8),
                payload: datagram,
            },
            self.scratch,
        );
        match chan.send(self.scratch) {
            Ok(_) => {
                bump(&self.stats.forwarded_out);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(ForwardError::Full),
            Err(e) => {
                tracing::info!(
                    "generation {generation} is gone ({e}); its datagrams are answered here"
                );
                bump(&self.stats.dead_peers);
                Err(ForwardError::Dead)
            }
        }
    }

    fn dropped(&mut self) {
        bump(&self.stats.dropped);
    }
}

impl quinn::AsyncUdpSocket for RoutingSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Writable {
            socket: self,
            wait: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.io.try_io(Interest::WRITABLE, || {
            self.udp.send((&self.io).into(), transmit)
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut r = self.router();
        loop {
            if !r.queue.is_empty() {
                let mut filled = 0;
                while filled < bufs.len().min(meta.len()) {
                    let Some(seg) = r.queue.pop_front() else {
                        break;
                    };
                    let len = seg.len.min(bufs[filled].len());
                    bufs[filled][..len]
                        .copy_from_slice(&r.slots[seg.slot][seg.start..seg.start + len]);
                    meta[filled] = recv_meta(seg.addr, len, seg.ecn, seg.dst_ip);
                    filled += 1;
                }
                return Poll::Ready(Ok(filled));
            }
            // Told of mode changes, whatever it waits for below.
            match &r.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => r.waker = Some(cx.waker().clone()),
            }
            match r.mode {
                Mode::Idle => return Poll::Pending,
                Mode::Udp => ready!(self.read_udp(&mut r, cx))?,
                Mode::Channel => return self.read_channel(&mut r, cx, bufs, meta),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.udp.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.udp.max_gso_segments()
    }

    // Received batches are split before routing, so quinn gets single datagrams.
    fn max_receive_segments(&self) -> usize {
        1
    }
}

/// Waits until the shared socket is writable, for one sending task.
struct Writable {
    socket: Arc<RoutingSocket>,
    wait: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writable").finish_non_exhaustive()
    }
}

impl quinn::UdpPoller for Writable {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let wait = this.wait.get_or_insert_with(|| {
            let socket = Arc::clone(&this.socket);
            Box::pin(async move { socket.io.writable().await })
        });
        let r = wait.as_mut().poll(cx);
        if r.is_ready() {
            this.wait = None;
        }
        r
    }
}

#[cfg(test)]
mod forwarded;
#[cfg(test)]
mod gro;
