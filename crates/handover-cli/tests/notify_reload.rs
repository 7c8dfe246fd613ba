//! `Type=notify-reload` (systemd 253+): `systemctl reload` sends SIGHUP to the supervisor and
//! the reload lasts until a `RELOADING=1` stamped (`MONOTONIC_USEC=`) after the signal, then a
//! `READY=1`. Debian 12's systemd is 252, which has no notify-reload, and systemd is not PID 1
//! in CI anyway, so this test plays systemd's part: it receives the notifications on its own
//! `NOTIFY_SOCKET` and applies the rules of systemd's `service_notify_message()` (src/core/
//! service.c, v253 on) to them. Every reload must end, whether the upgrade succeeds, fails or
//! is refused; a reload that never ends would hold `systemctl reload` until its timeout and
//! queue every later job of the unit behind it.

use std::os::unix::net::UnixDatagram;

use handover_testkit::cli_kit::*;

/// The part of systemd's service state machine that notifications move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Started, not yet READY=1.
    Starting,
    Running,
    /// SIGHUP sent at this CLOCK_MONOTONIC time (µs); waiting for a RELOADING=1 stamped later.
    ReloadSignal {
        since_usec: u64,
    },
    /// RELOADING=1 seen; waiting for READY=1.
    ReloadNotify,
    Stopping,
}

impl Unit {
    /// One notification, as systemd 253+ reads it: STOPPING=1 wins over READY=1, READY=1 over
    /// RELOADING=1; RELOADING=1 counts after a SIGHUP only with a MONOTONIC_USEC at or after
    /// the moment the signal was sent.
    fn on(self, message: &str) -> Unit {
        let has = |tag: &str| message.lines().any(|l| l == tag);
        let stamp = message
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse::<u64>().ok());
        let fresh = |since: u64| stamp.is_some_and(|t| t >= since);
        if has("STOPPING=1") {
            return Unit::Stopping;
        }
        if has("READY=1") {
            return match self {
                Unit::Starting | Unit::ReloadNotify => Unit::Running,
                Unit::ReloadSignal { since_usec } if has("RELOADING=1") && fresh(since_usec) => {
                    Unit::Running
                }
                other => other,
            };
        }
        if has("RELOADING=1") {
            return match self {
                Unit::ReloadSignal { since_usec } if fresh(since_usec) => Unit::ReloadNotify,
                Unit::Running => Unit::ReloadNotify,
                other => other,
            };
        }
        self
    }
}

/// Fake systemd: a notification socket and the unit's state.
struct Systemd {
    socket: UnixDatagram,
    unit: Unit,
    heard: Vec<String>,
}

impl Systemd {
    /// Applies notifications until the unit is running again; panics with what was heard if it
    /// is not within [`LONG`].
    fn until_running(&mut self, what: &str) {
        self.socket.set_read_timeout(Some(LONG)).unwrap();
        while self.unit != Unit::Running {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "{what}: the reload never ended (unit {:?}, {e}); heard {:#?}",
                    self.unit, self.heard
                )
            });
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.unit = self.unit.on(&message);
            self.heard.push(message);
        }
    }

    /// What `systemctl reload` does under Type=notify-reload: note the time, send SIGHUP.
    fn reload(&mut self, pid: i32) {
        self.unit = Unit::ReloadSignal {
            since_usec: handover::sys::monotonic_usec(),
        };
        signal(pid, libc::SIGHUP);
    }
}

/// A successful, a failed and a refused upgrade, each asked for by SIGHUP as systemd 253+
/// does under Type=notify-reload: each reload ends with the unit running, and `status` tells
/// the outcome. Old workers ignore the stop signal here (`--stop-signal CONT`), so the one
/// replaced stays draining and the next upgrade is refused by `--max-draining 1`.
#[test]
fn every_reload_ends_under_type_notify_reload() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let path = ctx.path("systemd.sock");
    let mut systemd = Systemd {
        socket: UnixDatagram::bind(&path).unwrap(),
        unit: Unit::Starting,
        heard: Vec::new(),
    };
    let sup = ctx.start_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--stop-signal",
            "CONT",
            "--max-draining",
            "1",
            "--drain-timeout",
            "60s",
            "--",
            worker.to_str().unwrap(),
        ],
        |cmd| {
            cmd.env("NOTIFY_SOCKET", &path);
        },
    );
    systemd.until_running("start");

    ctx.write_worker("worker.py", "v2", "exit3");
    systemd.reload(sup.pid);
    systemd.until_running("a failed upgrade");
    let s = ctx.wait_status("the failed upgrade", |s| {
        s["last_upgrade"]["ok"] == false && s["state"] == "running"
    });
    assert_eq!(s["generation"], 1, "{s:#}");

    ctx.write_worker("worker.py", "v2", "serve");
    systemd.reload(sup.pid);
    systemd.until_running("a successful upgrade");
    // Generation 2 was the failed one.
    let s = ctx.wait_status("the upgrade", |s| s["generation"] == 3);
    assert_eq!(s["last_upgrade"]["ok"], true, "{s:#}");
    // (No request is checked: generation 1 ignores its stop signal and still accepts.)

    systemd.reload(sup.pid);
    systemd.until_running("a refused upgrade");
    let s = ctx.wait_status("the refused upgrade", |s| {
        s["last_upgrade"]["ok"] == false && s["generation"] == 3
    });
    let error = s["last_upgrade"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("--max-draining 1"), "{s:#}");
    eprintln!("heard: {:?}", systemd.heard);
}

/// The model itself: a RELOADING=1 stamped before the SIGHUP does not end a reload.
#[test]
fn the_model_ignores_a_stale_reloading() {
    let waiting = Unit::ReloadSignal { since_usec: 100 };
    assert_eq!(
        waiting.on("RELOADING=1\nMONOTONIC_USEC=99"),
        waiting,
        "stale"
    );
    assert_eq!(waiting.on("READY=1"), waiting);
    assert_eq!(
        waiting.on("RELOADING=1\nMONOTONIC_USEC=100"),
        Unit::ReloadNotify
    );
    assert_eq!(
        waiting.on("RELOADING=1\nMONOTONIC_USEC=150\nREADY=1"),
        Unit::Running
    );
    assert_eq!(Unit::ReloadNotify.on("READY=1\nSTATUS=x"), Unit::Running);
    assert_eq!(Unit::Running.on("STOPPING=1"), Unit::Stopping);
}
