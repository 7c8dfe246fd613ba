//! The supervisor: one loop owns every worker record and reacts to one event at a time
//! (`events.rs`). Upgrades, crash restarts, drains and the stop are all transitions here.
//!
//! * **Upgrade**: start a new worker; once it is ready, send every older worker the stop
//!   signal (SIGKILL after the drain timeout). If it fails to start, exits or is not ready in
//!   time, it is killed and the old one keeps serving; whoever asked is told why.
//! * **Crash**: a serving worker that exits unexpectedly is replaced after a backoff. The
//!   listening sockets stay open in the supervisor, so clients wait in the backlog.
//! * **Stop**: with `--lame-duck`, first the lame duck: workers serve on while the admin
//!   `/healthz` fails; then every worker gets the stop signal; the loop ends once all are
//!   reaped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use handover::control_socket::{UpgradeRecord, WorkerState};
use handover::sys::{ExitStatus, SystemdNotifier};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::admin::{Health, HealthCell};
use crate::events::{Event, Events, UpgradeReply, WorkerId};
use crate::metrics::Metrics;
use crate::pending_upgrade::PendingUpgrade;
use crate::proxy::Proxy;
use crate::restart::{Backoff, STABLE_AFTER};
use crate::signals::Signal;
use crate::worker::{Launch, Role, Worker};

/// The fixed settings.
#[derive(Debug)]
pub struct Config {
    pub name: String,
    pub listeners: Vec<String>,
    pub ready_timeout: Duration,
    pub drain_timeout: Duration,
    /// How long a stop keeps the workers serving, with `/healthz` failing, before they get
    /// the stop signal (zero: at once).
    pub lame_duck: Duration,
    pub stop_signal: Signal,
    pub max_draining: usize,
    pub backoff: Backoff,
}

/// How the supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every worker drained and exited.
    Stopped,
    /// A second stop signal killed the workers.
    Killed,
}

/// The state.
#[derive(Debug)]
pub struct Supervisor {
    cfg: Config,
    launcher: Box<dyn Launch>,
    events: Events,
    systemd: Option<SystemdNotifier>,
    /// Proxy mode: where new requests and connections go.
    proxy: Option<Proxy>,
    /// Counters and gauges for `/metrics`, for the supervisor's whole life.
    metrics: Arc<Metrics>,
    workers: BTreeMap<WorkerId, Worker>,
    /// The worker new connections go to.
    current: Option<WorkerId>,
    upgrade: Option<PendingUpgrade>,
    /// A canary serving its share (`handover upgrade --canary`).
    canary: Option<canary::CanaryRun>,
    /// A new worker held back until the old ones have stopped accepting.
    handoff: Option<handoff::Handoff>,
    next_id: u64,
    next_generation: u64,
    backoff: Backoff,
    /// The restart that is scheduled, by number (stale timers carry an older one).
    restart_pending: Option<u64>,
    restart_epoch: u64,
    restarts: u64,
    last_upgrade: Option<UpgradeRecord>,
    stopping: bool,
    /// In the lame duck of a stop: the workers still serve.
    lame_duck: bool,
    /// What the admin listener's `/healthz` says, written after every event.
    health: Arc<HealthCell>,
    killed: bool,
    ever_ready: bool,
    started: Instant,
}

impl Supervisor {
    /// A supervisor with no worker yet. `events` is the sending side of the channel
    /// [`Supervisor::run`] reads, for the supervisor's own timers.
    pub fn new(
        cfg: Config,
        launcher: Box<dyn Launch>,
        events: Events,
        systemd: Option<SystemdNotifier>,
    ) -> Self {
        let backoff = cfg.backoff.clone();
        Supervisor {
            cfg,
            launcher,
            events,
            systemd,
            proxy: None,
            metrics: Arc::new(Metrics::new()),
            workers: BTreeMap::new(),
            current: None,
            upgrade: None,
            canary: None,
            handoff: None,
            next_id: 1,
            next_generation: 1,
            backoff,
            restart_pending: None,
            restart_epoch: 0,
            restarts: 0,
            last_upgrade: None,
            stopping: false,
            lame_duck: false,
            health: Arc::default(),
            killed: false,
            ever_ready: false,
            started: Instant::now(),
        }
    }

