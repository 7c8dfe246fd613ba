//! The control loop's transitions, without signals or processes: triggers come through
//! [`Running`], upgrade attempts are futures the test completes, and tokio's paused clock
//! lets every task run until it waits ([`settle`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::*;
use crate::attempt::UpgradeConfig;
use crate::lineage::{GoAheadFrom, REPLACED};

type Outcome = Result<HandedOver, UpgradeError>;
/// Each attempt started: the generation it was for, and how the test ends it.
type Started = Arc<Mutex<Vec<(u64, oneshot::Sender<Outcome>)>>>;

/// The attempts the loop started (to which generation, and how to end each), and how many
/// it dropped unfinished.
#[derive(Clone, Default)]
struct Attempts {
    started: Started,
    cancelled: Arc<AtomicUsize>,
}

/// Counts a cancellation when an attempt's future is dropped before it ended.
struct CountDrop(Option<Arc<AtomicUsize>>);

impl CountDrop {
    /// The attempt ended: its drop is no cancellation.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CountDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Attempts {
    fn starter(&self) -> StartAttempt {
        let me = self.clone();
        Box::new(move |_start, generation| {
            let (tx, rx) = oneshot::channel();
            me.started.lock().unwrap().push((generation, tx));
            let mut guard = CountDrop(Some(Arc::clone(&me.cancelled)));
            Box::pin(async move {
                let outcome = rx.await.expect("the test ends every attempt it starts");
                guard.disarm();
                outcome
            })
        })
    }

    fn count(&self) -> usize {
        self.started.lock().unwrap().len()
    }

    /// Ends the latest attempt with `outcome`; returns the generation it was for.
    fn end(&self, outcome: Outcome) -> u64 {
        let (generation, tx) = self.started.lock().unwrap().pop().expect("an attempt");
        assert!(tx.send(outcome).is_ok(), "the loop still waits for it");
        generation
    }
}

async fn start(attempts: &Attempts) -> Running {
    start_with(attempts, Duration::ZERO).await
}

/// [`start`] with a lame duck of `lame_duck` at a stop.
async fn start_with(attempts: &Attempts, lame_duck: Duration) -> Running {
    start_under(attempts, lame_duck, None).await
}

/// [`start_with`] with a predecessor: the worker's end of the handshake channel (the test
/// holds the other).
async fn start_under(
    attempts: &Attempts,
    lame_duck: Duration,
    predecessor: Option<Predecessor>,
) -> Running {
    let shared = ServingState::new(
        Duration::from_secs(30),
        Duration::from_secs(1),
        Duration::from_secs(10),
        lame_duck,
    );
    shared.phase.send_replace(crate::drain::Phase::Serving);
    let cfg = UpgradeConfig {
        exe: "/bin/app".into(),
        args: vec!["app".into()],
        cwd: "/".into(),
        timeout: Duration::from_secs(60),
        generation: 1,
    };
    let finish = Finish {
        pid_file: None,
        notifier: None,
        control_socket: None,
        generation: 1,
        started: std::time::Instant::now(),
        last_upgrade: Mutex::new(None),
        resumed: Mutex::new(None),
        predecessor: Mutex::new(predecessor),
    };
    let successor_exit = signal(SignalKind::child()).unwrap();
    Running::with_loop(
        shared,
        cfg,
        successor_exit,
        finish,
        attempts.starter(),
        None,
    )
}

/// Lets every task run until all of them wait (paused time advances only then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn upgrade(
    running: &Running,
    by: &'static str,
) -> tokio::task::JoinHandle<Result<Upgraded, UpgradeError>> {
    let running = running.clone();
    tokio::spawn(async move { running.upgrade_by(by).await })
}

