//! The wake-ups of the blocking listener, without processes: a thread blocked in `accept` or
//! `wait_request` while the test moves the phase, and no connection arriving to wake it.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::drain::ServingState;
use crate::listener::{bind, ListenerInner};
use crate::ListenAddr;

/// Time for a woken thread to run, on a loaded machine. Prompt wake-ups take milliseconds.
const PROMPT: Duration = Duration::from_secs(2);

struct Fixture {
    rt: tokio::runtime::Runtime,
    shared: Arc<ServingState>,
    listener: BlockingListener,
    addr: std::net::SocketAddr,
}

fn fixture(idle_grace: Duration) -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shared = ServingState::new(
        Duration::from_secs(30),
        idle_grace,
        Duration::from_secs(10),
        Duration::ZERO,
    );
    let (socket, _) = bind(&"127.0.0.1:0".parse::<ListenAddr>().unwrap(), 16).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let inner = {
        // The async listener registers with the runtime's reactor.
        let _enter = rt.enter();
        ListenerInner::from_socket(socket, ListenAddr::Tcp(addr), "test".into(), None).unwrap()
    };
    let listener = Listener {
        inner: Arc::new(inner),
        shared: Arc::clone(&shared),
    }
    .into_blocking()
    .unwrap();
    shared.start_serving();
    Fixture {
        rt,
        shared,
        listener,
        addr,
    }
}

type Accepted = Option<io::Result<(BlockingConnection, Peer)>>;

/// Runs `accept` on a thread of its own; returns once that thread holds the accept gate
/// (it is then in, or about to enter, its wait on the socket).
fn accept_in_thread(f: &Fixture) -> mpsc::Receiver<(Accepted, Instant)> {
    let (tx, rx) = mpsc::channel();
    let listener = f.listener.clone();
    thread::spawn(move || {
        let r = listener.accept();
        let _ = tx.send((r, Instant::now()));
    });
    let start = Instant::now();
    while f.shared.accept_gate.try_write().is_ok() {
        assert!(
            start.elapsed() < PROMPT,
            "the accept thread never took the gate"
        );
        thread::yield_now();
    }
    rx
}

/// Runs a phase change the way the control loop does, bounded: a blocking accept that is not
/// woken holds the accept gate, and the change never returns.
fn within<T>(f: &Fixture, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    f.rt.block_on(async { tokio::time::timeout(PROMPT, fut).await })
        .unwrap_or_else(|_| {
            panic!("{what} did not return within {PROMPT:?}: the blocked accept was not woken")
        })
}

#[test]
fn accept_returns_none_at_once_when_a_stop_begins() {
    let f = fixture(Duration::from_secs(1));
    let accepted = accept_in_thread(&f);
    let began = Instant::now();
    within(
        &f,
        "stop_accepting",
        f.shared.stop_accepting(DrainReason::Stopped),
    );
    let (r, at) = accepted
        .recv_timeout(PROMPT)
        .expect("accept did not return after the stop began");
    assert!(r.is_none(), "accept returned a connection: {r:?}");
    eprintln!("accept returned None {:?} after the stop began", at - began);
    // Later calls see the stop at once.
    assert!(f.listener.accept().is_none());
}

#[test]
fn a_pause_and_a_handover_wake_accept_which_takes_nothing_until_resumed() {
    let f = fixture(Duration::from_secs(1));
    let accepted = accept_in_thread(&f);
    let pauser = Arc::clone(&f.shared);
    let paused = async {
        let pause = tokio::task::spawn_blocking(move || pauser.pause_accepting_blocking());
        pause.await.expect("the pause did not panic")
    };
    assert!(within(&f, "pause_accepting_blocking", paused));
    let client = std::net::TcpStream::connect(f.addr).unwrap();
    // The connection waits in the backlog: nothing accepts it while paused.
    assert!(
        accepted.recv_timeout(Duration::from_millis(300)).is_err(),
        "accepted while paused"
    );
    within(
        &f,
        "stop_accepting after the handover",
        f.shared
            .stop_accepting(DrainReason::Upgraded { new_pid: 4242 }),
    );
    assert!(
        accepted.recv_timeout(Duration::from_millis(300)).is_err(),
        "accept returned while draining after a handover (it must wait in case of a resume)"
    );
    assert!(f.shared.resume_after_handover());
    let (r, _) = accepted
        .recv_timeout(PROMPT)
        .expect("accept did not take the waiting connection after the resume");
    let (conn, peer) = r.expect("Some").expect("accepted");
    assert_eq!(peer, Peer::Tcp(client.local_addr().unwrap()));
    assert_eq!(f.shared.conns.live(), 1, "the connection is counted");
    assert!(!conn.is_draining());
    drop(conn);
    assert_eq!(f.shared.conns.live(), 0, "dropping it ends the count");
}

#[test]
fn an_idle_connection_is_told_to_close_one_grace_into_the_drain() {
    let grace = Duration::from_millis(300);
    let f = fixture(grace);
    let mut busy = std::net::TcpStream::connect(f.addr).unwrap();
    let _idle = std::net::TcpStream::connect(f.addr).unwrap();
    let (busy_conn, _) = f.listener.accept().unwrap().unwrap();
    let (idle_conn, _) = f.listener.accept().unwrap().unwrap();

    busy.write_all(b"x").unwrap();
    assert_eq!(busy_conn.wait_request().unwrap(), Next::Readable);

    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let r = idle_conn.wait_request();
        let _ = tx.send((r.map_err(|e| e.to_string()), Instant::now()));
        idle_conn
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "wait_request returned while serving and idle"
    );
    let began = Instant::now();
    within(
        &f,
        "stop_accepting",
        f.shared.stop_accepting(DrainReason::Stopped),
    );
    let (r, at) = rx
        .recv_timeout(grace + PROMPT)
        .expect("wait_request did not return after the drain began");
    assert_eq!(r, Ok(Next::Close));
    let waited = at - began;
    eprintln!("idle connection told to close {waited:?} into the drain (grace {grace:?})");
    assert!(
        waited >= grace && waited < grace + PROMPT,
        "told after {waited:?}, grace {grace:?}"
    );
    let idle_conn = waiter.join().unwrap();
    assert!(idle_conn.is_draining());
    assert_eq!(f.shared.conns.live(), 2);
}
