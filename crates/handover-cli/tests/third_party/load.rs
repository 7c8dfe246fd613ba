//! Load for the third-party worker tests: HTTP/1.1 clients sending `GET /` back to back, on
//! keep-alive connections or a new connection per request. A keep-alive client replaces its
//! connection only after an answer that says `Connection: close`; anything else (a reset, a
//! close instead of an answer, a timeout, a status other than 200) is a failure, counted and
//! never retried.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// No load runs longer than this, whatever the test does (a backstop: tests stop it sooner).
const MAX_RUN: Duration = Duration::from_secs(180);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    KeepAlive,
    Close,
}

#[derive(Default, Debug, Clone)]
pub struct Tally {
    pub ok: usize,
    pub failures: Vec<String>,
    /// Answers per version (the first word of the body).
    pub versions: BTreeMap<String, usize>,
    /// Connections opened.
    pub connections: usize,
    /// Of which by the keep-alive clients.
    pub keep_alive_connections: usize,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `keep_alive` keep-alive clients and `close` one-request-per-connection clients.
    pub fn start(addr: SocketAddr, keep_alive: usize, close: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let modes = std::iter::repeat_n(Mode::KeepAlive, keep_alive)
            .chain(std::iter::repeat_n(Mode::Close, close));
        let threads = modes
            .map(|mode| {
                let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
                thread::spawn(move || client(addr, mode, &stop, &tally))
            })
            .collect();
        Load {
            stop,
            tally,
            threads,
        }
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) until `n` more answers of `version` have arrived.
    pub fn wait_answers(&self, version: &str, n: usize, timeout: Duration) {
        let count = |t: &Tally| t.versions.get(version).copied().unwrap_or(0);
        let target = count(&self.tally()) + n;
        let deadline = Instant::now() + timeout;
        while count(&self.tally()) < target {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} more answers from {version} within {timeout:?}: {:?}",
                self.tally()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("load client panicked");
        }
        let t = self.tally.lock().unwrap().clone();
        t
    }
}

fn client(addr: SocketAddr, mode: Mode, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let started = Instant::now();
    let request: &[u8] = match mode {
        Mode::KeepAlive => b"GET / HTTP/1.1\r\nHost: test\r\n\r\n",
        Mode::Close => b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    };
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match connect(addr) {
                Ok(c) => {
                    let mut t = tally.lock().unwrap();
                    t.connections += 1;
                    t.keep_alive_connections += usize::from(mode == Mode::KeepAlive);
                    c
                }
                Err(e) => {
                    tally.lock().unwrap().failures.push(format!("connect: {e}"));
                    continue;
                }
            },
        };
        let answer = c
            .get_mut()
            .write_all(request)
            .and_then(|()| read_answer(&mut c));
        let mut t = tally.lock().unwrap();
        match answer {
            Ok((200, close, body)) => {
                t.ok += 1;
                let version = body.split_whitespace().next().unwrap_or("").to_string();
                *t.versions.entry(version).or_default() += 1;
                if mode == Mode::KeepAlive && !close {
                    conn = Some(c);
                }
            }
            Ok((status, _, body)) => t.failures.push(format!("status {status}: {body:?}")),
            Err(e) => t.failures.push(format!("{mode:?}: {e}")),
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(BufReader::new(s))
}

/// Reads one answer: (status, whether it closes the connection, body). Bodies are
/// `Content-Length` or chunked (what gunicorn, uvicorn and Node send).
fn read_answer(r: &mut BufReader<TcpStream>) -> io::Result<(u16, bool, String)> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("connection closed instead of an answer".into()));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let http10 = line.starts_with("HTTP/1.0");
    let (mut close, mut length, mut chunked) = (http10, None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the middle of a head".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(bad(format!("bad header {l:?}")));
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "connection" => close = v.split(',').any(|t| t.trim() == "close"),
            "content-length" => length = Some(v.parse::<usize>().map_err(|e| bad(e.to_string()))?),
            "transfer-encoding" => chunked = v == "chunked",
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else {
        let len = length.ok_or_else(|| bad("an answer without a length".into()))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    }
    Ok((status, close, String::from_utf8_lossy(&body).into_owned()))
}
