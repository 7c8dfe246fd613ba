//! Continuous load: client threads sending `GET /` back to back until stopped, every answer a
//! `200 <greeting> pid=<pid>` or a counted failure (nothing is retried). The engine
//! ([`Load`]: the threads, their shared counters and the merge of what they saw) is shared by
//! the HTTP/1.1 load here and the TLS loads of [`crate::tls`].

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::http::{read_response, request_bytes, Addr, Stream};
use crate::wait::{poll_until, LONG};

/// How a load's clients use connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// A new connection per request (`Connection: close`).
    Close,
    /// Persistent connections; a connection is replaced only after a response that says
    /// `Connection: close`. Anything else (reset, EOF instead of a response, timeout) is a failure.
    KeepAlive,
}

/// What a load saw.
#[derive(Default, Debug)]
pub struct LoadStats {
    /// Requests answered `200 <greeting> pid=<pid>`.
    pub ok: usize,
    /// Every failure, described.
    pub failures: Vec<String>,
    /// Successful answers per answering pid.
    pub by_pid: BTreeMap<i32, usize>,
    /// Successful answers per greeting (and, for HTTP/2, streams refused by GOAWAY).
    pub by_greeting: BTreeMap<String, usize>,
    /// Connections opened.
    pub connections: usize,
}

impl LoadStats {
    pub(crate) fn merge(&mut self, o: LoadStats) {
        self.ok += o.ok;
        self.failures.extend(o.failures);
        for (k, v) in o.by_pid {
            *self.by_pid.entry(k).or_default() += v;
        }
        for (k, v) in o.by_greeting {
            *self.by_greeting.entry(k).or_default() += v;
        }
        self.connections += o.connections;
    }

    /// The counts and the first 20 failures, for assertion messages.
    pub fn summary(&self) -> String {
        let mut f = self.failures.clone();
        f.truncate(20);
        format!(
            "ok={} failed={} connections={} by_pid={:?} by_greeting={:?} first failures={f:#?}",
            self.ok,
            self.failures.len(),
            self.connections,
            self.by_pid,
            self.by_greeting
        )
    }

    /// Panics with the [`LoadStats::summary`] if any request failed.
    pub fn assert_no_failures(&self) {
        assert!(
            self.failures.is_empty(),
            "requests failed: {}",
            self.summary()
        );
    }
}

/// What the client threads of a load share while it runs.
pub(crate) struct Tally {
    stop: AtomicBool,
    ok: AtomicUsize,
    seen: Mutex<HashSet<i32>>,
}

impl Tally {
    /// The load has been told to finish.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Counts one answer: a 200 whose body is `<greeting> pid=<pid>` succeeds, anything else
    /// is a failure.
    pub(crate) fn record(&self, st: &mut LoadStats, status: u16, body: &str) {
        let gp = body
            .trim()
            .rsplit_once(" pid=")
            .and_then(|(g, p)| Some((g.to_owned(), p.parse::<i32>().ok()?)));
        match (status, gp) {
            (200, Some((greeting, pid))) => {
                st.ok += 1;
                self.ok.fetch_add(1, Ordering::SeqCst);
                *st.by_pid.entry(pid).or_default() += 1;
                *st.by_greeting.entry(greeting).or_default() += 1;
                self.seen.lock().unwrap().insert(pid);
            }
            _ => st.failures.push(format!("status {status} body {body:?}")),
        }
    }
}

/// A running load (see the module doc).
pub struct Load {
    tally: Arc<Tally>,
    workers: Vec<JoinHandle<LoadStats>>,
}

impl Load {
    /// `threads` clients issuing `GET /` back to back until stopped.
    pub fn start(addr: &Addr, threads: usize, mode: LoadMode) -> Load {
        let addr = addr.clone();
        Load::spawn(threads, move |tally| load_worker(&addr, mode, tally))
    }

    /// Runs `worker` on `threads` threads; each returns what it saw once [`Tally::stopped`].
    pub(crate) fn spawn<W>(threads: usize, worker: W) -> Load
    where
        W: Fn(&Tally) -> LoadStats + Clone + Send + 'static,
    {
        let tally = Arc::new(Tally {
            stop: AtomicBool::new(false),
            ok: AtomicUsize::new(0),
            seen: Mutex::new(HashSet::new()),
        });
        let workers = (0..threads)
            .map(|_| {
                let (tally, worker) = (Arc::clone(&tally), worker.clone());
                thread::spawn(move || worker(&tally))
            })
            .collect();
        Load { tally, workers }
    }

    /// Requests answered successfully so far.
    fn ok_count(&self) -> usize {
        self.tally.ok.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have succeeded.
    pub fn wait_more(&self, n: usize) {
        let target = self.ok_count() + n;
        assert!(
            poll_until(LONG, || self.ok_count() >= target),
            "load stalled at {} successful requests (wanted {target})",
            self.ok_count()
        );
    }

    /// Whether `pid` has answered a request of this load.
    pub fn has_seen(&self, pid: i32) -> bool {
        self.tally.seen.lock().unwrap().contains(&pid)
    }

    /// Waits until `pid` has answered a request of this load.
    pub fn wait_seen(&self, pid: i32) {
        assert!(
            poll_until(LONG, || self.has_seen(pid)),
            "no load request was answered by pid {pid}"
        );
    }

    /// Stops the clients (each finishes its request in flight); everything they saw.
    pub fn finish(self) -> LoadStats {
        self.tally.stop.store(true, Ordering::SeqCst);
        let mut total = LoadStats::default();
        for w in self.workers {
            total.merge(w.join().expect("load worker panicked"));
        }
        total
    }
}

fn load_worker(addr: &Addr, mode: LoadMode, tally: &Tally) -> LoadStats {
    let timeout = Duration::from_secs(10);
    let mut st = LoadStats::default();
    let mut conn: Option<BufReader<Stream>> = None;
    let close = mode == LoadMode::Close;
    let req = request_bytes("/", close);
    while !tally.stopped() {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Stream::connect(addr, timeout) {
                Ok(s) => {
                    st.connections += 1;
                    BufReader::new(s)
                }
                Err(e) => {
                    st.failures.push(format!("connect: {e} ({:?})", e.kind()));
                    continue;
                }
            },
        };
        if let Err(e) = c.get_mut().write_all(&req) {
            st.failures.push(format!("write: {e} ({:?})", e.kind()));
            continue;
        }
        match read_response(&mut c) {
            Ok(resp) => {
                tally.record(&mut st, resp.status, &resp.body);
                if !close && !resp.closes() {
                    conn = Some(c);
                }
            }
            Err(e) => st.failures.push(format!("read: {e}")),
        }
    }
    st
}
