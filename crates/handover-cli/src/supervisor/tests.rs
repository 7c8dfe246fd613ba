//! The supervisor's transitions, without processes: a fake [`Launch`] records what it was
//! asked to start and signal, the tests feed [`Event`]s as the reaper, the readiness checks and
//! the control socket would, and tokio's paused clock runs the timers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use handover::control_socket::{ServerState, UpgradeReport, WorkerState};
use handover::sys::ExitStatus;
use tokio::sync::{mpsc, oneshot};

use super::{Config, Supervisor};
use crate::events::{Event, WorkerId};
use crate::restart::{Backoff, STABLE_AFTER};
use crate::worker::{Launch, Worker};

const TERM: i32 = libc::SIGTERM;
const KILL: i32 = libc::SIGKILL;
const READY_TIMEOUT: Duration = Duration::from_secs(5);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF: Duration = Duration::from_millis(100);

/// What the fake launcher was asked to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Started worker id N (its fake pid is 1000 + N).
    Launch(u64),
    /// Sent a signal to a pid.
    Signal(u32, i32),
}

#[derive(Debug, Clone, Default)]
struct FakeLauncher {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Launches fail (the program cannot be executed) while set.
    broken: Arc<Mutex<bool>>,
    /// Each worker's go-ahead, as its handshake task would receive it.
    gos: Arc<Mutex<std::collections::BTreeMap<u64, oneshot::Receiver<()>>>>,
    /// Each worker's "you are replaced", likewise.
    replaces: Arc<Mutex<std::collections::BTreeMap<u64, oneshot::Receiver<()>>>>,
}

impl Launch for FakeLauncher {
    fn launch(&self, id: WorkerId, generation: u64) -> Result<Worker, String> {
        if *self.broken.lock().unwrap() {
            return Err("cannot execute /bin/app: No such file or directory".into());
        }
        self.calls.lock().unwrap().push(Call::Launch(id.0));
        let mut w = Worker::new(id, pid(id.0), generation, None);
        let (go, told) = oneshot::channel();
        w.go = Some(go);
        self.gos.lock().unwrap().insert(id.0, told);
        let (replace, replaced) = oneshot::channel();
        w.replace = Some(replace);
        self.replaces.lock().unwrap().insert(id.0, replaced);
        Ok(w)
    }

    fn signal(&self, pid: u32, signal: i32) {
        self.calls.lock().unwrap().push(Call::Signal(pid, signal));
    }

    fn readiness(&self) -> String {
        "fake".into()
    }
}

fn pid(id: u64) -> u32 {
    1000 + id as u32
}

struct Harness {
    sup: Supervisor,
    launcher: FakeLauncher,
    /// The supervisor's own timers arrive here.
    timers: mpsc::UnboundedReceiver<Event>,
}

impl Harness {
    fn new(max_draining: usize) -> Harness {
        Harness::with(max_draining, Duration::ZERO)
    }

    fn with(max_draining: usize, lame_duck: Duration) -> Harness {
        let (tx, timers) = mpsc::unbounded_channel();
        let launcher = FakeLauncher::default();
        let cfg = Config {
            name: "app".into(),
            listeners: vec!["tcp://127.0.0.1:8080".into()],
            ready_timeout: READY_TIMEOUT,
            drain_timeout: DRAIN_TIMEOUT,
            lame_duck,
            stop_signal: "TERM".parse().unwrap(),
            max_draining,
            backoff: Backoff::new(BACKOFF, Duration::from_secs(10)),
        };
        let mut sup = Supervisor::new(cfg, Box::new(launcher.clone()), tx, None);
        sup.start().unwrap();
        Harness {
            sup,
            launcher,
            timers,
        }
    }

    /// Started and ready: worker 1 serves.
    fn serving() -> Harness {
        let mut h = Harness::new(4);
        h.ready(1);
        h
    }

    fn ready(&mut self, id: u64) {
        self.sup.handle(Event::Ready {
            id: WorkerId(id),
            how: "test".into(),
        });
    }

