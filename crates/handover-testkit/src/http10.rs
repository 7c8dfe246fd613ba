//! The HTTP/1.0 client of the supervisor tests (the Python workers speak HTTP/1.0 and close
//! after each answer, so a response is everything up to EOF), and a load of such requests
//! counted by the answering worker's version.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crate::wait::{poll_until, LONG, SHORT};

/// Why a request failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Nothing listens (connection refused).
    Refused,
    /// Anything else, described.
    Other(String),
}

/// `GET path` over HTTP/1.0 (one connection per request); the body of a 200.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, Failure> {
    let mut s = TcpStream::connect_timeout(&addr, SHORT).map_err(|e| {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            Failure::Refused
        } else {
            Failure::Other(format!("connect: {e}"))
        }
    })?;
    let other = |what: &str, e: io::Error| Failure::Other(format!("{what}: {e}"));
    s.set_read_timeout(Some(LONG))
        .map_err(|e| other("timeout", e))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .map_err(|e| other("write", e))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| other("read", e))?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| Failure::Other(format!("incomplete response {resp:?}")))?;
    // A server may answer in its own version (Node.js says HTTP/1.1), closing all the same.
    if !(head.starts_with("HTTP/1.0 200 ") || head.starts_with("HTTP/1.1 200 ")) {
        return Err(Failure::Other(format!("status: {head:?}")));
    }
    Ok(body.to_string())
}

/// The `pid=` of a worker's answer.
pub fn pid_of(body: &str) -> i32 {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}

/// The version (first word) of a worker's answer.
pub fn version_of(body: &str) -> String {
    body.split_whitespace().next().unwrap_or("").to_string()
}

/// Clients sending [`get`] requests one after another until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    threads: Vec<JoinHandle<()>>,
}

/// What a [`Load`] saw.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    /// Requests answered 200.
    pub ok: usize,
    /// Every failure, described.
    pub failures: Vec<String>,
    /// Answers per version.
    pub versions: BTreeMap<String, usize>,
    /// Every answer, timed.
    pub answers: Vec<Answer>,
}

/// One answered request of a [`Load`].
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// Taken just before the connect: the connection reached the listen backlog after this.
    pub before_connect: Instant,
    /// Taken just after the whole answer was read: the server had answered before this.
    pub answered: Instant,
    /// The `pid=` of the answer.
    pub pid: i32,
}

impl Stats {
    /// The stale answers: requests whose connection was made after a newer generation had
    /// already answered one, yet answered by an older one. `generations` lists the worker
    /// PIDs oldest first; answers from other PIDs are left out. Both instants err on the safe
    /// side (the connection reached the backlog after `before_connect`, the newer answer was
    /// given before `answered`), so an answer listed here is stale for certain.
    pub fn stale(&self, generations: &[i32]) -> Vec<String> {
        let rank = |pid: i32| generations.iter().position(|&p| p == pid);
        // The first answer of each generation, then the earliest from that one or a newer one.
        let mut first: Vec<Option<Instant>> = vec![None; generations.len()];
        for a in &self.answers {
            if let Some(i) = rank(a.pid) {
                first[i] = Some(first[i].map_or(a.answered, |t| t.min(a.answered)));
            }
        }
        let mut newer_from: Vec<Option<Instant>> = vec![None; generations.len() + 1];
        for i in (0..generations.len()).rev() {
            newer_from[i] = match (first[i], newer_from[i + 1]) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.answers
            .iter()
            .filter_map(|a| {
                let i = rank(a.pid)?;
                let newer = newer_from[i + 1]?;
                (a.before_connect > newer).then(|| {
                    format!(
                        "pid {} answered a connection made {:?} after a newer generation had answered",
                        a.pid,
                        a.before_connect - newer
                    )
                })
            })
            .collect()
    }
}

impl Load {
    /// `clients` threads requesting `GET /` from `addr` back to back.
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let threads = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let stats = Arc::clone(&stats);
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let before_connect = Instant::now();
                        let r = get(addr, "/");
                        let answered = Instant::now();
                        let mut s = stats.lock().unwrap();
                        match r {
                            Ok(body) => {
                                s.ok += 1;
                                *s.versions.entry(version_of(&body)).or_default() += 1;
                                if let Some(pid) = body
                                    .split_whitespace()
                                    .find_map(|w| w.strip_prefix("pid="))
                                    .and_then(|p| p.parse().ok())
                                {
                                    s.answers.push(Answer {
                                        before_connect,
                                        answered,
                                        pid,
                                    });
                                }
                            }
                            Err(e) => s.failures.push(format!("{e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            stats,
            threads,
        }
    }

    /// What was seen so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    /// Waits until `n` more answers of `version` have arrived.
    pub fn wait_answers(&self, version: &str, n: usize) {
        // Read in place: a clone would copy every timed answer at each poll.
        let count = || {
            let s = self.stats.lock().unwrap();
            s.versions.get(version).copied().unwrap_or(0)
        };
        let base = count();
        let ok = poll_until(LONG, || count() >= base + n);
        assert!(
            ok,
            "fewer than {n} answers from {version}: {:?}",
            self.stats()
        );
    }

    /// Waits until `pid` has answered `n` more requests.
    pub fn wait_pid(&self, pid: i32, n: usize) {
        let count = || {
            let s = self.stats.lock().unwrap();
            s.answers.iter().filter(|a| a.pid == pid).count()
        };
        let base = count();
        assert!(
            poll_until(LONG, || count() >= base + n),
            "fewer than {n} answers from pid {pid}"
        );
    }

    /// Stops the clients; everything they saw.
    pub fn finish(self) -> Stats {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let s = self.stats.lock().unwrap().clone();
        s
    }
}
