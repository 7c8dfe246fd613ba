//! Upgrades through the supervisor: a worker in another language under load, readiness by a
//! per-worker HTTP probe, rollback of a failing new version, and the file watcher.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use handover_testkit::cli_kit::*;

fn ctl(ctx: &Ctx) -> String {
    ctx.control().to_str().unwrap().to_string()
}

/// A Python worker (socket from fd 3, `READY=1` on its own `NOTIFY_SOCKET`) is upgraded five
/// times, by `handover upgrade`, `SIGHUP` and `SIGUSR2`, while two clients send requests
/// continuously: not one request fails, every version answers, the supervisor keeps its PID,
/// every old worker drains and is reaped, and the workers' output passes through.
#[test]
fn python_worker_upgraded_five_times_under_load_without_a_failed_request() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let sup = ctx.start(&["--listen", "127.0.0.1:0", "--", worker.to_str().unwrap()]);
    sup.log.expect(0, "is ready (READY=1)", LONG);
    let addr = sup.addr();
    let first = get(addr, "/").expect("v1 answers");
    assert_eq!(version_of(&first), "v1");
    assert!(
        first.contains("notify=") && first.contains("/w1.sock"),
        "the worker has a NOTIFY_SOCKET of its own: {first}"
    );
    let mut old_pid = pid_of(&first);

    let load = Load::start(addr, 2);
    load.wait_answers("v1", 20);
    for (i, how) in ["command", "SIGHUP", "command", "SIGUSR2", "command"]
        .into_iter()
        .enumerate()
    {
        let generation = i as u64 + 2;
        let version = format!("v{generation}");
        ctx.write_worker("worker.py", &version, "serve");
        match how {
            "command" => {
                let out = ctx.handover(&["upgrade", "--control", &ctl(&ctx)]);
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "upgrade to {version} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    stdout.contains(&format!("upgraded: generation {generation}")),
                    "{stdout}"
                );
                assert!(
                    stdout.contains(&format!("draining pid {old_pid}")),
                    "{stdout}"
                );
            }
            signal_name => {
                let sig = if signal_name == "SIGHUP" {
                    libc::SIGHUP
                } else {
                    libc::SIGUSR2
                };
                signal(sup.pid, sig);
                let s = ctx.wait_status("the signalled upgrade", |s| {
                    s["generation"] == generation && s["last_upgrade"]["ok"] == true
                });
                assert_eq!(s["last_upgrade"]["trigger"], signal_name, "{s:#}");
            }
        }
        load.wait_answers(&version, 20);
        let s = ctx.status();
        assert_eq!(s["pid"], sup.pid, "the supervisor's PID never changes");
        assert_eq!(s["generation"], generation);
        // The old worker drains, exits and is reaped (no zombie left behind).
        assert!(
            poll_until(LONG, || proc_stat(old_pid).is_none()),
            "generation {} (pid {old_pid}) was not reaped: {:?}",
            generation - 1,
            proc_stat(old_pid)
        );
        old_pid = pid_of(&get(addr, "/").expect("the new version answers"));
    }
    let stats = load.finish();
    eprintln!(
        "{} requests answered during five upgrades, by version: {:?}; {} failed",
        stats.ok,
        stats.versions,
        stats.failures.len()
    );
    assert!(
        stats.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        stats.failures.len(),
        stats.ok + stats.failures.len(),
        &stats.failures[..stats.failures.len().min(5)]
    );
    for v in 1..=6 {
        assert!(
            stats.versions.get(&format!("v{v}")).copied().unwrap_or(0) > 0,
            "v{v} never answered: {:?}",
            stats.versions
        );
    }
    assert!(zombies_of(sup.pid).is_empty(), "{:?}", zombies_of(sup.pid));

    let out = ctx.handover(&["stop", "--control", &ctl(&ctx)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = sup.wait_exit(LONG);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "exit status {status:#x}"
    );
    assert!(
        !ctx.control().exists(),
        "the control socket is removed at exit"
    );
    // Worker stdout passes through the supervisor.
    for v in ["v1", "v6"] {
        assert!(
            sup.log.contains(&format!("worker {v} pid")),
            "no output of {v}"
        );
    }
    assert!(sup.log.contains("drained"), "{}", sup.log.text());
}

