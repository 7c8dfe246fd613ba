//! One worker process: how it is started (listeners at fds 3.., its own readiness check) and
//! what the supervisor remembers about it.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use handover::control_socket::{WorkerState, WorkerStatus};
use handover::sys;
use tokio::task::AbortHandle;

use crate::events::{Events, WorkerId};
use crate::readiness::{self, ReadyMode};

/// Why a worker was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The first worker.
    Start,
    /// A replacement for one that exited unexpectedly.
    Restart,
    /// The new generation of an upgrade.
    Upgrade,
}

/// A live (not yet reaped) worker.
#[derive(Debug)]
pub struct Worker {
    pub id: WorkerId,
    pub pid: u32,
    pub generation: u64,
    pub state: WorkerState,
    pub started: Instant,
    pub ready_at: Option<Instant>,
    /// Killed for not becoming ready (outside an upgrade): start another once it is reaped.
    pub restart_when_reaped: bool,
    /// The last failed readiness probe, for the timeout message.
    pub last_probe_error: Arc<Mutex<Option<String>>>,
    /// Its readiness check and timers, cancelled when it is reaped.
    tasks: Vec<AbortHandle>,
}

impl Worker {
    /// Ties a task (a timer, the readiness check) to this worker's life.
    pub fn add_task(&mut self, task: AbortHandle) {
        self.tasks.push(task);
    }

    /// Sends `signal`; a worker that has already exited (not yet reaped) is not an error.
    pub fn signal(&self, signal: i32) {
        if let Err(e) = sys::send_signal(self.pid, signal) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!("cannot signal pid {}: {e}", self.pid);
            }
        }
    }

    /// `generation N (pid P)`, for messages.
    pub fn describe(&self) -> String {
        format!("generation {} (pid {})", self.generation, self.pid)
    }

    /// The last probe failure, if any, as ` (last check: ...)`.
    pub fn probe_hint(&self) -> String {
        self.last_probe_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| format!(" (last check: {e})"))
            .unwrap_or_default()
    }

    /// Its line in `handover status`.
    pub fn status(&self) -> WorkerStatus {
        WorkerStatus {
            generation: self.generation,
            pid: self.pid,
            state: self.state,
            uptime_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts workers: the same program, listeners and readiness mode each time.
#[derive(Debug)]
pub struct Launcher {
    pub program: sys::Program,
    pub listeners: Vec<(RawFd, String)>,
    pub ready: ReadyMode,
    pub runtime_dir: PathBuf,
    pub events: Events,
}

impl Launcher {
    /// Starts worker `id` and its readiness check. Blocks until the exec has succeeded or
    /// failed (milliseconds); the error names the program.
    pub fn launch(&self, id: WorkerId, generation: u64) -> Result<Worker, String> {
        let prepared = readiness::prepare(&self.ready, &self.runtime_dir, id)
            .map_err(|e| format!("cannot prepare the readiness check ({}): {e}", self.ready))?;
        let mut program = self.program.clone();
        program.env.extend(prepared.env.iter().cloned());
        let pid =
            sys::spawn_with_listeners(&program, &self.listeners).map_err(|e| e.to_string())?;
        let last_probe_error = Arc::new(Mutex::new(None));
        let check =
            tokio::spawn(prepared.run(id, self.events.clone(), Arc::clone(&last_probe_error)));
        Ok(Worker {
            id,
            pid,
            generation,
            state: WorkerState::Starting,
            started: Instant::now(),
            ready_at: None,
            restart_when_reaped: false,
            last_probe_error,
            tasks: vec![check.abort_handle()],
        })
    }
}