    /// Worker `id` (a library worker) said READY on its handshake channel.
    fn handshake_ready(&mut self, id: u64) {
        self.sup.handle(Event::HandshakeReady { id: WorkerId(id) });
    }

    /// Whether worker `id` has been let go (told to accept).
    fn went(&self, id: u64) -> bool {
        let mut gos = self.launcher.gos.lock().unwrap();
        gos.get_mut(&id).is_some_and(|rx| rx.try_recv().is_ok())
    }

    /// Whether worker `id` has been told, on its handshake channel, that it is replaced.
    fn told_replaced(&self, id: u64) -> bool {
        let mut replaces = self.launcher.replaces.lock().unwrap();
        replaces
            .get_mut(&id)
            .is_some_and(|rx| rx.try_recv().is_ok())
    }

    fn exited(&mut self, id: u64, status: ExitStatus) {
        self.sup.handle(Event::Exited {
            pid: pid(id),
            status,
        });
    }

    fn upgrade(&mut self) -> oneshot::Receiver<Result<UpgradeReport, String>> {
        let (tx, rx) = oneshot::channel();
        self.sup.handle(Event::Upgrade {
            trigger: "test".into(),
            reply: Some(tx),
        });
        rx
    }

    fn stop(&mut self, from_signal: bool) {
        self.sup.handle(Event::Stop {
            trigger: "test".into(),
            from_signal,
            reply: None,
        });
    }

    /// Waits (in paused time) for the next timer event and handles it; returns how long it
    /// took to come.
    async fn next_timer(&mut self) -> Duration {
        let t0 = tokio::time::Instant::now();
        let event = self.timers.recv().await.expect("a timer");
        let waited = t0.elapsed();
        self.sup.handle(event);
        waited
    }

    /// Handles the timer events that are already due.
    fn flush_timers(&mut self) {
        while let Ok(event) = self.timers.try_recv() {
            self.sup.handle(event);
        }
    }

    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.launcher.calls.lock().unwrap())
    }

    fn state(&self) -> ServerState {
        self.sup.status().state
    }

    fn worker_states(&self) -> Vec<(u32, WorkerState)> {
        let mut w: Vec<_> = self
            .sup
            .status()
            .workers
            .iter()
            .map(|w| (w.pid, w.state))
            .collect();
        w.sort_by_key(|(pid, _)| *pid);
        w
    }
}

fn reply<T>(mut rx: oneshot::Receiver<T>) -> T {
    rx.try_recv().expect("answered")
}

