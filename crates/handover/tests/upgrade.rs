//! Upgrades that succeed: the PID and the version change, nothing is lost, nothing leaks.

use std::thread;
use std::time::{Duration, Instant};

use handover_testkit::hello_kit::*;

#[test]
fn upgrade_changes_pid_and_version() {
    let ctx = Ctx::new();
    let mut server = ctx.start(&[]);
    let port_before = server.addr().clone();
    assert_eq!(server.hello().0, V1_GREETING);

    ctx.install(Version::V2);
    let (old, new) = server.upgrade(libc::SIGUSR2);

    let (greeting, pid) = server.hello();
    assert_eq!(
        greeting, V2_GREETING,
        "the replaced binary must run after the upgrade"
    );
    assert_eq!(pid, new);
    assert_ne!(pid, old);
    assert!(!is_alive(old), "old generation {old} still alive");
    assert!(
        server.log.contains(&format!(
            "upgrade complete: pid {old} handed over to pid {new}"
        )),
        "log:\n{}",
        server.log.text()
    );
    // Same listening socket: the new generation logs the same address.
    let from_new = server
        .log
        .find(0, |l| l.contains("upgrade started"))
        .map(|(i, _)| i)
        .expect("`upgrade started` logged");
    let relogged = server.log.find(from_new, |l| {
        parse_serving(l).as_ref() == Some(&port_before)
    });
    assert!(
        relogged.is_some(),
        "the new generation did not log `serving {port_before}`; log:\n{}",
        server.log.text()
    );
    assert_only_processes(&[new], SHORT);
    assert_no_zombies();
}

/// 20 upgrades alternating v1/v2: each one changes pid and greeting, the newest generation's fd
/// count stays the same, no zombie is left, one process remains.
#[test]
fn twenty_alternating_upgrades_keep_fd_count_and_leave_nothing_behind() {
    let ctx = Ctx::new();
    let mut server = ctx.start(&[]);
    let mut version = Version::V1;
    let mut fd_counts: Vec<(i32, usize, Vec<String>)> = Vec::new();
    let mut pids = vec![server.pid];

    for round in 1..=20 {
        version = version.other();
        ctx.install(version);
        let (old, new) = server.upgrade(libc::SIGUSR2);
        assert!(!pids.contains(&new), "round {round}: pid {new} reused");
        pids.push(new);

        let (greeting, pid) = server.hello();
        assert_eq!(greeting, version.greeting(), "round {round}: wrong version");
        assert_eq!(pid, new, "round {round}");
        assert!(!is_alive(old), "round {round}: old generation {old} alive");
        assert_only_processes(&[new], SHORT);
        assert_no_zombies();

        let count = settled_fd_count(new);
        fd_counts.push((new, count, fd_targets(new)));
    }

    let (first_pid, first_count, first_fds) = &fd_counts[0];
    for (round, (pid, count, fds)) in fd_counts.iter().enumerate() {
        assert_eq!(
            count,
            first_count,
            "fd count of the newest generation changed after upgrade {}: pid {first_pid} had {first_count} fds {first_fds:#?}, pid {pid} has {count} fds {fds:#?}",
            round + 1
        );
    }

    let st = server.stop();
    assert!(st.success(), "final stop: {st:?}");
    assert_only_processes(&[], SHORT);
}

/// A slow request accepted by v1 before the upgrade completes, with v1's body, after the new
/// generation has taken over.
#[test]
fn slow_request_survives_upgrade() {
    let ctx = Ctx::new();
    let mut server = ctx.start(&[]);
    let v1_pid = server.pid;

    let pending = PendingRequest::send(server.addr(), "/sleep/2000");
    pending.wait_accepted_by(v1_pid, server.addr());
    let sent_at = pending.sent_at;
    let reader = pending.finish_in_background();

    ctx.install(Version::V2);
    let from = server.log.len();
    server.signal(libc::SIGUSR2);
    let new = server.wait_upgrade_complete(from, v1_pid);
    let upgraded_at = Instant::now();
    assert!(
        !reader.is_finished(),
        "the slow request finished before the upgrade completed ({:?} after it was sent): inconclusive",
        upgraded_at - sent_at
    );
    // The new generation serves new connections while the old one still works on the request.
    server.pid = new;
    server.wait_answering_pid(new);
    assert_eq!(server.hello().0, V2_GREETING);

    let (resp, arrived) = reader.join().unwrap();
    let resp =
        resp.unwrap_or_else(|e| panic!("slow request failed: {e}\nlog:\n{}", server.log.text()));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.greeting_pid(),
        Some((V1_GREETING.to_string(), v1_pid)),
        "the slow request must be answered by the old generation: {resp:?}"
    );
    assert!(arrived >= upgraded_at);
    assert!(arrived - sent_at >= Duration::from_millis(1900));

    server.wait_exited_ok(v1_pid);
    assert_only_processes(&[new], SHORT);
}

