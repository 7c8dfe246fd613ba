//! One worker process: how it is started (listeners at fds 3.., its own readiness check) and
//! what the supervisor remembers about it. Starting and signalling go through [`Launch`], the
//! supervisor's one seam to the operating system, so that its state machine can be tested
//! without processes.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use handover::control_socket::{WorkerState, WorkerStatus};
use handover::sys;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::events::{Event, Events, WorkerId};
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
    /// When it was retired (the drain duration metric).
    pub draining_since: Option<Instant>,
    /// Proxy mode: the loopback port it was given to serve on.
    pub port: Option<u16>,
    /// Killed for not becoming ready (outside an upgrade): start another once it is reaped.
    pub restart_when_reaped: bool,
    /// The last failed readiness probe, for the timeout message.
    pub last_probe_error: Arc<Mutex<Option<String>>>,
    /// Socket mode with `--ready notify`: the go-ahead of its handshake channel, for a worker
    /// using the library (it accepts only once it has it).
    pub go: Option<oneshot::Sender<()>>,
    /// It said READY on the handshake channel and has not been let go yet.
    pub awaiting_go: bool,
    /// It said READY on the handshake channel: it says there when it has stopped accepting
    /// too (so its `STOPPING=1` is not taken for that).
    pub speaks_handshake: bool,
    /// Tells its handshake task to say [`handover::sys::REPLACED`] on the channel.
    pub replace: Option<oneshot::Sender<()>>,
    /// Its readiness check and timers, cancelled when it is reaped.
    tasks: Vec<AbortHandle>,
}

impl Worker {
    /// The record of a worker just started as `pid`, not yet ready.
    pub fn new(id: WorkerId, pid: u32, generation: u64, port: Option<u16>) -> Worker {
        Worker {
            id,
            pid,
            generation,
            state: WorkerState::Starting,
            started: Instant::now(),
            ready_at: None,
            draining_since: None,
            port,
            restart_when_reaped: false,
            last_probe_error: Arc::new(Mutex::new(None)),
            go: None,
            awaiting_go: false,
            speaks_handshake: false,
            replace: None,
            tasks: Vec::new(),
        }
    }

    /// Ties a task (a timer, the readiness check) to this worker's life.
    pub fn add_task(&mut self, task: AbortHandle) {
        self.tasks.push(task);
    }

    /// Lets a worker that waits in its handshake accept; nothing for any other.
    pub fn let_go(&mut self) {
        if std::mem::take(&mut self.awaiting_go) {
            if let Some(go) = self.go.take() {
                let _ = go.send(());
            }
        }
    }

