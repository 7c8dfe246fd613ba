//! HTTP/3 clients for the QUIC tests (feature `h3`): quinn + h3 over loopback, trusting the
//! test CA of [`crate::tls::Pki`]. Like the other clients, none of them retries: every
//! failure is counted, by kind ([`Kind`]).
//!
//! What an HTTP/3 client does at a server's graceful shutdown is not a failure: once a
//! connection has received GOAWAY, h3 refuses to open a request on it (`RemoteClosing`, the
//! request was never sent), and the client opens a new connection. The old one must then end
//! the way RFC 9114 §5.2 says a graceful shutdown ends: the server closes it with
//! `H3_NO_ERROR`. A connection that times out, is reset, or is closed with any other code is a
//! failure ([`Kind::Closed`]), even after its last answer.
//!
//! - [`get`]: one request on a fresh connection.
//! - [`Pinger`]: ONE connection kept for the whole test, a request every N ms; it never
//!   reconnects, so its answers tell whether that connection survived.
//! - [`H3Load`]: many connections, requests back to back (the counting of [`Load`]).
//! - [`install_h3`], [`start_h3`], [`upgrade_h3`]: the library's `h3` example under test.
//! - [`Relay`]: holds back a client's datagrams, to split a first flight around an upgrade.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

use crate::binaries::example_binary_with;
use crate::hello::{Ctx, Server};
use crate::load::{Load, LoadStats, Tally};
use crate::reap::wait_line_while_alive;
use crate::sys::signal;
use crate::tls::Pki;
use crate::wait::{poll_until, LONG, SHORT};

/// How long one request may take before it counts as [`Kind::Timeout`] (long: the tests run
/// on a loaded 2-core machine, where a process can be starved for seconds).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The client's QUIC idle timeout: a connection that hears nothing from the server for this
/// long is dead (its keep-alive PINGs went unanswered).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The client's keep-alive PING interval.
pub const KEEP_ALIVE: Duration = Duration::from_millis(500);
/// `H3_NO_ERROR`: the code of a graceful close (RFC 9114 §8.1).
pub const H3_NO_ERROR: u64 = 0x100;
/// What a load's connections may take to be closed by the server after GOAWAY.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// A bound on any load, should a test hang.
const MAX_LOAD: Duration = Duration::from_secs(180);

/// The kinds of failed requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The connection could not be made (handshake failed or timed out).
    Connect,
    /// The server reset the request stream (or stopped reading it).
    Reset,
    /// An answer that is not `200 <greeting> pid=<pid>`.
    Status,
    /// The connection failed under a request, or ended other than by the server's
    /// `H3_NO_ERROR` close (timed out, reset, another code).
    Closed,
    /// No answer within [`REQUEST_TIMEOUT`].
    Timeout,
}

impl Kind {
    /// The prefix a failure of this kind carries in [`LoadStats::failures`].
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Connect => "connect: ",
            Kind::Reset => "reset: ",
            Kind::Status => "status: ",
            Kind::Closed => "closed: ",
            Kind::Timeout => "timeout: ",
        }
    }

    fn of(failure: &str) -> Option<Kind> {
        [
            Kind::Connect,
            Kind::Reset,
            Kind::Status,
            Kind::Closed,
            Kind::Timeout,
        ]
        .into_iter()
        .find(|k| failure.starts_with(k.prefix()))
    }
}

/// The failures of `stats` counted by [`Kind`] (`Status` for those of the shared counting,
/// which have no prefix).
pub fn failures_by_kind(stats: &LoadStats) -> BTreeMap<Kind, usize> {
    let mut by = BTreeMap::new();
    for f in &stats.failures {
        *by.entry(Kind::of(f).unwrap_or(Kind::Status)).or_default() += 1;
    }
    by
}

/// The `by_greeting` key counting requests not sent because the connection had said GOAWAY.
pub const NOT_SENT_AFTER_GOAWAY: &str = "(not sent: GOAWAY, new connection)";

/// A client configuration trusting only the test CA, offering `h3`, with the kit's keep-alive
/// and idle timeout.
pub fn client_config(pki: &Pki) -> quinn::ClientConfig {
    client_config_alpn(pki, &[b"h3"])
}

/// [`client_config`] offering these ALPN protocols (a long list makes the ClientHello span
/// more than one datagram).
pub fn client_config_alpn(pki: &Pki, alpn: &[&[u8]]) -> quinn::ClientConfig {
    let tls = pki.client(alpn);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .expect("the test CA's rustls config supports TLS 1.3");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("a small timeout")));
    config.transport_config(Arc::new(transport));
    config
}

