//! Failed upgrades roll back: the child is killed and reaped, the same PID keeps serving without a
//! single failed request, the cause is logged, and a later upgrade to a good binary succeeds.

use std::time::{Duration, Instant};

use handover_testkit::hello_kit::*;

#[derive(Clone, Copy, Debug)]
enum Fixture {
    /// A shell script that exits 3 at once.
    CrashAtStart,
    /// A shell script that never becomes ready (`--upgrade-timeout 2s`).
    Hang,
    /// No file at the start path.
    Missing,
    /// A 0644 copy of v2.
    NotExecutable,
}

impl Fixture {
    fn install(self, ctx: &Ctx) {
        match self {
            Fixture::CrashAtStart => ctx.install_script("#!/bin/sh\nexit 3\n"),
            Fixture::Hang => ctx.install_script("#!/bin/sh\nexec sleep 600\n"),
            Fixture::Missing => ctx.remove_exe(),
            Fixture::NotExecutable => ctx.install_non_executable(),
        }
    }

    fn cause(self) -> &'static str {
        match self {
            Fixture::CrashAtStart => "exited with status 3",
            Fixture::Hang => "not ready within",
            Fixture::Missing => "No such file or directory",
            Fixture::NotExecutable => "Permission denied",
        }
    }
}

fn start(ctx: &Ctx) -> Server {
    ctx.start(&["--upgrade-timeout", "2s"])
}

/// One failed upgrade of `server` (which must keep its pid), checked under load.
fn fail_upgrade(ctx: &Ctx, server: &Server, fixture: Fixture) {
    let pid = server.pid;
    let load = Load::start(server.addr(), 2, LoadMode::Close);
    load.wait_more(20);

    fixture.install(ctx);
    let from = server.log.len();
    let signalled = Instant::now();
    server.signal(libc::SIGUSR2);
    let line = server.wait_upgrade_failed(from, LONG);
    let took = signalled.elapsed();
    assert!(
        line.contains(fixture.cause()),
        "{fixture:?}: the failure line does not give the cause {:?}: {line}",
        fixture.cause()
    );
    if let Fixture::Hang = fixture {
        assert!(
            took >= Duration::from_millis(1800),
            "gave up on the hanging child after {took:?}, before the 2s upgrade timeout"
        );
        assert!(
            took < Duration::from_secs(10),
            "gave up only after {took:?}"
        );
    }

    // The child is killed and reaped by the old process: nothing below it, nothing else alive.
    let no_children = poll_until(SHORT, || children_of(pid).is_empty());
    assert!(
        no_children,
        "{fixture:?}: pid {pid} still has children after the rollback: {}",
        describe(&children_of(pid))
    );
    assert_only_processes(&[pid], SHORT);
    assert_no_zombies();

    load.wait_more(20);
    let stats = load.finish();
    stats.assert_no_failures();
    assert_eq!(
        stats.by_pid.keys().copied().collect::<Vec<_>>(),
        vec![pid],
        "{fixture:?}: requests answered by another pid: {}",
        stats.summary()
    );
    assert_eq!(server.hello(), (V1_GREETING.to_string(), pid));
}

fn rollback_then_good_upgrade(fixture: Fixture) {
    let ctx = Ctx::new();
    let mut server = start(&ctx);
    let first = server.pid;
    fail_upgrade(&ctx, &server, fixture);

    ctx.install(Version::V2);
    let (old, new) = server.upgrade(libc::SIGUSR2);
    assert_eq!(old, first);
    assert_eq!(server.hello(), (V2_GREETING.to_string(), new));
    assert_only_processes(&[new], SHORT);
}

#[test]
fn rollback_when_new_binary_crashes_at_start() {
    rollback_then_good_upgrade(Fixture::CrashAtStart);
}

#[test]
fn rollback_when_new_binary_hangs_past_upgrade_timeout() {
    rollback_then_good_upgrade(Fixture::Hang);
}

#[test]
fn rollback_when_binary_is_missing() {
    rollback_then_good_upgrade(Fixture::Missing);
}

#[test]
fn rollback_when_binary_is_not_executable() {
    rollback_then_good_upgrade(Fixture::NotExecutable);
}

/// All four failures in a row on the same process (no sticky in-progress state), then a good
/// upgrade.
#[test]
fn repeated_failures_then_success() {
    let ctx = Ctx::new();
    let mut server = start(&ctx);
    for fixture in [
        Fixture::Missing,
        Fixture::CrashAtStart,
        Fixture::NotExecutable,
        Fixture::Hang,
        Fixture::CrashAtStart,
    ] {
        fail_upgrade(&ctx, &server, fixture);
    }
    assert_eq!(
        server.log.count(|l| l.contains("upgrade failed:")),
        5,
        "log:\n{}",
        server.log.text()
    );
    ctx.install(Version::V2);
    let (_, new) = server.upgrade(libc::SIGUSR2);
    assert_eq!(server.hello(), (V2_GREETING.to_string(), new));
    assert_only_processes(&[new], SHORT);
    assert_no_zombies();
}
