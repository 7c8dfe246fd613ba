//! A UDP request/response client for the datagram tests (std only, never retries): datagrams
//! numbered 0, 1, 2, ... sent at a steady rate from one socket; each answer is `<seq>
//! pid=<pid>`. It counts every datagram unanswered, answered twice, and answered by an older
//! generation after a newer one had answered an earlier datagram ("stale").
//!
//! It keeps at most [`WINDOW`] datagrams beyond the highest one answered, as a resolver bounds
//! its queries in flight: a server starved of CPU on a loaded machine (the tests run in
//! parallel on 2 cores) is then never sent more than its socket buffer holds (about 270 small
//! datagrams with the default 208 KiB), which the kernel would drop, handover or not. A lost
//! datagram does not hold the window: the answers after it move it on.
//!
//! Used by the library's and the CLI's `tests/udp.rs`; std only.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Most datagrams sent beyond the highest sequence number answered.
pub const WINDOW: u64 = 100;

/// What was answered, by sequence number.
#[derive(Default)]
struct Answers {
    /// How many answers each datagram got.
    count: Vec<u32>,
    /// The pid of each datagram's first answer (0: none yet).
    pid: Vec<i32>,
    /// Answers per pid.
    by_pid: HashMap<i32, usize>,
    /// Answers that were not `<seq> pid=<pid>` for a seq that was sent.
    garbage: usize,
    /// One more than the highest sequence number answered.
    high: u64,
}

/// Datagrams in flight to one server address.
pub struct UdpLoad {
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<(u64, Duration)>>,
    receiver: Option<JoinHandle<()>>,
    receiving: Arc<AtomicBool>,
    answers: Arc<Mutex<Answers>>,
}

/// The outcome of a [`UdpLoad`].
#[derive(Debug)]
pub struct UdpStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams answered at least once.
    pub answered: u64,
    /// Sequence numbers never answered (the first few).
    pub unanswered: Vec<u64>,
    /// How many datagrams were never answered.
    pub unanswered_count: u64,
    /// Datagrams answered more than once.
    pub duplicates: u64,
    /// Answers by a generation older than one that answered an earlier datagram.
    pub stale: u64,
    /// Answers that were not `<seq> pid=<pid>` for a sequence number sent.
    pub garbage: usize,
    /// Answers per pid, in the order of `generations` given to [`UdpLoad::finish`].
    pub per_generation: Vec<(i32, usize)>,
    /// The sending rate achieved, datagrams per second.
    pub rate_per_s: f64,
}

impl UdpStats {
    /// One line with every count, for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "sent {} at {:.0}/s, answered {}, unanswered {} (first: {:?}), answered twice {}, \
             stale {}, garbage {}, per generation {:?}",
            self.sent,
            self.rate_per_s,
            self.answered,
            self.unanswered_count,
            self.unanswered,
            self.duplicates,
            self.stale,
            self.garbage,
            self.per_generation
        )
    }
}