/// A client endpoint on a fresh loopback UDP socket of `server`'s family.
pub fn client_endpoint(server: SocketAddr) -> quinn::Endpoint {
    let local: SocketAddr = if server.is_ipv6() {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    };
    quinn::Endpoint::client(local).expect("a client UDP socket")
}

/// An HTTP/3 connection: the quinn connection under it and h3's request sender.
pub struct H3Conn {
    /// The QUIC connection.
    pub quic: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<h3::error::ConnectionError>,
}

/// Why a request on an [`H3Conn`] was not answered.
#[derive(Debug)]
pub enum RequestError {
    /// The connection had received GOAWAY: the request was not sent (not a failure).
    Goaway,
    /// A failure of this kind, described.
    Failed(Kind, String),
}

impl H3Conn {
    /// Connects to `server` (as `localhost`) and sets up HTTP/3, within [`REQUEST_TIMEOUT`].
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        server: SocketAddr,
        config: &quinn::ClientConfig,
    ) -> Result<H3Conn, String> {
        let setup = async {
            let connecting = endpoint
                .connect_with(config.clone(), server, "localhost")
                .map_err(|e| format!("connect: {e}"))?;
            let quic = connecting.await.map_err(|e| format!("handshake: {e}"))?;
            let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
                .await
                .map_err(|e| format!("h3 setup: {e}"))?;
            let driver = tokio::spawn(async move { driver.wait_idle().await });
            Ok(H3Conn { quic, send, driver })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, setup)
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {REQUEST_TIMEOUT:?}")))
    }

    /// `GET path`: the status and the body, within [`REQUEST_TIMEOUT`].
    pub async fn get(&mut self, path: &str) -> Result<(u16, String), RequestError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.request(path)).await {
            Ok(r) => r,
            Err(_) => Err(RequestError::Failed(
                Kind::Timeout,
                format!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"),
            )),
        }
    }

    async fn request(&mut self, path: &str) -> Result<(u16, String), RequestError> {
        let req = http::Request::get(format!("https://localhost{path}"))
            .body(())
            .expect("a valid request");
        let mut stream = self.send.send_request(req).await.map_err(classify)?;
        stream.finish().await.map_err(classify)?;
        let resp = stream.recv_response().await.map_err(classify)?;
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(classify)? {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                body.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok((
            resp.status().as_u16(),
            String::from_utf8_lossy(&body).into(),
        ))
    }

    /// Waits (at most `timeout`) for the server to close the connection and says how it
    /// ended: `Ok` for the server's `H3_NO_ERROR`, `Err` with what happened otherwise.
    /// Keeps the request sender until then: dropping it would close the connection from this
    /// side.
    pub async fn wait_server_close(self, timeout: Duration) -> Result<(), String> {
        let H3Conn { quic, send, driver } = self;
        let closed = tokio::time::timeout(timeout, quic.closed()).await;
        drop(send);
        driver.abort();
        match closed {
            Err(_) => Err(format!("not closed by the server within {timeout:?}")),
            Ok(quinn::ConnectionError::ApplicationClosed(c))
                if c.error_code.into_inner() == H3_NO_ERROR =>
            {
                Ok(())
            }
            Ok(e) => Err(format!("ended by {e}")),
        }
    }
}

/// Sorts h3's request errors into the kit's kinds.
fn classify(e: h3::error::StreamError) -> RequestError {
    use h3::error::StreamError as S;
    match e {
        S::RemoteClosing { .. } => RequestError::Goaway,
        S::RemoteTerminate { code, .. } => {
            RequestError::Failed(Kind::Reset, format!("stream terminated with {code}"))
        }
        S::ConnectionError { 0: c, .. } => RequestError::Failed(Kind::Closed, format!("{c}")),
        other => RequestError::Failed(Kind::Closed, format!("{other}")),
    }
}

/// Runs `f` on a fresh current-thread runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// One `GET path` over HTTP/3 on a fresh connection, closed by the client afterwards.
pub fn get(
    server: SocketAddr,
    config: &quinn::ClientConfig,
    path: &str,
) -> Result<(u16, String), String> {
    block_on(async {
        let endpoint = client_endpoint(server);
        let mut conn = H3Conn::connect(&endpoint, server, config).await?;
        let r = conn.get(path).await.map_err(|e| format!("{e:?}"));
        conn.quic.close(H3_NO_ERROR.try_into().unwrap(), b"");
        endpoint.wait_idle().await;
        r
    })
}

