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
        let tag = self.cid_key.tag_of(header.dcid);
        match header.kind {
            // A CID of this lineage (an Initial too, once the client has the server's first
            // Initial): its tag says who issued it.
            Kind::Initial | Kind::ZeroRtt | Kind::Handshake | Kind::Short if tag.is_some() => {
                match tag.and_then(|t| self.live.get(&t)) {
                    Some(&g) => Route::Forward(g),
                    None => Route::Deliver,
                }
            }
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
            // Not a CID of this lineage: quinn drops it or answers with a stateless reset.
            Kind::Handshake | Kind::Short => Route::Deliver,
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

#[cfg(test)]
mod flood;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::cid::TaggedCids;
    use quinn::ConnectionIdGenerator;

    const KEY: [u8; 32] = [9; 32];

    fn cid(generation: u64) -> Vec<u8> {
        TaggedCids::new(generation_tag(generation), CidKey::new(&KEY))
            .generate_cid()
            .to_vec()
    }

    /// A long-header packet of `kind_bits` (0 Initial, 1 0-RTT, 2 Handshake), QUIC v1,
    /// padded like a client's first flight.
    fn long(kind_bits: u8, dcid: &[u8]) -> Vec<u8> {
        let mut p = vec![0xc0 | (kind_bits << 4) | 0x03, 0, 0, 0, 1];
        p.push(dcid.len() as u8);
        p.extend_from_slice(dcid);
        p.push(8);
        p.extend_from_slice(&[0x55; 8]);
        if kind_bits == 0 {
            p.push(0); // no token
        }
        let rest = 1200 - p.len() - 2;
        p.extend_from_slice(&[0x40 | (rest >> 8) as u8, rest as u8]);
        p.resize(1200, 0xaa);
        p
    }

    fn initial(dcid: &[u8]) -> Vec<u8> {
        long(0, dcid)
    }

    fn short(dcid: &[u8]) -> Vec<u8> {
        let mut p = vec![0x43];
        p.extend_from_slice(dcid);
        p.resize(60, 0xaa);
        p
    }

    /// Generation 3, with 1 and 2 alive.
    fn table() -> Table {
        let mut t = Table::new(3, CidKey::new(&KEY));
        t.add_live(1);
        t.add_live(2);
        t
    }

    #[derive(Default)]
    struct Fake {
        delivered: usize,
        forwarded: Vec<u64>,
        dropped: usize,
        dead: Vec<u64>,
        full: Vec<u64>,
    }

    impl Sink for Fake {
        fn deliver(&mut self, _: &[u8]) {
            self.delivered += 1;
        }
        fn forward(&mut self, g: u64, _: &[u8]) -> Result<(), ForwardError> {
            if self.dead.contains(&g) {
                return Err(ForwardError::Dead);
            }
            if self.full.contains(&g) {
                return Err(ForwardError::Full);
            }
            self.forwarded.push(g);
            Ok(())
        }
        fn dropped(&mut self) {
            self.dropped += 1;
        }
    }

    #[test]
    fn server_cids_go_to_the_generation_that_issued_them() {
        let mut t = table();
        let now = Instant::now();
        for g in [1, 2] {
            assert_eq!(t.route(&short(&cid(g)), now), Route::Forward(g));
            assert_eq!(
                t.route(&long(2, &cid(g)), now),
                Route::Forward(g),
                "handshake"
            );
            // The client's Initial ACK, once it has the server's CID.
            assert_eq!(
                t.route(&initial(&cid(g)), now),
                Route::Forward(g),
                "initial"
            );
        }
        assert_eq!(t.route(&short(&cid(3)), now), Route::Deliver);
        // A dead or unknown generation's: delivered here (quinn resets them).
        assert_eq!(t.route(&short(&cid(7)), now), Route::Deliver);
        assert_eq!(t.route(&short(&[0x11; 16]), now), Route::Deliver);
        assert_eq!(t.route(&[0x43, 1, 2], now), Route::Drop, "truncated");
        assert_eq!(t.route(&[], now), Route::Drop, "empty");
    }

    #[test]
    fn a_handshake_in_flight_stays_with_its_owner_for_the_window_only() {
        let mut t = table();
        let now = Instant::now();
        let dcid = vec![0x42; 8];
        t.inherit(vec![(dcid.clone(), 2), (vec![0x43; 20], 5)], now);
        // A retransmit, and the rest of a two-datagram first flight.
        assert_eq!(t.route(&initial(&dcid), now), Route::Forward(2));
        assert_eq!(t.route(&long(1, &dcid), now), Route::Forward(2), "0-RTT");
        // Generation 5 is not alive: its entry was not taken.
        assert_eq!(t.route(&initial(&[0x43; 20]), now), Route::Deliver);
        let later = now + HANDSHAKE_WINDOW;
        assert_eq!(t.route(&initial(&dcid), later), Route::Deliver);
        // Now this generation's own, handed on at the next upgrade.
        assert_eq!(t.in_flight(later)[0], (dcid, 3));
    }

    #[test]
    fn new_initials_are_delivered_and_remembered_for_the_next_generation() {
        let mut t = table();
        let now = Instant::now();
        let a = vec![1u8; 20];
        let b = vec![2u8; 8];
        assert_eq!(t.route(&initial(&a), now), Route::Deliver);
        assert_eq!(t.route(&initial(&a), now), Route::Deliver);
        assert_eq!(t.route(&initial(&b), now), Route::Deliver);
        t.inherit(vec![(vec![3u8; 8], 1)], now);
        let handed = t.in_flight(now);
        assert_eq!(
            handed,
            vec![(b, 3), (a, 3), (vec![3u8; 8], 1)],
            "newest first, once each"
        );
        assert!(t.in_flight(now + HANDSHAKE_WINDOW).is_empty(), "expired");
        // Server CIDs are no handshakes of their own.
        let mut t = table();
        t.route(&initial(&cid(3)), now);
        assert!(t.in_flight(now).is_empty());
    }

    #[test]
    fn at_most_a_bounded_number_is_remembered_and_handed_on() {
        let mut t = Table::new(1, CidKey::new(&KEY));
        let now = Instant::now();
        for i in 0..(MAX_REMEMBERED as u32 + 10) {
            t.route(&initial(&i.to_be_bytes().repeat(2)), now);
        }
        assert_eq!(t.remembered.len(), MAX_REMEMBERED);
        assert_eq!(t.in_flight(now).len(), MAX_HANDED_ON);
    }

    #[test]
    fn a_dead_generation_is_found_by_forwarding_and_its_datagrams_delivered_here() {
        let mut t = table();
        let now = Instant::now();
        let mut sink = Fake {
            dead: vec![1],
            full: vec![2],
            ..Fake::default()
        };
        dispatch(&mut t, &short(&cid(1)), now, &mut sink);
        assert_eq!((sink.delivered, sink.forwarded.len()), (1, 0));
        assert_eq!(t.route(&short(&cid(1)), now), Route::Deliver, "marked dead");
        dispatch(&mut t, &short(&cid(2)), now, &mut sink);
        assert_eq!(sink.dropped, 1, "a full channel loses the datagram");
        assert_eq!(
            t.route(&short(&cid(2)), now),
            Route::Forward(2),
            "still alive"
        );
        sink.full.clear();
        dispatch(&mut t, &short(&cid(2)), now, &mut sink);
        dispatch(&mut t, &[0xff], now, &mut sink);
        assert_eq!((sink.forwarded, sink.dropped), (vec![2], 2));
    }

    #[test]
    fn tags_that_collide_route_to_the_newest() {
        // 256 generations apart: same tag. This generation's own wins; between two older
        // ones the newer does.
        let mut t = Table::new(300, CidKey::new(&KEY));
        t.add_live(300 - 256);
        t.add_live(2);
        t.add_live(258);
        assert_eq!(t.route(&short(&cid(300)), Instant::now()), Route::Deliver);
        assert_eq!(
            t.route(&short(&cid(2)), Instant::now()),
            Route::Forward(258)
        );
    }
}
