//! A small layer-4 load balancer of the test's own, standing in for a Kubernetes endpoint
//! controller plus kube-proxy: every registered backend's `/healthz` is polled on its own
//! connection every [`Lb::start`] interval (failure threshold 1, success threshold 1), and a
//! new client connection goes to the next healthy backend, round robin. A connection already
//! made stays with its backend until either side closes it. Nothing is retried: a client
//! connection whose backend cannot be reached is closed without a byte, which the client
//! counts as a failure.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use handover_testkit::hello_kit::{get_timeout, poll_until, Addr};

/// How long one health probe may take (connect and answer) before it counts as failed (a
/// kubelet's default `timeoutSeconds`). Probes of one round run in parallel, so a round ends
/// within this after it starts: a lame duck of 2 s is seen well before it ends.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long connecting to a backend may take before the client connection is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Backend {
    healthy: bool,
    /// Client connections sent to it.
    sent: usize,
}

#[derive(Default)]
struct Table {
    /// Registered backends, in the order they were added (round robin runs over this order).
    backends: BTreeMap<SocketAddr, Backend>,
    order: Vec<SocketAddr>,
}

impl Table {
    fn pick(&mut self, turn: usize) -> Option<SocketAddr> {
        let healthy: Vec<SocketAddr> = self
            .order
            .iter()
            .copied()
            .filter(|a| self.backends[a].healthy)
            .collect();
        let chosen = *healthy.get(turn % healthy.len().max(1))?;
        self.backends.get_mut(&chosen).expect("listed").sent += 1;
        Some(chosen)
    }
}

/// The load balancer: an accept thread and a health-polling thread, stopped on drop.
pub struct Lb {
    addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    /// Client connections closed at once because no backend was healthy or reachable.
    dropped: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Lb {
    /// Listens on a free loopback port and polls every backend each `poll`.
    pub fn start(poll: Duration) -> Lb {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the load balancer");
        let addr = listener.local_addr().expect("local addr");
        let table = Arc::new(Mutex::new(Table::default()));
        let dropped = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (table, dropped, stop) = (table.clone(), dropped.clone(), stop.clone());
            thread::spawn(move || accept_loop(&listener, &table, &dropped, &stop))
        };
        let poller = {
            let (table, stop) = (table.clone(), stop.clone());
            thread::spawn(move || poll_loop(&table, poll, &stop))
        };
        Lb {
            addr,
            table,
            dropped,
            stop,
            threads: vec![accept, poller],
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> Addr {
        Addr::Tcp(self.addr)
    }

    /// Registers a backend; it gets connections once a probe has found it healthy.
    pub fn add(&self, backend: SocketAddr) {
        let mut t = self.table.lock().unwrap();
        t.backends.insert(
            backend,
            Backend {
                healthy: false,
                sent: 0,
            },
        );
        t.order.push(backend);
    }

    /// Forgets a backend (its pod is gone).
    pub fn remove(&self, backend: SocketAddr) {
        let mut t = self.table.lock().unwrap();
        t.backends.remove(&backend);
        t.order.retain(|a| *a != backend);
    }

    pub fn is_healthy(&self, backend: SocketAddr) -> bool {
        let t = self.table.lock().unwrap();
        t.backends.get(&backend).is_some_and(|b| b.healthy)
    }

    /// Waits until a probe has found `backend` healthy (or the timeout passes).
    pub fn wait_healthy(&self, backend: SocketAddr, timeout: Duration) -> bool {
        poll_until(timeout, || self.is_healthy(backend))
    }

    /// Client connections sent to `backend` so far.
    pub fn sent_to(&self, backend: SocketAddr) -> usize {
        let t = self.table.lock().unwrap();
        t.backends.get(&backend).map_or(0, |b| b.sent)
    }

    /// Client connections closed because no healthy backend could take them.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept thread, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    table: &Mutex<Table>,
    dropped: &AtomicUsize,
    stop: &AtomicBool,
) {
    let mut turn = 0usize;
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        turn = turn.wrapping_add(1);
        let Some(backend) = table.lock().unwrap().pick(turn) else {
            dropped.fetch_add(1, Ordering::SeqCst);
            continue; // closed at once: the client sees EOF instead of a response
        };
        thread::spawn(move || {
            // Never retried: a backend that cannot be reached costs this connection.
            if let Ok(upstream) = TcpStream::connect_timeout(&backend, CONNECT_TIMEOUT) {
                relay(client, upstream);
            }
        });
    }
}

/// Copies both ways until both directions have ended, passing each half-close on.
fn relay(client: TcpStream, upstream: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || copy_then_shutdown(c2, u2));
    copy_then_shutdown(upstream, client);
    let _ = up.join();
}

fn copy_then_shutdown(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // A reset on one side is passed on as a reset: drop without a clean FIN.
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn poll_loop(table: &Mutex<Table>, every: Duration, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let round = Instant::now();
        let targets: Vec<SocketAddr> = table.lock().unwrap().order.clone();
        // All at once, so that a slow backend does not delay the verdict on the others.
        let probes: Vec<_> = targets
            .into_iter()
            .map(|backend| {
                thread::spawn(move || {
                    let answer = get_timeout(&Addr::Tcp(backend), "/healthz", PROBE_TIMEOUT);
                    (backend, matches!(answer, Ok(r) if r.status == 200))
                })
            })
            .collect();
        for probe in probes {
            let Ok((backend, healthy)) = probe.join() else {
                continue;
            };
            if let Some(b) = table.lock().unwrap().backends.get_mut(&backend) {
                b.healthy = healthy;
            }
        }
        // The poll period is the balancer's own behaviour (kubelet's `periodSeconds`), not a
        // wait for something to be ready.
        while round.elapsed() < every && !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
    }
}
