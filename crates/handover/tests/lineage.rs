//! Every generation accounted for: an old process reaps its successor whenever it exits, the
//! record of the upgrade that created a generation reaches it, and a successor that crashes
//! after it was ready hands the listeners back to the old process while that one still lives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use handover::control_socket::{self, Request, Response as Reply, Status};
use handover_testkit::hello_kit::*;

/// Per zombie pid: first seen, last seen, its parent.
type Sightings = HashMap<i32, (Instant, Instant, i32)>;

/// Samples `/proc` every few milliseconds while alive and remembers, per zombie left by a
/// server generation (a zombie whose parent is not the test process), how long it was seen.
struct ZombieWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Sightings>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ZombieWatch {
    fn start() -> ZombieWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (s, z) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let now = Instant::now();
                for p in descendants(self_pid()) {
                    if p.state == 'Z' && p.ppid != self_pid() {
                        let mut z = z.lock().unwrap();
                        let e = z.entry(p.pid).or_insert((now, now, p.ppid));
                        e.1 = now;
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        ZombieWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops sampling; panics if any zombie was seen for longer than `limit`.
    fn assert_none_longer_than(mut self, limit: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let seen = self.seen.lock().unwrap();
        let long: Vec<String> = seen
            .iter()
            .filter(|(_, (first, last, _))| *last - *first > limit)
            .map(|(pid, (first, last, ppid))| {
                format!(
                    "pid {pid} (parent {ppid}) was a zombie for at least {:?}",
                    *last - *first
                )
            })
            .collect();
        assert!(long.is_empty(), "{}", long.join("; "));
    }
}

/// Sends `sig` to the current generation and waits until the new one answers, without waiting
/// for the old one to exit (it may be draining a long request). Returns the new pid.
fn upgrade_no_wait(server: &mut Server, sig: i32) -> i32 {
    let old = server.pid;
    let from = server.log.len();
    signal(old, sig);
    let new = server.wait_upgrade_complete(from, old);
    server.pid = new;
    server.wait_answering_pid(new);
    new
}

/// Holds a request on the current generation until it has accepted it; returns the reader.
fn hold_request(
    server: &Server,
    ms: u64,
) -> thread::JoinHandle<(Result<Response, String>, Instant)> {
    let pending = PendingRequest::send(server.addr(), &format!("/sleep/{ms}"));
    pending.wait_accepted_by(server.pid, server.addr());
    pending.finish_in_background()
}

fn status(sock: &std::path::Path) -> Status {
    match control_socket::request(sock, Request::Status) {
        Ok(Reply::Status(st)) => st,
        other => panic!("status reply expected, got {other:?}"),
    }
}

/// The status as JSON, read with a raw request (for fields a typed reader might not know).
fn status_json(sock: &std::path::Path) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect control socket");
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(b"{\"request\":\"status\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("status reply is JSON");
    assert_eq!(v["ok"], true, "{v}");
    v["result"].clone()
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Generation 1 drains a long request while 2 hands over to 3 and 3 to 4: generation 2, which
/// exits while its parent still drains, is reaped by it at once, and the parent logs how it
/// ended; no zombie left by a generation exists at any time (sampled from /proc).
#[test]
fn overlapping_upgrades_leave_no_zombie_while_the_first_generation_drains() {
    let ctx = Ctx::new();
    let mut server = ctx.start(&["--drain-timeout", "60s"]);
    let first = server.pid;
    let reader = hold_request(&server, 8000);
    let watch = ZombieWatch::start();

    let mut version = Version::V1;
    let mut previous = Vec::new();
    for round in 1..=3 {
        version = version.other();
        ctx.install(version);
        let old = server.pid;
        let new = upgrade_no_wait(&mut server, libc::SIGUSR2);
        if round > 1 {
            // `old` has nothing to drain: it exits now. Its parent reaps it if it is still
            // alive (generation 1 is); an orphan goes to the test process, the subreaper.
            let parent = *previous.last().unwrap();
            let gone = poll_until(SHORT, || {
                reap_all();
                proc_stat(old).is_none()
            });
            assert!(
                gone,
                "round {round}: generation pid {old} is {:?} while its parent {parent} is {:?}; log:\n{}",
                proc_stat(old),
                proc_stat(parent),
                server.log.text()
            );
            if parent == first {
                // The parent logs right after its reap, and the log reaches the test through a
                // pipe: wait for the line rather than expect it the moment the pid is gone.
                let line = format!("successor pid {old} ");
                assert!(
                    poll_until(SHORT, || server.log.contains(&line)),
                    "round {round}: pid {parent} did not log how its successor {old} ended; log:\n{}",
                    server.log.text()
                );
            }
        }
        previous.push(old);
        assert_eq!(server.hello(), (version.greeting().to_string(), new));
    }
    assert!(is_alive(first), "generation 1 must still be draining");
    assert_no_zombies();
    watch.assert_none_longer_than(Duration::from_secs(2));

    let (resp, _) = reader.join().unwrap();
    let resp = resp.unwrap_or_else(|e| panic!("long request failed: {e}"));
    assert_eq!(resp.greeting_pid(), Some((V1_GREETING.to_string(), first)));
    server.wait_exited_ok(first);
    assert_only_processes(&[server.pid], SHORT);
}

/// `status` answered by the new generation names the upgrade that created it: who asked, when,
/// how long it took, and which generation and pid it made.
#[test]
fn status_after_an_upgrade_shows_the_upgrade_that_created_the_generation() {
    let ctx = Ctx::new();
    let sock = ctx.path("control.sock");
    let mut server = ctx.start(&["--control", sock.to_str().unwrap()]);
    let first = server.pid;
    assert!(status(&sock).last_upgrade.is_none());
    // A grey release needs the supervisor's proxy: refused here, with the reason.
    for req in [Request::Promote, Request::Abort] {
        match control_socket::request(&sock, req) {
            Err(control_socket::ClientError::Failed(why)) => {
                assert!(why.contains("needs `handover run --proxy`"), "{why}");
                assert!(why.contains("the kernel"), "{why}");
            }
            other => panic!("{req:?} must be refused: {other:?}"),
        }
    }

    ctx.install(Version::V2);
    let before = unix_ms_now();
    let Reply::Upgraded(up) = control_socket::request(&sock, Request::Upgrade).unwrap() else {
        panic!("upgrade reply expected")
    };
    let after = unix_ms_now();
    let new = up.pid as i32;
    server.pid = new;
    server.wait_exited_ok(first);

    let st = status(&sock);
    assert_eq!(st.schema_version, 3, "{st:?}");
    assert_eq!((st.pid as i32, st.generation), (new, 2), "{st:?}");
    let last = st
        .last_upgrade
        .clone()
        .unwrap_or_else(|| panic!("status of generation 2 says `last upgrade: none`: {st:?}"));
    assert!(last.ok, "{last:?}");
    assert_eq!(last.trigger, "control socket");
    assert_eq!(last.generation, Some(2));
    assert_eq!(last.pid, Some(new as u32));
    assert_eq!(last.error, None);
    assert!(
        (before..=after).contains(&last.started_unix_ms),
        "started_unix_ms {} outside [{before}, {after}]",
        last.started_unix_ms
    );
    assert!(
        last.duration_ms <= after - before,
        "duration_ms {} longer than the whole request ({} ms)",
        last.duration_ms,
        after - before
    );

    // A signal-triggered upgrade is recorded the same way, one generation on.
    ctx.install(Version::V1);
    let (_, third) = server.upgrade(libc::SIGUSR2);
    let st = status(&sock);
    assert_eq!((st.pid as i32, st.generation), (third, 3), "{st:?}");
    let last = st.last_upgrade.expect("recorded");
    assert_eq!(
        (last.trigger.as_str(), last.generation, last.pid),
        ("SIGUSR2", Some(3), Some(third as u32))
    );
}

/// A generation number that is not below 2^53 (the largest integer a JSON reader keeps
/// exactly) is refused at start-up like any malformed variable: exit 2, the variable named.
#[test]
fn a_generation_number_that_would_not_survive_json_is_refused() {
    for bad in ["9007199254740992", "18446744073709551616", "abc", "0"] {
        let ctx = Ctx::new();
        let mut cmd = ctx.command("sh");
        cmd.arg("-c").arg(format!(
            "export LISTEN_PID=$$ LISTEN_FDS=0 HANDOVER_GENERATION={bad}; exec ./hello --listen 127.0.0.1:0"
        ));
        let p = ctx.spawn("hello", cmd);
        let ended = p
            .log
            .wait_for_or(0, LONG, |l| parse_serving(l).is_some(), || !is_alive(p.pid));
        assert!(
            ended.is_none(),
            "HANDOVER_GENERATION={bad}: hello served; log:\n{}",
            p.log.text()
        );
        let st = p.wait(LONG);
        let text = p.log.text();
        assert_eq!(
            st.code(),
            Some(2),
            "HANDOVER_GENERATION={bad}: {st:?}; log:\n{text}"
        );
        assert!(
            text.contains("HANDOVER_GENERATION") && text.contains(bad),
            "the error must name the variable and its value; log:\n{text}"
        );
    }
}

/// The generation number never wraps: at 2^53 - 1 an upgrade is refused with the reason, and
/// the server keeps serving.
#[test]
fn the_last_generation_number_refuses_to_upgrade_and_keeps_serving() {
    let ctx = Ctx::new();
    let mut cmd = ctx.command("sh");
    cmd.arg("-c").arg(
        "export LISTEN_PID=$$ LISTEN_FDS=0 HANDOVER_GENERATION=9007199254740991; \
         exec ./hello --listen 127.0.0.1:0",
    );
    let server = ctx.start_with(cmd, 1);
    ctx.install(Version::V2);
    let from = server.log.len();
    server.signal(libc::SIGUSR2);
    let line = server.wait_upgrade_failed(from, LONG);
    assert!(
        line.contains("generation 9007199254740991 is the last one"),
        "{line}"
    );
    assert_eq!(server.hello(), (V1_GREETING.to_string(), server.pid));
    assert_only_processes(&[server.pid], SHORT);
}

/// Generation 2 is ready and serving, then crashes (SIGKILL) while generation 1 still drains a
/// long request: generation 1 takes the listeners back, says so loudly, in `status` and in the
/// PID file, and not one connection of a load loop running throughout is refused.
#[test]
fn a_successor_that_crashes_after_it_was_ready_hands_back_to_the_old_process() {
    let ctx = Ctx::new();
    let sock = ctx.path("control.sock");
    let pid_file = ctx.path("hello.pid");
    let mut server = ctx.start(&[
        "--control",
        sock.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--drain-timeout",
        "60s",
    ]);
    let first = server.pid;
    let reader = hold_request(&server, 15000);
    let load = Load::start(server.addr(), 2, LoadMode::Close);
    load.wait_more(50);

    ctx.install(Version::V2);
    let second = upgrade_no_wait(&mut server, libc::SIGUSR2);
    load.wait_seen(second);
    load.wait_more(50);
    assert!(is_alive(first), "generation 1 must still be draining");

    let from = server.log.len();
    let killed_at = Instant::now();
    signal(second, libc::SIGKILL);
    let resumed = server.log.wait_for(from, LONG, |l| l.contains("resuming"));
    let resumed_after = killed_at.elapsed();
    assert!(
        resumed.is_some(),
        "generation 1 (pid {first}) did not take over again after pid {second} crashed; log:\n{}",
        server.log.text()
    );
    server.pid = first;
    server.wait_answering_pid(first);
    assert!(
        poll_until(SHORT, || load.has_seen(first)
            && std::fs::read_to_string(&pid_file).ok()
                == Some(format!("{first}\n"))),
        "PID file: {:?}",
        std::fs::read_to_string(&pid_file)
    );
    let answered_after = killed_at.elapsed();
    load.wait_more(100);
    let stats = load.finish();
    eprintln!(
        "generation 1 logged `resuming` {resumed_after:?} and answered {answered_after:?} after the SIGKILL; load: {}",
        stats.summary()
    );
    let refused: Vec<&String> = stats
        .failures
        .iter()
        .filter(|f| f.contains("ConnectionRefused"))
        .collect();
    assert!(
        refused.is_empty(),
        "refused connections: {}",
        stats.summary()
    );
    // Only requests that generation 2 had accepted when it was killed may fail.
    assert!(
        stats.failures.len() <= 2,
        "more failures than the killed process could have held: {}",
        stats.summary()
    );

    let st = status_json(&sock);
    assert_eq!(st["pid"], first, "{st:#}");
    assert_eq!(st["generation"], 1, "{st:#}");
    assert_eq!(st["state"], "running", "{st:#}");
    let resumed = &st["resumed"];
    assert_eq!(
        resumed["successor_pid"], second,
        "status does not say generation 1 took over again: {st:#}"
    );
    assert_eq!(resumed["successor_generation"], 2, "{st:#}");
    assert!(
        resumed["successor_ended"]
            .as_str()
            .is_some_and(|e| e.contains("SIGKILL")),
        "{st:#}"
    );

    // Serving again means it can be upgraded again.
    let third = upgrade_no_wait(&mut server, libc::SIGUSR2);
    assert_eq!(server.hello(), (V2_GREETING.to_string(), third));
    let (resp, _) = reader.join().unwrap();
    assert_eq!(
        resp.unwrap_or_else(|e| panic!("long request failed: {e}"))
            .greeting_pid(),
        Some((V1_GREETING.to_string(), first))
    );
}

/// A successor stopped on purpose never brings the old process back, or the service could
/// not be stopped: a graceful stop through the control socket (exit 0), and a double SIGTERM
/// (exit 1) while it holds a long request of its own.
#[test]
fn a_successor_stopped_on_purpose_does_not_bring_the_old_process_back() {
    for double_term in [false, true] {
        let ctx = Ctx::new();
        let sock = ctx.path("control.sock");
        let mut server = ctx.start(&[
            "--control",
            sock.to_str().unwrap(),
            "--drain-timeout",
            "60s",
        ]);
        let first = server.pid;
        let _held = hold_request(&server, 15000);
        ctx.install(Version::V2);
        let second = upgrade_no_wait(&mut server, libc::SIGUSR2);

        let from = server.log.len();
        if double_term {
            let _own = hold_request(&server, 15000);
            signal(second, libc::SIGTERM);
            server
                .log
                .wait_for(from, LONG, |l| {
                    l.contains("graceful stop requested by SIGTERM")
                })
                .expect("first SIGTERM acknowledged");
            signal(second, libc::SIGTERM);
        } else {
            let Reply::Stopping(_) = control_socket::request(&sock, Request::Stop).unwrap() else {
                panic!("stop reply expected")
            };
        }
        let st = wait_exit(second, LONG).unwrap_or_else(|e| panic!("{e}"));
        // Generation 1 reaps it and says how it ended: the decision has been taken by then.
        let reaped = server.log.wait_for(from, LONG, |l| {
            l.contains(&format!("successor pid {second} "))
        });
        assert!(
            reaped.is_some(),
            "pid {first} did not log the end of its successor {second} ({st:?}); log:\n{}",
            server.log.text()
        );
        assert!(
            !server.log.text()[..].contains("resuming"),
            "stopped on purpose (double SIGTERM: {double_term}), yet the old process resumed; log:\n{}",
            server.log.text()
        );
        assert!(is_alive(first), "generation 1 must still be draining");
        assert!(
            get_timeout(server.addr(), "/", Duration::from_millis(500)).is_err(),
            "the old process answers a new connection after its successor was stopped"
        );
    }
}

/// A child started with a forged "previous generation" (a readiness channel nobody answers):
/// SIGTERM ends it within a second, and without one it gives up after the upgrade timeout with
/// the reason and exit status 1.
#[test]
fn a_forged_previous_generation_neither_holds_the_child_forever_nor_blocks_sigterm() {
    for by_signal in [true, false] {
        let ctx = Ctx::new();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut cmd = ctx.command("sh");
        cmd.arg("-c").arg(
            "export LISTEN_PID=$$ LISTEN_FDS=0 HANDOVER_SYNC_FD=3; \
             exec ./hello --listen 127.0.0.1:0 --upgrade-timeout 2s",
        );
        pass_as_fd3(&mut cmd, raw_fd(&theirs));
        let p = ctx.spawn("hello", cmd);
        drop(theirs);
        // Its READY byte says it is waiting for the go-ahead now.
        let mut byte = [0u8; 1];
        ours.set_read_timeout(Some(LONG)).unwrap();
        std::io::Read::read_exact(&mut &ours, &mut byte)
            .unwrap_or_else(|e| panic!("no READY from the child: {e}; log:\n{}", p.log.text()));
        assert_eq!(byte[0], b'R');

        let t0 = Instant::now();
        if by_signal {
            signal(p.pid, libc::SIGTERM);
            let st = wait_exit(p.pid, Duration::from_secs(1)).unwrap_or_else(|e| {
                panic!(
                    "SIGTERM while waiting for the go-ahead: {e}; log:\n{}",
                    p.log.text()
                )
            });
            assert_eq!(
                st.map(|s| s.code()),
                Some(Some(0)),
                "log:\n{}",
                p.log.text()
            );
        } else {
            let st = p.wait(Duration::from_secs(10));
            assert_eq!(st.code(), Some(1), "log:\n{}", p.log.text());
            assert!(
                t0.elapsed() >= Duration::from_millis(1500),
                "gave up after {:?}, before the 2 s upgrade timeout",
                t0.elapsed()
            );
            let text = p.log.text();
            assert!(
                text.contains("did not answer within 2s"),
                "the reason must name the timeout; log:\n{text}"
            );
        }
        drop(ours);
    }
}
