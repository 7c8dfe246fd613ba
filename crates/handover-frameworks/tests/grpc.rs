//! examples/grpc.rs end to end, with a tonic client: unary calls back to back, server streams
//! and bidirectional streams running while the server is upgraded ten times. Not one RPC may
//! fail. The client retries only what RFC 9113 §8.7 says the server did not process (a stream
//! refused with REFUSED_STREAM, or above the last-stream-id of a GOAWAY), and what never left
//! the client (hyper's queue, when a connection closed), and counts those retries apart;
//! anything else is a failure. A stream that would outlive the drain deadline
//! is ended by its handler with UNAVAILABLE before the deadline, never by a reset.

#[allow(clippy::all)]
#[path = "../examples/proto/handover.demo.v1.rs"]
mod pb;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use handover_testkit::hello_kit::*;
use pb::demo_client::DemoClient;
use pb::{EchoMessage, HelloRequest, TicksRequest};
use tonic::transport::Channel;
use tonic::{Code, Status};

const UPGRADES: usize = 10;
/// Every load loop ends by then, whatever happens.
const MAX_LOAD: Duration = Duration::from_secs(120);

/// Installs the example as `<dir>/grpc` and starts it on a free port with `drain_timeout`.
fn start(ctx: &Ctx, drain_timeout: &str) -> Server {
    let exe = ctx.path("grpc");
    std::fs::copy(handover_testkit::binaries::example("grpc"), &exe)
        .expect("copy the grpc example");
    let mut cmd = ctx.command(&exe);
    cmd.args(["127.0.0.1:0", drain_timeout]);
    let sp = ctx.spawn("grpc", cmd);
    let pid = sp.pid;
    let found = sp
        .log
        .wait_for_or(0, LONG, |l| parse_serving(l).is_some(), || !is_alive(pid));
    let Some((_, line)) = found else {
        panic!("grpc did not log `serving ADDR`; log:\n{}", sp.log.text());
    };
    Server {
        pid,
        log: sp.log,
        addrs: vec![parse_serving(&line).unwrap()],
    }
}

/// A client on a connection of its own (tonic reconnects after a GOAWAY).
fn client(server: &Server) -> DemoClient<Channel> {
    let Addr::Tcp(addr) = server.addr() else {
        panic!("tcp expected")
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    DemoClient::new(channel)
}

/// Why the server cannot have processed a failed call, per RFC 9113 §8.7, or `None`.
fn unprocessed(status: &Status) -> Option<&'static str> {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some("REFUSED_STREAM");
            }
            // h2 fails a stream with the peer's GOAWAY only when its id is above the
            // GOAWAY's last-stream-id (or it was never sent at all).
            if h2.is_go_away() && h2.is_remote() {
                return Some("above GOAWAY's last-stream-id");
            }
        }
        // Not a stream at all: hyper hands a request back this way when the connection
        // closed (after a GOAWAY, its streams done) while the request still waited in the
        // client's queue, before any frame of it was written.
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            let cause = std::error::Error::source(hyper).map(|c| c.to_string());
            if hyper.is_canceled() && cause.as_deref() == Some("connection closed") {
                return Some("never sent: queued when the connection closed");
            }
        }
        source = e.source();
    }
    None
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    /// Calls retried because the server had not processed them, by reason.
    retried: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
    by_pid: BTreeMap<u32, usize>,
    /// Streams that were still running on a generation after it had handed over.
    streams_across_a_handover: usize,
}

struct Shared {
    stop: AtomicBool,
    tally: Mutex<Tally>,
    /// Generations that have handed over, with when.
    handed_over: Mutex<BTreeMap<u32, Instant>>,
    /// The PID of every answer so far, for waiting.
    answers: AtomicUsize,
}

