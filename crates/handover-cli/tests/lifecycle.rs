//! The supervisor's life: crash restart behind open sockets, systemd notifications and a
//! graceful stop, and PID 1 duties in a PID namespace.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::thread;

use handover_testkit::cli_kit::*;

/// A worker killed by SIGKILL is restarted after the backoff; clients that connect while no
/// worker runs wait in the backlog of the supervisor's socket and are all answered.
#[test]
fn a_crashed_worker_is_restarted_and_no_connection_is_refused() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    // A long enough backoff that the clients below certainly arrive while nobody accepts.
    let sup = ctx.start(&[
        "--listen",
        "127.0.0.1:0",
        "--restart-backoff",
        "500ms",
        "--",
        worker.to_str().unwrap(),
    ]);
    sup.log.expect(0, ") is ready (", LONG);
    let addr = sup.addr();
    let crashed = pid_of(&get(addr, "/").unwrap());

    signal(crashed, libc::SIGKILL);
    assert!(
        poll_until(LONG, || !is_alive(crashed)),
        "the worker did not die"
    );
    let clients: Vec<_> = (0..8)
        .map(|_| thread::spawn(move || get(addr, "/")))
        .collect();
    for c in clients {
        let body = c
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("a client failed while the worker was restarting: {e:?}"));
        assert_ne!(pid_of(&body), crashed);
    }
    sup.log.expect(
        0,
        "was killed by signal SIGKILL unexpectedly; restarting",
        LONG,
    );
    let s = ctx.wait_status("the restarted worker", |s| s["state"] == "running");
    assert_eq!(s["restarts"], 1, "{s:#}");
    assert_eq!(s["generation"], 2, "{s:#}");
    assert!(
        poll_until(SHORT, || proc_stat(crashed).is_none()),
        "the crashed worker was not reaped"
    );
}

/// A worker that ignores the stop signal drains until the drain deadline, then gets SIGKILL;
/// meanwhile, with `--max-draining 1`, a further upgrade is refused with the reason.
#[test]
fn draining_generations_are_bounded_and_killed_at_the_drain_deadline() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let sup = ctx.start(&[
        "--listen",
        "127.0.0.1:0",
        // Python ignores SIGWINCH: the old worker will not leave by itself.
        "--stop-signal",
        "WINCH",
        "--drain-timeout",
        "4s",
        "--max-draining",
        "1",
        "--",
        worker.to_str().unwrap(),
    ]);
    sup.log.expect(0, ") is ready (", LONG);
    let v1 = pid_of(&get(sup.addr(), "/").unwrap());
    let control = ctx.control();
    let upgrade = || ctx.handover(&["upgrade", "--control", control.to_str().unwrap()]);

    ctx.write_worker("worker.py", "v2", "serve");
    let out = upgrade();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ctx.write_worker("worker.py", "v3", "serve");
    let out = upgrade();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("older generations still draining: 1 (--max-draining 1)"),
        "{stderr}"
    );
    // (Both versions may answer: the old one ignores the stop signal and still accepts.)
    let s = ctx.status();
    assert_eq!(s["generation"], 2, "{s:#}");
    assert_eq!(s["workers"][1]["state"], "draining", "{s:#}");

    sup.log.expect(
        0,
        &format!("(pid {v1}) is still running 4s after SIGWINCH; sending SIGKILL"),
        LONG,
    );
    assert!(
        poll_until(LONG, || proc_stat(v1).is_none()),
        "v1 was not reaped"
    );
    let out = upgrade();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ctx.status()["generation"], 3);
}

/// With `NOTIFY_SOCKET` set, systemd hears READY=1 when the first worker is ready,
/// RELOADING=1 then READY=1 around an upgrade, and STOPPING=1 at SIGTERM; the workers get a
/// notification socket of their own, never systemd's. SIGTERM drains the workers, and the
/// supervisor exits 0, removing its PID file and control socket; `--pid-file` also places the
/// default control socket.
#[test]
fn systemd_hears_ready_reloading_stopping_and_sigterm_stops_gracefully() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let systemd_path = ctx.path("systemd.sock");
    let systemd = UnixDatagram::bind(&systemd_path).unwrap();
    systemd.set_read_timeout(Some(LONG)).unwrap();
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = systemd.recv(&mut buf).expect("no notification for systemd");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let pid_file = ctx.path("app.pid");
    let sup = ctx.launch(
        &[],
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "--",
            worker.to_str().unwrap(),
        ],
        |cmd| {
            cmd.env("NOTIFY_SOCKET", &systemd_path);
        },
    );
    let ready = recv();
    assert!(ready.starts_with("READY=1"), "{ready:?}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        sup.pid.to_string()
    );
    let body = get(sup.addr(), "/").unwrap();
    let notify = body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("notify="))
        .unwrap();
    assert_ne!(
        Path::new(notify),
        systemd_path,
        "systemd's socket leaked to a worker"
    );
    assert!(notify.ends_with("/w1.sock"), "{notify}");

    // The control socket is next to the PID file.
    let control = ctx.path("app.sock");
    assert!(control.exists(), "no control socket next to the PID file");
    ctx.write_worker("worker.py", "v2", "serve");
    let out = ctx.handover(&["upgrade", "--pid-file", pid_file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let ready = recv();
    assert!(ready.starts_with("READY=1"), "{ready:?}");

    let from = sup.log.len();
    signal(sup.pid, libc::SIGTERM);
    assert_eq!(recv(), "STOPPING=1");
    sup.log.expect(from, "worker v2 pid", LONG);
    sup.log.expect(from, "drained", LONG);
    let status = sup.wait_exit(LONG);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "exit status {status:#x}"
    );
    assert!(!pid_file.exists(), "the PID file is removed at exit");
    assert!(!control.exists(), "the control socket is removed at exit");
}

/// As PID 1 of a PID namespace (a container's first process), the supervisor reaps orphans
/// that a worker leaves behind, and SIGTERM from outside stops it gracefully.
#[test]
fn as_pid_1_it_reaps_orphans_and_stops_on_sigterm() {
    if handover::sys::euid() != 0 || which("unshare").is_none() {
        eprintln!("skipped: needs root and unshare(1) for a PID namespace");
        return;
    }
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let sup = ctx.launch(
        &["unshare", "--pid", "--fork", "--kill-child"],
        &[
            "run",
            "--control",
            ctx.control().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--",
            worker.to_str().unwrap(),
        ],
        |cmd| {
            cmd.env("HANDOVER_LOG", "debug");
        },
    );
    sup.log.expect(0, "running as PID 1", LONG);
    sup.log.expect(0, ") is ready (", LONG);
    let s = ctx.status();
    assert_eq!(s["pid"], 1, "{s:#}");
    // The supervisor as the host sees it: unshare's child.
    let handover = descendants(sup.pid)
        .into_iter()
        .find(|p| p.ppid == sup.pid)
        .expect("handover under unshare")
        .pid;

    let from = sup.log.len();
    let body = get(sup.addr(), "/orphan").expect("the worker leaves an orphan");
    assert!(body.trim().parse::<i32>().is_ok(), "{body:?}");
    sup.log.expect(from, "(not a worker)", LONG);
    assert!(
        poll_until(SHORT, || zombies_of(handover).is_empty()),
        "zombies left: {:?}",
        zombies_of(handover)
    );

    let from = sup.log.len();
    signal(handover, libc::SIGTERM);
    sup.log
        .expect(from, "graceful stop requested by SIGTERM", LONG);
    sup.log.expect(from, "drained", LONG);
    let status = sup.wait_exit(LONG);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "exit status {status:#x}"
    );
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