/// `GET /` over HTTP/3 answered `200 <greeting> pid=<pid>`: the greeting and the pid.
pub fn hello(server: SocketAddr, config: &quinn::ClientConfig) -> Result<(String, i32), String> {
    let (status, body) = get(server, config, "/")?;
    parse_hello(status, &body).ok_or_else(|| format!("status {status} body {body:?}"))
}

fn parse_hello(status: u16, body: &str) -> Option<(String, i32)> {
    let (g, p) = body.trim().rsplit_once(" pid=")?;
    (status == 200).then_some(())?;
    Some((g.to_owned(), p.parse().ok()?))
}

// ---------------------------------------------------------------------------------------------
// One connection, a request every N ms
// ---------------------------------------------------------------------------------------------

/// What a [`Pinger`] saw.
#[derive(Debug, Default)]
pub struct PingStats {
    /// The answering pid of each request, in order.
    pub answers: Vec<i32>,
    /// Every failure, described (kind prefixes as in [`Kind::prefix`]).
    pub failures: Vec<String>,
    /// Requests not sent because the connection had said GOAWAY (the pinger stops then).
    pub goaway: bool,
    /// The quinn `stable_id` of the connection at the start and at the end.
    pub stable_ids: (usize, usize),
    /// Whether the connection was still open at the end.
    pub open_at_end: bool,
    /// PING frames the client sent, and packets it received, on the connection.
    pub pings_sent: u64,
    /// UDP datagrams received on the connection.
    pub datagrams_received: u64,
    /// UDP datagrams sent on the connection (what a router can have forwarded of it).
    pub datagrams_sent: u64,
}

/// ONE HTTP/3 connection, `GET /` on it every `every` until [`Pinger::finish`]; it never
/// reconnects. A failure ends it (later requests would not say more).
pub struct Pinger {
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<i32>>>,
    worker: Option<JoinHandle<PingStats>>,
}

impl Pinger {
    /// Connects (panics if it cannot) and starts the requests.
    pub fn start(server: SocketAddr, config: quinn::ClientConfig, every: Duration) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker = {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || {
                block_on(ping_loop(server, config, every, &stop, &answered, ready_tx))
            })
        };
        match ready_rx.recv_timeout(LONG) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the pinger cannot connect to {server}: {e}"),
            Err(e) => panic!("the pinger did not connect to {server}: {e}"),
        }
        Pinger {
            stop,
            answered,
            worker: Some(worker),
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.answered.lock().unwrap().len()
    }

    /// Waits until `n` more requests have been answered (panics after [`LONG`]).
    pub fn wait_more(&self, n: usize) {
        let target = self.answered() + n;
        assert!(
            poll_until(LONG, || self.answered() >= target
                || self.worker.as_ref().is_some_and(|w| w.is_finished())),
            "the pinger stalled at {} answers (wanted {target})",
            self.answered()
        );
    }

    /// Stops the requests; everything it saw.
    pub fn finish(mut self) -> PingStats {
        self.stop.store(true, Ordering::SeqCst);
        self.worker
            .take()
            .expect("finished once")
            .join()
            .expect("pinger panicked")
    }
}

async fn ping_loop(
    server: SocketAddr,
    config: quinn::ClientConfig,
    every: Duration,
    stop: &AtomicBool,
    answered: &Mutex<Vec<i32>>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> PingStats {
    let mut st = PingStats::default();
    let endpoint = client_endpoint(server);
    let mut conn = match H3Conn::connect(&endpoint, server, &config).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return st;
        }
    };
    let _ = ready.send(Ok(()));
    let first_id = conn.quic.stable_id();
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_LOAD {
        tick.tick().await;
        match conn.get("/").await {
            Ok((status, body)) => match parse_hello(status, &body) {
                Some((_, pid)) => {
                    st.answers.push(pid);
                    answered.lock().unwrap().push(pid);
                }
                None => {
                    st.failures
                        .push(format!("{}{status} {body:?}", Kind::Status.prefix()));
                    break;
                }
            },
            Err(RequestError::Goaway) => {
                st.goaway = true;
                break;
            }
            Err(RequestError::Failed(kind, e)) => {
                st.failures.push(format!("{}{e}", kind.prefix()));
                break;
            }
        }
    }
    let stats = conn.quic.stats();
    st.pings_sent = stats.frame_tx.ping;
    st.datagrams_received = stats.udp_rx.datagrams;
    st.datagrams_sent = stats.udp_tx.datagrams;
    st.stable_ids = (first_id, conn.quic.stable_id());
    st.open_at_end = conn.quic.close_reason().is_none();
    conn.quic.close(H3_NO_ERROR.try_into().unwrap(), b"");
    endpoint.wait_idle().await;
    st
}