#[tokio::test(start_paused = true)]
async fn triggers_during_an_upgrade_join_it_and_share_its_outcome() {
    let attempts = Attempts::default();
    let running = start(&attempts).await;
    let first = upgrade(&running, "SIGUSR2");
    settle().await;
    let second = upgrade(&running, "control socket");
    let third = upgrade(&running, "API call");
    settle().await;
    assert_eq!(attempts.count(), 1, "one new process, however many asked");
    assert_eq!(attempts.end(Err(UpgradeError::Spawn("boom".into()))), 2);
    for joined in [first, second, third] {
        match joined.await.unwrap() {
            Err(UpgradeError::Spawn(m)) => assert_eq!(m, "boom"),
            other => panic!("{other:?}"),
        }
    }
    let last = running
        .finish()
        .last_upgrade
        .lock()
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(
        last.trigger, "SIGUSR2",
        "recorded as the trigger that started it"
    );
    // Rolled back: the process serves on, and a later upgrade is a new attempt.
    assert_eq!(
        *running.shared().phase.borrow(),
        crate::drain::Phase::Serving
    );
    let _later = upgrade(&running, "SIGHUP");
    settle().await;
    assert_eq!(attempts.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_an_upgrade_cancels_it_and_drains() {
    let attempts = Attempts::default();
    let running = start(&attempts).await;
    let up = upgrade(&running, "SIGUSR2");
    settle().await;
    running.stop();
    settle().await;
    assert!(matches!(up.await.unwrap(), Err(UpgradeError::Cancelled)));
    assert_eq!(
        attempts.cancelled.load(Ordering::SeqCst),
        1,
        "the attempt was dropped (which kills the half-started process)"
    );
    assert_eq!(running.draining().await, DrainReason::Stopped);
}

#[tokio::test(start_paused = true)]
async fn after_a_handover_the_process_drains_and_refuses_to_upgrade_again() {
    let attempts = Attempts::default();
    let running = start(&attempts).await;
    let up = upgrade(&running, "SIGUSR2");
    settle().await;
    let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
    let upgraded = Upgraded {
        new_pid: 4242,
        generation: 2,
    };
    attempts.end(Ok(HandedOver {
        upgraded,
        duration: Duration::from_millis(5),
        successor: Successor::new(4242, 2, ours),
    }));
    assert_eq!(up.await.unwrap().unwrap(), upgraded);
    assert_eq!(
        running.draining().await,
        DrainReason::Upgraded { new_pid: 4242 }
    );
    match upgrade(&running, "SIGHUP").await.unwrap() {
        Err(UpgradeError::Draining) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(attempts.count(), 0, "no second new process");
}

#[tokio::test(start_paused = true)]
async fn a_drain_is_capped_by_its_deadline_and_counts_what_it_abandoned() {
    let attempts = Attempts::default();
    let running = start(&attempts).await;
    let _open = running.shared().track();
    let t0 = tokio::time::Instant::now();
    running.stop();
    let exit = running.wait().await;
    assert_eq!(t0.elapsed(), Duration::from_secs(30), "the drain timeout");
    assert_eq!(
        exit,
        Exit {
            reason: DrainReason::Stopped,
            abandoned_connections: 1,
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_ends_as_soon_as_the_last_connection_closes() {
    let attempts = Attempts::default();
    let running = start(&attempts).await;
    let open = running.shared().track();
    let t0 = tokio::time::Instant::now();
    running.stop();
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(open);
    });
    let exit = running.wait().await;
    closer.await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    assert_eq!(exit.abandoned_connections, 0);
    assert_eq!(running.live_connections(), 0);
}

fn phase(running: &Running) -> crate::drain::Phase {
    *running.shared().phase.borrow()
}

#[tokio::test(start_paused = true)]
async fn a_stop_with_a_lame_duck_serves_on_unhealthy_then_drains() {
    let attempts = Attempts::default();
    let running = start_with(&attempts, Duration::from_secs(2)).await;
    let health = running.health();
    assert!(health.is_healthy());
    let t0 = tokio::time::Instant::now();
    running.stop();
    settle().await;
    assert!(
        !health.is_healthy(),
        "health fails as soon as the stop begins"
    );
    assert!(health.is_stopping());
    assert_eq!(
        phase(&running),
        crate::drain::Phase::Serving,
        "still accepting in lame duck"
    );
    assert_eq!(running.draining().await, DrainReason::Stopped);
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(2),
        "the drain begins after the lame duck"
    );
    assert!(!health.is_healthy());
    let exit = running.wait().await;
    assert_eq!(exit.reason, DrainReason::Stopped);
}

#[tokio::test(start_paused = true)]
async fn without_a_lame_duck_a_stop_drains_at_once() {
    let attempts = Attempts::default();
    let running = start(&attempts).await;
    let t0 = tokio::time::Instant::now();
    running.stop();
    assert_eq!(running.draining().await, DrainReason::Stopped);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(!running.health().is_healthy());
}

#[tokio::test(start_paused = true)]
async fn a_process_in_lame_duck_refuses_to_upgrade() {
    let attempts = Attempts::default();
    let running = start_with(&attempts, Duration::from_secs(5)).await;
    running.stop();
    settle().await;
    match upgrade(&running, "SIGUSR2").await.unwrap() {
        Err(UpgradeError::Draining) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        attempts.count(),
        0,
        "no new process is started while stopping"
    );
    assert_eq!(phase(&running), crate::drain::Phase::Serving);
}

#[tokio::test(start_paused = true)]
async fn an_upgrade_keeps_health_good_and_is_not_delayed_by_the_lame_duck() {
    let attempts = Attempts::default();
    let running = start_with(&attempts, Duration::from_secs(5)).await;
    let health = running.health();
    let t0 = tokio::time::Instant::now();
    let up = upgrade(&running, "SIGUSR2");
    settle().await;
    assert!(health.is_healthy(), "healthy while the upgrade runs");
    let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
    let upgraded = Upgraded {
        new_pid: 4242,
        generation: 2,
    };
    attempts.end(Ok(HandedOver {
        upgraded,
        duration: Duration::from_millis(5),
        successor: Successor::new(4242, 2, ours),
    }));
    assert_eq!(up.await.unwrap().unwrap(), upgraded);
    assert_eq!(
        running.draining().await,
        DrainReason::Upgraded { new_pid: 4242 }
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "no lame duck at an upgrade"
    );
    assert!(health.is_healthy(), "an upgrade is not a stop");
    // A stop of the old process while it drains makes it unhealthy, still without a lame duck.
    running.stop();
    settle().await;
    assert!(!health.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_an_upgrade_cancels_it_and_enters_the_lame_duck() {
    let attempts = Attempts::default();
    let running = start_with(&attempts, Duration::from_secs(3)).await;
    let up = upgrade(&running, "SIGUSR2");
    settle().await;
    let t0 = tokio::time::Instant::now();
    running.stop();
    assert!(matches!(up.await.unwrap(), Err(UpgradeError::Cancelled)));
    assert_eq!(attempts.cancelled.load(Ordering::SeqCst), 1);
    assert!(!running.health().is_healthy());
    assert_eq!(running.draining().await, DrainReason::Stopped);
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
}

/// A worker told to go ahead `from` a supervisor or a library generation, and the
/// predecessor's end of its channel.
async fn started_by(
    from: GoAheadFrom,
    lame_duck: Duration,
) -> (Running, std::os::unix::net::UnixStream) {
    let (predecessor, worker) = std::os::unix::net::UnixStream::pair().unwrap();
    // As after the handshake: the worker's end is non-blocking.
    worker.set_nonblocking(true).unwrap();
    predecessor.set_nonblocking(true).unwrap();
    let worker = Predecessor::new(worker, from);
    let running = start_under(&Attempts::default(), lame_duck, Some(worker)).await;
    (running, predecessor)
}

/// A worker started by a supervisor, and the supervisor's end of its channel.
async fn supervised(lame_duck: Duration) -> (Running, std::os::unix::net::UnixStream) {
    started_by(GoAheadFrom::Supervisor { replaced: false }, lame_duck).await
}

/// What the worker has said on the channel so far.
fn said(supervisor: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    use std::io::Read;
    let mut buf = [0u8; 64];
    match supervisor.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

/// Waits (in real time, at most 10 s) until the worker says `notice` on the channel; the
/// bytes it said up to then. The channel's thread acts outside the test's runtime, so this
/// blocks the test itself rather than letting paused time run ahead.
fn heard_soon(supervisor: &std::os::unix::net::UnixStream, notice: u8) -> Vec<u8> {
    use std::io::Read;
    let mut s = supervisor.try_clone().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut heard = Vec::new();
    let mut buf = [0u8; 64];
    while !heard.contains(&notice) {
        match s.read(&mut buf) {
            Ok(0) => panic!("the worker closed the channel; it said {heard:?}"),
            Ok(n) => heard.extend_from_slice(&buf[..n]),
            Err(e) => {
                panic!("the worker did not say {notice:#04x} within 10 s ({e}); it said {heard:?}")
            }
        }
    }
    s.set_nonblocking(true).unwrap();
    heard
}

/// Told it is replaced, a supervised worker stops accepting at once and says so on the channel;
/// the stop signal that follows drains at once, without the lame duck, and health stays good
/// until then (an upgrade is not a stop of the service).
#[tokio::test(start_paused = true)]
async fn told_it_is_replaced_it_stops_accepting_says_so_and_skips_the_lame_duck() {
    use std::io::Write;
    let (running, mut supervisor) = supervised(Duration::from_secs(5)).await;
    assert_eq!(phase(&running), crate::drain::Phase::Serving);
    supervisor.write_all(&[REPLACED]).unwrap();
    assert_eq!(
        heard_soon(&supervisor, STOPPED_ACCEPTING),
        [STOPPED_ACCEPTING]
    );
    // Said only once accepting had stopped.
    assert_eq!(phase(&running), crate::drain::Phase::Paused);
    settle().await;
    assert!(running.health().is_healthy(), "not a stop yet");
    let t0 = tokio::time::Instant::now();
    running.stop();
    assert_eq!(running.draining().await, DrainReason::Stopped);
    assert_eq!(t0.elapsed(), Duration::ZERO, "the lame duck was skipped");
}

/// A stop signal that came first began the lame duck (serving on, still accepting); being told
/// it is replaced then ends it: accepting stops, is said, and the drain begins at once.
#[tokio::test(start_paused = true)]
async fn told_it_is_replaced_during_the_lame_duck_it_drains_at_once() {
    use std::io::Write;
    let (running, mut supervisor) = supervised(Duration::from_secs(5)).await;
    running.stop();
    settle().await;
    assert_eq!(
        phase(&running),
        crate::drain::Phase::Serving,
        "in lame duck"
    );
    assert!(
        !said(&mut supervisor).contains(&STOPPED_ACCEPTING),
        "said it stopped accepting while it accepts"
    );
    let t0 = tokio::time::Instant::now();
    supervisor.write_all(&[REPLACED]).unwrap();
    // Heard before the runtime runs again, so paused time cannot reach the lame duck's end
    // first: the control loop has its trigger by then.
    heard_soon(&supervisor, STOPPED_ACCEPTING);
    assert_eq!(running.draining().await, DrainReason::Stopped);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

/// REPLACED read in the same read as the supervisor's go-ahead (the worker was replaced
/// before it had read the go-ahead) is acted on as if it had come after: the worker stops
/// accepting and says so.
#[tokio::test(start_paused = true)]
async fn replaced_read_with_the_go_ahead_is_not_lost() {
    let from = crate::lineage::AfterGoAhead::read(&[REPLACED]).from;
    let (running, predecessor) = started_by(from, Duration::from_secs(5)).await;
    assert_eq!(
        heard_soon(&predecessor, STOPPED_ACCEPTING),
        [STOPPED_ACCEPTING]
    );
    assert_eq!(phase(&running), crate::drain::Phase::Paused);
}

/// Bytes other than REPLACED on a supervisor's channel are not answered; REPLACED after them
/// still works, and is answered with STOPPED_ACCEPTING alone.
#[tokio::test(start_paused = true)]
async fn other_bytes_from_the_supervisor_are_ignored() {
    use std::io::Write;
    let (running, mut supervisor) = supervised(Duration::ZERO).await;
    supervisor.write_all(b"A\nxyz\x00\xffSHC").unwrap();
    supervisor.write_all(&[REPLACED]).unwrap();
    assert_eq!(
        heard_soon(&supervisor, STOPPED_ACCEPTING),
        [STOPPED_ACCEPTING],
        "answered the garbage"
    );
    assert_eq!(phase(&running), crate::drain::Phase::Paused);
}

/// A library predecessor says nothing after its go-ahead and record, so nothing it might send
/// is read as REPLACED: a process it started goes on accepting.
#[tokio::test(start_paused = true)]
async fn replaced_means_nothing_from_a_library_predecessor() {
    use std::io::Write;
    let (running, mut predecessor) = started_by(GoAheadFrom::Library, Duration::ZERO).await;
    // Nothing reads the channel: no thread was started for it (the loop below, in paused
    // time, could not wait for one).
    assert!(running
        .finish
        .predecessor
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|p| p.supervisor_reader().is_none()));
    predecessor.write_all(&[REPLACED]).unwrap();
    for _ in 0..20 {
        settle().await;
        tokio::task::yield_now().await;
    }
    assert_eq!(phase(&running), crate::drain::Phase::Serving);
    assert!(!said(&mut predecessor).contains(&STOPPED_ACCEPTING));
}