impl UdpLoad {
    /// Sends `rate` datagrams per second to `target` until [`UdpLoad::finish`], at most for
    /// `max` (a bound, should the test hang).
    pub fn start(target: SocketAddr, rate: u32, max: Duration) -> UdpLoad {
        let local: SocketAddr = if target.is_ipv6() {
            "[::1]:0".parse().unwrap()
        } else {
            "127.0.0.1:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(local).expect("bind the client socket");
        socket.connect(target).expect("connect the client socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let rx = socket.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let receiving = Arc::new(AtomicBool::new(true));
        let answers = Arc::new(Mutex::new(Answers::default()));
        let sender = {
            let stop = Arc::clone(&stop);
            let answers = Arc::clone(&answers);
            thread::spawn(move || send_loop(socket, rate, max, &stop, &answers))
        };
        let receiver = {
            let receiving = Arc::clone(&receiving);
            let answers = Arc::clone(&answers);
            thread::spawn(move || recv_loop(rx, &receiving, &answers))
        };
        UdpLoad {
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
            receiving,
            answers,
        }
    }

    /// Answers received so far from `pid`.
    pub fn answered_by(&self, pid: i32) -> usize {
        let a = self.answers.lock().unwrap();
        a.by_pid.get(&pid).copied().unwrap_or(0)
    }

    /// Waits (bounded) until `pid` has answered `n` more datagrams than `from`; false on
    /// timeout.
    pub fn wait_answers_from(&self, pid: i32, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let from = self.answered_by(pid);
        while Instant::now() < deadline {
            if self.answered_by(pid) >= from + n {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Stops sending, waits up to `grace` for the answers still due, and counts. `generations`
    /// lists the serving pids oldest first (for `stale`).
    pub fn finish(mut self, grace: Duration, generations: &[i32]) -> UdpStats {
        self.stop.store(true, Ordering::SeqCst);
        let (sent, elapsed) = self.sender.take().unwrap().join().expect("sender panicked");
        let deadline = Instant::now() + grace;
        loop {
            let done = {
                let a = self.answers.lock().unwrap();
                a.count.iter().take(sent as usize).all(|&c| c > 0)
            };
            if done || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.receiving.store(false, Ordering::SeqCst);
        self.receiver
            .take()
            .unwrap()
            .join()
            .expect("receiver panicked");
        let a = self.answers.lock().unwrap();
        let rank: HashMap<i32, usize> = generations
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i))
            .collect();
        let mut unanswered = Vec::new();
        let mut unanswered_count = 0;
        let mut duplicates = 0;
        let mut stale = 0;
        let mut newest = 0;
        for seq in 0..sent as usize {
            let c = a.count.get(seq).copied().unwrap_or(0);
            if c == 0 {
                unanswered_count += 1;
                if unanswered.len() < 20 {
                    unanswered.push(seq as u64);
                }
                continue;
            }
            if c > 1 {
                duplicates += 1;
            }
            // A pid the test did not list counts as the newest (it cannot be older).
            let r = rank.get(&a.pid[seq]).copied().unwrap_or(usize::MAX);
            if r < newest {
                stale += 1;
            }
            newest = newest.max(r);
        }
        UdpStats {
            sent,
            answered: sent - unanswered_count,
            unanswered,
            unanswered_count,
            duplicates,
            stale,
            garbage: a.garbage,
            per_generation: generations
                .iter()
                .map(|p| (*p, a.by_pid.get(p).copied().unwrap_or(0)))
                .collect(),
            rate_per_s: sent as f64 / elapsed.as_secs_f64().max(1e-9),
        }
    }
}

impl Drop for UdpLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.receiving.store(false, Ordering::SeqCst);
    }
}

/// Sends `seq` as decimal text, `rate` per second, in a burst every millisecond (sleeping
/// until the next one is due), so the rate holds on a loaded machine too.
fn send_loop(
    socket: UdpSocket,
    rate: u32,
    max: Duration,
    stop: &AtomicBool,
    answers: &Mutex<Answers>,
) -> (u64, Duration) {
    let start = Instant::now();
    let mut seq: u64 = 0;
    while !stop.load(Ordering::SeqCst) && start.elapsed() < max {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
        let room = answers.lock().unwrap().high + WINDOW;
        while seq < due.min(room) {
            {
                // Room for the answer before the datagram leaves, so no answer finds none.
                let mut a = answers.lock().unwrap();
                a.count.push(0);
                a.pid.push(0);
            }
            match socket.send(seq.to_string().as_bytes()) {
                Ok(_) => seq += 1,
                Err(e) => {
                    // ECONNREFUSED reports an ICMP error for an earlier datagram (no socket
                    // was bound): that datagram goes unanswered and is counted so. Resend
                    // this one, not a new number.
                    let mut a = answers.lock().unwrap();
                    a.count.pop();
                    a.pid.pop();
                    drop(a);
                    if e.kind() != std::io::ErrorKind::ConnectionRefused {
                        panic!("send: {e}");
                    }
                }
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    (seq, start.elapsed())
}

fn recv_loop(socket: UdpSocket, receiving: &AtomicBool, answers: &Mutex<Answers>) {
    let mut buf = [0u8; 1024];
    while receiving.load(Ordering::SeqCst) {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue
            }
            Err(e) => panic!("recv: {e}"),
        };
        let parsed = std::str::from_utf8(&buf[..n]).ok().and_then(|s| {
            let (seq, pid) = s.split_once(" pid=")?;
            Some((seq.parse::<usize>().ok()?, pid.parse::<i32>().ok()?))
        });
        let mut a = answers.lock().unwrap();
        match parsed {
            Some((seq, pid)) if seq < a.count.len() => {
                a.count[seq] += 1;
                if a.pid[seq] == 0 {
                    a.pid[seq] = pid;
                }
                *a.by_pid.entry(pid).or_insert(0) += 1;
                a.high = a.high.max(seq as u64 + 1);
            }
            _ => a.garbage += 1,
        }
    }
}