    /// Proxy mode: route to the current worker through `proxy`.
    pub fn with_proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Counts into `metrics` (shared with the proxy and the admin listener).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// What `/healthz` of the admin listener (`--admin`) reads.
    pub fn health(&self) -> Arc<HealthCell> {
        Arc::clone(&self.health)
    }

    /// Starts the first worker; an error (the program cannot be executed) is fatal.
    pub fn start(&mut self) -> Result<(), String> {
        self.launch(Role::Start).map(drop)
    }

    /// Handles events until the stop is complete.
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) -> Outcome {
        while let Some(event) = events.recv().await {
            self.handle(event);
            self.metrics.set_generations(
                self.count(WorkerState::Starting),
                self.count(WorkerState::Ready),
                self.count(WorkerState::Draining) + self.count(WorkerState::Killed),
            );
            if self.stopping && self.workers.is_empty() {
                break;
            }
        }
        if self.killed {
            Outcome::Killed
        } else {
            Outcome::Stopped
        }
    }

    /// Handles one event, then publishes the health it leaves.
    fn handle(&mut self, event: Event) {
        self.handle_event(event);
        self.health.set(if self.stopping {
            Health::Stopping
        } else if self.current.is_some() || self.handoff.is_some() {
            // A hand-off lasts until the old workers have stopped accepting: someone serves.
            Health::Ready
        } else {
            Health::NoWorker
        });
    }

    /// Every transition of the state machine starts here.
    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Exited { pid, status } => self.on_exit(pid, status),
            Event::Ready { id, how } => self.on_ready(id, &how),
            Event::HandshakeReady { id } => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.speaks_handshake = true;
                    if w.state == WorkerState::Starting {
                        w.awaiting_go = true;
                    }
                }
                self.on_ready(id, "READY on its handshake channel");
            }
            Event::StoppedAccepting { id, on_channel } => {
                let sign = if on_channel {
                    StopSign::Channel
                } else {
                    StopSign::Notify
                };
                self.stopped_accepting(id, sign);
            }
            Event::HandoffDue { id } => self.on_handoff_due(id),
            Event::ReadyTimeout { id } => self.on_ready_timeout(id),
            Event::DrainTimeout { id } => self.on_drain_timeout(id),
            Event::Drained { id, left } => self.on_drained(id, left),
            Event::RestartDue { epoch } => self.on_restart_due(epoch),
            Event::Upgrade { trigger, reply } => self.on_upgrade(trigger, reply),
            Event::Stop {
                trigger,
                from_signal,
                reply,
            } => self.on_stop(&trigger, from_signal, reply),
            Event::LameDuckOver => self.on_lame_duck_over(),
            Event::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Event::Canary {
                trigger,
                plan,
                reply,
            } => self.on_canary(trigger, plan, reply),
            Event::CanaryDue { id } => self.on_canary_due(id),
            Event::CanaryTripped { id, reason } => self.on_canary_tripped(id, &reason),
            Event::Promote { reply } => self.on_decide_by_hand(true, reply),
            Event::Abort { reply } => self.on_decide_by_hand(false, reply),
        }
    }

    // -- starting -------------------------------------------------------------------------

    fn launch(&mut self, role: Role) -> Result<WorkerId, String> {
        let id = WorkerId(self.next_id);
        self.next_id += 1;
        let generation = self.next_generation;
        let mut worker = self.launcher.launch(id, generation)?;
        self.next_generation += 1;
        worker.add_task(self.after(self.cfg.ready_timeout, Event::ReadyTimeout { id }));
        let role = match role {
            Role::Start => "the first worker",
            Role::Restart => "a replacement worker",
            Role::Upgrade => "the new version",
        };
        tracing::info!(
            "started {role}, {}; waiting for readiness ({}, at most {:?})",
            worker.describe(),
            self.launcher.readiness(),
            self.cfg.ready_timeout
        );
        self.workers.insert(id, worker);
        Ok(id)
    }

    /// Sends `event` after `delay`, unless the returned handle is aborted first.
    fn after(&self, delay: Duration, event: Event) -> AbortHandle {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(event);
        })
        .abort_handle()
    }

    fn on_ready(&mut self, id: WorkerId, how: &str) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.state != WorkerState::Starting {
            return;
        }
        w.state = WorkerState::Ready;
        w.ready_at = Some(Instant::now());
        let what = w.describe();
        tracing::info!("{what} is ready ({how})");
        if let Some(up) = self.upgrade.as_ref().filter(|u| u.worker == Some(id)) {
            if up.canary.is_some() {
                self.start_canary(id);
            } else {
                self.upgrade_succeeded(id);
            }
            return;
        }
        match self.current {
            None => {
                self.current = Some(id);
                w.let_go();
                self.route(id);
                let first = !self.ever_ready;
                self.ever_ready = true;
                if first {
                    self.notify(&format!("READY=1\nSTATUS={what} serving"));
                } else {
                    self.notify(&format!("STATUS={what} serving (restarted)"));
                }
            }
            // Another worker took over meanwhile: this one is not needed.
            Some(_) => self.begin_drain(id, "not needed: another worker serves"),
        }
    }

    fn on_ready_timeout(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.state != WorkerState::Starting {
            return;
        }
        self.launcher.signal(w.pid, libc::SIGKILL);
        w.state = WorkerState::Killed;
        let reason = format!(
            "the new worker ({}) was not ready within {:?}{}; it was killed",
            w.describe(),
            self.cfg.ready_timeout,
            w.probe_hint()
        );
        let new = (w.generation, w.pid);
        if self.upgrade.as_ref().and_then(|u| u.worker) == Some(id) {
            self.upgrade_failed(&reason, Some(new));
        } else {
            tracing::error!("{reason}");
            // Another one is started once this one has been reaped.
            w.restart_when_reaped = true;
        }
    }

    // -- upgrading ------------------------------------------------------------------------

    fn on_upgrade(&mut self, trigger: String, reply: Option<UpgradeReply>) {
        if self.stopping {
            tracing::warn!("upgrade requested by {trigger} ignored: stopping");
            if let Some(r) = reply {
                let _ = r.send(Err("the server is stopping".into()));
            }
            return;
        }
        if let Some(busy) = self.busy_with_canary() {
            tracing::warn!("upgrade requested by {trigger} refused: {busy}");
            if let Some(r) = reply {
                let _ = r.send(Err(format!("upgrade refused: {busy}")));
            }
            return;
        }
        if let Some(up) = &mut self.upgrade {
            if up.canary.is_some() {
                let why = "a canary upgrade is starting; end it with `handover promote` or \
                           `handover abort` once it runs";
                tracing::warn!("upgrade requested by {trigger} refused: {why}");
                if let Some(r) = reply {
                    let _ = r.send(Err(format!("upgrade refused: {why}")));
                }
                return;
            }
            tracing::info!("upgrade requested by {trigger} joins the one in progress");
            up.join(reply);
            // Under Type=notify-reload, systemd sent this SIGHUP and waits for a RELOADING=1
            // stamped after it; the READY=1 at the outcome then ends its reload too.
            self.notify(&reloading());
            return;
        }
        let pending = PendingUpgrade::new(trigger.clone(), reply);
        let draining = self.count(WorkerState::Draining);
        if draining >= self.cfg.max_draining {
            let message = format!(
                "upgrade refused: older generations still draining: {draining} (--max-draining {}); \
                 try again once one has exited",
                self.cfg.max_draining
            );
            tracing::warn!("{message}");
            self.notify_refused(&message);
            self.last_upgrade = Some(pending.fail(&message, None));
            return;
        }
        // `https://`: the certificate and key are read again before any new worker starts; a
        // bad file fails the upgrade and the certificate in use stays.
        if let Some(Err(e)) = self.proxy.as_ref().map(Proxy::reload_tls) {
            let message = format!("{e}; the certificate in use stays");
            tracing::error!("upgrade refused: {message}");
            self.notify_refused(&format!("upgrade refused: {message}"));
            self.last_upgrade = Some(pending.fail(&message, None));
            return;
        }
        tracing::info!("upgrade requested by {trigger}: starting a new worker");
        self.notify(&reloading());
        self.restart_pending = None; // a scheduled restart is superseded by the upgrade
        self.launch_upgrade(pending);
    }

    /// Starts the new worker of an upgrade (plain or canary) that passed its checks; from here
    /// on the upgrade is in progress, and a worker that cannot be started fails it.
    fn launch_upgrade(&mut self, mut pending: PendingUpgrade) {
        self.metrics.upgrade_started();
        match self.launch(Role::Upgrade) {
            Ok(id) => {
                pending.worker = Some(id);
                self.upgrade = Some(pending);
            }
            Err(e) => {
                self.upgrade = Some(pending);
                self.upgrade_failed(&format!("cannot start the new worker: {e}"), None);
            }
        }
    }

    fn upgrade_succeeded(&mut self, new: WorkerId) {
        if self.upgrade.is_none() {
            return;
        }
        let older: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                **id != new && matches!(w.state, WorkerState::Starting | WorkerState::Ready)
            })
            .map(|(id, _)| *id)
            .collect();
        self.hand_off(new, older);
    }

    /// The new worker `new` serves: it is let go, and everyone waiting is answered.
    fn upgrade_complete(&mut self, new: WorkerId, previous_pids: Vec<u32>) {
        let Some(pending) = self.upgrade.take() else {
            return;
        };
        let Some(w) = self.workers.get_mut(&new) else {
            return;
        };
        w.let_go();
        let (generation, pid, what) = (w.generation, w.pid, w.describe());
        self.route(new);
        self.current = Some(new);
        self.ever_ready = true;
        tracing::info!("upgrade complete: {what} serves new connections");
        self.notify(&format!("READY=1\nSTATUS={what} serving"));
        self.metrics.upgrade_succeeded();
        self.last_upgrade = Some(pending.succeed(generation, pid, previous_pids));
    }

    /// Ends the pending upgrade with `reason`; the old worker keeps serving.
    fn upgrade_failed(&mut self, reason: &str, new: Option<(u64, u32)>) {
        let Some(pending) = self.upgrade.take() else {
            return;
        };
        self.handoff = None;
        let kept = match self.current.and_then(|id| self.workers.get(&id)) {
            _ if self.stopping => "the server is stopping".to_string(),
            Some(w) => format!("{} keeps serving", w.describe()),
            None => "no worker is serving; starting one".to_string(),
        };
        let message = format!("{reason}; {kept}");
        tracing::error!("upgrade failed: {message}");
        self.metrics.upgrade_rolled_back();
        self.notify(&format!("READY=1\nSTATUS=upgrade failed: {reason}"));
        self.last_upgrade = Some(pending.fail(&message, new));
        self.schedule_restart();
    }

    // -- draining and exits ---------------------------------------------------------------

    fn begin_drain(&mut self, id: WorkerId, why: &str) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        w.state = WorkerState::Draining;
        w.draining_since = Some(Instant::now());
        if self.current == Some(id) {
            self.current = None;
        }
        let Some(proxy) = &self.proxy else {
            self.send_stop(id, why);
            return;
        };
        // Proxy mode: the stop signal waits until what the proxy sent it has finished.
        let deadline = self.cfg.drain_timeout;
        let retire = proxy.retire(id, deadline);
        let events = self.events.clone();
        let task = tokio::spawn(async move {
            let left = retire.await;
            let _ = events.send(Event::Drained { id, left });
        });
        w.add_task(task.abort_handle());
        tracing::info!(
            "{} gets no new requests ({why}); {} once those in flight have finished \
             (at most {deadline:?})",
            w.describe(),
            self.cfg.stop_signal
        );
    }

    /// Proxy mode: a retired worker is idle (or out of time): now it gets the stop signal.
    fn on_drained(&mut self, id: WorkerId, left: usize) {
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        if w.state != WorkerState::Draining {
            return;
        }
        let why = if left == 0 {
            "nothing in flight".to_string()
        } else {
            tracing::warn!(
                "{}: {left} requests or connections still open at the drain deadline; cut",
                w.describe()
            );
            format!("drain deadline, {left} cut")
        };
        self.send_stop(id, &why);
    }

    fn send_stop(&mut self, id: WorkerId, why: &str) {
        let delay = self.cfg.drain_timeout;
        let timer = self.after(delay, Event::DrainTimeout { id });
        let signal = self.cfg.stop_signal;
        let Some(w) = self.workers.get_mut(&id) else {
            timer.abort();
            return;
        };
        self.launcher.signal(w.pid, signal.number);
        w.add_task(timer);
        tracing::info!(
            "sent {signal} to {} ({why}); SIGKILL in {delay:?} if it is still running",
            w.describe()
        );
    }

    /// Proxy mode: new requests and connections go to worker `id` from now on.
    fn route(&self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        if let (Some(proxy), Some(port)) = (&self.proxy, w.port) {
            proxy.route(
                id,
                w.generation,
                (std::net::Ipv4Addr::LOCALHOST, port).into(),
            );
        }
    }

    fn on_drain_timeout(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            if w.state == WorkerState::Draining {
                tracing::warn!(
                    "{} is still running {:?} after {}; sending SIGKILL",
                    w.describe(),
                    self.cfg.drain_timeout,
                    self.cfg.stop_signal
                );
                self.launcher.signal(w.pid, libc::SIGKILL);
                w.state = WorkerState::Killed;
            }
        }
    }

    fn on_exit(&mut self, pid: u32, status: ExitStatus) {
        let Some(id) = self.workers.values().find(|w| w.pid == pid).map(|w| w.id) else {
            tracing::debug!("reaped pid {pid} (not a worker), which {status}");
            return;
        };
        let w = self.workers.remove(&id).expect("found above");
        if let Some(proxy) = &self.proxy {
            proxy.gone(id);
        }
        let what = w.describe();
        if !self.stopping {
            self.canary_worker_exited(id, &what, &status.to_string());
        }
        let is_upgrade = self.upgrade.as_ref().and_then(|u| u.worker) == Some(id);
        if self.handoff_lost(id) {
            self.upgrade_failed(
                &format!("the new worker ({what}) {status} while the old one stopped accepting"),
                Some((w.generation, w.pid)),
            );
            return;
        }
        self.stopped_accepting(id, StopSign::Exited);
        match w.state {
            WorkerState::Draining => {
                tracing::info!("{what} {status} after draining");
                if let Some(t) = w.draining_since {
                    self.metrics.drained(t.elapsed());
                }
            }
            WorkerState::Starting if is_upgrade => self.upgrade_failed(
                &format!("the new worker ({what}) {status} before it was ready"),
                Some((w.generation, w.pid)),
            ),
            WorkerState::Ready if self.current == Some(id) && !self.stopping => {
                self.current = None;
                tracing::error!(
                    "{what} {status} unexpectedly; restarting it (connections wait in the listen backlog)"
                );
                if w.ready_at.is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                    self.backoff.reset();
                }
                self.schedule_restart();
            }
            WorkerState::Starting if !self.stopping => {
                tracing::error!("{what} {status} before it was ready");
                self.schedule_restart();
            }
            _ => {
                tracing::info!("{what} {status}");
                if self.current == Some(id) {
                    self.current = None;
                }
                if w.restart_when_reaped {
                    self.schedule_restart();
                }
            }
        }
    }

    // -- restarting -----------------------------------------------------------------------

    /// Starts a replacement after the backoff, unless something else will serve.
    fn schedule_restart(&mut self) {
        if self.stopping
            || self.restart_pending.is_some()
            || self.upgrade.is_some()
            || self.current.is_some()
            || self.count(WorkerState::Starting) > 0
        {
            return;
        }
        let delay = self.backoff.next_delay();
        self.restart_epoch += 1;
        let epoch = self.restart_epoch;
        self.restart_pending = Some(epoch);
        tracing::info!("starting a new worker in {delay:?}");
        self.notify("STATUS=restarting the worker");
        self.after(delay, Event::RestartDue { epoch });
    }

    fn on_restart_due(&mut self, epoch: u64) {
        if self.restart_pending != Some(epoch) {
            return; // superseded (an upgrade started meanwhile)
        }
        self.restart_pending = None;
        if self.stopping || self.current.is_some() || self.upgrade.is_some() {
            return;
        }
        match self.launch(Role::Restart) {
            Ok(_) => {
                self.restarts += 1;
                self.metrics.restarted();
            }
            Err(e) => {
                tracing::error!("cannot restart the worker: {e}");
                self.schedule_restart();
            }
        }
    }

    /// A refused upgrade still ends the reload systemd may be waiting for (Type=notify-reload
    /// sent SIGHUP and waits for RELOADING=1 then READY=1): both in one message, which
    /// systemd reads as "reloaded at once", and which is no reload at all under Type=notify.
    fn notify_refused(&self, message: &str) {
        self.notify(&format!("{}\nREADY=1\nSTATUS={message}", reloading()));
    }

    fn notify(&self, message: &str) {
        if let Some(n) = &self.systemd {
            n.notify(message);
        }
    }
}

mod canary;
mod handoff;
use handoff::StopSign;
mod report;
mod stop;
#[cfg(test)]
mod tests;

/// `RELOADING=1` with the time it is sent: systemd 253+ (Type=notify-reload) only counts a
/// RELOADING=1 stamped after the reload signal it sent.
fn reloading() -> String {
    format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        handover::sys::monotonic_usec()
    )
}