// ---------------------------------------------------------------------------------------------
// Load: many connections, requests back to back
// ---------------------------------------------------------------------------------------------

/// HTTP/3 load: `threads` client threads, each with `conns_per_thread` connections sending
/// `GET /` back to back until [`H3Load::finish`] (at most 180 s). After GOAWAY a connection
/// sends nothing more, a new one takes its place, and the old one must be closed by the
/// server with `H3_NO_ERROR` within 15 s. The counting is [`Load`]'s.
pub struct H3Load {
    load: Load,
    latencies: Arc<Mutex<Vec<Duration>>>,
    clean_closes: Arc<AtomicUsize>,
    started: Instant,
}

/// What an [`H3Load`] saw, with its timing.
#[derive(Debug)]
pub struct H3Report {
    /// The counts ([`failures_by_kind`] sorts the failures).
    pub stats: LoadStats,
    /// The latency of every successful request.
    pub latencies: Vec<Duration>,
    /// Connections the server closed with `H3_NO_ERROR` after GOAWAY.
    pub clean_closes: usize,
    /// From the start to the end of the load.
    pub elapsed: Duration,
}

impl H3Report {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.stats.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        if l.is_empty() {
            return Duration::ZERO;
        }
        let i = ((l.len() - 1) as f64 * q).round() as usize;
        l[i]
    }

    /// One line for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "{:.0} req/s, p50 {:?}, p99 {:?}, failures by kind {:?}, clean closes after GOAWAY {}; {}",
            self.throughput(),
            self.quantile(0.5),
            self.quantile(0.99),
            failures_by_kind(&self.stats),
            self.clean_closes,
            self.stats.summary()
        )
    }
}

impl H3Load {
    /// Starts the clients (connections are made as they go; a failed one is counted).
    pub fn start(
        server: SocketAddr,
        config: quinn::ClientConfig,
        threads: usize,
        conns_per_thread: usize,
    ) -> H3Load {
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let clean_closes = Arc::new(AtomicUsize::new(0));
        let (l, c) = (Arc::clone(&latencies), Arc::clone(&clean_closes));
        let load = Load::spawn(threads, move |tally| {
            let shared = Shared {
                latencies: Arc::clone(&l),
                clean_closes: Arc::clone(&c),
            };
            block_on(load_thread(
                server,
                config.clone(),
                conns_per_thread,
                tally,
                shared,
            ))
        });
        H3Load {
            load,
            latencies,
            clean_closes,
            started: Instant::now(),
        }
    }

    /// Waits until `n` more requests have succeeded.
    pub fn wait_more(&self, n: usize) {
        self.load.wait_more(n)
    }

    /// Waits until `pid` has answered a request of this load.
    pub fn wait_seen(&self, pid: i32) {
        self.load.wait_seen(pid)
    }

    /// Stops the clients (each finishes its request in flight, and waits for the server to
    /// close its connections that said GOAWAY); everything they saw.
    pub fn finish(self) -> H3Report {
        let stats = self.load.finish();
        let elapsed = self.started.elapsed();
        let latencies = std::mem::take(&mut *self.latencies.lock().unwrap());
        H3Report {
            stats,
            latencies,
            clean_closes: self.clean_closes.load(Ordering::SeqCst),
            elapsed,
        }
    }
}

/// What the threads of a load hand back besides their [`LoadStats`].
struct Shared {
    latencies: Arc<Mutex<Vec<Duration>>>,
    clean_closes: Arc<AtomicUsize>,
}

