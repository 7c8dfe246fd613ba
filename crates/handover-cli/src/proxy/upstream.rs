//! One worker as the proxy sees it: its loopback address, what is in flight on it, its
//! connection pool, and the signal that cuts its remaining connections at the drain deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::cut::{Cut, Wait};
use super::gen_stats::GenStats;
use crate::events::WorkerId;

/// A worker that requests are (or were) routed to.
#[derive(Debug)]
pub struct Upstream {
    /// The worker.
    pub id: WorkerId,
    /// Its generation (for logs and the counters).
    pub generation: u64,
    /// Where it listens (loopback, its own port).
    pub addr: SocketAddr,
    /// Requests in flight (until their response body has been sent), tunnels and TCP
    /// connections.
    active: AtomicUsize,
    idle: Notify,
    /// Becomes true at the drain deadline or when the worker is gone.
    closing: Arc<Cut>,
    /// Becomes true when the worker is retired: idle connections to it are closed.
    retiring: Arc<Cut>,
    /// What it has answered (the canary's rule, `status`).
    pub stats: GenStats,
    /// Its series in the supervisor's metrics, if kept.
    pub metrics: Option<crate::metrics::GenMetrics>,
}

impl Upstream {
    /// Worker `id` of `generation`, listening on `addr`, with nothing in flight.
    pub fn new(id: WorkerId, generation: u64, addr: SocketAddr) -> Upstream {
        Upstream {
            id,
            generation,
            addr,
            stats: GenStats::default(),
            metrics: None,
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: Arc::default(),
            retiring: Arc::default(),
        }
    }

    /// The same, counting into the supervisor's metrics too.
    pub fn with_metrics(self, metrics: Option<crate::metrics::GenMetrics>) -> Upstream {
        Upstream { metrics, ..self }
    }

    /// Counts one more thing in flight until the guard is dropped.
    pub fn guard(self: &Arc<Self>) -> Guard {
        self.active.fetch_add(1, Ordering::SeqCst);
        Guard(Arc::clone(self))
    }

    /// Waits until nothing is in flight, at most `deadline`; then cuts what is left and
    /// returns how much that was.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.retiring.fire();
        let idle = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.active.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, idle).await;
        let left = self.active.load(Ordering::SeqCst);
        self.close();
        left
    }

    /// Cuts tunnels and TCP connections to this worker; drops idle pooled connections.
    pub fn close(&self) {
        self.retiring.fire();
        self.closing.fire();
    }

    /// Whether the worker has been retired (or is gone): nothing new goes to it.
    pub fn is_retired(&self) -> bool {
        self.retiring.is_fired()
    }

    /// Resolves once the worker has been retired (or is gone).
    pub fn retired(&self) -> Wait {
        self.retiring.wait()
    }

    /// Resolves when this worker's connections must be cut.
    pub fn closed(&self) -> Wait {
        self.closing.wait()
    }
}

/// One request, tunnel or connection in flight on an upstream.
#[derive(Debug)]
pub struct Guard(Arc<Upstream>);

impl Guard {
    /// The worker it is in flight on.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