fn upgrades_under_load(mode: LoadMode) {
    let ctx = Ctx::new();
    let mut server = ctx.start(&[]);
    let load = Load::start(server.addr(), 3, mode);
    load.wait_more(50);

    let mut version = Version::V1;
    for _ in 0..5 {
        version = version.other();
        ctx.install(version);
        let (_, new) = server.upgrade(libc::SIGUSR2);
        load.wait_seen(new);
        load.wait_more(50);
    }

    let stats = load.finish();
    eprintln!("load: {}", stats.summary());
    stats.assert_no_failures();
    assert!(
        stats.by_pid.contains_key(&server.pid),
        "{}",
        stats.summary()
    );
    assert!(stats.by_greeting.contains_key(V1_GREETING));
    assert!(stats.by_greeting.contains_key(V2_GREETING));
    assert_only_processes(&[server.pid], SHORT);
    assert_no_zombies();
}

/// A new connection per request, back to back from 3 threads, through 5 upgrades: not one
/// refused, reset or unanswered; the new generations answer.
#[test]
fn new_connections_during_upgrades_all_succeed() {
    upgrades_under_load(LoadMode::Close);
}

/// Persistent connections through 5 upgrades: a client reconnects only after a response that
/// says `Connection: close`; a connection closed under a request counts as a failure.
#[test]
fn keepalive_connections_during_upgrades_never_fail() {
    upgrades_under_load(LoadMode::KeepAlive);
}

/// 50 SIGUSR2 to the serving process while its upgrade is in progress: never more than two
/// server processes at once, the extra signals are answered with `upgrade already in
/// progress`, exactly one handover, one generation at the end. The new version waits at a
/// gate (a FIFO the test opens once the burst is over), so the burst lands during the upgrade
/// however quick upgrades are.
#[test]
fn burst_of_usr2_is_coalesced() {
    let ctx = Ctx::new();
    let server = ctx.start(&[]);
    let first = server.pid;
    let gate = ctx.path("gate");
    let c_gate = std::ffi::CString::new(gate.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the file.
    assert_eq!(unsafe { libc::mkfifo(c_gate.as_ptr(), 0o600) }, 0, "mkfifo");
    // `read` is a shell builtin: the waiting starter is this one process, which then becomes
    // v2 (same pid, so LISTEN_PID still holds).
    ctx.install_script(&format!(
        "#!/bin/sh\nread go < '{}'\nexec '{}' \"$@\"\n",
        gate.display(),
        handover_testkit::binaries::binaries().v2.display()
    ));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let stop = stop.clone();
        let taken = taken.clone();
        thread::spawn(move || {
            let mut max = 0;
            let mut worst = String::new();
            let mut samples = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let live = live_processes();
                samples += 1;
                taken.store(samples, std::sync::atomic::Ordering::SeqCst);
                if live.len() > max {
                    max = live.len();
                    worst = describe(&live);
                }
                thread::sleep(Duration::from_millis(2));
            }
            (max, worst, samples)
        })
    };

    // `first` is our child and is not reaped during the burst, so its pid cannot be reused.
    signal(first, libc::SIGUSR2);
    server.log.expect(0, "upgrade started by SIGUSR2", LONG);
    for _ in 0..49 {
        signal(first, libc::SIGUSR2);
        thread::sleep(Duration::from_millis(2));
    }
    server.log.expect(0, "upgrade already in progress", LONG);
    // The tree is watched a while with both generations alive before the new one may go on.
    assert!(
        poll_until(LONG, || taken.load(std::sync::atomic::Ordering::SeqCst)
            > 50),
        "the sampler did not run"
    );
    std::fs::write(&gate, "go\n").expect("open the gate");

    let from = 0;
    let new = server.wait_upgrade_complete(from, first);
    server.wait_exited_ok(first);
    assert_only_processes(&[new], LONG);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (max, worst, samples) = sampler.join().unwrap();

    assert!(samples > 50, "only {samples} samples of the process tree");
    assert!(
        max <= 2,
        "{max} server processes alive at once: {worst}; log:\n{}",
        server.log.text()
    );
    assert!(
        server.log.contains("upgrade already in progress"),
        "no `upgrade already in progress` logged; log:\n{}",
        server.log.text()
    );
    let completes = server.log.count(|l| l.contains("upgrade complete:"));
    assert_eq!(
        completes,
        1,
        "expected one handover; log:\n{}",
        server.log.text()
    );
    let (greeting, pid) = hello_at(server.addr()).unwrap();
    assert_eq!((greeting.as_str(), pid), (V2_GREETING, new));
    assert_no_zombies();
}

