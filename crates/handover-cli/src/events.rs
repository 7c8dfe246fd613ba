//! What the supervisor reacts to. Every source (signals, the reaper, readiness checks, timers,
//! the control socket, the file watcher) sends these into one channel, and one loop owns all
//! the state (`supervisor.rs`).

use handover::control_socket::{Status, StopReport, UpgradeReport};
use handover::sys::ExitStatus;
use tokio::sync::{mpsc, oneshot};

/// Identifies one worker process for its whole life (unlike a PID, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

/// Where the outcome of an upgrade goes.
pub type UpgradeReply = oneshot::Sender<Result<UpgradeReport, String>>;

/// One thing that happened.
#[derive(Debug)]
pub enum Event {
    /// A child of the supervisor ended and was reaped (a worker, or an orphan when PID 1).
    Exited { pid: u32, status: ExitStatus },
    /// A worker proved it is ready.
    Ready { id: WorkerId, how: String },
    /// A worker was not ready within `--ready-timeout`.
    ReadyTimeout { id: WorkerId },
    /// Proxy mode: a retired worker has nothing in flight any more (or its drain deadline
    /// passed): time for its stop signal.
    Drained { id: WorkerId, left: usize },
    /// A draining worker is still alive at its drain deadline.
    DrainTimeout { id: WorkerId },
    /// The restart backoff has passed (for the restart scheduled as number `epoch`).
    RestartDue { epoch: u64 },
    /// Start a new generation and hand over to it.
    Upgrade {
        trigger: String,
        reply: Option<UpgradeReply>,
    },
    /// Stop gracefully (a second stop *signal* kills the workers at once).
    Stop {
        trigger: String,
        from_signal: bool,
        reply: Option<oneshot::Sender<StopReport>>,
    },
    /// The lame duck of a stop (`--lame-duck`) is over: the workers drain now.
    LameDuckOver,
    /// Report the state.
    Status { reply: oneshot::Sender<Status> },
}

/// The sending side, cloned into every source.
pub type Events = mpsc::UnboundedSender<Event>;
