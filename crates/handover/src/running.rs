//! The control loop of a serving process: triggers (signals and API calls) in, upgrades and
//! stops out. One upgrade at a time; triggers that arrive meanwhile join it.
//!
//! The loop reads one stream of [`Trigger`]s (the signal handlers and [`Running`] feed it)
//! and starts upgrade attempts through a function it is given, so that its transitions are
//! tested below without signals or processes.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::attempt::{self, HandedOver, Start, UpgradeConfig, Upgraded};
use crate::drain::{DrainReason, ServingState};
use crate::error::UpgradeError;
use crate::lineage::{Predecessor, Successor, Verdict, HANDED_OVER, STOPPED_ACCEPTING, STOPPING};
use crate::systemd::Notifier;
use crate::{env, pidfile, spawn};

type Reply = oneshot::Sender<Result<Upgraded, UpgradeError>>;

/// What asks the control loop for something.
pub(crate) enum Trigger {
    /// An upgrade, by `SIGUSR2`, `SIGHUP`, an API call or the control socket; the reply (if
    /// any) gets its outcome.
    Upgrade(&'static str, Option<Reply>),
    /// A graceful stop, by `SIGTERM`, `SIGINT` or an API call; a second one exits at once.
    Stop(&'static str),
    /// The supervisor that started this process is replacing it
    /// ([`REPLACED`](crate::lineage::REPLACED) on the channel): accepting has stopped (the
    /// channel's thread did it) and the stop that follows skips the lame duck.
    Replaced,
}

/// Starts one upgrade attempt to `generation` (see `attempt.rs`); the loop drops the future
/// to cancel it.
type StartAttempt = Box<dyn Fn(Start, u64) -> AttemptFuture + Send>;
type AttemptFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<HandedOver, UpgradeError>> + Send>>;

/// The signal streams, created before the upgrade signals are unblocked.
pub(crate) struct Signals {
    usr2: Signal,
    /// `None` when SIGHUP was ignored at start-up (`nohup`): closing the terminal must not
    /// trigger an upgrade.
    hup: Option<Signal>,
    pub(crate) term: Signal,
    pub(crate) int: Signal,
    /// For the upgrade attempt's waits.
    chld: Signal,
    /// For the successor's end, once it has been told to go ahead. A stream of its own (each
    /// stream hears every SIGCHLD), so that nothing is shared with the attempt.
    successor_exit: Signal,
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
            successor_exit: signal(SignalKind::child())?,
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
    /// The latest upgrade attempt of this process, or else the upgrade that created it.
    pub last_upgrade: std::sync::Mutex<Option<LastUpgrade>>,
    /// Set when this process took the listeners back from a successor that crashed.
    pub resumed: std::sync::Mutex<Option<Resumed>>,
    /// The channel to the generation that started this one, for its notices.
    pub predecessor: std::sync::Mutex<Option<Predecessor>>,
}

/// An upgrade, for `handover status`: the latest attempt of this process, or the one that
/// created it (told by its predecessor with the go-ahead).
#[derive(Debug, Clone)]
pub(crate) struct LastUpgrade {
    pub trigger: String,
    pub started: std::time::SystemTime,
    pub duration: std::time::Duration,
    /// The generation it started, or tried to (`None` if it never got that far).
    pub generation: Option<u64>,
    pub result: Result<Upgraded, UpgradeError>,
}

/// A successor that crashed after it was ready, and this process serving again.
#[derive(Debug, Clone)]
pub(crate) struct Resumed {
    pub successor_pid: u32,
    pub successor_generation: u64,
    pub successor_ended: spawn::ExitStatus,
    pub at: std::time::SystemTime,
}

impl Finish {
    pub(crate) fn notify(&self, state: &str) {
        if let Some(n) = &self.notifier {
            n.notify_or_warn(state);
        }
    }

    /// Sends a notice to the previous generation, if it is still there to hear it.
    fn tell_predecessor(&self, notice: u8) {
        if let Some(p) = self.predecessor.lock().expect("not poisoned").as_mut() {
            p.tell(notice);
        }
    }
}

/// A handle on the serving process, returned by [`crate::Handover::ready`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Running {
    shared: Arc<ServingState>,
    triggers: mpsc::UnboundedSender<Trigger>,
    finish: Arc<Finish>,
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Upgrade(by, _) => write!(f, "Upgrade({by})"),
            Trigger::Stop(by) => write!(f, "Stop({by})"),
            Trigger::Replaced => f.write_str("Replaced"),
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

impl Running {
    pub(crate) fn start(
        shared: Arc<ServingState>,
        cfg: UpgradeConfig,
        signals: Signals,
        finish: Finish,
    ) -> Running {
        let Signals {
            usr2,
            hup,
            term,
            int,
            chld,
            successor_exit,
        } = signals;
        let chld = Arc::new(tokio::sync::Mutex::new(chld));
        let attempt_shared = Arc::clone(&shared);
        let attempt_cfg = cfg.clone();
        let start_attempt: StartAttempt = Box::new(move |start, generation| {
            let shared = Arc::clone(&attempt_shared);
            let cfg = attempt_cfg.clone();
            let chld = Arc::clone(&chld);
            Box::pin(async move {
                let mut chld = chld.lock().await;
                attempt::run(&shared, &cfg, &start, generation, &mut chld).await
            })
        });
        let signals = LoopSignals {
            usr2,
            hup,
            term,
            int,
        };
        Running::with_loop(
            shared,
            cfg,
            successor_exit,
            finish,
            start_attempt,
            Some(signals),
        )
    }

    /// The loop itself, fed by `signals` and the returned handle (and whoever else holds a
    /// sender).
    fn with_loop(
        shared: Arc<ServingState>,
        cfg: UpgradeConfig,
        successor_exit: Signal,
        finish: Finish,
        start_attempt: StartAttempt,
        signals: Option<LoopSignals>,
    ) -> Running {
        let (tx, rx) = mpsc::unbounded_channel();
        let finish = Arc::new(finish);
        replaced::watch(&shared, &finish, &tx);
        tokio::spawn(control_loop(
            Arc::clone(&shared),
            cfg,
            rx,
            successor_exit,
            Arc::clone(&finish),
            start_attempt,
            signals,
        ));
        Running {
            shared,
            triggers: tx,
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
        self.triggers
            .send(Trigger::Upgrade(trigger, Some(tx)))
            .map_err(|_| UpgradeError::NotRunning)?;
        rx.await.map_err(|_| UpgradeError::NotRunning)?
    }

    /// Starts a graceful stop, as `SIGTERM` does.
    pub fn stop(&self) {
        let _ = self.triggers.send(Trigger::Stop("API call"));
    }

    /// Resolves when this process starts draining, with the reason.
    pub async fn draining(&self) -> DrainReason {
        self.shared.draining().await.1
    }

    /// A handle that resolves when the drain starts, for tasks that outlive a borrow.
    pub fn drain_signal(&self) -> crate::DrainSignal {
        crate::DrainSignal::new(Arc::clone(&self.shared))
    }

    /// This process's health (see [`crate::Health`]).
    pub fn health(&self) -> crate::Health {
        crate::Health::new(Arc::clone(&self.shared))
    }

    /// Number of connections currently open.
    pub fn live_connections(&self) -> usize {
        self.shared.conns.live()
    }

    /// Waits until this process has stopped serving: a drain began (upgrade or stop) and every
    /// connection closed, or the drain deadline passed. At a final stop it also removes the
    /// PID file and the Unix socket files it created. Return from `main` afterwards; tasks
    /// still running are dropped with the runtime.
    ///
    /// A drain after a handover ends early, and this keeps waiting, if the process takes the
    /// listeners back from a successor that crashed.
    pub async fn wait(&self) -> Exit {
        let (clean, reason) = loop {
            let (deadline, reason) = self.shared.draining().await;
            // No accept is in progress after this, so the count below only goes down.
            self.shared.accepts_stopped().await;
            let clean = tokio::select! {
                r = tokio::time::timeout_at(deadline, self.shared.conns.all_closed()) => r.is_ok(),
                _ = self.shared.serving() => continue,
            };
            // From here on no resume can happen; if one just did, drain again later.
            if self.shared.claim_end() {
                break (clean, reason);
            }
        };
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

    pub(crate) fn shared(&self) -> &Arc<ServingState> {
        &self.shared
    }

    fn final_cleanup(&self) {
        if let Some(path) = &self.finish.control_socket {
            crate::os::remove_created_file(path);
        }
        if let Some(path) = &self.finish.pid_file {
            if let Err(e) = pidfile::remove_pid_file_if_ours(path, spawn::own_pid()) {
                tracing::warn!("{e}");
            }
        }
        for l in self.shared.listeners.lock().expect("not poisoned").iter() {
            if let Some(path) = &l.owned_path {
                crate::os::remove_created_file(path);
            }
        }
    }
}

/// The upgrade and stop signals, read by the control loop itself: a task forwarding them
/// would add a wake-up, and on a loaded runtime every wake-up waits behind the connection
/// tasks queued before it (time added to every upgrade under load).
pub(crate) struct LoopSignals {
    usr2: Signal,
    /// `None` when SIGHUP was ignored at start-up (`nohup`).
    hup: Option<Signal>,
    term: Signal,
    int: Signal,
}

/// The next signal as a trigger; never resolves without signals.
async fn next_signal(signals: &mut Option<LoopSignals>) -> Trigger {
    let Some(s) = signals else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = s.usr2.recv() => Trigger::Upgrade("SIGUSR2", None),
        Some(_) = recv_opt(&mut s.hup) => Trigger::Upgrade("SIGHUP", None),
        _ = s.term.recv() => Trigger::Stop("SIGTERM"),
        _ = s.int.recv() => Trigger::Stop("SIGINT"),
    }
}

async fn control_loop(
    shared: Arc<ServingState>,
    cfg: UpgradeConfig,
    mut triggers: mpsc::UnboundedReceiver<Trigger>,
    mut successor_exit: Signal,
    finish: Arc<Finish>,
    start_attempt: StartAttempt,
    mut signals: Option<LoopSignals>,
) {
    let me = spawn::own_pid();
    let mut waiters: Vec<Reply> = Vec::new();
    // What started the upgrade in progress, and when.
    let mut current: Option<Start> = None;
    let mut stop_signals = 0u32;
    // The upgrade in progress, if any. Boxed so the loop can keep serving signals meanwhile.
    let mut running: Option<AttemptFuture> = None;
    // The generation told to go ahead, until it has exited and been reaped here.
    let mut successor: Option<Successor> = None;
    // The number the next new generation gets: never one a crashed successor had.
    let mut next_generation = env::next_generation(cfg.generation);
    // When the lame duck of a stop ends and the drain begins (see `Builder::lame_duck`).
    let mut lame_duck_end: Option<tokio::time::Instant> = None;
    // The supervisor said a newer worker replaces this one: accepting has stopped, and the
    // stop that follows drains at once.
    let mut replaced = false;

    loop {
        enum Wake {
            Trigger(Trigger),
            Done(Result<HandedOver, UpgradeError>),
            SuccessorExit,
            Notice,
            LameDuckOver,
        }
        let wake = tokio::select! {
            // An upgrade's outcome first: a stop arriving in the same instant must not treat
            // a successor that was already told to go ahead as a failed upgrade.
            biased;
            r = async { running.as_mut().expect("guarded").await }, if running.is_some() => Wake::Done(r),
            _ = successor_exit.recv(), if successor.is_some() => Wake::SuccessorExit,
            _ = async { successor.as_mut().expect("guarded").next_notice().await }, if successor.is_some() => Wake::Notice,
            t = next_signal(&mut signals) => Wake::Trigger(t),
            Some(t) = triggers.recv() => Wake::Trigger(t),
            _ = async { tokio::time::sleep_until(lame_duck_end.expect("guarded")).await }, if lame_duck_end.is_some() => Wake::LameDuckOver,
        };
        match wake {
            Wake::Notice => {}
            Wake::LameDuckOver => {
                lame_duck_end = None;
                tracing::info!("lame duck over; draining (a second signal exits at once)");
                shared.stop_accepting(DrainReason::Stopped).await;
                finish.tell_predecessor(STOPPED_ACCEPTING);
            }
            Wake::Trigger(Trigger::Replaced) => {
                // Sent once: the channel's thread ends after it.
                replaced = true;
                // Accepting has stopped, and is said (the channel's thread did both at once:
                // the supervisor lets the new worker accept on it).
                if lame_duck_end.take().is_some() {
                    tracing::info!(
                        "replaced by a newer worker during the lame duck: draining now (an upgrade does not wait for the lame duck)"
                    );
                    shared.stop_accepting(DrainReason::Stopped).await;
                } else {
                    tracing::info!(
                        "replaced by a newer worker: stopped accepting; draining at the stop signal"
                    );
                }
            }
            Wake::SuccessorExit => {
                let Some(pid) = successor.as_ref().map(|s| s.pid) else {
                    continue;
                };
                let status = match spawn::try_reap(pid) {
                    Ok(Some(status)) => status,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!("cannot reap successor pid {pid}: {e}");
                        successor = None;
                        continue;
                    }
                };
                let mut s = successor.take().expect("checked above");
                s.take_pending_notices();
                after_successor_exit(&shared, &finish, &s, status, stop_signals > 0);
            }
            Wake::Trigger(Trigger::Upgrade(source, reply)) => {
                if stop_signals > 0 {
                    // In lame duck (or draining for a stop): the service is being stopped, and
                    // a new generation would take it back.
                    tracing::warn!("upgrade requested by {source} ignored: pid {me} is stopping");
                    if let Some(r) = reply {
                        let _ = r.send(Err(UpgradeError::Draining));
                    }
                    continue;
                }
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
                let start = Start {
                    trigger: source,
                    started: std::time::SystemTime::now(),
                    t0: tokio::time::Instant::now(),
                };
                let Some(generation) = next_generation else {
                    let e = UpgradeError::GenerationLimit {
                        current: cfg.generation,
                    };
                    tracing::error!("upgrade failed: {e}; still serving as pid {me}");
                    record(&finish, &start, None, Err(e.clone()), start.t0.elapsed());
                    if let Some(r) = reply {
                        let _ = r.send(Err(e));
                    }
                    continue;
                };
                tracing::info!(
                    "upgrade started by {source}: executing {}",
                    cfg.exe.display()
                );
                finish.notify(&format!(
                    "RELOADING=1\nMONOTONIC_USEC={}",
                    crate::os::monotonic_usec()
                ));
                waiters.extend(reply);
                current = Some(start.clone());
                running = Some(start_attempt(start, generation));
            }
            Wake::Done(result) => {
                running = None;
                let start = current.take().expect("set with `running`");
                let result = match result {
                    Ok(h) => {
                        let u = h.upgraded;
                        record(&finish, &start, Some(u.generation), Ok(u), h.duration);
                        tracing::info!(
                            "upgrade complete: pid {me} handed over to pid {}; draining",
                            u.new_pid
                        );
                        successor = Some(h.successor);
                        next_generation = env::next_generation(u.generation);
                        finish.notify(&format!("MAINPID={}", u.new_pid));
                        // The generation before this one must not take over if this one ends.
                        finish.tell_predecessor(HANDED_OVER);
                        // Only now may `wait` return: the handover is logged and announced.
                        shared
                            .stop_accepting(DrainReason::Upgraded { new_pid: u.new_pid })
                            .await;
                        Ok(u)
                    }
                    Err(e) => {
                        record(
                            &finish,
                            &start,
                            next_generation,
                            Err(e.clone()),
                            start.t0.elapsed(),
                        );
                        tracing::error!("upgrade failed: {e}; still serving as pid {me}");
                        finish.notify(&format!("READY=1\nSTATUS=upgrade failed: {e}"));
                        Err(e)
                    }
                };
                for w in waiters.drain(..) {
                    let _ = w.send(result.clone());
                }
            }
            Wake::Trigger(Trigger::Stop(source)) => {
                stop_signals += 1;
                if stop_signals >= 2 {
                    tracing::warn!("second stop request ({source}): exiting now");
                    std::process::exit(1);
                }
                // Said before anything else: this generation is being stopped on purpose, so
                // the one before it must not take over when it exits.
                finish.tell_predecessor(STOPPING);
                if let Some(up) = running.take() {
                    drop(up); // kills and reaps the half-started generation
                    current = None;
                    tracing::warn!("upgrade cancelled by {source}");
                    for w in waiters.drain(..) {
                        let _ = w.send(Err(UpgradeError::Cancelled));
                    }
                }
                // Health checks fail from here on, whatever follows.
                shared.request_stop();
                match draining_now(&shared) {
                    Some((_, DrainReason::Upgraded { .. })) => {
                        tracing::info!("{source} received while draining after an upgrade; a second one exits at once");
                    }
                    _ if !shared.lame_duck.is_zero() && !replaced => {
                        tracing::info!(
                            "graceful stop requested by {source}: lame duck for {:?} (serving on while health checks fail), then draining (a second signal exits at once)",
                            shared.lame_duck
                        );
                        finish.notify("STOPPING=1\nSTATUS=lame duck");
                        lame_duck_end = Some(tokio::time::Instant::now() + shared.lame_duck);
                    }
                    _ => {
                        tracing::info!(
                            "graceful stop requested by {source}; draining (a second signal exits at once)"
                        );
                        // Accepting stops first, and is said, before the drain wakes every
                        // open connection: a supervisor (`handover run`) lets the next
                        // generation accept once this one has said STOPPING=1, so that no
                        // fresh connection reaches the old version after the new one answered,
                        // and under load the accept task would otherwise queue behind
                        // hundreds of connections told to drain (60-100 ms at 512).
                        shared.pause_accepting().await;
                        finish.notify("STOPPING=1");
                        finish.tell_predecessor(STOPPED_ACCEPTING);
                        shared.stop_accepting(DrainReason::Stopped).await;
                    }
                }
            }
        }
    }
}

/// Records an upgrade attempt of this process for `handover status`.
fn record(
    finish: &Finish,
    start: &Start,
    generation: Option<u64>,
    result: Result<Upgraded, UpgradeError>,
    duration: std::time::Duration,
) {
    *finish.last_upgrade.lock().expect("not poisoned") = Some(LastUpgrade {
        trigger: start.trigger.to_string(),
        started: start.started,
        duration,
        generation,
        result,
    });
}

/// The successor told to go ahead has exited (and been reaped): log how, and take the
/// listeners back if it crashed while it was the one serving and this process can.
fn after_successor_exit(
    shared: &ServingState,
    finish: &Finish,
    s: &Successor,
    status: spawn::ExitStatus,
    stopping: bool,
) {
    let me = spawn::own_pid();
    let who = format!("successor pid {} (generation {})", s.pid, s.generation);
    match s.verdict(status) {
        Verdict::HandedOn => tracing::info!("{who} {status}, after it had handed over in turn"),
        Verdict::Stopped => tracing::info!(
            "{who} {status}; it was stopped on purpose, so pid {me} does not take over"
        ),
        Verdict::Crashed if stopping => tracing::warn!(
            "{who} {status} after it was ready; pid {me} is stopping itself and does not take over"
        ),
        Verdict::Crashed => {
            // Fails once `Running::wait` has claimed the end of the drain: on the way out.
            if !shared.resume_after_handover() {
                tracing::warn!(
                    "{who} {status} after it was ready; pid {me} has finished its drain and cannot take over"
                );
                return;
            }
            shared.resume_hooks();
            tracing::error!(
                "{who} {status} after it was ready; resuming: pid {me} (generation {}) accepts connections again",
                finish.generation
            );
            *finish.resumed.lock().expect("not poisoned") = Some(Resumed {
                successor_pid: s.pid as u32,
                successor_generation: s.generation,
                successor_ended: status,
                at: std::time::SystemTime::now(),
            });
            if let Some(path) = &finish.pid_file {
                if let Err(e) = pidfile::write_pid_file(path, me) {
                    tracing::warn!("{e}");
                }
            }
            finish.notify(&format!(
                "MAINPID={me}\nREADY=1\nSTATUS=serving again: the new generation {status}"
            ));
        }
    }
}

async fn recv_opt(s: &mut Option<Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn draining_now(shared: &ServingState) -> Option<(tokio::time::Instant, DrainReason)> {
    match *shared.phase.borrow() {
        crate::drain::Phase::Draining { deadline, reason } => Some((deadline, reason)),
        _ => None,
    }
}

mod replaced;
#[cfg(test)]
mod tests;
