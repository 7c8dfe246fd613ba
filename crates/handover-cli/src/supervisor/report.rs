//! What the supervisor reports of itself: the `status` answer of the control socket.

use handover::control_socket::{
    ServerKind, ServerState, Status, WorkerState, STATUS_SCHEMA_VERSION,
};

use super::Supervisor;
use crate::worker::Worker;

impl Supervisor {
    pub(super) fn status(&self) -> Status {
        let state = if self.lame_duck {
            ServerState::LameDuck
        } else if self.stopping {
            ServerState::Stopping
        } else if self.canary.is_some() {
            ServerState::Canary
        } else if self.upgrade.is_some() {
            ServerState::Upgrading
        } else if self.current.is_some() {
            ServerState::Running
        } else if !self.ever_ready {
            ServerState::Starting
        } else {
            ServerState::Restarting
        };
        let mut workers: Vec<_> = self.workers.values().map(Worker::status).collect();
        workers.sort_by_key(|w| std::cmp::Reverse(w.generation));
        Status {
            schema_version: STATUS_SCHEMA_VERSION,
            kind: ServerKind::Supervisor,
            name: Some(self.cfg.name.clone()),
            pid: std::process::id(),
            state,
            generation: self
                .current
                .and_then(|id| self.workers.get(&id))
                .map_or(0, |w| w.generation),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            restarts: self.restarts,
            listeners: self.cfg.listeners.clone(),
            workers,
            last_upgrade: self.last_upgrade.clone(),
            // A crashed worker is restarted, never handed back to an older one.
            resumed: None,
            canary: self.canary_status(),
        }
    }

    pub(super) fn count(&self, state: WorkerState) -> usize {
        self.workers.values().filter(|w| w.state == state).count()
    }
}
