//! `examples/echo.rs` end to end: line-echo clients through ten upgrades. Every line is
//! answered exactly once (by one generation or the next), none is lost, and each client whose
//! connection was open at a handover gets the application's goodbye, told by the drain.
//!
//! The client's protocol: one line at a time, each answered `<pid>: <line>` before the next is
//! sent. `server is restarting, please reconnect` instead of an answer means the line was not
//! processed: the client sends it again on a new connection (to the new generation). Anything
//! else (an end of stream without the goodbye, a reset, a wrong or missing answer, a timeout)
//! is a failure.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use handover_testkit::hello_kit::*;

const UPGRADES: usize = 10;
const CLIENTS: usize = 8;
/// `examples/echo.rs` drains for at most this long.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const GOODBYE: &str = "server is restarting, please reconnect";
/// Bound on each client's whole run, whatever happens to the upgrades.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// Installs the echo example as `<dir>/echo`, starts it on a free loopback port and waits for
/// its `serving` line.
fn start(ctx: &Ctx) -> Server {
    let exe = ctx.path("echo");
    std::fs::copy(example_binary("echo"), &exe).expect("copy the echo example");
    let mut cmd = ctx.command(&exe);
    cmd.arg("127.0.0.1:0");
    let sp = ctx.spawn("echo", cmd);
    let pid = sp.pid;
    let (_, line) = sp
        .log
        .wait_for_or(0, LONG, |l| parse_serving(l).is_some(), || !is_alive(pid))
        .unwrap_or_else(|| panic!("echo did not log `serving ADDR`; log:\n{}", sp.log.text()));
    Server {
        pid,
        log: sp.log,
        addrs: vec![parse_serving(&line).unwrap()],
    }
}

#[derive(Default, Debug)]
struct Tally {
    answered: usize,
    goodbyes: usize,
    /// Goodbyes by the generation that said them (the one that answered on that connection).
    goodbyes_by_pid: BTreeMap<i32, usize>,
    by_pid: BTreeMap<i32, usize>,
    failures: Vec<String>,
}

/// One echo client: lines `c<id>-<n>` for n = 0, 1, ... until `stop`, each answered once.
fn client(id: usize, addr: SocketAddr, stop: &AtomicBool, answered: &AtomicUsize) -> Tally {
    let mut t = Tally::default();
    let began = Instant::now();
    // The connection, and the generation that answered on it so far.
    let mut conn: Option<(TcpStream, BufReader<TcpStream>, Option<i32>)> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) && began.elapsed() < CLIENT_LIMIT {
        let (mut w, mut r, conn_pid) = match conn.take() {
            Some(c) => c,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let r = BufReader::new(s.try_clone().unwrap());
                    (s, r, None)
                }
                Err(e) => {
                    t.failures.push(format!("c{id}: connect: {e}"));
                    continue;
                }
            },
        };
        let line = format!("c{id}-{n}");
        if let Err(e) = w.write_all(format!("{line}\n").as_bytes()) {
            // The old generation may close right after its goodbye: the goodbye is then
            // still to be read.
            t.failures.push(format!("c{id}: write {line}: {e}"));
            continue;
        }
        let mut got = String::new();
        match r.read_line(&mut got) {
            Ok(0) => t
                .failures
                .push(format!("c{id}: end of stream without an answer to {line}")),
            Ok(_) => {
                let got = got.trim_end_matches('\n');
                if got == GOODBYE {
                    // Not processed: send it again, to whoever accepts now.
                    t.goodbyes += 1;
                    if let Some(pid) = conn_pid {
                        *t.goodbyes_by_pid.entry(pid).or_default() += 1;
                    }
                    continue;
                }
                match got.split_once(": ") {
                    Some((pid, echoed)) if echoed == line => match pid.parse::<i32>() {
                        Ok(pid) => {
                            t.answered += 1;
                            answered.fetch_add(1, Ordering::SeqCst);
                            *t.by_pid.entry(pid).or_default() += 1;
                            n += 1;
                            conn = Some((w, r, Some(pid)));
                        }
                        Err(_) => t.failures.push(format!("c{id}: bad pid in {got:?}")),
                    },
                    _ => t.failures.push(format!("c{id}: sent {line}, got {got:?}")),
                }
            }
            Err(e) => t.failures.push(format!("c{id}: read after {line}: {e}")),
        }
    }
    t
}

#[test]
fn echo_lines_through_ten_upgrades_are_answered_once_and_goodbyes_are_said() {
    let ctx = Ctx::new();
    let mut server = start(&ctx);
    let Addr::Tcp(addr) = server.addr().clone() else {
        panic!("a TCP listener")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (stop, answered) = (stop.clone(), answered.clone());
            thread::spawn(move || client(id, addr, &stop, &answered))
        })
        .collect();
    let wait_more = |k: usize| {
        let target = answered.load(Ordering::SeqCst) + k;
        assert!(
            poll_until(LONG, || answered.load(Ordering::SeqCst) >= target),
            "echo load stalled at {} answered lines",
            answered.load(Ordering::SeqCst)
        );
    };
    wait_more(200);
    let mut pids = vec![server.pid];
    for _ in 0..UPGRADES {
        let old = server.pid;
        let from = server.log.len();
        server.signal(libc::SIGUSR2);
        let new = server.wait_upgrade_complete(from, old);
        let handed_over = Instant::now();
        // The old generation said goodbye on every connection and so has none left: it
        // exits (status 0) well before its drain deadline.
        server.wait_exited_ok(old);
        let drained = handed_over.elapsed();
        assert!(
            drained < DRAIN_TIMEOUT / 2,
            "generation {old} took {drained:?} to exit after its handover (drain timeout {DRAIN_TIMEOUT:?})"
        );
        server.pid = new;
        pids.push(new);
        wait_more(200);
    }
    stop.store(true, Ordering::SeqCst);
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let mut total = Tally::default();
    for t in tallies {
        total.answered += t.answered;
        total.goodbyes += t.goodbyes;
        for (p, k) in t.goodbyes_by_pid {
            *total.goodbyes_by_pid.entry(p).or_default() += k;
        }
        total.failures.extend(t.failures);
        for (p, k) in t.by_pid {
            *total.by_pid.entry(p).or_default() += k;
        }
    }
    eprintln!(
        "echo: answered={} goodbyes={} by_pid={:?} goodbyes_by_pid={:?} failures={:?}",
        total.answered, total.goodbyes, total.by_pid, total.goodbyes_by_pid, total.failures
    );
    assert!(
        total.failures.is_empty(),
        "lines lost: {:?}",
        total.failures
    );
    for pid in &pids {
        assert!(
            total.by_pid.contains_key(pid),
            "generation {pid} answered no line: {:?}",
            total.by_pid
        );
    }
    // The clients send back to back, so every generation that handed over had connections
    // open then, and said goodbye on them.
    for pid in &pids[..UPGRADES] {
        assert!(
            total.goodbyes_by_pid.contains_key(pid),
            "generation {pid} said no goodbye: {:?}",
            total.goodbyes_by_pid
        );
    }
    let exit = server.stop();
    assert!(exit.success(), "the last generation ended with {exit:?}");
}
