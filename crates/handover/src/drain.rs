//! The state every listener and connection of this process shares: serving phase, the accept
//! gate and the count of live connections, which is what a drain waits for.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, RwLock};
use tokio::time::Instant;

use crate::listener::ListenerInner;
use crate::os::Bell;

/// Where this process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Listeners exist but nothing is accepted yet (`ready()` has not completed).
    Starting,
    /// Accepting connections.
    Serving,
    /// Handing over: not accepting while the successor is told to go ahead. Becomes
    /// `Draining` once it has been told, or `Serving` again if it died first. A stop passes
    /// through it too, on its way to `Draining`: accepting stops before the drain begins.
    Paused,
    /// No longer accepting; live connections finish until `deadline`. After a handover this
    /// can still turn back into `Serving`, if the successor crashes (see
    /// [`ServingState::resume_after_handover`]); after a stop it cannot.
    Draining {
        deadline: Instant,
        reason: DrainReason,
    },
}

/// Why a process drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    /// A new generation took over the listeners (its PID is given).
    Upgraded {
        /// PID of the generation now serving.
        new_pid: u32,
    },
    /// A graceful stop was requested (`SIGTERM`, `SIGINT` or [`crate::Running::stop`]).
    Stopped,
}

pub(crate) struct ServingState {
    pub phase: watch::Sender<Phase>,
    /// Mirrors `phase` being `Draining`, for the per-request path.
    draining: AtomicBool,
    /// Set when [`crate::Running::wait`] has claimed the end of the drain: the process is on
    /// its way out and can no longer take over again.
    finished: AtomicBool,
    /// Set at the first stop request: health checks fail from then on, through the lame duck
    /// (if any) and the drain. An upgrade never sets it.
    stop_requested: AtomicBool,
    /// How long a stop keeps serving with failing health checks before the drain
    /// ([`crate::Builder::lame_duck`]; zero: the drain starts at once).
    pub lame_duck: Duration,
    /// [`crate::Listener::accept`] holds a read guard only while one `poll_accept` runs (a
    /// few microseconds, never across an await) and checks the phase under it; leaving
    /// `Serving` changes the phase first, then takes the write guard: once it has, no accept
    /// is in progress and none will start. No accepting task has to be scheduled for that,
    /// which a loaded runtime would make the handover wait for (see
    /// [`ServingState::accepts_stopped`]).
    pub accept_poll: std::sync::RwLock<()>,
    /// The same for an accept that waits while holding it: a blocking accept (in `poll(2)`,
    /// until its bell rings). Datagram reads take `accept_poll`, as async accepts do.
    pub accept_gate: RwLock<()>,
    /// Whether the first connection of this process was accepted (for the debug log that
    /// times a handover).
    first_accept: AtomicBool,
    pub conns: ConnTracker,
    pub drain_timeout: Duration,
    pub idle_grace: Duration,
    /// How long a TLS handshake may take ([`crate::Builder::tls_handshake_timeout`]).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub tls_handshake_timeout: Duration,
    pub listeners: Mutex<Vec<Arc<ListenerInner>>>,
    /// Other sockets handed to the next generation after the listeners (name, fd).
    pub extra_fds: Mutex<Vec<(std::os::fd::OwnedFd, String)>>,
    /// Told of each step of an upgrade attempt (see [`UpgradeHook`]).
    hooks: Mutex<Vec<Arc<dyn UpgradeHook>>>,
    /// One wake-up per open connection, told when the drain starts (see [`DrainNotice`]).
    notices: Mutex<NoticeBoard>,
    /// The phase as threads outside the runtime see it (the blocking listener): bells they
    /// can poll next to a socket, created by the first blocking listener, and a condition
    /// variable told of every phase change. See [`ServingState::phase_changed`].
    blocking: Mutex<Option<Arc<PhaseBells>>>,
    phase_cv: Condvar,
}

