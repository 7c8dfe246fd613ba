//! One upgrade attempt: start the new generation, wait until it is ready, hand over or roll
//! back. Readiness, exit and timeout race here and nowhere else.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::Signal;

use crate::drain::ServingState;
use crate::error::UpgradeError;
use crate::lineage::{Successor, UpgradeRecord};
use crate::spawn::{self, SpawnFailure, SpawnRequest};

/// The byte the new generation sends when it is ready to accept.
pub(crate) const READY: u8 = b'R';
/// The byte the old generation answers once it has stopped accepting; the record line of the
/// upgrade follows it in the same write (see [`crate::lineage`]).
pub(crate) const GO_AHEAD: u8 = b'A';

/// How to start the next generation.
#[derive(Debug, Clone)]
pub(crate) struct UpgradeConfig {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    pub timeout: Duration,
    /// This process's generation.
    pub generation: u64,
}

/// A successful handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgraded {
    /// PID of the new generation, which now accepts all new connections.
    pub new_pid: u32,
    /// Its generation number.
    pub generation: u64,
}

/// What asked for an upgrade, and when.
#[derive(Debug, Clone)]
pub(crate) struct Start {
    pub trigger: &'static str,
    pub started: std::time::SystemTime,
    pub t0: tokio::time::Instant,
}

/// A handover done: the new generation was told to go ahead.
#[derive(Debug)]
pub(crate) struct HandedOver {
    pub upgraded: Upgraded,
    /// From the trigger to the go-ahead.
    pub duration: Duration,
    /// The channel to it, kept open to hear how it fares.
    pub successor: Successor,
}

/// Kills and reaps the child unless disarmed: dropping an unfinished upgrade (timeout,
/// failure, cancellation by a stop) never leaves a process behind.
struct ChildGuard {
    pid: libc::pid_t,
    armed: bool,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.armed {
            spawn::kill_now(self.pid);
            spawn::reap_blocking(self.pid);
        }
    }
}

