//! The routing decision for one datagram read off the shared UDP socket: deliver it to this
//! generation's quinn endpoint, forward it to an older generation, or drop it. Pure (no I/O):
//! the socket (`quic/socket.rs`) feeds it datagrams and carries out what it decides through a
//! [`Sink`], which the tests fake.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::quic::cid::{generation_tag, CidKey, CID_LEN};
use crate::quic::packet::{self, Kind};

/// How long a client-chosen Initial DCID stays routable to the generation that saw it first:
/// longer than any handshake is allowed to take.
pub(crate) const HANDSHAKE_WINDOW: Duration = Duration::from_secs(10);
/// The most Initial DCIDs remembered for the next generation (oldest dropped first).
pub(crate) const MAX_REMEMBERED: usize = 65_536;
/// The most in-flight handshakes told to the next generation at one upgrade (the newest).
pub(crate) const MAX_HANDED_ON: usize = 4_096;

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// To this generation's quinn endpoint.
    Deliver,
    /// To the older generation with this number, over its channel.
    Forward(u64),
    /// Not a QUIC packet anyone here can route.
    Drop,
}

/// Why a forward did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardError {
    /// The generation's end of the channel is closed: it has exited.
    Dead,
    /// The channel's buffer is full: this datagram is lost (QUIC retransmits).
    Full,
}

/// Carries out a [`Route`].
pub(crate) trait Sink {
    /// Hands the datagram to this generation's quinn endpoint.
    fn deliver(&mut self, datagram: &[u8]);
    /// Sends the datagram to `generation` on its channel.
    fn forward(&mut self, generation: u64, datagram: &[u8]) -> Result<(), ForwardError>;
    /// Counts a datagram that was dropped.
    fn dropped(&mut self);
}

/// The routing table of one generation.
pub(crate) struct Table {
    generation: u64,
    cid_key: CidKey,
    /// Older generations still alive, by the tag their CIDs carry.
    live: HashMap<u8, u64>,
    /// Client-chosen Initial DCIDs of handshakes an older generation began (from its
    /// `InFlight` message), with the owner and when they were handed over.
    inherited: HashMap<Vec<u8>, (u64, Instant)>,
    /// Initial DCIDs this generation delivered to its own endpoint, newest last.
    remembered: VecDeque<(Instant, Vec<u8>)>,
}

impl Table {
    /// The table of `generation`, whose CIDs are masked with `cid_key`.
    pub(crate) fn new(generation: u64, cid_key: CidKey) -> Self {
        Table {
            generation,
            cid_key,
            live: HashMap::new(),
            inherited: HashMap::new(),
            remembered: VecDeque::new(),
        }
    }

    /// `generation` is alive and reachable. A tag shared with this generation's own is not
    /// routable (more than 255 generations apart): this generation wins, the older one's
    /// datagrams are delivered here. Between two older ones, the newer wins.
    pub(crate) fn add_live(&mut self, generation: u64) {
        let tag = generation_tag(generation);
        if tag == generation_tag(self.generation) || generation >= self.generation {
            return;
        }
        let e = self.live.entry(tag).or_insert(generation);
        *e = (*e).max(generation);
    }

    /// `generation` has exited: its datagrams are delivered here from now on (quinn answers
    /// them with a stateless reset, valid since every generation shares the reset key).
    pub(crate) fn mark_dead(&mut self, generation: u64) {
        self.live.retain(|_, g| *g != generation);
        self.inherited.retain(|_, (g, _)| *g != generation);
    }

    /// The older generations still routable.
    pub(crate) fn live(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.values().copied()
    }

    /// Adds the handshakes in flight that the previous generation handed over.
    pub(crate) fn inherit(&mut self, handshakes: Vec<(Vec<u8>, u64)>, now: Instant) {
        for (dcid, owner) in handshakes {
            if self.live.get(&generation_tag(owner)) == Some(&owner) {
                self.inherited.insert(dcid, (owner, now));
            }
        }
    }

    /// Decides where `datagram` goes.
    pub(crate) fn route(&mut self, datagram: &[u8], now: Instant) -> Route {
        let Some(header) = packet::parse(datagram, CID_LEN) else {
            return Route::Drop;
        };
        match header.kind {
            Kind::Initial | Kind::ZeroRtt => {
                // The client chose this DCID: it names no generation. Its handshake belongs to
                // whoever saw it first.
                if let Some(&(owner, at)) = self.inherited.get(header.dcid) {
                    if now.duration_since(at) < HANDSHAKE_WINDOW {
                        return Route::Forward(owner);
                    }
                    self.inherited.remove(header.dcid);
                }
                if header.kind == Kind::Initial {
                    self.remember(header.dcid, now);
                }
                Route::Deliver
            }
            Kind::Handshake | Kind::Short => match self.cid_key.tag_of(header.dcid) {
                Some(tag) if tag != generation_tag(self.generation) => match self.live.get(&tag) {
                    Some(&g) => Route::Forward(g),
                    None => Route::Deliver,
                },
                _ => Route::Deliver,
            },
            // quinn answers an unknown version with Version Negotiation, and drops what a
            // server never receives (Retry, Version Negotiation).
            Kind::Retry | Kind::VersionNegotiation | Kind::UnknownVersion => Route::Deliver,
        }
    }

    fn remember(&mut self, dcid: &[u8], now: Instant) {
        if self.remembered.back().is_some_and(|(_, d)| d == dcid) {
            return; // the rest of a multi-datagram first flight
        }
        while self.remembered.len() >= MAX_REMEMBERED
            || self
                .remembered
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) >= HANDSHAKE_WINDOW)
        {
            self.remembered.pop_front();
        }
        self.remembered.push_back((now, dcid.to_vec()));
    }

    /// The handshakes that may still be in flight, for the next generation: the Initial DCIDs
    /// seen in the last [`HANDSHAKE_WINDOW`] (this generation's and those it inherited for a
    /// live owner), newest first, at most [`MAX_HANDED_ON`].
    pub(crate) fn in_flight(&self, now: Instant) -> Vec<(Vec<u8>, u64)> {
        let fresh = |at: &Instant| now.duration_since(*at) < HANDSHAKE_WINDOW;
        let mut seen = std::collections::HashSet::new();
        let own = self
            .remembered
            .iter()
            .rev()
            .filter(|(at, _)| fresh(at))
            .map(|(_, d)| (d.clone(), self.generation));
        let older = self
            .inherited
            .iter()
            .filter(|(_, (_, at))| fresh(at))
            .map(|(d, (g, _))| (d.clone(), *g));
        own.chain(older)
            .filter(|(d, _)| seen.insert(d.clone()))
            .take(MAX_HANDED_ON)
            .collect()
    }
}

/// Routes one datagram and carries out the decision. A forward to a generation found dead
/// marks it so and delivers the datagram here instead.
pub(crate) fn dispatch(table: &mut Table, datagram: &[u8], now: Instant, sink: &mut impl Sink) {
    match table.route(datagram, now) {
        Route::Deliver => sink.deliver(datagram),
        Route::Drop => sink.dropped(),
        Route::Forward(g) => match sink.forward(g, datagram) {
            Ok(()) => {}
            Err(ForwardError::Full) => sink.dropped(),
            Err(ForwardError::Dead) => {
                table.mark_dead(g);
                sink.deliver(datagram);
            }
        },
    }
}
