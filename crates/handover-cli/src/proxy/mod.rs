//! Proxy mode (`--proxy http://ADDR | tcp://ADDR`), for programs that can only bind a port of
//! their own: the supervisor listens on the public address and forwards to the *current*
//! worker, which listens on a free loopback port given to it in `$PORT` / `{port}`.
//!
//! | module | one reason to change |
//! |---|---|
//! | `mod` (here) | `--proxy` parsing; the routing table shared with the supervisor |
//! | `upstream` | one worker as seen by the proxy: its address, in-flight count, drain |
//! | `split`, `gen_stats` | the grey release: the weighted split and its rule; per-generation counters |
//! | `cidr` | `--trusted-proxy` |
//! | `policy` | the one header policy of both HTTP paths (hop-by-hop, framing, forwarding headers) |
//! | `relay`, `body`, `message`, `chunked`, `inbuf`, `conns`, `lazy_timer` | the HTTP/1 relay; its bodies both ways; heads; chunked bodies; read buffers; its worker connections; its timeouts |
//! | `request`, `response` | the relay's client request heads and worker response heads: parse, check, write |
//! | `http`, `rewind`, `pool`, `sent`, `headers` | h2c clients (through hyper) |
//! | `tcp` | the TCP proxy |
//! | `tls`, `stream` | TLS in front of the HTTP proxy (`https://`); the client streams it serves |
//! | `spin`, `cut` | busy-polling for awaited answers (`--busy-poll`); the drain-deadline cut |
//!
//! The supervisor routes with [`Proxy::route`] once a worker is ready and retires the old one
//! with [`Proxy::retire`], which resolves once the old worker has nothing in flight (or at the
//! drain deadline, when its remaining connections are cut): only then does it get the stop
//! signal. A canary ([`Proxy::split`]) gets a share of new traffic next to the current worker
//! until it is promoted ([`Proxy::promote`]) or taken out ([`Proxy::unsplit`]).

mod body;
mod chunked;
mod cidr;
mod conns;
mod cut;
mod gen_stats;
mod headers;
mod http;
mod inbuf;
mod lazy_timer;
mod message;
mod policy;
mod pool;
mod relay;
mod request;
mod response;
mod rewind;
mod sent;
mod spin;
mod split;
mod stream;
mod tcp;
mod tls;
mod upstream;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

pub use cidr::Cidr;
pub use gen_stats::Answer;
use split::Split;
pub use split::{parse_percent, parse_share, percent_bp};
pub use tls::TlsFront;
use upstream::{Guard, Upstream};

use handover::control_socket::{CanaryRequest, GenerationCounters};

use crate::events::{Events, WorkerId};

/// The protocol of `--proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Terminate HTTP/1.1 and h2c, forward requests.
    Http,
    /// Terminate TLS, then HTTP/1.1 and HTTP/2 (by ALPN), forward requests.
    Https,
    /// Forward TCP connections.
    Tcp,
}

/// `--proxy http://IP:PORT | tcp://IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxySpec {
    /// How to forward.
    pub protocol: Protocol,
    /// The public address the supervisor listens on.
    pub addr: SocketAddr,
}

