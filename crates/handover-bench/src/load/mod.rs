//! The load client: a fixed number of HTTP/1.1 (or HTTPS/1.1) connection slots spread over worker threads,
//! each thread a current-thread tokio runtime. It never retries; see [`stats::Failure`].

pub mod conn;
pub mod stats;
pub mod stream;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::generations::Generations;
use crate::http1;
use crate::version::Greetings;
use stats::Stats;

/// How requests use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Reuse each connection; reconnect only after a response with `Connection: close`
    /// (or after a failure).
    Keepalive,
    /// Send `Connection: close`: one connection per request.
    Close,
}

impl Mode {
    /// `"keepalive"` or `"close"`.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Keepalive => "keepalive",
            Mode::Close => "close",
        }
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Keep-alive or close.
    pub mode: Mode,
    /// Connection slots (concurrent requests).
    pub conns: usize,
    /// Worker threads.
    pub threads: usize,
    /// How long requests are started.
    pub duration: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Body prefixes of v1 and v2.
    pub greetings: Arc<Greetings>,
    /// Generations seen by the probe.
    pub generations: Arc<Generations>,
    /// Rate-limited mode: total requests per second over all slots. Each slot is paced to
    /// `rate / conns` with absolute deadlines (slot k's i-th request is due at
    /// `start + (i + k / conns) × conns / rate`); a slot that falls behind sends at once, without
    /// skipping. Latency is measured from the actual send. `None`: back to back.
    pub rate: Option<f64>,
    /// Speak TLS with this client configuration (the https targets); none: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Runs the load from `start` (a shared time origin, so slices line up with upgrade times)
/// and returns the merged counts and the time from `start` until the last request ended.
pub fn run(cfg: &LoadConfig, start: Instant) -> std::io::Result<(Stats, Duration)> {
    let span = cfg.duration + cfg.timeout + Duration::from_secs(1);
    let threads = cfg.threads.clamp(1, cfg.conns.max(1));
    let handles = (0..threads)
        .map(|t| {
            let cfg = cfg.clone();
            let slots = cfg.conns / threads + usize::from(t < cfg.conns % threads);
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || worker(&cfg, t, threads, slots, start, span))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut total = Stats::new(start, span);
    for h in handles {
        let stats = h
            .join()
            .map_err(|_| std::io::Error::other("load worker panicked"))??;
        total.merge(&stats);
    }
    total.trim();
    Ok((total, start.elapsed()))
}

fn worker(
    cfg: &LoadConfig,
    thread: usize,
    threads: usize,
    slots: usize,
    start: Instant,
    span: Duration,
) -> std::io::Result<Stats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stats = Rc::new(RefCell::new(Stats::new(start, span)));
    let shared = Rc::new(conn::Shared {
        addr: cfg.addr,
        mode: cfg.mode,
        request: http1::request(cfg.addr.port(), cfg.mode == Mode::Close),
        timeout: cfg.timeout,
        end: (start + cfg.duration).into(),
        greetings: Arc::clone(&cfg.greetings),
        generations: Arc::clone(&cfg.generations),
        tls: cfg.tls.clone(),
    });
    let period = cfg
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(cfg.conns.max(1) as f64 / r));
    let local = tokio::task::LocalSet::new();
    for i in 0..slots {
        // Slots are numbered across threads (thread t has slots t, t + threads, ...), so
        // their first deadlines spread evenly over one period.
        let k = thread + i * threads;
        let pace = period.map(|p| conn::Pace {
            period: p,
            first: tokio::time::Instant::from_std(
                start + p.mul_f64(k as f64 / cfg.conns.max(1) as f64),
            ),
        });
        local.spawn_local(conn::run(Rc::clone(&shared), Rc::clone(&stats), pace));
    }
    rt.block_on(local);
    drop(shared);
    Ok(Rc::try_unwrap(stats)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| rc.borrow().clone()))
}

#[cfg(test)]
mod tests;
