//! One client connection slot: sends `GET /` back to back until the run ends, never retrying,
//! and records each request's outcome.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use super::stats::{Failure, Stats};
use super::stream::{self, Stream};
use super::Mode;
use crate::generations::{Generations, Snapshot};
use crate::http1::{self, Parse};
use crate::version::{parse_pid, Greetings};

/// Pause after a failed connect, so a dead server does not turn into a busy loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// What every connection slot of a run shares.
pub struct Shared {
    /// Server address.
    pub addr: SocketAddr,
    /// Keep-alive or one connection per request.
    pub mode: Mode,
    /// The request bytes.
    pub request: Vec<u8>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// No request starts at or after this.
    pub end: Instant,
    /// Body prefixes of v1 and v2.
    pub greetings: Arc<Greetings>,
    /// Generations seen by the probe, for stale answers.
    pub generations: Arc<Generations>,
    /// TLS client configuration (https targets); none: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Rate-limited mode: this slot's requests are due at `first + i × period`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Time between this slot's requests.
    pub period: Duration,
    /// When its first request is due.
    pub first: Instant,
}

struct Conn {
    stream: Stream,
    snapshot: Snapshot,
    answered: bool,
}

/// How one request ended.
enum Exchange {
    /// A whole response: status, body range in the buffer, `Connection: close`.
    Response(http1::Response),
    Failed(Failure),
}

/// Runs one slot until `shared.end`.
pub async fn run(shared: Rc<Shared>, stats: Rc<RefCell<Stats>>, pace: Option<Pace>) {
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut due = pace.map(|p| p.first);
    loop {
        if let (Some(p), Some(d)) = (pace, due.as_mut()) {
            if *d >= shared.end {
                return;
            }
            tokio::time::sleep_until(*d).await;
            let lag = Instant::now().saturating_duration_since(*d);
            let mut s = stats.borrow_mut();
            s.lag.saturating_record(lag.as_micros().max(1) as u64);
            if lag > p.period {
                s.late += 1;
            }
            drop(s);
            *d += p.period;
        }
        let started = Instant::now();
        // A paced request due before the end goes out even if its slot fell behind (the
        // rate's promise: late, never skipped); a back-to-back one starts before the end.
        let due_in_time = pace.is_some();
        if (!due_in_time && started >= shared.end) || crate::abort::requested() {
            return;
        }
        let deadline = started + shared.timeout;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&shared, deadline).await {
                Ok(c) => {
                    stats.borrow_mut().connections += 1;
                    conn.insert(c)
                }
                Err(()) => {
                    stats
                        .borrow_mut()
                        .fail(Instant::now().into_std(), Failure::Connect);
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                    continue;
                }
            },
        };
        buf.clear();
        let outcome =
            match timeout_at(deadline, exchange(&mut c.stream, &shared.request, &mut buf)).await {
                Ok(x) => x,
                Err(_) => Exchange::Failed(Failure::Timeout),
            };
        let now = Instant::now();
        let keep = record(&shared, c, &buf, outcome, started, now, &stats);
        if !keep || shared.mode == Mode::Close {
            conn = None;
        }
    }
}

async fn connect(shared: &Shared, deadline: Instant) -> Result<Conn, ()> {
    let snapshot = shared.generations.snapshot();
    // With TLS the handshake is part of the connect, inside the same request deadline.
    match timeout_at(deadline, stream::connect(shared.addr, shared.tls.as_ref())).await {
        Ok(Ok(stream)) => Ok(Conn {
            stream,
            snapshot,
            answered: false,
        }),
        _ => Err(()),
    }
}

/// Writes the request and reads one whole response into `buf`.
async fn exchange(stream: &mut Stream, request: &[u8], buf: &mut Vec<u8>) -> Exchange {
    if stream.write_all(request).await.is_err() {
        return Exchange::Failed(Failure::Write);
    }
    let mut eof = false;
    loop {
        match http1::parse(buf, eof) {
            Parse::Done(r) if r.body_end == buf.len() => return Exchange::Response(r),
            Parse::Done(_) => return Exchange::Failed(Failure::Protocol),
            Parse::Invalid(_) => return Exchange::Failed(Failure::Protocol),
            Parse::Incomplete | Parse::UntilEof if eof => return Exchange::Failed(Failure::Read),
            Parse::Incomplete | Parse::UntilEof => {}
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match stream.read_buf(buf).await {
            Ok(0) => eof = true,
            Ok(_) => {}
            Err(_) => return Exchange::Failed(Failure::Read),
        }
    }
}

/// Counts the outcome; returns whether the connection may carry another request.
fn record(
    shared: &Shared,
    c: &mut Conn,
    buf: &[u8],
    outcome: Exchange,
    started: Instant,
    now: Instant,
    stats: &RefCell<Stats>,
) -> bool {
    let mut stats = stats.borrow_mut();
    let at = now.into_std();
    let r = match outcome {
        Exchange::Failed(kind) => {
            stats.fail(at, kind);
            return false;
        }
        Exchange::Response(r) => r,
    };
    if r.close {
        stats.announced_closes += 1;
    }
    let body = &buf[r.body_start..r.body_end];
    if !(200..300).contains(&r.status) {
        stats.fail(at, Failure::Status);
        return !r.close;
    }
    let Some(version) = shared.greetings.classify(body) else {
        stats.fail(at, Failure::Body);
        return !r.close;
    };
    stats.ok(at, now - started, version);
    if !c.answered {
        c.answered = true;
        let stale = parse_pid(body).is_some_and(|pid| shared.generations.is_stale(c.snapshot, pid));
        if stale {
            stats.stale(at);
        }
    }
    !r.close
}