impl Shared {
    fn record(&self, r: Result<u32, String>) {
        let mut t = self.tally.lock().unwrap();
        match r {
            Ok(pid) => {
                t.ok += 1;
                *t.by_pid.entry(pid).or_default() += 1;
                self.answers.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => t.failures.push(e),
        }
    }
    fn retry(&self, why: &'static str) {
        *self.tally.lock().unwrap().retried.entry(why).or_default() += 1;
    }
    fn running(&self, started: Instant) -> bool {
        !self.stop.load(Ordering::SeqCst) && started.elapsed() < MAX_LOAD
    }
}

/// Calls `hello` back to back.
async fn unary_client(mut c: DemoClient<Channel>, shared: Arc<Shared>) {
    let started = Instant::now();
    while shared.running(started) {
        let r = c
            .hello(HelloRequest {
                name: "load".into(),
            })
            .await;
        match r {
            Ok(reply) => shared.record(Ok(reply.into_inner().pid)),
            Err(s) => match unprocessed(&s) {
                Some(why) => shared.retry(why),
                None => shared.record(Err(format!("hello: {s:?}"))),
            },
        }
    }
}

/// Server streams of `count` ticks `interval_ms` apart, one after another; each must arrive
/// whole, in order, from one process, and end with OK.
async fn stream_client(mut c: DemoClient<Channel>, shared: Arc<Shared>, count: u32) {
    let started = Instant::now();
    while shared.running(started) {
        let call = c.ticks(TicksRequest {
            count,
            interval_ms: 50,
        });
        let mut stream = match call.await {
            Ok(s) => s.into_inner(),
            Err(s) => {
                match unprocessed(&s) {
                    Some(why) => shared.retry(why),
                    None => shared.record(Err(format!("ticks: {s:?}"))),
                }
                continue;
            }
        };
        let mut seen = Vec::new();
        let outcome = loop {
            match stream.message().await {
                Ok(Some(tick)) => seen.push(tick),
                Ok(None) => break Ok(()),
                Err(s) => break Err(s),
            }
        };
        let pid = seen.first().map(|t| t.pid);
        let whole = seen.len() == count as usize
            && seen.iter().enumerate().all(|(i, t)| t.seq == i as u32 + 1)
            && seen.iter().all(|t| Some(t.pid) == pid);
        match (outcome, pid) {
            (Ok(()), Some(pid)) if whole => {
                let after = shared.handed_over.lock().unwrap().get(&pid).copied();
                if after.is_some() {
                    shared.tally.lock().unwrap().streams_across_a_handover += 1;
                }
                shared.record(Ok(pid));
            }
            (outcome, _) => shared.record(Err(format!(
                "ticks: {} of {count} ticks, ended with {outcome:?}",
                seen.len()
            ))),
        }
    }
}

/// Bidirectional sessions of `count` messages 50 ms apart; every message must come back.
async fn echo_client(mut c: DemoClient<Channel>, shared: Arc<Shared>, count: u32) {
    let started = Instant::now();
    while shared.running(started) {
        let outbound = async_stream(count);
        let mut replies = match c.echo(outbound).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                match unprocessed(&s) {
                    Some(why) => shared.retry(why),
                    None => shared.record(Err(format!("echo: {s:?}"))),
                }
                continue;
            }
        };
        let mut seen = Vec::new();
        let outcome = loop {
            match replies.message().await {
                Ok(Some(m)) => seen.push(m),
                Ok(None) => break Ok(()),
                Err(s) => break Err(s),
            }
        };
        let pid = seen.first().map(|m| m.pid);
        let whole = seen.len() == count as usize
            && seen
                .iter()
                .enumerate()
                .all(|(i, m)| m.text == i.to_string())
            && seen.iter().all(|m| Some(m.pid) == pid);
        match (outcome, pid) {
            (Ok(()), Some(pid)) if whole => shared.record(Ok(pid)),
            (outcome, _) => shared.record(Err(format!(
                "echo: {} of {count} messages back, ended with {outcome:?}",
                seen.len()
            ))),
        }
    }
}

/// `count` messages "0", "1", ... 50 ms apart, then the end of the client's side.
fn async_stream(count: u32) -> impl tokio_stream::Stream<Item = EchoMessage> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for i in 0..count {
            let m = EchoMessage {
                text: i.to_string(),
                pid: 0,
            };
            if tx.send(m).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits (blocking) until `n` more calls have been answered.
fn wait_answers(shared: &Shared, n: usize) {
    let target = shared.answers.load(Ordering::SeqCst) + n;
    assert!(
        poll_until(LONG, || shared.answers.load(Ordering::SeqCst) >= target),
        "the load stalled: {:?}",
        shared.tally.lock().unwrap()
    );
}

#[test]
fn grpc_calls_and_streams_survive_ten_upgrades_without_a_failed_rpc() {
    let ctx = Ctx::new();
    let mut server = start(&ctx, "10s");
    let rt = runtime();
    // tonic's channels spawn their connection tasks on this runtime.
    let _in_rt = rt.enter();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        tally: Mutex::new(Tally::default()),
        handed_over: Mutex::new(BTreeMap::new()),
        answers: AtomicUsize::new(0),
    });
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(rt.spawn(unary_client(client(&server), Arc::clone(&shared))));
    }
    for _ in 0..3 {
        // 1 s streams: most of them are open at some handover.
        tasks.push(rt.spawn(stream_client(client(&server), Arc::clone(&shared), 20)));
        tasks.push(rt.spawn(echo_client(client(&server), Arc::clone(&shared), 10)));
    }
    wait_answers(&shared, 200);
    let mut old_pids = Vec::new();
    for _ in 0..UPGRADES {
        let old = server.pid;
        let from = server.log.len();
        signal(old, libc::SIGUSR2);
        let new = server.wait_upgrade_complete(from, old);
        shared
            .handed_over
            .lock()
            .unwrap()
            .insert(old as u32, Instant::now());
        server.pid = new;
        old_pids.push(old);
        // The new generation serves calls before the next upgrade; the old one may still
        // be finishing its streams.
        let seen_new = poll_until(LONG, || {
            shared
                .tally
                .lock()
                .unwrap()
                .by_pid
                .contains_key(&(new as u32))
        });
        assert!(seen_new, "no call answered by the new pid {new}");
        wait_answers(&shared, 100);
    }
    // Long enough for the streams of the last upgrades to end, then stop the load.
    wait_answers(&shared, 200);
    shared.stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for t in tasks {
            t.await.expect("a client task panicked");
        }
    });
    for pid in old_pids {
        server.wait_exited_ok(pid);
    }
    let tally = shared.tally.lock().unwrap();
    eprintln!("{tally:?}");
    assert!(
        tally.failures.is_empty(),
        "{} of {} RPCs failed; first: {:#?}",
        tally.failures.len(),
        tally.ok + tally.failures.len(),
        &tally.failures[..tally.failures.len().min(10)]
    );
    assert_eq!(tally.by_pid.len(), UPGRADES + 1, "{tally:?}");
    assert!(
        tally.streams_across_a_handover > 0,
        "no stream was in progress at a handover: the test proves nothing; {tally:?}"
    );
    // Every old generation drained by itself, none at the deadline (the last lines of an
    // exited generation may still be in the pipe the others share: give them a moment).
    let drained = || {
        server
            .log
            .count(|l| l.contains("drained: all connections closed"))
    };
    poll_until(SHORT, || drained() >= UPGRADES);
    let log = server.log.text();
    assert_eq!(drained(), UPGRADES, "{log}");
    assert!(!log.contains("drain deadline reached"), "{log}");
    let exit = server.stop();
    assert!(exit.success(), "{exit:?}");
}