/// Runs one upgrade. `sigchld` must have been created before this is called so that no exit
/// is missed.
pub(crate) async fn run(
    shared: &Arc<ServingState>,
    cfg: &UpgradeConfig,
    start: &Start,
    generation: u64,
    sigchld: &mut Signal,
) -> Result<HandedOver, UpgradeError> {
    if spawn::own_pid() == 1 {
        return Err(UpgradeError::Pid1);
    }
    if shared.is_draining() {
        return Err(UpgradeError::Draining);
    }
    let listeners: Vec<_> = shared.listeners.lock().expect("not poisoned").clone();
    // Extra sockets (the control socket) travel after the listeners; duplicated so they stay
    // open while the child is being started.
    let mut extras: Vec<(std::os::fd::OwnedFd, String)> = shared
        .extra_fds
        .lock()
        .expect("not poisoned")
        .iter()
        .filter_map(|(fd, name)| fd.try_clone().ok().map(|fd| (fd, name.clone())))
        .collect();
    // The hooks' fds (QUIC's channels) come last; dropped with `extras` once the child has them.
    let mut hooks = shared.upgrade_hooks();
    extras.extend(hooks.prepare(generation).map_err(|e| {
        UpgradeError::Spawn(format!("cannot prepare the new generation's channels: {e}"))
    })?);
    let fds: Vec<(RawFd, String)> = listeners
        .iter()
        .map(|l| (l.raw_fd(), l.name.clone()))
        .chain(extras.iter().map(|(fd, n)| (fd.as_raw_fd(), n.clone())))
        .collect();
    let owned: Vec<RawFd> = listeners
        .iter()
        .filter(|l| l.owned_path.is_some())
        .map(|l| l.raw_fd())
        .collect();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| UpgradeError::Spawn(format!("cannot create the readiness channel: {e}")))?;

    let cfg2 = cfg.clone();
    let theirs_fd = theirs.as_raw_fd();
    let spawned = tokio::task::spawn_blocking(move || {
        let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        let r = spawn::spawn(SpawnRequest {
            exe: &cfg2.exe,
            args: &cfg2.args,
            cwd: &cfg2.cwd,
            env,
            listeners: &fds,
            owned: &owned,
            readiness: Some(theirs_fd),
            block_upgrade_signals: true,
            generation: Some(generation),
        });
        // The listeners must stay open until the child has its copies.
        drop(listeners);
        drop(extras);
        drop(theirs);
        r
    })
    .await
    .map_err(|e| UpgradeError::Spawn(format!("spawn task failed: {e}")))?;
    let spawned = spawned.map_err(|e| match e {
        SpawnFailure::Exec { path, source } => UpgradeError::Exec {
            path,
            message: source.to_string(),
        },
        SpawnFailure::Prepare(e) => UpgradeError::Spawn(e.to_string()),
    })?;
    let pid = spawned.pid;
    let mut child = ChildGuard { pid, armed: true };
    tracing::info!(
        "started pid {pid}; waiting up to {:?} for it to be ready",
        cfg.timeout
    );

    ours.set_nonblocking(true)
        .map_err(|e| UpgradeError::Spawn(e.to_string()))?;
    let mut channel =
        tokio::net::UnixStream::from_std(ours).map_err(|e| UpgradeError::Spawn(e.to_string()))?;
    let deadline = tokio::time::sleep(cfg.timeout);
    tokio::pin!(deadline);
    let upid = pid as u32;

    loop {
        let mut byte = [0u8; 1];
        tokio::select! {
            r = channel.read(&mut byte) => match r {
                Ok(1) if byte[0] == READY => break,
                Ok(1) => {
                    tracing::warn!("pid {pid} sent an unexpected byte {:#04x} on the readiness channel", byte[0]);
                }
                _ => {
                    // Closed without READY: most likely it is exiting; report how it ended.
                    return Err(why_gone(&mut child, sigchld).await);
                }
            },
            _ = sigchld.recv() => {
                if let Ok(Some(status)) = spawn::try_reap(pid) {
                    child.armed = false;
                    return Err(UpgradeError::Exited { pid: upid, status });
                }
            }
            _ = &mut deadline => {
                return Err(UpgradeError::Timeout { pid: upid, timeout: cfg.timeout });
            }
        }
    }

    // Ready. Stop accepting first, then let it accept: from here on only the new generation
    // takes connections from the shared backlog.
    if !shared.pause_accepting().await {
        return Err(UpgradeError::Draining);
    }
    hooks.paused();
    let duration = start.t0.elapsed();
    let mut go = vec![GO_AHEAD];
    go.extend(
        UpgradeRecord {
            trigger: start.trigger.to_string(),
            started: start.started,
            duration,
        }
        .encode(),
    );
    if channel.write_all(&go).await.is_err() {
        // It died between READY and our answer: take the listeners back.
        shared.resume_accepting();
        hooks.resumed();
        return Err(why_gone(&mut child, sigchld).await);
    }
    hooks.handed_over();
    // Told to go ahead: from here on it is the successor, even if this future is dropped.
    // Accepting stays paused; the caller starts the drain once it has recorded the handover.
    child.armed = false;
    Ok(HandedOver {
        upgraded: Upgraded {
            new_pid: upid,
            generation,
        },
        duration,
        successor: Successor::new(pid, generation, channel),
    })
}

/// The error for a child that closed the readiness channel: how it ended if it exits soon
/// (then it is reaped and the guard disarmed), else that it closed the channel.
async fn why_gone(child: &mut ChildGuard, sigchld: &mut Signal) -> UpgradeError {
    let pid = child.pid as u32;
    match wait_exit(child.pid, sigchld, Duration::from_secs(2)).await {
        Some(status) => {
            child.armed = false;
            UpgradeError::Exited { pid, status }
        }
        None => UpgradeError::ChannelClosed { pid },
    }
}

/// Waits up to `limit` for `pid` to end and reaps it.
async fn wait_exit(
    pid: libc::pid_t,
    sigchld: &mut Signal,
    limit: Duration,
) -> Option<spawn::ExitStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = spawn::try_reap(pid) {
            return Some(status);
        }
        if tokio::time::timeout_at(deadline, sigchld.recv())
            .await
            .is_err()
        {
            return spawn::try_reap(pid).ok().flatten();
        }
    }
}
