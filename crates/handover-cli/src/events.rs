//! What the supervisor reacts to. Every source (signals, the reaper, readiness checks, timers,
//! the control socket, the file watcher) sends these into one channel, and one loop owns all
//! the state (`supervisor.rs`).

use handover::control_socket::{CanaryRequest, DecisionReport, Status, StopReport, UpgradeReport};
use handover::sys::ExitStatus;
use tokio::sync::{mpsc, oneshot};

/// Identifies one worker process for its whole life (unlike a PID, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

/// Where the outcome of an upgrade goes.
pub type UpgradeReply = oneshot::Sender<Result<UpgradeReport, String>>;

/// Where the reply to `promote` / `abort` goes.
pub type DecisionReply = oneshot::Sender<Result<DecisionReport, String>>;

/// One thing that happened.
#[derive(Debug)]
pub enum Event {
    /// A child of the supervisor ended and was reaped (a worker, or an orphan when PID 1).
    Exited { pid: u32, status: ExitStatus },
    /// A worker proved it is ready.
    Ready { id: WorkerId, how: String },
    /// A worker using the library said READY on its handshake channel: it is ready, and waits
    /// for the go-ahead before it accepts ([`crate::worker::Worker::let_go`]).
    HandshakeReady { id: WorkerId },
    /// A worker said it has stopped accepting: `STOPPING=1` on its notification socket, or
    /// (`on_channel`) [`handover::sys::STOPPED_ACCEPTING`] on its handshake channel. A worker
    /// that speaks the handshake is believed on the channel only: the library says
    /// `STOPPING=1` when a lame duck begins, while it still accepts.
    StoppedAccepting { id: WorkerId, on_channel: bool },
    /// The new worker `id` has waited long enough for the older ones to stop accepting.
    HandoffDue { id: WorkerId },
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
    /// Start a canary (`handover upgrade --canary`): the reply comes with the decision.
    Canary {
        trigger: String,
        plan: CanaryRequest,
        reply: Option<UpgradeReply>,
    },
    /// The canary of worker `id` has run its `--for`: promote it, or roll it back by the rule.
    CanaryDue { id: WorkerId },
    /// `handover promote`: the canary takes all new traffic now.
    Promote { reply: DecisionReply },
    /// `handover abort`: the canary drains, the old generation takes everything again.
    Abort { reply: DecisionReply },
    /// Proxy mode: the canary's rule failed it on the request path (it is out of the split
    /// already); roll it back.
    CanaryTripped { id: WorkerId, reason: String },
}

/// The sending side, cloned into every source.
pub type Events = mpsc::UnboundedSender<Event>;