    /// Tells a worker that speaks the handshake that a newer one replaces it: it stops
    /// accepting at once and says so, and its stop skips its lame duck. Nothing reaches any
    /// other worker: its handshake task never got past waiting for READY, so it never writes
    /// (the stop signal alone tells those).
    pub fn tell_replaced(&mut self) {
        if let Some(replace) = self.replace.take() {
            let _ = replace.send(());
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

/// How the supervisor starts and signals workers.
pub trait Launch: std::fmt::Debug + Send {
    /// Starts worker `id` of `generation` with its readiness check, which reports through the
    /// events channel. Blocks until the exec has succeeded or failed (milliseconds); the error
    /// names the program.
    fn launch(&self, id: WorkerId, generation: u64) -> Result<Worker, String>;

    /// Sends `signal` to `pid`; a worker that has already exited (not yet reaped) is not an
    /// error.
    fn signal(&self, pid: u32, signal: i32);

    /// How readiness is checked, for messages.
    fn readiness(&self) -> String;
}

/// Starts workers as processes: the same program, listeners and readiness mode each time.
#[derive(Debug)]
pub struct ProcessLauncher {
    pub program: sys::Program,
    pub listeners: Vec<(RawFd, String)>,
    pub ready: ReadyMode,
    pub runtime_dir: PathBuf,
    pub events: Events,
    /// Proxy mode: the variable that gives each worker its own port (also put in place of
    /// `{port}` in its arguments).
    pub port_env: Option<String>,
}

impl Launch for ProcessLauncher {
    fn launch(&self, id: WorkerId, generation: u64) -> Result<Worker, String> {
        let mut program = self.program.clone();
        let port = match &self.port_env {
            Some(var) => {
                let port = readiness::free_port(Ipv4Addr::LOCALHOST.into())
                    .map_err(|e| format!("cannot find a free port for the worker: {e}"))?;
                give_port(&mut program, var, port);
                Some(port)
            }
            None => None,
        };
        let prepared = readiness::prepare(&self.ready, &self.runtime_dir, id, port)
            .map_err(|e| format!("cannot prepare the readiness check ({}): {e}", self.ready))?;
        program.env.extend(prepared.env.iter().cloned());
        // A library worker says READY on the handshake channel and accepts only once told to,
        // so that the supervisor can stop the old worker's accepting first. Only where READY is
        // what the worker itself says (notify): a probe of a worker waiting there would wait
        // for ever.
        let handshake = !self.listeners.is_empty() && self.ready == ReadyMode::Notify;
        let (pid, handshake) = if handshake {
            let (pid, hs) = sys::spawn_with_handshake(&program, &self.listeners, generation)
                .map_err(|e| e.to_string())?;
            (pid, Some(hs))
        } else {
            let pid =
                sys::spawn_with_listeners(&program, &self.listeners).map_err(|e| e.to_string())?;
            (pid, None)
        };
        let mut worker = Worker::new(id, pid, generation, port);
        if let Some(hs) = handshake {
            let (go, told) = oneshot::channel();
            let (replace, replaced) = oneshot::channel();
            worker.go = Some(go);
            worker.replace = Some(replace);
            let gate = tokio::spawn(run_handshake(hs, id, self.events.clone(), told, replaced));
            worker.add_task(gate.abort_handle());
        }
        let check = tokio::spawn(prepared.run(
            id,
            self.events.clone(),
            Arc::clone(&worker.last_probe_error),
        ));
        worker.add_task(check.abort_handle());
        Ok(worker)
    }

    fn signal(&self, pid: u32, signal: i32) {
        if let Err(e) = sys::send_signal(pid, signal) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!("cannot signal pid {pid}: {e}");
            }
        }
    }

    fn readiness(&self) -> String {
        self.ready.to_string()
    }
}

/// The supervisor's side of a worker's handshake: its READY is an [`Event::HandshakeReady`];
/// the go-ahead follows when `told` fires (never, if the worker is stopped unneeded). The
/// channel then stays open for the worker's life: `replaced` firing says
/// [`handover::sys::REPLACED`] there, and the worker says there when it has stopped accepting
/// (an [`Event::StoppedAccepting`] on the channel).
async fn run_handshake(
    mut hs: sys::WorkerHandshake,
    id: WorkerId,
    events: Events,
    told: oneshot::Receiver<()>,
    replaced: oneshot::Receiver<()>,
) {
    if !hs.ready().await {
        return; // not a library worker (it never speaks on the channel), or it exited
    }
    let _ = events.send(Event::HandshakeReady { id });
    if told.await.is_err() {
        return;
    }
    if let Err(e) = hs.go().await {
        tracing::debug!("the go-ahead did not reach the worker: {e}");
        return;
    }
    // `stopped_accepting` is cancel-safe: dropping the first wait loses nothing.
    let stopped = tokio::select! {
        said = hs.stopped_accepting() => said,
        r = replaced => {
            if r.is_ok() {
                if let Err(e) = hs.replaced() {
                    tracing::debug!("cannot tell the worker it is replaced: {e}");
                }
            }
            hs.stopped_accepting().await
        }
    };
    if stopped {
        let _ = events.send(Event::StoppedAccepting {
            id,
            on_channel: true,
        });
    }
    hs.closed().await;
}

/// Proxy mode: `var=port` in the environment (replacing any), `{port}` in the arguments.
fn give_port(program: &mut sys::Program, var: &str, port: u16) {
    let value = port.to_string();
    program.env.retain(|(k, _)| k != var);
    program.env.push((var.into(), value.clone().into()));
    for arg in program.args.iter_mut().skip(1) {
        let bytes = arg.as_bytes();
        if bytes.windows(6).any(|w| w == b"{port}") {
            let replaced = String::from_utf8_lossy(bytes).replace("{port}", &value);
            *arg = OsString::from_vec(replaced.into_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_given_in_the_environment_and_arguments() {
        let mut p = sys::Program {
            path: "/bin/x".into(),
            args: vec![
                "x{port}".into(),
                "--bind=127.0.0.1:{port}".into(),
                "-v".into(),
            ],
            cwd: "/".into(),
            env: vec![("PORT".into(), "1".into()), ("HOME".into(), "/".into())],
        };
        give_port(&mut p, "PORT", 8080);
        assert_eq!(p.args[0], "x{port}");
        assert_eq!(p.args[1], "--bind=127.0.0.1:8080");
        assert_eq!(p.args[2], "-v");
        let ports: Vec<_> = p.env.iter().filter(|(k, _)| k == "PORT").collect();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].1, "8080");
    }
}
