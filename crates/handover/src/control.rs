//! The control loop of a serving process: signals and API calls in, upgrades and stops out.
//! One upgrade at a time; triggers that arrive meanwhile join it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::drain::{DrainReason, Shared};
use crate::error::UpgradeError;
use crate::systemd::Notifier;
use crate::upgrade::{self, UpgradeConfig, Upgraded};
use crate::{pidfile, spawn};

type Reply = oneshot::Sender<Result<Upgraded, UpgradeError>>;

enum Command {
    Upgrade(Reply, &'static str),
    Stop,
}

/// The signal streams, created before the upgrade signals are unblocked.
pub(crate) struct Signals {
    usr2: Signal,
    /// `None` when SIGHUP was ignored at start-up (`nohup`): closing the terminal must not
    /// trigger an upgrade.
    hup: Option<Signal>,
    term: Signal,
    int: Signal,
    chld: Signal,
}

impl Signals {
    pub(crate) fn install(take_hup: bool) -> std::io::Result<Self> {
        Ok(Signals {
            usr2: signal(SignalKind::user_defined2())?,
            hup: if take_hup {
                Some(signal(SignalKind::hangup())?)
            } else {
                None
            },
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            chld: signal(SignalKind::child())?,
        })
    }
}

/// What the final generation cleans up when it stops for good.
#[derive(Debug)]
pub(crate) struct Finish {
    pub pid_file: Option<PathBuf>,
    pub notifier: Option<Notifier>,
    pub control_socket: Option<PathBuf>,
    pub generation: u64,
    pub started: std::time::Instant,
    pub last_upgrade: std::sync::Mutex<Option<LastUpgrade>>,
}

/// The most recent upgrade attempt of this process, for `handover status`.
#[derive(Debug, Clone)]
pub(crate) struct LastUpgrade {
    pub trigger: &'static str,
    pub started: std::time::SystemTime,
    pub duration: std::time::Duration,
    pub result: Result<Upgraded, UpgradeError>,
}

impl Finish {
    pub(crate) fn notify(&self, state: &str) {
        if let Some(n) = &self.notifier {
            n.notify_or_warn(state);
        }
    }
}

/// A handle on the serving process, returned by [`crate::Handover::ready`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Running {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    finish: Arc<Finish>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Upgrade(_, _) => f.write_str("Upgrade"),
            Command::Stop => f.write_str("Stop"),
        }
    }
}

/// How this process's serving ended, from [`Running::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Why it drained.
    pub reason: DrainReason,
    /// Connections still open when the drain deadline ended the wait (0 for a clean drain).
    pub abandoned_connections: usize,
}

impl Exit {
    /// The exit status for `main`: success after a drain, whether clean or cut at the deadline
    /// (the deadline is the operator's choice, not a failure).
    pub fn code(&self) -> ExitCode {
        ExitCode::SUCCESS
    }
}

impl Running {
    pub(crate) fn start(
        shared: Arc<Shared>,
        cfg: UpgradeConfig,
        signals: Signals,
        finish: Finish,
    ) -> Running {
        let (tx, rx) = mpsc::unbounded_channel();
        let finish = Arc::new(finish);
        tokio::spawn(control_loop(
            Arc::clone(&shared),
            cfg,
            signals,
            rx,
            Arc::clone(&finish),
        ));
        Running {
            shared,
            commands: tx,
            finish,
        }
    }

    /// Upgrades now, as `SIGUSR2` does, and reports the outcome. If an upgrade is already
    /// running, this waits for that one's outcome instead of starting a second.
    ///
    /// On success this process has stopped accepting and is draining; on error it keeps
    /// serving and may be upgraded again.
    pub async fn upgrade(&self) -> Result<Upgraded, UpgradeError> {
        self.upgrade_by("API call").await
    }

