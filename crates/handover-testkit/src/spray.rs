//! Hostile datagrams for a QUIC port: what an attacker on the path, or anyone who can reach
//! the port, can send without knowing the server's keys. One thread, one loopback UDP socket,
//! a bounded rate, count and time; every datagram counted by what it is ([`SprayCounts`]).
//!
//! Each round sends, in turn:
//! - **garbage**: random bytes that are no QUIC header a server can read: shorter than a short
//!   header with a 16-byte connection ID, or a long header whose DCID length is over 20;
//! - **truncated**: a well-formed QUIC v1 long header (Initial, 0-RTT or Handshake) cut short
//!   of the length it declares;
//! - **forged tag**: a short header (1-RTT) whose 16-byte DCID starts with each byte value in
//!   turn, so every masked generation tag a server's CID can carry is tried, the rest random;
//! - **random DCID**: a full-size short header to 16 random bytes (the length of the server's
//!   CIDs);
//! - **initials** (four per round): full-size QUIC v1 Initials to a random DCID of 8 to 20
//!   bytes with a random payload (nothing a server can decrypt): the flood a handshake table
//!   must survive.
//!
//! Garbage and truncated datagrams are what a router cannot even parse
//! ([`SprayCounts::unparseable`]); the rest parse, name no connection and must end at the
//! serving process's QUIC stack (which drops them, or answers with a stateless reset).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crate::wait::{poll_until, LONG};

/// A bound on one spray's time, should the test forget to stop it.
const MAX_TIME: Duration = Duration::from_secs(60);
/// A bound on one spray's datagrams.
const MAX_DATAGRAMS: u64 = 200_000;

/// What a spray sent, by kind (datagrams the kernel accepted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SprayCounts {
    /// Random bytes that are no QUIC header.
    pub garbage: u64,
    /// Long headers cut short of their declared length.
    pub truncated: u64,
    /// Short headers with a forged generation tag.
    pub forged_tag: u64,
    /// Short headers to a random 16-byte DCID.
    pub random_dcid: u64,
    /// Initials to a random DCID.
    pub initials: u64,
}

impl SprayCounts {
    /// Datagrams no QUIC router can parse (garbage and truncated).
    pub fn unparseable(&self) -> u64 {
        self.garbage + self.truncated
    }

    /// Every datagram sent.
    pub fn total(&self) -> u64 {
        self.unparseable() + self.forged_tag + self.random_dcid + self.initials
    }
}

#[derive(Default)]
struct Counters {
    garbage: AtomicU64,
    truncated: AtomicU64,
    forged_tag: AtomicU64,
    random_dcid: AtomicU64,
    initials: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SprayCounts {
        let g = |c: &AtomicU64| c.load(Ordering::SeqCst);
        SprayCounts {
            garbage: g(&self.garbage),
            truncated: g(&self.truncated),
            forged_tag: g(&self.forged_tag),
            random_dcid: g(&self.random_dcid),
            initials: g(&self.initials),
        }
    }
}

/// A running spray (see the module docs); stopped by [`Spray::finish`] or on drop.
pub struct Spray {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    worker: Option<JoinHandle<()>>,
    started: Instant,
}