/// Two eventfds that mirror the phase, for threads blocked in `poll(2)`.
#[derive(Debug)]
pub(crate) struct PhaseBells {
    /// Rung while the phase is not `Serving`: a blocking accept stops waiting on the socket.
    pub not_serving: Bell,
    /// Rung while draining: an idle connection starts its idle grace.
    pub draining: Bell,
}

#[derive(Default)]
struct NoticeBoard {
    next: u64,
    open: std::collections::HashMap<u64, Arc<Notify>>,
}

impl std::fmt::Debug for ServingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingState")
            .field("phase", &*self.phase.borrow())
            .field("live_connections", &self.conns.live())
            .finish_non_exhaustive()
    }
}

impl ServingState {
    pub(crate) fn new(
        drain_timeout: Duration,
        idle_grace: Duration,
        tls_handshake_timeout: Duration,
        lame_duck: Duration,
    ) -> Arc<Self> {
        Arc::new(ServingState {
            phase: watch::channel(Phase::Starting).0,
            draining: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            stop_requested: AtomicBool::new(false),
            lame_duck,
            accept_poll: std::sync::RwLock::new(()),
            accept_gate: RwLock::new(()),
            first_accept: AtomicBool::new(false),
            conns: ConnTracker::default(),
            drain_timeout,
            idle_grace,
            tls_handshake_timeout,
            listeners: Mutex::new(Vec::new()),
            extra_fds: Mutex::new(Vec::new()),
            hooks: Mutex::new(Vec::new()),
            notices: Mutex::new(NoticeBoard::default()),
            blocking: Mutex::new(None),
            phase_cv: Condvar::new(),
        })
    }

    /// Registers `hook` for every upgrade attempt from now on.
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn add_upgrade_hook(&self, hook: Arc<dyn UpgradeHook>) {
        self.hooks.lock().expect("not poisoned").push(hook);
    }

    /// The hooks registered so far, for one attempt (see [`UpgradeHooks`]).
    pub(crate) fn upgrade_hooks(&self) -> UpgradeHooks {
        UpgradeHooks {
            hooks: self.hooks.lock().expect("not poisoned").clone(),
            step: HookStep::Idle,
        }
    }

    /// Ready to accept: called once `ready()` has completed the handshake.
    pub(crate) fn start_serving(&self) {
        self.phase.send_replace(Phase::Serving);
        self.phase_changed();
    }

    /// Brings the bells and the waiters of [`ServingState::wait_phase_blocking`] up to date
    /// with `phase`. Every change of phase calls this right after it, before it waits for
    /// anything (the accept gate, notably, which a blocking accept releases only once its
    /// bell rang). Each call reads the phase anew under the lock, so whatever order racing
    /// calls take, the last one leaves the bells as the phase is.
    fn phase_changed(&self) {
        let bells = self.blocking.lock().expect("not poisoned");
        if let Some(b) = bells.as_ref() {
            let phase = *self.phase.borrow();
            ring_if(&b.not_serving, !matches!(phase, Phase::Serving));
            ring_if(&b.draining, matches!(phase, Phase::Draining { .. }));
        }
        self.phase_cv.notify_all();
    }

    /// The bells of the blocking API, created at the first call.
    pub(crate) fn phase_bells(&self) -> std::io::Result<Arc<PhaseBells>> {
        let made = {
            let mut slot = self.blocking.lock().expect("not poisoned");
            match slot.as_ref() {
                Some(b) => return Ok(Arc::clone(b)),
                None => {
                    let b = Arc::new(PhaseBells {
                        not_serving: Bell::new()?,
                        draining: Bell::new()?,
                    });
                    *slot = Some(Arc::clone(&b));
                    b
                }
            }
        };
        // New bells start silent: set them as the phase is now.
        self.phase_changed();
        Ok(made)
    }

