//! One upgrade attempt: start the new generation, wait until it is ready, hand over or roll
//! back. Readiness, exit and timeout race here and nowhere else.
//!
//! From the fork to the go-ahead everything runs on one blocking thread, not on the async
//! runtime: the READY byte wakes that thread straight from the kernel, and it stops accepting
//! ([`ServingState::pause_accepting_blocking`]) and answers at once. On a loaded runtime each
//! hop through a task (the spawn's completion, the READY read, the pause) waits behind the
//! connection tasks queued before it; under load that queueing, not the new process, was
//! most of the handover time.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::signal::unix::Signal;

use crate::drain::{ServingState, UpgradeHooks};
use crate::error::UpgradeError;
use crate::lineage::{Successor, UpgradeRecord};
use crate::os::Bell;
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

/// Where the handshake thread is; the async side and the thread agree through it on who
/// owns the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Forking, or waiting for READY: the attempt may still be cancelled.
    Waiting,
    /// READY came and the thread is pausing and answering: no cancelling now (it takes a
    /// pause and one write).
    Answering,
    /// The thread is done.
    Finished,
    /// The attempt was dropped: the thread stops and the child is killed.
    Cancelled,
}

/// What the async side and the handshake thread share.
struct Job {
    state: Mutex<JobState>,
    /// Told when `Answering` ends.
    answered: Condvar,
    /// Rung to stop the thread's wait for READY.
    cancel: Bell,
}

struct JobState {
    step: Step,
    /// The child, while someone has still to kill or keep it (taken by whoever does).
    pid: Option<libc::pid_t>,
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The async side's hold on a running attempt: dropped before the thread has finished (a stop
/// cancels the upgrade), it stops the thread and kills and reaps the child.
struct JobGuard(Arc<Job>);

impl Drop for JobGuard {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        while st.step == Step::Answering {
            st = self
                .0
                .answered
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if st.step == Step::Waiting {
            st.step = Step::Cancelled;
        }
        let pid = st.pid.take();
        drop(st);
        self.0.cancel.ring();
        if let Some(pid) = pid {
            drop(ChildGuard { pid, armed: true });
        }
    }
}

/// Ends `Answering` however the answer ends, a panic included, so that dropping the attempt
/// never waits for it forever.
struct Answering<'a>(&'a Job);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        if st.step == Step::Answering {
            st.step = Step::Finished;
        }
        drop(st);
        self.0.answered.notify_all();
    }
}

/// How the handshake thread ended.
enum Outcome {
    /// Told to go ahead, after this long since the trigger.
    HandedOver(Duration),
    /// The child closed the channel without READY, or the go-ahead could not be written.
    Closed,
    TimedOut,
    /// Not serving any more (a stop began), so there is nothing to hand over.
    Draining,
    Cancelled,
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
    let (ours, theirs) = UnixStream::pair()
        .map_err(|e| UpgradeError::Spawn(format!("cannot create the readiness channel: {e}")))?;
    let cancel = Bell::new()
        .map_err(|e| UpgradeError::Spawn(format!("cannot create the cancel flag: {e}")))?;
    let job = Arc::new(Job {
        state: Mutex::new(JobState {
            step: Step::Waiting,
            pid: None,
        }),
        answered: Condvar::new(),
        cancel,
    });
    let guard = JobGuard(Arc::clone(&job));