/// A server stream and a bidirectional stream that would outlive the drain deadline (3 s)
/// are ended by their handlers with UNAVAILABLE about a second before it, on the old process,
/// which then exits having drained (not at the deadline).
#[test]
fn a_stream_longer_than_the_drain_is_ended_with_unavailable_before_the_deadline() {
    let ctx = Ctx::new();
    let mut server = start(&ctx, "3s");
    let rt = runtime();
    let _in_rt = rt.enter();
    let mut ticks_client = client(&server);
    let mut echo = client(&server);
    let (ticks, echoes) = rt.block_on(async {
        // 100 ticks 100 ms apart: 10 s, far beyond the drain.
        let ticks = ticks_client
            .ticks(TicksRequest {
                count: 100,
                interval_ms: 100,
            })
            .await
            .expect("ticks")
            .into_inner();
        let echoes = echo
            .echo(async_stream(1000))
            .await
            .expect("echo")
            .into_inner();
        (ticks, echoes)
    });
    let (mut ticks, mut echoes) = (ticks, echoes);
    let first = rt.block_on(async { ticks.message().await });
    let first = first.expect("the first tick").expect("a tick");
    assert_eq!(first.pid, server.pid as u32);

    let old = server.pid;
    let from = server.log.len();
    signal(old, libc::SIGUSR2);
    server.pid = server.wait_upgrade_complete(from, old);
    let handed_over = Instant::now();

    let drain = |what: &str, end: Result<Vec<u32>, Status>| {
        let ended_at = handed_over.elapsed();
        let Err(status) = end else {
            panic!("{what} ended without a status: {end:?}");
        };
        assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
        assert!(
            status.message().starts_with("server restarting"),
            "{what} was not ended by its handler: {status:?}"
        );
        assert!(
            unprocessed(&status).is_none() && std::error::Error::source(&status).is_none(),
            "{what} ended by the transport: {status:?}"
        );
        assert!(
            ended_at < Duration::from_secs(3),
            "{what} ended {ended_at:?} after the handover: not before the deadline"
        );
        assert!(
            ended_at > Duration::from_secs(1),
            "{what} ended {ended_at:?} after the handover: it should use the drain"
        );
    };
    let pids = rt.block_on(async {
        let mut pids = vec![first.pid];
        loop {
            match ticks.message().await {
                Ok(Some(t)) => pids.push(t.pid),
                Ok(None) => break Ok(pids),
                Err(s) => break Err(s),
            }
        }
    });
    drain("the server stream", pids);
    let echoed = rt.block_on(async {
        let mut pids = Vec::new();
        loop {
            match echoes.message().await {
                Ok(Some(m)) => pids.push(m.pid),
                Ok(None) => break Ok(pids),
                Err(s) => break Err(s),
            }
        }
    });
    drain("the bidirectional stream", echoed);
    // The old process drained by itself, before its deadline, and exited 0.
    server.wait_exited_ok(old);
    poll_until(SHORT, || {
        server.log.contains("drained: all connections closed")
    });
    let log = server.log.text();
    assert!(log.contains("drained: all connections closed"), "{log}");
    assert!(!log.contains("drain deadline reached"), "{log}");
    // A new call goes to the new process.
    let reply = rt.block_on(async {
        client(&server)
            .hello(HelloRequest { name: "x".into() })
            .await
    });
    assert_eq!(reply.expect("hello").into_inner().pid, server.pid as u32);
    let exit = server.stop();
    assert!(exit.success(), "{exit:?}");
}