#[tokio::test(start_paused = true)]
async fn a_new_worker_that_crashes_during_the_upgrade_is_rolled_back_and_the_old_one_serves() {
    let mut h = Harness::serving();
    assert_eq!(h.calls(), [Call::Launch(1)]);
    let rx = h.upgrade();
    assert_eq!(h.calls(), [Call::Launch(2)]);
    assert_eq!(h.state(), ServerState::Upgrading);
    h.exited(2, ExitStatus::Code(3));
    let err = reply(rx).unwrap_err();
    assert!(
        err.contains("exited with status 3 before it was ready")
            && err.contains("generation 1 (pid 1001) keeps serving"),
        "{err}"
    );
    assert_eq!(h.calls(), [], "the old worker is left alone");
    assert_eq!(h.state(), ServerState::Running);
    assert_eq!(h.worker_states(), [(1001, WorkerState::Ready)]);
    let last = h.sup.status().last_upgrade.expect("recorded");
    assert!(!last.ok && last.generation == Some(2), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_an_upgrade_cancels_it_and_drains_both_workers() {
    let mut h = Harness::serving();
    let rx = h.upgrade();
    h.calls();
    h.stop(true);
    let err = reply(rx).unwrap_err();
    assert_eq!(err, "the upgrade was cancelled; the server is stopping");
    let mut calls = h.calls();
    calls.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(calls, [Call::Signal(1001, TERM), Call::Signal(1002, TERM)]);
    assert_eq!(h.state(), ServerState::Stopping);
    // A new upgrade is refused while stopping, and no worker is started for it.
    let err = reply(h.upgrade()).unwrap_err();
    assert_eq!(err, "the server is stopping");
    h.exited(1, ExitStatus::Code(0));
    h.exited(2, ExitStatus::Signal(TERM));
    assert!(
        h.sup.stopping && h.sup.workers.is_empty(),
        "the loop ends here"
    );
    assert_eq!(h.calls(), [], "no restart while stopping");
}

#[tokio::test(start_paused = true)]
async fn a_second_stop_signal_kills_every_worker_at_once() {
    let mut h = Harness::serving();
    h.stop(true);
    assert_eq!(h.calls(), [Call::Launch(1), Call::Signal(1001, TERM)]);
    h.stop(false);
    assert_eq!(h.calls(), [], "a second stop by request is not a kill");
    h.stop(true);
    assert_eq!(h.calls(), [Call::Signal(1001, KILL)]);
    assert!(h.sup.killed);
}

#[tokio::test(start_paused = true)]
async fn upgrade_requests_during_an_upgrade_join_it() {
    let mut h = Harness::serving();
    let first = h.upgrade();
    let second = h.upgrade();
    assert_eq!(
        h.calls(),
        [Call::Launch(1), Call::Launch(2)],
        "one new worker"
    );
    h.ready(2);
    let (a, b) = (reply(first).unwrap(), reply(second).unwrap());
    assert_eq!(a, b);
    assert_eq!(
        (a.pid, a.generation, a.previous_pids),
        (1002, Some(2), vec![1001])
    );
    assert_eq!(h.calls(), [Call::Signal(1001, TERM)], "the old one drains");
    assert_eq!(
        h.worker_states(),
        [(1001, WorkerState::Draining), (1002, WorkerState::Ready)]
    );
}

#[tokio::test(start_paused = true)]
async fn upgrades_are_refused_while_too_many_generations_drain() {
    let mut h = Harness::new(1);
    h.ready(1);
    reply_ok(&mut h, 2);
    h.calls();
    let err = reply(h.upgrade()).unwrap_err();
    assert!(
        err.contains("older generations still draining: 1 (--max-draining 1)"),
        "{err}"
    );
    assert_eq!(h.calls(), [], "no worker started");
    // Once the old one has exited, an upgrade goes ahead again.
    h.exited(1, ExitStatus::Code(0));
    let _rx = h.upgrade();
    assert_eq!(h.calls(), [Call::Launch(3)]);
}

/// Upgrades to worker `id` and checks that it succeeded.
fn reply_ok(h: &mut Harness, id: u64) {
    let rx = h.upgrade();
    h.ready(id);
    assert_eq!(reply(rx).unwrap().pid, pid(id));
}

#[tokio::test(start_paused = true)]
async fn a_draining_worker_still_running_at_the_deadline_is_killed() {
    let mut h = Harness::serving();
    reply_ok(&mut h, 2);
    h.calls();
    // The ready timeouts (5 s) act only on a worker still starting; the drain deadline
    // (3 s) comes first.
    let mut waited = Duration::ZERO;
    while !h.calls().contains(&Call::Signal(1001, KILL)) {
        waited += h.next_timer().await;
    }
    assert_eq!(waited, DRAIN_TIMEOUT);
    assert_eq!(h.worker_states()[0], (1001, WorkerState::Killed));
}

#[tokio::test(start_paused = true)]
async fn a_worker_never_ready_is_killed_at_the_ready_timeout_and_replaced() {
    let mut h = Harness::new(4);
    assert_eq!(h.calls(), [Call::Launch(1)]);
    assert_eq!(h.next_timer().await, READY_TIMEOUT);
    assert_eq!(h.calls(), [Call::Signal(1001, KILL)]);
    h.exited(1, ExitStatus::Signal(KILL));
    assert_eq!(h.next_timer().await, BACKOFF, "restart after the backoff");
    assert_eq!(h.calls(), [Call::Launch(2)]);
    assert_eq!(h.sup.status().restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn crash_restarts_back_off_and_start_over_after_a_stable_run() {
    let mut h = Harness::serving();
    h.calls();
    // Crash, and each replacement crashes before it is ready: 100, 200, 400 ms.
    h.exited(1, ExitStatus::Signal(libc::SIGSEGV));
    assert_eq!(h.state(), ServerState::Restarting);
    let mut delays = Vec::new();
    for id in 2..=4 {
        delays.push(h.next_timer().await);
        assert_eq!(h.calls(), [Call::Launch(id)]);
        if id < 4 {
            h.exited(id, ExitStatus::Code(1));
        }
    }
    assert_eq!(delays, [BACKOFF, BACKOFF * 2, BACKOFF * 4]);
    // Worker 4 serves long enough to count as healthy: the next crash waits 100 ms again.
    h.ready(4);
    tokio::time::advance(STABLE_AFTER).await;
    h.flush_timers(); // worker 4's ready timeout, which a ready worker ignores
    h.exited(4, ExitStatus::Code(1));
    assert_eq!(h.next_timer().await, BACKOFF);
    assert_eq!(h.calls(), [Call::Launch(5)]);
    assert_eq!(h.sup.status().restarts, 4);
}

#[tokio::test(start_paused = true)]
async fn an_upgrade_supersedes_a_scheduled_restart() {
    let mut h = Harness::serving();
    h.exited(1, ExitStatus::Code(1));
    h.calls();
    let rx = h.upgrade();
    assert_eq!(h.calls(), [Call::Launch(2)]);
    h.ready(2);
    assert_eq!(reply(rx).unwrap().pid, 1002);
    // The restart timer still fires, and does nothing.
    h.next_timer().await;
    assert_eq!(h.calls(), []);
    assert_eq!(h.state(), ServerState::Running);
}

#[tokio::test(start_paused = true)]
async fn a_new_version_that_cannot_be_executed_fails_the_upgrade_and_keeps_the_old_one() {
    let mut h = Harness::serving();
    *h.launcher.broken.lock().unwrap() = true;
    let err = reply(h.upgrade()).unwrap_err();
    assert!(
        err.starts_with("cannot start the new worker: cannot execute /bin/app")
            && err.ends_with("generation 1 (pid 1001) keeps serving"),
        "{err}"
    );
    assert_eq!(h.state(), ServerState::Running);
}

const LAME_DUCK: Duration = Duration::from_secs(2);

fn health(h: &Harness) -> crate::admin::Health {
    h.sup.health().get()
}

#[tokio::test(start_paused = true)]
async fn a_stop_with_a_lame_duck_fails_health_first_and_signals_the_workers_after_it() {
    use crate::admin::Health;
    let mut h = Harness::with(4, LAME_DUCK);
    assert_eq!(health(&h), Health::NoWorker, "no worker is ready yet");
    h.ready(1);
    assert_eq!(health(&h), Health::Ready);
    h.calls();
    h.stop(true);
    assert_eq!(health(&h), Health::Stopping);
    assert_eq!(h.state(), ServerState::LameDuck);
    assert_eq!(h.calls(), [], "the worker serves on in lame duck");
    assert_eq!(h.worker_states(), [(1001, WorkerState::Ready)]);
    let err = reply(h.upgrade()).unwrap_err();
    assert_eq!(err, "the server is stopping", "no upgrade in lame duck");
    assert_eq!(h.next_timer().await, LAME_DUCK);
    assert_eq!(h.calls(), [Call::Signal(1001, TERM)]);
    assert_eq!(h.state(), ServerState::Stopping);
    assert_eq!(health(&h), Health::Stopping);
}

#[tokio::test(start_paused = true)]
async fn a_second_stop_signal_in_lame_duck_kills_at_once() {
    let mut h = Harness::with(4, LAME_DUCK);
    h.ready(1);
    h.calls();
    h.stop(true);
    assert_eq!(h.calls(), []);
    h.stop(true);
    assert_eq!(h.calls(), [Call::Signal(1001, KILL)]);
    // The lame duck's timer later finds nothing to do.
    h.next_timer().await;
    assert_eq!(h.calls(), []);
}

#[tokio::test(start_paused = true)]
async fn health_stays_ready_through_an_upgrade_and_fails_while_no_worker_is_ready() {
    use crate::admin::Health;
    let mut h = Harness::with(4, LAME_DUCK);
    h.ready(1);
    let rx = h.upgrade();
    assert_eq!(health(&h), Health::Ready, "the old worker serves meanwhile");
    h.ready(2);
    reply(rx).unwrap();
    assert_eq!(health(&h), Health::Ready);
    h.exited(2, ExitStatus::Signal(KILL));
    assert_eq!(health(&h), Health::NoWorker, "a crash: nobody is ready");
}

#[tokio::test(start_paused = true)]
async fn a_library_worker_accepts_only_once_the_old_one_has_stopped_accepting() {
    let mut h = Harness::new(4);
    h.handshake_ready(1);
    assert!(h.went(1), "the first worker goes at once");
    h.calls();
    let mut rx = h.upgrade();
    h.handshake_ready(2);
    assert_eq!(h.calls(), [Call::Launch(2), Call::Signal(1001, TERM)]);
    assert!(h.told_replaced(1), "the old one is told it is replaced");
    assert!(!h.told_replaced(2));
    assert!(!h.went(2), "held back while the old one may still accept");
    assert!(rx.try_recv().is_err(), "the upgrade is not over yet");
    assert_eq!(h.state(), ServerState::Upgrading);
    assert_eq!(h.sup.status().generation, 1, "the old one still accepts");
    // A STOPPING=1 does not count from a worker that speaks the handshake (the library says
    // it when a lame duck begins, still accepting), nor anything from the new one.
    h.sup.handle(Event::StoppedAccepting {
        id: WorkerId(1),
        on_channel: false,
    });
    h.sup.handle(Event::StoppedAccepting {
        id: WorkerId(2),
        on_channel: true,
    });
    assert!(!h.went(2));
    // What the old one says on its channel lets the new one go.
    h.sup.handle(Event::StoppedAccepting {
        id: WorkerId(1),
        on_channel: true,
    });
    assert!(h.went(2));
    let report = reply(rx).unwrap();
    assert_eq!((report.pid, report.previous_pids), (1002, vec![1001]));
    assert_eq!(h.state(), ServerState::Running);
    assert_eq!(h.sup.status().generation, 2);
    // A READY=1 the library sends after the go-ahead changes nothing.
    h.ready(2);
    assert_eq!(h.calls(), []);
}

#[tokio::test(start_paused = true)]
async fn a_silent_old_worker_holds_the_new_one_back_at_most_the_handoff_wait() {
    let mut h = Harness::serving();
    let rx = h.upgrade();
    h.handshake_ready(2);
    assert!(!h.went(2));
    // The ready timeout is further off than the hand-off's wait.
    assert_eq!(h.next_timer().await, super::handoff::HANDOFF_WAIT);
    assert!(h.went(2));
    assert_eq!(reply(rx).unwrap().pid, 1002);
}

#[tokio::test(start_paused = true)]
async fn an_old_worker_that_exits_lets_the_new_one_go() {
    let mut h = Harness::serving();
    let rx = h.upgrade();
    h.handshake_ready(2);
    h.exited(1, ExitStatus::Code(0));
    assert!(h.went(2));
    assert_eq!(reply(rx).unwrap().previous_pids, [1001]);
}

#[tokio::test(start_paused = true)]
async fn a_new_worker_that_dies_while_held_back_fails_the_upgrade_and_is_replaced() {
    let mut h = Harness::serving();
    let rx = h.upgrade();
    h.handshake_ready(2);
    h.exited(2, ExitStatus::Code(101));
    let err = reply(rx).unwrap_err();
    assert!(
        err.contains("exited with status 101 while the old one stopped accepting"),
        "{err}"
    );
    // The old one was told to stop already: a replacement starts after the backoff.
    h.calls();
    assert_eq!(h.next_timer().await, BACKOFF);
    assert_eq!(h.calls(), [Call::Launch(3)]);
}