    let cfg2 = cfg.clone();
    let shared2 = Arc::clone(shared);
    let t0 = start.t0.into_std();
    let record = (start.trigger, start.started);
    let thread = tokio::task::spawn_blocking(move || {
        tracing::debug!("upgrade: forking");
        let theirs_fd = theirs.as_raw_fd();
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
        let spawned = r?;
        let outcome = handshake(
            &job,
            &shared2,
            &mut hooks,
            &ours,
            spawned.pid,
            &cfg2,
            t0,
            record,
        );
        Ok::<_, SpawnFailure>((spawned.pid, outcome, ours))
    });
    let (pid, outcome, ours) = thread
        .await
        .map_err(|e| UpgradeError::Spawn(format!("spawn task failed: {e}")))?
        .map_err(|e| match e {
            SpawnFailure::Exec { path, source } => UpgradeError::Exec {
                path,
                message: source.to_string(),
            },
            SpawnFailure::Prepare(e) => UpgradeError::Spawn(e.to_string()),
        })?;
    let upid = pid as u32;
    // The thread is done: the child is ours to keep or to kill.
    let Some(pid) = guard.0.lock().pid.take() else {
        return Err(UpgradeError::Cancelled);
    };
    let mut child = ChildGuard { pid, armed: true };
    match outcome {
        Outcome::HandedOver(duration) => {
            let channel = match ours
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(ours))
            {
                Ok(c) => c,
                Err(e) => {
                    // Not seen with a socket that just worked. Without its channel this
                    // process could not tell the successor's crash from its stop: roll back
                    // (the guard kills it) and serve on.
                    shared.resume_accepting();
                    shared.resume_hooks();
                    return Err(UpgradeError::Spawn(format!(
                        "cannot watch the channel to pid {pid}: {e}"
                    )));
                }
            };
            // Told to go ahead: from here on it is the successor.
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
        Outcome::Closed => Err(why_gone(&mut child, sigchld).await),
        Outcome::TimedOut => Err(UpgradeError::Timeout {
            pid: upid,
            timeout: cfg.timeout,
        }),
        Outcome::Draining => Err(UpgradeError::Draining),
        Outcome::Cancelled => Err(UpgradeError::Cancelled),
    }
}

/// The handshake thread, once the child runs: waits for READY (or the channel's end, the
/// deadline, a cancel), then stops accepting and tells the child to go ahead.
#[allow(clippy::too_many_arguments)]
fn handshake(
    job: &Job,
    shared: &ServingState,
    hooks: &mut UpgradeHooks,
    channel: &UnixStream,
    pid: libc::pid_t,
    cfg: &UpgradeConfig,
    t0: Instant,
    (trigger, started): (&'static str, std::time::SystemTime),
) -> Outcome {
    let deadline = Instant::now() + cfg.timeout;
    {
        let mut st = job.lock();
        if st.step == Step::Cancelled {
            drop(st);
            drop(ChildGuard { pid, armed: true });
            return Outcome::Cancelled;
        }
        st.pid = Some(pid);
    }
    tracing::info!(
        "started pid {pid}; waiting up to {:?} for it to be ready",
        cfg.timeout
    );
    let finish = |outcome: Outcome| {
        job.lock().step = Step::Finished;
        job.answered.notify_all();
        outcome
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return finish(Outcome::TimedOut);
        }
        let [readable, cancelled] =
            match crate::os::poll_readable([channel.as_fd(), job.cancel.fd()], Some(left)) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("cannot wait on the readiness channel: {e}");
                    return finish(Outcome::Closed);
                }
            };
        if cancelled {
            return finish(Outcome::Cancelled);
        }
        if !readable {
            continue;
        }
        let mut byte = [0u8; 1];
        match (&*channel).read(&mut byte) {
            Ok(1) if byte[0] == READY => break,
            Ok(1) => tracing::warn!(
                "pid {pid} sent an unexpected byte {:#04x} on the readiness channel",
                byte[0]
            ),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Closed without READY: most likely it is exiting.
            _ => return finish(Outcome::Closed),
        }
    }
    tracing::debug!("handshake: READY from pid {pid}");
    {
        let mut st = job.lock();
        if st.step == Step::Cancelled {
            return Outcome::Cancelled;
        }
        st.step = Step::Answering;
    }
    let _answering = Answering(job);
    // Ready. Stop accepting first, then let it accept: from here on only the new generation
    // takes connections from the shared backlog.
    if !shared.pause_accepting_blocking() {
        return finish(Outcome::Draining);
    }
    hooks.paused();
    tracing::debug!("handshake: accepting paused");
    let duration = t0.elapsed();
    let mut go = vec![GO_AHEAD];
    go.extend(
        UpgradeRecord {
            trigger: trigger.to_string(),
            started,
            duration,
        }
        .encode(),
    );
    if (&*channel).write_all(&go).is_err() {
        // It died between READY and our answer: take the listeners back.
        shared.resume_accepting();
        hooks.resumed();
        return finish(Outcome::Closed);
    }
    hooks.handed_over();
    tracing::debug!("handshake: go-ahead sent to pid {pid}");
    // Accepting stays paused; the caller starts the drain once it has recorded the handover.
    finish(Outcome::HandedOver(duration))
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