    /// Blocks the calling thread until `want` holds for the phase, and returns it.
    pub(crate) fn wait_phase_blocking(&self, want: impl Fn(&Phase) -> bool) -> Phase {
        let mut guard = self.blocking.lock().expect("not poisoned");
        loop {
            let phase = *self.phase.borrow();
            if want(&phase) {
                return phase;
            }
            guard = self.phase_cv.wait(guard).expect("not poisoned");
        }
    }

    /// Stops accepting and starts the drain. Returns once no accept is in progress. A second
    /// call keeps the first deadline and reason.
    pub(crate) async fn stop_accepting(&self, reason: DrainReason) {
        let deadline = Instant::now() + self.drain_timeout;
        self.draining.store(true, Ordering::SeqCst);
        self.phase.send_if_modified(|p| match p {
            Phase::Draining { .. } => false,
            _ => {
                *p = Phase::Draining { deadline, reason };
                true
            }
        });
        for n in self.notices.lock().expect("not poisoned").open.values() {
            n.notify_one();
        }
        self.phase_changed();
        self.accepts_stopped().await;
    }

    /// Stops accepting without starting a drain (see [`Phase::Paused`]). Returns once no
    /// accept is in progress; blocking (briefly: an accept holds its gate for one poll), for
    /// the upgrade's handshake thread, which must not wait for a task of the runtime to be
    /// scheduled. `false` if the process is not serving (e.g. already stopping).
    pub(crate) fn pause_accepting_blocking(&self) -> bool {
        let paused = self.enter_pause();
        drop(
            self.accept_poll
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        drop(self.accept_gate.blocking_write());
        paused
    }

    /// [`ServingState::pause_accepting_blocking`] for async code: a graceful stop pauses
    /// accepting this way, says `STOPPING=1`, and only then starts the drain.
    pub(crate) async fn pause_accepting(&self) -> bool {
        let paused = self.enter_pause();
        self.accepts_stopped().await;
        paused
    }

    /// `Serving` becomes `Paused` (`false`, and nothing changes, in any other phase).
    fn enter_pause(&self) -> bool {
        let paused = self.phase.send_if_modified(|p| match p {
            Phase::Serving => {
                *p = Phase::Paused;
                true
            }
            _ => false,
        });
        self.phase_changed();
        paused
    }

    /// Returns once no accept (nor datagram read) is in progress. Call after the phase left
    /// `Serving`: every accept that starts later sees that and does not accept. The async
    /// accepts and datagram reads hold their gate only inside one poll, so the wait for it is
    /// a brief synchronous one; the async gate is free at once unless a blocking accept
    /// holds it (it lets go once its bell, rung by the phase change, wakes it).
    pub(crate) async fn accepts_stopped(&self) {
        drop(
            self.accept_poll
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        drop(self.accept_gate.write().await);
    }

    /// Notes an accepted connection; the first one is logged (at debug level, with the
    /// handshake's steps, to time a handover).
    pub(crate) fn note_accepted(&self) {
        if !self.first_accept.load(Ordering::Relaxed)
            && !self.first_accept.swap(true, Ordering::Relaxed)
        {
            tracing::debug!("first connection accepted");
        }
    }

    /// Accepts again after [`ServingState::pause_accepting`], when the successor died before it was
    /// told to go ahead.
    pub(crate) fn resume_accepting(&self) {
        self.phase.send_if_modified(|p| match p {
            Phase::Paused => {
                *p = Phase::Serving;
                true
            }
            _ => false,
        });
        self.phase_changed();
    }

    /// Accepts again after a handover whose successor crashed: `Draining` after an upgrade
    /// becomes `Serving`. `false` (and nothing changes) if this process is not draining after
    /// a handover, or its drain is already over ([`ServingState::claim_end`]).
    pub(crate) fn resume_after_handover(&self) -> bool {
        let resumed = self.phase.send_if_modified(|p| match p {
            Phase::Draining {
                reason: DrainReason::Upgraded { .. },
                ..
            } if !self.finished.load(Ordering::SeqCst) => {
                *p = Phase::Serving;
                self.draining.store(false, Ordering::SeqCst);
                true
            }
            _ => false,
        });
        self.phase_changed();
        resumed
    }

    /// Marks the drain as over, so that no resume can happen any more; `false` if the process
    /// is not draining (it resumed first). Atomic with [`ServingState::resume_after_handover`]: both
    /// run under the phase channel's lock.
    pub(crate) fn claim_end(&self) -> bool {
        let mut claimed = false;
        self.phase.send_if_modified(|p| {
            if matches!(p, Phase::Draining { .. }) {
                self.finished.store(true, Ordering::SeqCst);
                claimed = true;
            }
            false
        });
        claimed
    }

    /// Resolves when this process serves (again): at once while it does.
    pub(crate) async fn serving(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| matches!(p, Phase::Serving)).await;
    }

    /// A wake-up for one connection when the drain starts. Waiting on the shared `phase`
    /// channel from every connection would take one shared lock per poll of every
    /// connection task; this takes one lock when the connection opens and one when it closes.
    pub(crate) fn drain_notice(self: &Arc<Self>) -> DrainNotice {
        let notify = Arc::new(Notify::new());
        let id = {
            let mut board = self.notices.lock().expect("not poisoned");
            let id = board.next;
            board.next += 1;
            board.open.insert(id, Arc::clone(&notify));
            id
        };
        DrainNotice {
            shared: Arc::clone(self),
            id,
            notify,
        }
    }

    /// The drain deadline, once draining.
    pub(crate) fn drain_deadline(&self) -> Option<Instant> {
        match *self.phase.borrow() {
            Phase::Draining { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Counts a connection until the returned guard is dropped.
    pub(crate) fn track(self: &Arc<Self>) -> ConnGuard {
        self.conns.live.fetch_add(1, Ordering::SeqCst);
        ConnGuard {
            shared: Arc::clone(self),
        }
    }

    /// Resolves when the drain starts, with its deadline and reason.
    pub(crate) async fn draining(&self) -> (Instant, DrainReason) {
        let mut rx = self.phase.subscribe();
        let p = *rx
            .wait_for(|p| matches!(p, Phase::Draining { .. }))
            .await
            .expect("sender lives in ServingState");
        match p {
            Phase::Draining { deadline, reason } => (deadline, reason),
            _ => unreachable!("waited for Draining"),
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Marks the start of a graceful stop: health checks fail from now on.
    pub(crate) fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
    }

    /// Whether a graceful stop was requested (in lame duck, or draining for a stop).
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    /// What a health check should say: healthy from `ready()` on, through upgrades (pausing,
    /// and draining after a handover: the socket stays and the successor serves), until a
    /// stop is requested.
    pub(crate) fn is_healthy(&self) -> bool {
        if self.stop_requested() {
            return false;
        }
        match *self.phase.borrow() {
            Phase::Serving | Phase::Paused => true,
            Phase::Draining { reason, .. } => matches!(reason, DrainReason::Upgraded { .. }),
            Phase::Starting => false,
        }
    }
}

/// Something that takes part in each upgrade attempt besides the listeners: the QUIC
/// routing socket (`quic/socket.rs`), which needs a channel to the new generation and must stop
/// reading the shared UDP socket exactly when accepting stops.
///
/// The attempt calls, in order: [`UpgradeHook::prepare`] before the fork; then either
/// [`UpgradeHook::abandoned`] (the attempt failed before accepting paused) or
/// [`UpgradeHook::paused`] (accepting has paused, the go-ahead is about to be sent). After
/// `paused`, [`UpgradeHook::resumed`] means this process serves again: the go-ahead could not
/// be sent, or the successor crashed later and this process took the listeners back.
pub(crate) trait UpgradeHook: Send + Sync {
    /// The fds (with their `LISTEN_FDNAMES` names) to pass to the new generation `generation`,
    /// after the listeners and the other extra fds. An error fails the attempt before the fork.
    fn prepare(&self, generation: u64) -> std::io::Result<Vec<(std::os::fd::OwnedFd, String)>>;
    /// Accepting has paused and no accept is in progress; the go-ahead follows.
    fn paused(&self);
    /// This process serves again after `paused`.
    fn resumed(&self);
    /// The attempt ended before `paused`: forget what `prepare` made.
    fn abandoned(&self);
}

/// Where an attempt is with its hooks, so that a failure (or a cancelled attempt) tells them
/// the right thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookStep {
    Idle,
    Prepared,
    Paused,
    Done,
}

/// The hooks of one upgrade attempt. Dropped unfinished, it tells them the attempt ended:
/// `abandoned` after `prepare`, `resumed` after `paused`.
pub(crate) struct UpgradeHooks {
    hooks: Vec<Arc<dyn UpgradeHook>>,
    step: HookStep,
}

impl UpgradeHooks {
    /// [`UpgradeHook::prepare`] on every hook: all their fds, in order. On an error the hooks
    /// prepared so far are abandoned (when this is dropped).
    pub(crate) fn prepare(
        &mut self,
        generation: u64,
    ) -> std::io::Result<Vec<(std::os::fd::OwnedFd, String)>> {
        self.step = HookStep::Prepared;
        let mut fds = Vec::new();
        for h in &self.hooks {
            fds.extend(h.prepare(generation)?);
        }
        Ok(fds)
    }

    /// [`UpgradeHook::paused`] on every hook.
    pub(crate) fn paused(&mut self) {
        self.step = HookStep::Paused;
        self.hooks.iter().for_each(|h| h.paused());
    }

    /// [`UpgradeHook::resumed`] on every hook (the go-ahead failed).
    pub(crate) fn resumed(&mut self) {
        self.step = HookStep::Done;
        self.hooks.iter().for_each(|h| h.resumed());
    }

    /// The go-ahead was sent: the hooks stay as `paused` left them.
    pub(crate) fn handed_over(&mut self) {
        self.step = HookStep::Done;
    }
}

impl Drop for UpgradeHooks {
    fn drop(&mut self) {
        match self.step {
            HookStep::Prepared => self.hooks.iter().for_each(|h| h.abandoned()),
            HookStep::Paused => self.hooks.iter().for_each(|h| h.resumed()),
            HookStep::Idle | HookStep::Done => {}
        }
    }
}

impl ServingState {
    /// [`UpgradeHook::resumed`] on every hook: this process took the listeners back from a
    /// successor that crashed.
    pub(crate) fn resume_hooks(&self) {
        let hooks = self.hooks.lock().expect("not poisoned").clone();
        hooks.iter().for_each(|h| h.resumed());
    }
}

/// What a health check of this process says, for load balancers and orchestrators: healthy
/// once [`crate::Handover::ready`] has completed and through every upgrade, unhealthy from the
/// first stop request on (through the lame duck, [`crate::Builder::lame_duck`], and the
/// drain). Cheap to clone; get one from [`crate::Handover::health`] or
/// [`crate::Running::health`]. [`crate::http::HealthCheck`] answers HTTP probes with it.
#[derive(Clone)]
pub struct Health {
    shared: Arc<ServingState>,
}

impl Health {
    pub(crate) fn new(shared: Arc<ServingState>) -> Self {
        Health { shared }
    }

    /// Whether this process should be sent new work.
    pub fn is_healthy(&self) -> bool {
        self.shared.is_healthy()
    }

    /// Whether a graceful stop was requested: in lame duck, or draining for a stop.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop_requested()
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

fn ring_if(bell: &Bell, on: bool) {
    if on {
        bell.ring()
    } else {
        bell.silence()
    }
}

/// Counts live connections; a drain waits for the count to reach zero.
#[derive(Default)]
pub(crate) struct ConnTracker {
    live: AtomicUsize,
    became_zero: Notify,
}

impl ConnTracker {
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Resolves once no tracked connection is left.
    pub(crate) async fn all_closed(&self) {
        loop {
            let notified = self.became_zero.notified();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps a connection counted until dropped.
pub(crate) struct ConnGuard {
    shared: Arc<ServingState>,
}

impl ConnGuard {
    pub(crate) fn shared(&self) -> &Arc<ServingState> {
        &self.shared
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.shared.conns.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.conns.became_zero.notify_waiters();
        }
    }
}

impl std::fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnGuard")
    }
}

/// Tells when this process starts draining. Cheap to clone; get one from
/// [`crate::Connection::drain_signal`] or [`crate::Running::drain_signal`].
#[derive(Clone)]
pub struct DrainSignal {
    shared: Arc<ServingState>,
}

impl DrainSignal {
    pub(crate) fn new(shared: Arc<ServingState>) -> Self {
        DrainSignal { shared }
    }

    /// Resolves when the drain starts (at once if it has), with the reason.
    pub async fn draining(&self) -> DrainReason {
        self.shared.draining().await.1
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }
}

impl std::fmt::Debug for DrainSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainSignal")
            .field("draining", &self.is_draining())
            .finish()
    }
}

/// See [`ServingState::drain_notice`].
pub(crate) struct DrainNotice {
    shared: Arc<ServingState>,
    id: u64,
    notify: Arc<Notify>,
}

impl DrainNotice {
    /// Resolves when the drain starts (at once if it has), with the deadline.
    pub(crate) async fn wait(&self) -> Instant {
        loop {
            // Registered before this check, so a drain starting now cannot be missed.
            if let Some(deadline) = self.shared.drain_deadline() {
                return deadline;
            }
            self.notify.notified().await;
        }
    }
}

impl Drop for DrainNotice {
    fn drop(&mut self) {
        self.shared
            .notices
            .lock()
            .expect("not poisoned")
            .open
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls it gets.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl UpgradeHook for Recorder {
        fn prepare(&self, g: u64) -> std::io::Result<Vec<(std::os::fd::OwnedFd, String)>> {
            self.0.lock().unwrap().push(format!("prepare {g}"));
            Ok(Vec::new())
        }
        fn paused(&self) {
            self.0.lock().unwrap().push("paused".into());
        }
        fn resumed(&self) {
            self.0.lock().unwrap().push("resumed".into());
        }
        fn abandoned(&self) {
            self.0.lock().unwrap().push("abandoned".into());
        }
    }

    fn calls(r: &Recorder) -> Vec<String> {
        std::mem::take(&mut *r.0.lock().unwrap())
    }

    /// However an attempt ends, or is dropped, each hook hears the matching call once.
    #[test]
    fn hooks_hear_how_each_attempt_ends() {
        let shared = ServingState::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        let r = Arc::new(Recorder::default());
        shared.add_upgrade_hook(Arc::clone(&r) as Arc<dyn UpgradeHook>);

        drop(shared.upgrade_hooks());
        assert!(calls(&r).is_empty(), "an attempt that never prepared");

        let mut h = shared.upgrade_hooks();
        h.prepare(2).unwrap();
        drop(h); // failed (or cancelled) before the pause
        assert_eq!(calls(&r), ["prepare 2", "abandoned"]);

        let mut h = shared.upgrade_hooks();
        h.prepare(3).unwrap();
        h.paused();
        drop(h); // cancelled after the pause
        assert_eq!(calls(&r), ["prepare 3", "paused", "resumed"]);

        let mut h = shared.upgrade_hooks();
        h.prepare(4).unwrap();
        h.paused();
        h.resumed(); // the go-ahead failed
        drop(h);
        assert_eq!(calls(&r), ["prepare 4", "paused", "resumed"]);

        let mut h = shared.upgrade_hooks();
        h.prepare(5).unwrap();
        h.paused();
        h.handed_over();
        drop(h);
        assert_eq!(calls(&r), ["prepare 5", "paused"]);
        shared.resume_hooks(); // its successor crashed later
        assert_eq!(calls(&r), ["resumed"]);
    }
}
