//! One connection kept for a whole test, a request every N ms ([`Pinger`]).

use super::*;

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