/// `--ready http://127.0.0.1:{port}/healthz`: each worker gets a free port of its own in
/// `HANDOVER_HEALTH_PORT`, and is ready only once that port answers 2xx (the worker answers
/// 503 to its first two probes).
#[test]
fn a_worker_is_made_ready_by_an_http_probe_of_its_own_port() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let sup = ctx.start(&[
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "http://127.0.0.1:{port}/healthz",
        "--",
        worker.to_str().unwrap(),
    ]);
    let ready = sup.log.expect(0, "is ready (GET http://127.0.0.1:", LONG);
    assert!(ready.contains("/healthz answered 200"), "{ready}");
    let body = get(sup.addr(), "/").unwrap();
    assert!(
        body.contains("notify=-"),
        "no NOTIFY_SOCKET in probe mode: {body}"
    );
    let port1 = health_port(&body);
    assert!(
        ready.contains(&format!("127.0.0.1:{port1}/healthz")),
        "{ready}"
    );
    sup.log
        .expect(0, &format!("health probe 3 on port {port1}: ok"), LONG);
    assert!(sup
        .log
        .contains(&format!("health probe 2 on port {port1}: not yet")));

    ctx.write_worker("worker.py", "v2", "serve");
    let out = ctx.handover(&["upgrade", "--control", &ctl(&ctx)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = get(sup.addr(), "/").unwrap();
    assert_eq!(version_of(&body), "v2");
    let port2 = health_port(&body);
    assert_ne!(port1, port2, "each worker is probed on its own port");
    assert!(sup
        .log
        .contains(&format!("health probe 3 on port {port2}: ok")));
}

fn health_port(body: &str) -> u16 {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("health_port="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no health port in {body:?}"))
}

/// A new version that exits before it is ready, one that never gets ready, and one that
/// cannot be executed: each time `handover upgrade` exits non-zero with the reason, the old
/// worker (same PID) keeps serving without a failed request, and a good version afterwards
/// upgrades normally.
#[test]
fn a_failing_new_version_is_rolled_back_and_upgrade_says_why() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let sup = ctx.start(&[
        "--listen",
        "127.0.0.1:0",
        // Long enough for a loaded machine to start Python; the "hang" case waits it out.
        "--ready-timeout",
        "5s",
        "--",
        worker.to_str().unwrap(),
    ]);
    sup.log.expect(0, ") is ready (", LONG);
    let addr = sup.addr();
    let v1_pid = pid_of(&get(addr, "/").unwrap());
    let load = Load::start(addr, 2);
    load.wait_answers("v1", 10);

    let cases: [(&str, u32, &[&str]); 3] = [
        (
            "exit3",
            0o755,
            &["exited with status 3 before it was ready"],
        ),
        ("hang", 0o755, &["was not ready within 5s", "it was killed"]),
        (
            "serve",
            0o644,
            &[
                "cannot start the new worker",
                "worker.py",
                "Permission denied",
            ],
        ),
    ];
    for (behaviour, mode, reasons) in cases {
        ctx.write_worker_mode("worker.py", "broken", behaviour, mode);
        let out = ctx.handover(&["upgrade", "--control", &ctl(&ctx)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{behaviour}: {stderr}");
        assert!(stderr.contains("upgrade failed: "), "{stderr}");
        for reason in reasons {
            assert!(
                stderr.contains(reason),
                "{behaviour}: {stderr:?} lacks {reason:?}"
            );
        }
        assert!(
            stderr.contains(&format!("generation 1 (pid {v1_pid}) keeps serving")),
            "{stderr}"
        );
        let s = ctx.status();
        assert_eq!(s["generation"], 1, "{s:#}");
        assert_eq!(s["state"], "running", "{s:#}");
        assert_eq!(s["last_upgrade"]["ok"], false, "{s:#}");
        assert!(s["last_upgrade"]["error"]
            .as_str()
            .unwrap()
            .contains(reasons[0]));
        if let Some(new_pid) = s["last_upgrade"]["pid"].as_i64() {
            assert!(
                poll_until(LONG, || proc_stat(new_pid as i32).is_none()),
                "the failed worker {new_pid} was not killed and reaped"
            );
        }
        let body = get(addr, "/").unwrap();
        assert_eq!(pid_of(&body), v1_pid, "the old worker keeps serving");
        load.wait_answers("v1", 10);
    }

    ctx.write_worker("worker.py", "v2", "serve");
    let out = ctx.handover(&["upgrade", "--control", &ctl(&ctx)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    load.wait_answers("v2", 10);
    let stats = load.finish();
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);
    assert_eq!(stats.versions.get("broken"), None, "{:?}", stats.versions);
}

/// `--watch`: a replaced file triggers an upgrade once it has settled and is a complete
/// executable; a non-executable one is reported and ignored until it becomes executable.
#[test]
fn replacing_the_watched_file_upgrades() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let sup = ctx.start(&[
        "--listen",
        "127.0.0.1:0",
        "--watch",
        worker.to_str().unwrap(),
        "--watch-debounce",
        "200ms",
        "--",
        worker.to_str().unwrap(),
    ]);
    sup.log.expect(0, ") is ready (", LONG);

    let from = sup.log.len();
    ctx.write_worker_mode("worker.py", "v2", "serve", 0o644);
    sup.log
        .expect(from, "changed, but it is not executable", LONG);
    let s = ctx.status();
    assert_eq!(
        s["generation"], 1,
        "an incomplete file triggered an upgrade: {s:#}"
    );
    assert!(s["last_upgrade"].is_null(), "{s:#}");

    fs::set_permissions(&worker, fs::Permissions::from_mode(0o755)).unwrap();
    let s = ctx.wait_status("the watch upgrade", |s| {
        s["generation"] == 2 && s["last_upgrade"]["ok"] == true
    });
    let trigger = s["last_upgrade"]["trigger"].as_str().unwrap();
    assert!(
        trigger.starts_with("watch: ") && trigger.ends_with("worker.py"),
        "{trigger}"
    );
    assert_eq!(version_of(&get(sup.addr(), "/").unwrap()), "v2");
}

/// The kit's start helper gives up as soon as the supervisor is gone: a start that fails (here
/// a malformed `--listen`) fails the test within seconds, not at the 30 s deadline, and the
/// panic names the exit status and carries the supervisor's own error.
#[test]
fn a_start_that_fails_ends_the_wait_at_once_with_its_exit_status() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let started = std::time::Instant::now();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctx.start(&[
            "--listen",
            "no-such-address",
            "--",
            worker.to_str().unwrap(),
        ])
    }));
    let elapsed = started.elapsed();
    let payload = failed
        .err()
        .expect("a supervisor with a malformed --listen started");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(elapsed < LONG / 3, "the wait took {elapsed:?}: {msg}");
    assert!(msg.contains("exit status "), "no exit status in: {msg}");
    assert!(msg.contains("no-such-address"), "no log in: {msg}");
}
