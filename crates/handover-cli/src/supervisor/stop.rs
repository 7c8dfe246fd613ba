//! The supervisor's stop: the lame duck first when `--lame-duck` is set (workers serve on while
//! the admin `/healthz` fails), then every worker drains; a second stop signal kills them.

use handover::control_socket::{StopReport, WorkerState};
use tokio::sync::oneshot;

use super::Supervisor;
use crate::events::{Event, WorkerId};

impl Supervisor {
    pub(super) fn on_stop(
        &mut self,
        trigger: &str,
        from_signal: bool,
        reply: Option<oneshot::Sender<StopReport>>,
    ) {
        let report = StopReport {
            pid: std::process::id(),
        };
        if self.stopping {
            if from_signal && !self.killed {
                tracing::warn!("second stop request ({trigger}): killing every worker now");
                self.killed = true;
                for w in self.workers.values_mut() {
                    self.launcher.signal(w.pid, libc::SIGKILL);
                    w.state = WorkerState::Killed;
                }
            }
            if let Some(r) = reply {
                let _ = r.send(report);
            }
            return;
        }
        self.stopping = true;
        if self.upgrade.is_some() {
            self.upgrade_failed("the upgrade was cancelled", None);
        }
        self.cancel_canary();
        if !self.cfg.lame_duck.is_zero() {
            self.lame_duck = true;
            tracing::info!(
                "graceful stop requested by {trigger}: lame duck for {:?} (workers serve on \
                 while /healthz fails), then workers drain and the supervisor exits (a second \
                 SIGTERM/SIGINT kills them at once)",
                self.cfg.lame_duck
            );
            self.notify("STOPPING=1\nSTATUS=lame duck");
            self.after(self.cfg.lame_duck, Event::LameDuckOver);
        } else {
            tracing::info!(
                "graceful stop requested by {trigger}: workers drain, then the supervisor exits \
                 (a second SIGTERM/SIGINT kills them at once)"
            );
            self.notify("STOPPING=1");
            self.drain_all();
        }
        if let Some(r) = reply {
            let _ = r.send(report);
        }
    }

    /// The lame duck of a stop is over: the workers drain now.
    pub(super) fn on_lame_duck_over(&mut self) {
        if !self.lame_duck {
            return;
        }
        self.lame_duck = false;
        if self.killed {
            return;
        }
        tracing::info!("lame duck over; workers drain");
        self.drain_all();
    }

    /// Every worker that serves or is starting gets the stop.
    pub(super) fn drain_all(&mut self) {
        let live: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| matches!(w.state, WorkerState::Starting | WorkerState::Ready))
            .map(|(id, _)| *id)
            .collect();
        for id in live {
            self.begin_drain(id, "stopping");
        }
    }
}
