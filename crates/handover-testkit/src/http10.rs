//! The HTTP/1.0 client of the supervisor tests (the Python workers speak HTTP/1.0 and close
//! after each answer, so a response is everything up to EOF), and a load of such requests
//! counted by the answering worker's version.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

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
    if !head.starts_with("HTTP/1.0 200") {
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
                        let r = get(addr, "/");
                        let mut s = stats.lock().unwrap();
                        match r {
                            Ok(body) => {
                                s.ok += 1;
                                *s.versions.entry(version_of(&body)).or_default() += 1;
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
        let base = self.stats().versions.get(version).copied().unwrap_or(0);
        let ok = poll_until(LONG, || {
            self.stats().versions.get(version).copied().unwrap_or(0) >= base + n
        });
        assert!(
            ok,
            "fewer than {n} answers from {version}: {:?}",
            self.stats()
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