async fn load_thread(
    server: SocketAddr,
    config: quinn::ClientConfig,
    conns: usize,
    tally: &Tally,
    shared: Shared,
) -> LoadStats {
    let endpoint = client_endpoint(server);
    let started = Instant::now();
    // The tally is borrowed for the thread's lifetime: the connections run as futures of this
    // one task, not as spawned tasks.
    let slots = (0..conns).map(|_| load_conn(&endpoint, server, &config, tally, started));
    let results = join_all(slots).await;
    let mut total = LoadStats::default();
    let mut watchers = Vec::new();
    let mut latencies = Vec::new();
    for slot in results {
        total.merge(slot.stats);
        watchers.extend(slot.watchers);
        latencies.extend(slot.latencies);
    }
    shared.latencies.lock().unwrap().extend(latencies);
    for w in watchers {
        match w.await {
            Ok(Ok(())) => {
                shared.clean_closes.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Err(e)) => total
                .failures
                .push(format!("{}after GOAWAY: {e}", Kind::Closed.prefix())),
            Err(e) => total
                .failures
                .push(format!("{}watcher: {e}", Kind::Closed.prefix())),
        }
    }
    endpoint.close(H3_NO_ERROR.try_into().unwrap(), b"");
    total
}

/// What one connection slot of a load saw.
struct Slot {
    stats: LoadStats,
    /// Connections left after GOAWAY, each waiting for the server's close.
    watchers: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    latencies: Vec<Duration>,
}

/// One connection slot of a load: requests back to back, a new connection after GOAWAY or a
/// failure.
async fn load_conn(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    config: &quinn::ClientConfig,
    tally: &Tally,
    started: Instant,
) -> Slot {
    let mut slot = Slot {
        stats: LoadStats::default(),
        watchers: Vec::new(),
        latencies: Vec::new(),
    };
    let st = &mut slot.stats;
    let running = || !tally.stopped() && started.elapsed() < MAX_LOAD;
    while running() {
        let mut conn = match H3Conn::connect(endpoint, server, config).await {
            Ok(c) => c,
            Err(e) => {
                st.failures.push(format!("{}{e}", Kind::Connect.prefix()));
                // A refused handshake can end at once: let the other slots of this thread
                // run before the next try.
                tokio::task::yield_now().await;
                continue;
            }
        };
        st.connections += 1;
        let mut goaway = false;
        while running() {
            let sent = Instant::now();
            match conn.get("/").await {
                Ok((status, body)) => {
                    let ok = st.ok;
                    tally.record(st, status, &body);
                    if st.ok > ok {
                        slot.latencies.push(sent.elapsed());
                    }
                }
                Err(RequestError::Goaway) => {
                    *st.by_greeting
                        .entry(NOT_SENT_AFTER_GOAWAY.into())
                        .or_default() += 1;
                    goaway = true;
                    break;
                }
                Err(RequestError::Failed(kind, e)) => {
                    st.failures.push(format!("{}{e}", kind.prefix()));
                    break;
                }
            }
        }
        if goaway {
            slot.watchers
                .push(tokio::spawn(conn.wait_server_close(CLOSE_TIMEOUT)));
        } else {
            conn.quic.close(H3_NO_ERROR.try_into().unwrap(), b"");
        }
    }
    slot
}

/// Polls every future to completion on this task (the kit has no futures crate).
async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The `h3` example: started, upgraded
// ---------------------------------------------------------------------------------------------

/// Installs the library's `h3` example (built with `quic`) as `<dir>/h3`, the start path its
/// upgrades re-execute, and returns that path.
pub fn install_h3(ctx: &Ctx) -> PathBuf {
    let bin = example_binary_with("h3", "quic");
    let path = ctx.path("h3");
    let tmp = ctx.path("h3.tmp");
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(&bin, &tmp).is_err() {
        fs::copy(&bin, &tmp).expect("copy h3");
    }
    fs::rename(&tmp, &path).expect("rename over h3");
    path
}