/// SIGUSR2 sent to each new generation as soon as its process appears (while it is still
/// starting: its default action would kill it). Each generation must survive it (and may upgrade
/// again once it serves); no upgrade fails, no process dies by a signal, and one serving
/// generation remains.
#[test]
fn usr2_to_a_starting_generation_does_not_kill_it() {
    let ctx = Ctx::new();
    let server = ctx.start(&[]);
    ctx.install(Version::V2);

    let mut signalled = std::collections::HashSet::from([server.pid]);
    signal(server.pid, libc::SIGUSR2);
    let deadline = Instant::now() + LONG;
    while signalled.len() < 12 && Instant::now() < deadline {
        reap_all();
        let mut live = live_processes();
        // One scan of /proc is not atomic: a generation forked after the directory was listed
        // is missed if its parent exits before its entry is read. Gone means gone on rescans.
        if live.is_empty() {
            poll_until(Duration::from_millis(500), || {
                live = live_processes();
                !live.is_empty()
            });
        }
        assert!(
            !live.is_empty(),
            "every generation is gone after {} processes; GET /: {:?}; log:\n{}",
            signalled.len(),
            get(server.addr(), "/"),
            server.log.text()
        );
        for p in live {
            if signalled.insert(p.pid) {
                try_signal(p.pid, libc::SIGUSR2);
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    assert!(
        signalled.len() >= 12,
        "only {} processes appeared; log:\n{}",
        signalled.len(),
        server.log.text()
    );

    // Settled: one process, every started upgrade finished, and it stays so for 300 ms (a
    // generation that got its signal while starting upgrades again once it serves).
    let settled_now = || {
        reap_all();
        let log = &server.log;
        live_processes().len() == 1
            && log.count(|l| l.contains("upgrade started"))
                == log.count(|l| l.contains("upgrade complete:") || l.contains("upgrade failed:"))
    };
    let mut since: Option<Instant> = None;
    let settled = poll_until(LONG, || {
        if live_processes().is_empty() {
            return true; // nothing left to wait for; reported below
        }
        if !settled_now() {
            since = None;
            return false;
        }
        since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(300)
    });
    let live = live_processes();
    assert!(
        settled && live.len() == 1,
        "did not settle on one serving generation: [{}]; GET /: {:?}; log:\n{}",
        describe(&live),
        get(server.addr(), "/"),
        server.log.text()
    );
    let (greeting, pid) = hello_at(server.addr())
        .unwrap_or_else(|e| panic!("GET / after the signals: {e}; log:\n{}", server.log.text()));
    assert_eq!(greeting, V2_GREETING);
    assert_eq!(live[0].pid, pid);

    assert_eq!(
        server.log.count(|l| l.contains("upgrade failed:")),
        0,
        "an upgrade failed; log:\n{}",
        server.log.text()
    );
    let bad: Vec<_> = reaped_statuses()
        .into_iter()
        .filter(|(_, st)| !st.success())
        .collect();
    assert!(
        bad.is_empty(),
        "generations that did not exit 0: {bad:?}; log:\n{}",
        server.log.text()
    );
    assert_no_zombies();
}

#[test]
fn sighup_triggers_upgrade() {
    let ctx = Ctx::new();
    let mut server = ctx.start(&[]);
    ctx.install(Version::V2);
    let (old, new) = server.upgrade(libc::SIGHUP);
    assert_ne!(old, new);
    assert_eq!(server.hello(), (V2_GREETING.to_string(), new));
    assert_only_processes(&[new], SHORT);
}

/// Started as `./hello` from its directory: the re-exec must find the (replaced) binary.
#[test]
fn relative_argv0_upgrade() {
    let ctx = Ctx::new();
    let mut cmd = ctx.command("./hello");
    cmd.args(["--listen", "127.0.0.1:0"]);
    let mut server = ctx.start_with(cmd, 1);
    assert_eq!(server.hello().0, V1_GREETING);

    ctx.install(Version::V2);
    let (_, new) = server.upgrade(libc::SIGUSR2);
    assert_eq!(server.hello(), (V2_GREETING.to_string(), new));

    ctx.install(Version::V1);
    let (_, newer) = server.upgrade(libc::SIGHUP);
    assert_eq!(server.hello(), (V1_GREETING.to_string(), newer));
    assert_only_processes(&[newer], SHORT);
}