impl FromStr for ProxySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (protocol, rest) = if let Some(r) = s.strip_prefix("http://") {
            (Protocol::Http, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (Protocol::Https, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (Protocol::Tcp, r)
        } else {
            return Err(format!(
                "invalid proxy address {s:?}: expected http://IP:PORT, https://IP:PORT or tcp://IP:PORT"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let addr = rest
            .parse()
            .map_err(|_| format!("invalid proxy address {s:?}: {rest:?} is not IP:PORT"))?;
        Ok(ProxySpec { protocol, addr })
    }
}

impl fmt::Display for ProxySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.protocol {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// The proxy's fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a worker has to answer (connect + response head); 504 after that.
    pub upstream_timeout: Duration,
    /// Peers whose `X-Forwarded-*` headers are kept (and appended to).
    pub trusted: Vec<Cidr>,
    /// How long a proxy thread polls for an awaited answer before sleeping (`spin`).
    pub busy_poll: Duration,
    /// How long an HTTP/1 client connection may stay idle between requests, or take to send
    /// a request head.
    pub client_timeout: Duration,
    /// `https://`: the certificate and key, loaded.
    pub tls: Option<Arc<TlsFront>>,
    /// The supervisor's metrics, which count each generation's traffic too.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Binds the public address; the spec returned has the real port (when 0 was asked for).
pub fn bind(spec: ProxySpec, backlog: i32) -> Result<(ProxySpec, StdListener), String> {
    let bound = handover::sys::bind(&handover::ListenAddr::Tcp(spec.addr), backlog)
        .map_err(|e| format!("cannot listen on {spec}: {e}"))?;
    let listener = StdListener::from(bound.fd);
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {spec}: {e}"))?;
    Ok((ProxySpec { addr, ..spec }, listener))
}

/// The proxy's own threads, one single-threaded runtime each (the supervisor's loop stays
/// single-threaded and unaffected by load). A client connection, and the worker connections
/// its requests use, stay on one thread: no wake-ups across threads per request. Dropping it
/// ends every proxied connection.
#[derive(Debug)]
pub struct ProxyRuntime {
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        self.stop.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts proxying `listener` (from [`bind`]) on threads of its own.
pub fn start(
    spec: ProxySpec,
    listener: StdListener,
    settings: Settings,
) -> Result<(Proxy, ProxyRuntime), String> {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut rt = ProxyRuntime {
        stop: Vec::new(),
        threads: Vec::new(),
    };
    let mut handles = Vec::new();
    let mut first = None;
    let budget = settings.busy_poll;
    for i in 0..n {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the proxy's threads: {e}"))?;
        handles.push(runtime.handle().clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        if i == 0 {
            first = Some((runtime, tx, rx));
            continue;
        }
        rt.stop.push(tx);
        rt.threads.push(spawn_thread(runtime, rx, budget)?);
    }
    let proxy = Proxy::new(settings);
    let _ = proxy.inner.threads.set(handles);
    let Some((runtime, tx, rx)) = first else {
        return Err("cannot start the proxy's threads: none".to_string());
    };
    {
        let _entered = runtime.enter();
        proxy
            .serve(spec.protocol, listener)
            .map_err(|e| format!("cannot proxy {spec}: {e}"))?;
    }
    rt.stop.push(tx);
    rt.threads.push(spawn_thread(runtime, rx, budget)?);
    Ok((proxy, rt))
}

fn spawn_thread(
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Receiver<()>,
    busy_poll: Duration,
) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name("handover-proxy".to_string())
        .spawn(move || {
            let _ = runtime.block_on(async move {
                tokio::spawn(spin::run(busy_poll));
                stop.await
            });
            drop(runtime);
        })
        .map_err(|e| format!("cannot start the proxy's threads: {e}"))
}

/// The routing table: which worker gets new requests and connections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<RoutingTable>,
}

#[derive(Debug)]
struct RoutingTable {
    /// The current worker, and the canary if one runs. A guard is taken under this lock's
    /// read side, so once a switch (write side) is done, nothing new reaches the old worker.
    current: watch::Sender<Route>,
    /// Every worker that was routed to and not yet retired or gone.
    known: Mutex<HashMap<WorkerId, Arc<Upstream>>>,
    settings: Settings,
    /// The proxy's threads, when it has its own: client connections are spread over them.
    threads: std::sync::OnceLock<Vec<tokio::runtime::Handle>>,
    /// Where the next client connection goes.
    next: std::sync::atomic::AtomicUsize,
}

/// Where new traffic goes.
#[derive(Debug, Default)]
struct Route {
    /// The current worker.
    main: Option<Arc<Upstream>>,
    /// A canary with its share.
    canary: Option<Arc<Split>>,
}

impl Route {
    fn is_empty(&self) -> bool {
        self.main.is_none() && self.canary.is_none()
    }

    fn has(&self, id: WorkerId) -> bool {
        self.main.as_ref().is_some_and(|u| u.id == id)
            || self.canary.as_ref().is_some_and(|s| s.canary.id == id)
    }

    /// The upstream for a new request or connection from `client`. While the current worker
    /// is being restarted after a crash, the canary (if any) takes everything.
    fn pick(&self, client: IpAddr) -> Option<&Arc<Upstream>> {
        match (&self.main, &self.canary) {
            (Some(m), Some(s)) => Some(if s.picks_canary(client) { &s.canary } else { m }),
            (Some(m), None) => Some(m),
            (None, Some(s)) => Some(&s.canary),
            (None, None) => None,
        }
    }
}

/// A canary started by [`Proxy::split`], for its figures.
#[derive(Debug, Clone)]
pub struct CanaryHandle(Arc<Split>);

/// The figures of a canary.
#[derive(Debug, Clone)]
pub struct CanaryFigures {
    /// The old generation's counters since the canary started.
    pub old: GenerationCounters,
    /// The canary's.
    pub new: GenerationCounters,
    /// Why the rule fails the canary now, if it does.
    pub verdict: Option<String>,
}

impl Proxy {
    /// A routing table with no worker yet.
    pub fn new(settings: Settings) -> Proxy {
        Proxy {
            inner: Arc::new(RoutingTable {
                current: watch::Sender::new(Route::default()),
                known: Mutex::new(HashMap::new()),
                settings,
                threads: std::sync::OnceLock::new(),
                next: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Starts serving `listener` (bound, non-blocking) on the current Tokio runtime.
    pub fn serve(&self, protocol: Protocol, listener: StdListener) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let proxy = self.clone();
        match protocol {
            Protocol::Http => tokio::spawn(http::serve(listener, proxy, None)),
            Protocol::Https => {
                let tls = self.settings().tls.clone().ok_or_else(|| {
                    std::io::Error::other("https:// needs a certificate and a key")
                })?;
                tokio::spawn(http::serve(listener, proxy, Some(tls)))
            }
            Protocol::Tcp => tokio::spawn(tcp::serve(listener, proxy)),
        };
        Ok(())
    }

    /// `https://`: loads the certificate and key again (at an upgrade trigger, before the new
    /// worker starts); on error the ones in use stay and the error names the file. Nothing to
    /// do for other protocols.
    pub fn reload_tls(&self) -> Result<(), String> {
        match &self.settings().tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// From now on, new requests and connections go to worker `id` (of `generation`) at
    /// `addr` (loopback); a canary, if one runs, keeps its share.
    pub fn route(&self, id: WorkerId, generation: u64, addr: SocketAddr) {
        let up = Arc::new(self.upstream(id, generation, addr));
        self.known().insert(id, Arc::clone(&up));
        self.inner.current.send_modify(|r| r.main = Some(up));
    }

    /// A canary: worker `id` (of `generation`) at `addr` gets `plan.share_bp` of new traffic
    /// next to the current worker. A trip of the rule takes it out of the split at once and
    /// is reported to `events` ([`crate::events::Event::CanaryTripped`]).
    pub fn split(
        &self,
        id: WorkerId,
        generation: u64,
        addr: SocketAddr,
        plan: CanaryRequest,
        events: Events,
    ) -> CanaryHandle {
        let up = Arc::new(self.upstream(id, generation, addr));
        self.known().insert(id, Arc::clone(&up));
        let mut handle = None;
        self.inner.current.send_modify(|r| {
            let split = Arc::new(Split::new(up, r.main.as_ref(), plan, events));
            handle = Some(CanaryHandle(Arc::clone(&split)));
            r.canary = Some(split);
        });
        handle.expect("set above")
    }

    /// The canary takes all new traffic (its counters go on); returns false if none runs.
    pub fn promote(&self) -> bool {
        self.inner
            .current
            .send_if_modified(|r| match r.canary.take() {
                Some(s) => {
                    r.main = Some(Arc::clone(&s.canary));
                    true
                }
                None => false,
            })
    }

    /// The canary gets no new traffic (retire it next to let it drain).
    pub fn unsplit(&self) {
        self.inner
            .current
            .send_if_modified(|r| r.canary.take().is_some());
    }

    /// The canary's and the old generation's figures since it started, and the rule's
    /// verdict on them (also once it is out of the split).
    pub fn figures(&self, canary: &CanaryHandle) -> CanaryFigures {
        let route = self.inner.current.borrow();
        let split = &canary.0;
        let (old, new) = split.figures(route.main.as_ref());
        let old_generation = route.main.as_ref().map_or(0, |m| m.generation);
        CanaryFigures {
            verdict: split.verdict(&old, &new),
            old: old.counters(old_generation),
            new: new.counters(split.canary.generation),
        }
    }

    fn upstream(&self, id: WorkerId, generation: u64, addr: SocketAddr) -> Upstream {
        let metrics = self.settings().metrics.as_ref();
        Upstream::new(id, generation, addr)
            .with_metrics(metrics.map(|m| m.for_generation(generation)))
    }

    /// Counts one exchange with `up`; if `up` is a canary and the rule now fails it, the
    /// canary is taken out of the split before the next request.
    fn record(&self, up: &Upstream, answer: Answer, took: Duration) {
        up.stats.record(answer, took);
        if let Some(m) = &up.metrics {
            match answer {
                Answer::Status(s) => m.answer(s, took),
                Answer::Connected => m.connection(false, took),
                Answer::Failed => m.connection(true, took),
            }
        }
        let tripped = {
            let route = self.inner.current.borrow();
            match &route.canary {
                Some(s) if s.canary.id == up.id => s.judge(route.main.as_ref()).then_some(up.id),
                _ => None,
            }
        };
        if let Some(id) = tripped {
            self.inner.current.send_if_modified(|r| {
                let ours = r.canary.as_ref().is_some_and(|s| s.canary.id == id);
                if ours {
                    r.canary = None;
                }
                ours
            });
        }
    }

    /// Worker `id` gets nothing new. Resolves once nothing is in flight on it any more, or
    /// after `deadline`, when its remaining (tunnelled, TCP) connections are cut; returns the
    /// number still in flight then.
    pub fn retire(
        &self,
        id: WorkerId,
        deadline: Duration,
    ) -> impl std::future::Future<Output = usize> {
        self.unroute(id);
        let up = self.known().remove(&id);
        async move {
            let Some(up) = up else { return 0 };
            up.drain(deadline).await
        }
    }

    /// Worker `id` exited: forget it, cut what still goes to it.
    pub fn gone(&self, id: WorkerId) {
        self.unroute(id);
        if let Some(up) = self.known().remove(&id) {
            up.close();
        }
    }

    fn unroute(&self, id: WorkerId) {
        self.inner.current.send_if_modified(|r| {
            let mut changed = false;
            if r.main.as_ref().is_some_and(|u| u.id == id) {
                r.main = None;
                changed = true;
            }
            if r.canary.as_ref().is_some_and(|s| s.canary.id == id) {
                r.canary = None;
                changed = true;
            }
            changed
        });
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerId, Arc<Upstream>>> {
        self.inner.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves an accepted client connection on one of the proxy's threads (round robin), or
    /// on the current runtime if it has none of its own.
    fn spawn_client<F, Fut>(&self, stream: tokio::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let handles = match self.inner.threads.get() {
            Some(h) if h.len() > 1 => h,
            _ => {
                tokio::spawn(serve(stream));
                return;
            }
        };
        let i = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % handles.len();
        // Registered again with the chosen thread's reactor.
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("proxy: cannot hand over a client connection: {e}");
                return;
            }
        };
        handles[i].spawn(async move {
            match tokio::net::TcpStream::from_std(std) {
                Ok(s) => serve(s).await,
                Err(e) => tracing::debug!("proxy: cannot hand over a client connection: {e}"),
            }
        });
    }

    fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// A guard on the worker for a new request or connection from `client` (the current
    /// one, or the canary for its share), waiting up to `wait` for one (during a crash
    /// restart there is none for a moment; clients wait as they would in a listen backlog).
    async fn acquire(&self, wait: Duration, client: IpAddr) -> Option<Guard> {
        if let Some(g) = self.try_acquire(client) {
            return Some(g);
        }
        let mut rx = self.inner.current.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|r| !r.is_empty())).await;
        self.try_acquire(client)
    }

    fn try_acquire(&self, client: IpAddr) -> Option<Guard> {
        self.inner
            .current
            .borrow()
            .pick(client)
            .map(Upstream::guard)
    }

    /// Whether worker `id` gets no new traffic any more but another does (a retry would
    /// reach someone else).
    fn moved_on_from(&self, id: WorkerId) -> bool {
        let route = self.inner.current.borrow();
        !route.is_empty() && !route.has(id)
    }
}

/// The next client from `listener`, with Nagle off. A failed accept (out of file
/// descriptors, most likely) is logged and retried shortly, never returned.
async fn accept_client(listener: &tokio::net::TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => drop(handover::sys::after_accept_error("proxy", &e).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_addresses() {
        let s: ProxySpec = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(s.protocol, Protocol::Http);
        assert_eq!(s.to_string(), "http://127.0.0.1:8080");
        let s: ProxySpec = "tcp://[::1]:0".parse().unwrap();
        assert_eq!(s.protocol, Protocol::Tcp);
        let s: ProxySpec = "https://127.0.0.1:8443".parse().unwrap();
        assert_eq!(
            (s.protocol, s.to_string().as_str()),
            (Protocol::Https, "https://127.0.0.1:8443")
        );
        for bad in ["127.0.0.1:80", "ftp://127.0.0.1:1", "http://localhost:80"] {
            let e = bad.parse::<ProxySpec>().unwrap_err();
            assert!(e.contains("invalid proxy address"), "{bad}: {e}");
        }
    }

    /// Plain settings for a proxy that is never listened on.
    fn test_settings() -> Settings {
        Settings {
            upstream_timeout: Duration::from_secs(1),
            trusted: Vec::new(),
            busy_poll: Duration::ZERO,
            client_timeout: Duration::from_secs(60),
            tls: None,
            metrics: None,
        }
    }

    #[tokio::test]
    async fn retiring_waits_for_requests_in_flight() {
        let proxy = Proxy::new(test_settings());
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ip = IpAddr::from([127, 0, 0, 1]);
        proxy.route(WorkerId(1), 1, addr);
        let guard = proxy.acquire(Duration::ZERO, ip).await.unwrap();
        proxy.route(WorkerId(2), 2, addr);
        assert!(proxy.moved_on_from(WorkerId(1)));
        let retire = tokio::spawn(proxy.retire(WorkerId(1), Duration::from_secs(30)));
        tokio::task::yield_now().await;
        assert!(!retire.is_finished());
        drop(guard);
        assert_eq!(retire.await.unwrap(), 0);
        // A deadline cuts what is left.
        let g = proxy.acquire(Duration::ZERO, ip).await.unwrap();
        assert_eq!(
            proxy.retire(WorkerId(2), Duration::from_millis(10)).await,
            1
        );
        drop(g);
        assert!(proxy.acquire(Duration::from_millis(10), ip).await.is_none());
    }

    #[tokio::test]
    async fn a_canary_gets_its_share_and_is_promoted_or_taken_out() {
        let proxy = Proxy::new(test_settings());
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        proxy.route(WorkerId(1), 1, addr);
        let plan = CanaryRequest {
            share_bp: 2500,
            for_ms: 1000,
            max_error_rate_bp: 100,
            min_requests: 4,
            sticky_ip: false,
        };
        let h = proxy.split(WorkerId(2), 2, addr, plan, events.clone());
        let mut to_canary = 0;
        for _ in 0..100 {
            let g = proxy.acquire(Duration::ZERO, ip).await.unwrap();
            to_canary += usize::from(g.upstream().id == WorkerId(2));
        }
        assert_eq!(to_canary, 25);
        assert!(!proxy.moved_on_from(WorkerId(2)) && !proxy.moved_on_from(WorkerId(1)));
        // Four 500s from the canary trip the rule: out of the split at once, reported.
        for _ in 0..4 {
            let g = proxy.try_acquire(ip).unwrap();
            let up = Arc::clone(g.upstream());
            proxy.record(&up, Answer::Status(200), Duration::ZERO);
        }
        let canary = proxy.known().get(&WorkerId(2)).cloned().unwrap();
        for _ in 0..4 {
            proxy.record(&canary, Answer::Status(500), Duration::ZERO);
        }
        assert!(proxy.figures(&h).verdict.is_some());
        assert!(matches!(
            rx.try_recv(),
            Ok(crate::events::Event::CanaryTripped {
                id: WorkerId(2),
                ..
            })
        ));
        assert!(proxy.inner.current.borrow().canary.is_none());
        assert!((0..10).all(|_| proxy.try_acquire(ip).unwrap().upstream().id == WorkerId(1)));
        // A promoted canary takes everything, with its counters.
        let h = proxy.split(WorkerId(3), 3, addr, plan, events);
        let f = proxy.figures(&h);
        assert_eq!(
            (f.old.generation, f.new.generation, f.new.requests),
            (1, 3, 0)
        );
        assert!(proxy.promote());
        assert!(!proxy.promote());
        assert!((0..10).all(|_| proxy.try_acquire(ip).unwrap().upstream().id == WorkerId(3)));
    }
}