/// `<dir>/h3 --listen udp://127.0.0.1:0 --tls-cert .. --tls-key .. <extra>`.
pub fn h3_command(ctx: &Ctx, pki: &Pki, extra: &[&str]) -> Command {
    let mut cmd = ctx.command(ctx.path("h3"));
    cmd.args(["--listen", "udp://127.0.0.1:0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .args(extra);
    cmd
}

/// Spawns `cmd` (some form of `h3`), waits for its `serving udp://IP:PORT` line and for
/// `GET /` over HTTP/3 to be answered by it. The server and its UDP address.
pub fn start_h3(ctx: &Ctx, cmd: Command, config: &quinn::ClientConfig) -> (Server, SocketAddr) {
    let sp = ctx.spawn("h3", cmd);
    let pid = sp.pid;
    let (_, line) = wait_line_while_alive(&sp.log, pid, 0, LONG, |l| l.contains("serving udp://"))
        .unwrap_or_else(|why| panic!("h3 did not log `serving udp://ADDR` {why}"));
    let addr: SocketAddr = line
        .split("serving udp://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse the address in {line:?}"));
    let server = Server {
        pid,
        log: sp.log,
        addrs: Vec::new(),
    };
    let (_, answered_by) = hello(addr, config)
        .unwrap_or_else(|e| panic!("GET / over HTTP/3 failed: {e}; log:\n{}", server.log.text()));
    assert_eq!(answered_by, pid, "GET / answered by an unexpected pid");
    (server, addr)
}

/// `SIGUSR2` to the serving generation, the handover, and `GET /` on new connections answered
/// by the new one (every answer meanwhile a 200). Returns (old pid, new pid); the old one may
/// still be draining.
pub fn upgrade_h3(
    server: &mut Server,
    addr: SocketAddr,
    config: &quinn::ClientConfig,
) -> (i32, i32) {
    let old = server.pid;
    let from = server.log.len();
    signal(old, libc::SIGUSR2);
    let new = server.wait_upgrade_complete(from, old);
    assert_ne!(new, old, "the pid did not change");
    server.pid = new;
    let mut last = None;
    let answered = poll_until(SHORT, || {
        let (_, p) = hello(addr, config)
            .unwrap_or_else(|e| panic!("GET / over HTTP/3: {e}; log:\n{}", server.log.text()));
        last = Some(p);
        p == new
    });
    assert!(
        answered,
        "new connections still answered by {last:?}, expected {new}"
    );
    (old, new)
}

// ---------------------------------------------------------------------------------------------
// A relay that holds a client's datagrams
// ---------------------------------------------------------------------------------------------

/// A loopback UDP relay between one client and a server that can hold back the client's
/// datagrams: the first `pass` go through at once, the rest wait until [`Relay::release`].
/// With a first flight of two datagrams and `pass = 1`, the server has begun a handshake it
/// cannot finish until the test says so: the way to put an upgrade between the two halves.
pub struct Relay {
    /// Where the client sends (the relay's client-facing address).
    pub addr: SocketAddr,
    state: Arc<RelayState>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct RelayState {
    stop: AtomicBool,
    released: AtomicBool,
    /// Datagrams client -> server forwarded, held; server -> client forwarded.
    to_server: AtomicUsize,
    held: AtomicUsize,
    to_client: AtomicUsize,
}

impl Relay {
    /// A relay to `server` letting the client's first `pass` datagrams through.
    pub fn start(server: SocketAddr, pass: usize) -> Relay {
        let front = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        let back = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        back.connect(server).expect("connect the relay");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let state = Arc::new(RelayState::default());
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let up = {
            let (front, back) = (front.try_clone().unwrap(), back.try_clone().unwrap());
            let (state, client) = (Arc::clone(&state), Arc::clone(&client));
            thread::spawn(move || {
                let mut held: Vec<Vec<u8>> = Vec::new();
                let mut buf = vec![0u8; 65_536];
                let started = Instant::now();
                while !state.stop.load(Ordering::SeqCst) && started.elapsed() < MAX_LOAD {
                    if state.released.load(Ordering::SeqCst) {
                        for d in held.drain(..) {
                            let _ = back.send(&d);
                            state.to_server.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    *client.lock().unwrap() = Some(from);
                    let sent = state.to_server.load(Ordering::SeqCst);
                    if sent < pass || state.released.load(Ordering::SeqCst) {
                        let _ = back.send(&buf[..n]);
                        state.to_server.fetch_add(1, Ordering::SeqCst);
                    } else {
                        held.push(buf[..n].to_vec());
                        state.held.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        let down = {
            let (state, client) = (Arc::clone(&state), Arc::clone(&client));
            thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let started = Instant::now();
                while !state.stop.load(Ordering::SeqCst) && started.elapsed() < MAX_LOAD {
                    let Ok(n) = back.recv(&mut buf) else { continue };
                    if let Some(c) = *client.lock().unwrap() {
                        let _ = front.send_to(&buf[..n], c);
                        state.to_client.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        Relay {
            addr,
            state,
            threads: vec![up, down],
        }
    }

    /// Client datagrams held back so far.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Server datagrams relayed to the client so far.
    pub fn to_client(&self) -> usize {
        self.state.to_client.load(Ordering::SeqCst)
    }

    /// Sends what was held, in order, and lets everything through from now on.
    pub fn release(&self) {
        self.state.released.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