impl Spray {
    /// Starts spraying `target` (a loopback address) at about `rate` datagrams a second.
    pub fn start(target: SocketAddr, rate: u64) -> Spray {
        assert!(
            target.ip().is_loopback(),
            "spray loopback only, not {target}"
        );
        let local: SocketAddr = if target.is_ipv6() {
            "[::1]:0".parse().unwrap()
        } else {
            "127.0.0.1:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(local).expect("a UDP socket for the spray");
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let worker = {
            let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
            thread::spawn(move || spray(&socket, target, rate, &stop, &counters))
        };
        Spray {
            stop,
            counters,
            worker: Some(worker),
            started: Instant::now(),
        }
    }

    /// What it sent so far.
    pub fn counts(&self) -> SprayCounts {
        self.counters.snapshot()
    }

    /// Waits until at least `n` Initials were sent (panics after [`LONG`], or if the spray
    /// reached its bounds first).
    pub fn wait_initials(&self, n: u64) {
        assert!(
            poll_until(LONG, || self.counts().initials >= n
                || self.worker.as_ref().is_some_and(|w| w.is_finished())),
            "the spray sent {:?} in {:?}, not {n} Initials",
            self.counts(),
            self.started.elapsed()
        );
        assert!(
            self.counts().initials >= n,
            "the spray ended early: {:?}",
            self.counts()
        );
    }

    /// Stops it; what it sent and for how long.
    pub fn finish(mut self) -> (SprayCounts, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.worker.take() {
            w.join().expect("the spray panicked");
        }
        (self.counters.snapshot(), self.started.elapsed())
    }
}

impl Drop for Spray {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// xorshift64*: test bytes, not secrets (no dependency for it).
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng((t ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    /// Random bytes, `lo..=hi` of them.
    fn bytes_between(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let n = self.range(lo, hi);
        self.bytes(n)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// The full size of a client's Initial datagram (RFC 9000, section 14.1).
const INITIAL_SIZE: usize = 1200;
/// The length of the server's connection IDs.
const SERVER_CID_LEN: usize = 16;

/// A QUIC v1 long header of packet type `ty` (0 Initial, 1 0-RTT, 2 Handshake) to `dcid`,
/// padded to `size` bytes, its Length field covering the rest (random bytes).
fn long_header(rng: &mut Rng, ty: u8, dcid: &[u8], size: usize) -> Vec<u8> {
    let mut p = vec![0xc0 | (ty << 4) | 0x03, 0, 0, 0, 1, dcid.len() as u8];
    p.extend_from_slice(dcid);
    p.push(8);
    p.extend_from_slice(&rng.bytes(8));
    if ty == 0 {
        p.push(0); // no token
    }
    let rest = size - p.len() - 2;
    p.extend_from_slice(&[0x40 | (rest >> 8) as u8, rest as u8]);
    let body = rng.bytes(rest);
    p.extend_from_slice(&body);
    p
}

fn garbage(rng: &mut Rng, round: u64) -> Vec<u8> {
    if round % 2 == 0 {
        // Short form, too short for a 16-byte DCID.
        let mut p = rng.bytes_between(1, SERVER_CID_LEN);
        p[0] &= 0x7f;
        p
    } else {
        // Long form, a DCID length over 20.
        let mut p = rng.bytes_between(7, 1400);
        p[0] |= 0x80;
        p[5] = rng.range(21, 255) as u8;
        p
    }
}

fn truncated(rng: &mut Rng, round: u64) -> Vec<u8> {
    let dcid = rng.bytes_between(0, 20);
    let mut p = long_header(rng, (round % 3) as u8, &dcid, INITIAL_SIZE);
    p.truncate(rng.range(1, INITIAL_SIZE - 1));
    p
}

fn short_header(rng: &mut Rng, first_dcid_byte: Option<u8>, size: usize) -> Vec<u8> {
    let mut p = rng.bytes(size);
    p[0] = 0x40 | (p[0] & 0x3f);
    if let Some(b) = first_dcid_byte {
        p[1] = b;
    }
    p
}

fn spray(socket: &UdpSocket, target: SocketAddr, rate: u64, stop: &AtomicBool, c: &Counters) {
    let mut rng = Rng::seeded();
    let started = Instant::now();
    let mut round = 0u64;
    let send = |p: &[u8], counter: &AtomicU64| {
        if socket.send_to(p, target).is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    };
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_TIME {
        if c.snapshot().total() >= MAX_DATAGRAMS {
            break;
        }
        send(&garbage(&mut rng, round), &c.garbage);
        send(&truncated(&mut rng, round), &c.truncated);
        let size = rng.range(1 + SERVER_CID_LEN + 24, INITIAL_SIZE);
        send(
            &short_header(&mut rng, Some(round as u8), size),
            &c.forged_tag,
        );
        send(&short_header(&mut rng, None, INITIAL_SIZE), &c.random_dcid);
        for _ in 0..4 {
            let dcid = rng.bytes_between(8, 20);
            send(&long_header(&mut rng, 0, &dcid, INITIAL_SIZE), &c.initials);
        }
        round += 1;
        // Pace to `rate`: ahead of it, wait a little.
        let due = started.elapsed().as_secs_f64() * rate as f64;
        if c.snapshot().total() as f64 > due {
            thread::sleep(Duration::from_millis(1));
        }
    }
}