    /// [`Running::upgrade`], recording what asked for it.
    pub(crate) async fn upgrade_by(&self, trigger: &'static str) -> Result<Upgraded, UpgradeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Upgrade(tx, trigger))
            .map_err(|_| UpgradeError::NotRunning)?;
        rx.await.map_err(|_| UpgradeError::NotRunning)?
    }

    /// Starts a graceful stop, as `SIGTERM` does.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    /// Resolves when this process starts draining, with the reason.
    pub async fn draining(&self) -> DrainReason {
        self.shared.draining().await.1
    }

    /// A handle that resolves when the drain starts, for tasks that outlive a borrow.
    pub fn drain_signal(&self) -> crate::DrainSignal {
        crate::DrainSignal::new(Arc::clone(&self.shared))
    }

    /// Number of connections currently open.
    pub fn live_connections(&self) -> usize {
        self.shared.conns.live()
    }

    /// Waits until this process has stopped serving: a drain began (upgrade or stop) and every
    /// connection closed, or the drain deadline passed. At a final stop it also removes the
    /// PID file and the Unix socket files it created. Return from `main` afterwards; tasks
    /// still running are dropped with the runtime.
    pub async fn wait(&self) -> Exit {
        let (deadline, reason) = self.shared.draining().await;
        // No accept is in progress after this, so the count below only goes down.
        drop(self.shared.accept_gate.write().await);
        let clean = tokio::time::timeout_at(deadline, self.shared.conns.all_closed())
            .await
            .is_ok();
        let abandoned = if clean { 0 } else { self.shared.conns.live() };
        if clean {
            tracing::info!("drained: all connections closed");
        } else {
            tracing::warn!("drain deadline reached; closing {abandoned} connections still open");
        }
        if reason == DrainReason::Stopped {
            self.final_cleanup();
        }
        Exit {
            reason,
            abandoned_connections: abandoned,
        }
    }

