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
            generation: self.serving_generation(),
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

    /// The generation that accepts new connections: the current worker's or, during a
    /// hand-off (the new worker ready and held back until the old ones stop accepting), the
    /// newest old one still accepting; 0 when none does.
    fn serving_generation(&self) -> u64 {
        let generation = |id: &crate::events::WorkerId| self.workers.get(id).map(|w| w.generation);
        match (&self.current, &self.handoff) {
            (Some(id), _) => generation(id).unwrap_or(0),
            (None, Some(h)) => h
                .still_accepting()
                .filter_map(generation)
                .max()
                .unwrap_or(0),
            (None, None) => 0,
        }
    }

    pub(super) fn count(&self, state: WorkerState) -> usize {
        self.workers.values().filter(|w| w.state == state).count()
    }
}
