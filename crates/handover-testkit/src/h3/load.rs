//! HTTP/3 load: many connections, requests back to back ([`H3Load`]).

use super::*;

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