    pub(crate) fn finish(&self) -> &Finish {
        &self.finish
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn final_cleanup(&self) {
        if let Some(path) = &self.finish.control_socket {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
        if let Some(path) = &self.finish.pid_file {
            if let Err(e) = pidfile::remove_pid_file_if_ours(path, spawn::own_pid()) {
                tracing::warn!("{e}");
            }
        }
        for l in self.shared.listeners.lock().expect("not poisoned").iter() {
            if let Some(path) = &l.owned_path {
                match std::fs::remove_file(path) {
                    Ok(()) => tracing::debug!("removed {}", path.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
                }
            }
        }
    }
}

async fn control_loop(
    shared: Arc<Shared>,
    cfg: UpgradeConfig,
    mut signals: Signals,
    mut commands: mpsc::UnboundedReceiver<Command>,
    finish: Arc<Finish>,
) {
    let me = spawn::own_pid();
    let mut waiters: Vec<Reply> = Vec::new();
    // What started the upgrade in progress, and when.
    let mut current: Option<(&'static str, std::time::SystemTime, std::time::Instant)> = None;
    let mut stop_signals = 0u32;
    // The upgrade in progress, if any. Boxed so the loop can keep serving signals meanwhile.
    let mut running: Option<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = None;
    let chld = Arc::new(tokio::sync::Mutex::new(signals.chld));

    loop {
        enum Trigger {
            Upgrade(&'static str, Option<Reply>),
            Stop(&'static str),
            Done(Result<Upgraded, UpgradeError>),
        }
        let trigger = tokio::select! {
            // An upgrade's outcome first: a stop arriving in the same instant must not treat
            // a successor that was already told to go ahead as a failed upgrade.
            biased;
            r = async { running.as_mut().expect("guarded").await }, if running.is_some() => Trigger::Done(r),
            _ = signals.usr2.recv() => Trigger::Upgrade("SIGUSR2", None),
            Some(_) = recv_opt(&mut signals.hup) => Trigger::Upgrade("SIGHUP", None),
            _ = signals.term.recv() => Trigger::Stop("SIGTERM"),
            _ = signals.int.recv() => Trigger::Stop("SIGINT"),
            Some(cmd) = commands.recv() => match cmd {
                Command::Upgrade(reply, trigger) => Trigger::Upgrade(trigger, Some(reply)),
                Command::Stop => Trigger::Stop("API call"),
            },
        };
        match trigger {
            Trigger::Upgrade(source, reply) => {
                if running.is_some() {
                    tracing::info!("upgrade already in progress; {source} joins it");
                    waiters.extend(reply);
                    continue;
                }
                if let Some((_, DrainReason::Upgraded { new_pid })) = draining_now(&shared) {
                    tracing::warn!(
                        "upgrade requested by {source} ignored: pid {me} already handed over to pid {new_pid}; signal that process instead"
                    );
                    if let Some(r) = reply {
                        let _ = r.send(Err(UpgradeError::Draining));
                    }
                    continue;
                }
                tracing::info!(
                    "upgrade started by {source}: executing {}",
                    cfg.exe.display()
                );
                finish.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                waiters.extend(reply);
                current = Some((
                    source,
                    std::time::SystemTime::now(),
                    std::time::Instant::now(),
                ));
                let shared = Arc::clone(&shared);
                let cfg = cfg.clone();
                let chld = Arc::clone(&chld);
                running = Some(Box::pin(async move {
                    let mut chld = chld.lock().await;
                    upgrade::attempt(&shared, &cfg, &mut chld).await
                }));
            }
            Trigger::Done(result) => {
                running = None;
                if let Some((trigger, started, t0)) = current.take() {
                    *finish.last_upgrade.lock().expect("not poisoned") = Some(LastUpgrade {
                        trigger,
                        started,
                        duration: t0.elapsed(),
                        result: result.clone(),
                    });
                }
                match &result {
                    Ok(u) => {
                        tracing::info!(
                            "upgrade complete: pid {me} handed over to pid {}; draining",
                            u.new_pid
                        );
                        finish.notify(&format!("MAINPID={}", u.new_pid));
                        // Only now may `wait` return: the handover is logged and announced.
                        shared
                            .stop_accepting(DrainReason::Upgraded { new_pid: u.new_pid })
                            .await;
                    }
                    Err(e) => {
                        tracing::error!("upgrade failed: {e}; still serving as pid {me}");
                        finish.notify(&format!("READY=1\nSTATUS=upgrade failed: {e}"));
                    }
                }
                for w in waiters.drain(..) {
                    let _ = w.send(result.clone());
                }
            }
            Trigger::Stop(source) => {
                stop_signals += 1;
                if stop_signals >= 2 {
                    tracing::warn!("second stop request ({source}): exiting now");
                    std::process::exit(1);
                }
                if let Some(up) = running.take() {
                    drop(up); // kills and reaps the half-started generation
                    tracing::warn!("upgrade cancelled by {source}");
                    for w in waiters.drain(..) {
                        let _ = w.send(Err(UpgradeError::Cancelled));
                    }
                }
                match draining_now(&shared) {
                    Some((_, DrainReason::Upgraded { .. })) => {
                        tracing::info!("{source} received while draining after an upgrade; a second one exits at once");
                    }
                    _ => {
                        tracing::info!(
                            "graceful stop requested by {source}; draining (a second signal exits at once)"
                        );
                        finish.notify("STOPPING=1");
                        shared.stop_accepting(DrainReason::Stopped).await;
                    }
                }
            }
        }
    }
}

async fn recv_opt(s: &mut Option<Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn draining_now(shared: &Shared) -> Option<(tokio::time::Instant, DrainReason)> {
    match *shared.phase.borrow() {
        crate::drain::Phase::Draining { deadline, reason } => Some((deadline, reason)),
        _ => None,
    }
}

fn monotonic_usec() -> u64 {
    // SAFETY: clock_gettime with a valid out-pointer.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}
