//! Signal dispositions the environment imposes: `nohup` (SIGHUP ignored) and PID 1 in a
//! container, where handing over to a child is impossible.

use std::time::Duration;

use handover_testkit::hello_kit::*;

/// Under `nohup` SIGHUP is ignored: closing the terminal must not upgrade the server, so it is
/// left ignored and SIGUSR2 still upgrades.
#[test]
fn sighup_ignored_by_nohup_does_not_upgrade() {
    let ctx = Ctx::new();
    let mut cmd = ctx.command("sh");
    // `trap '' HUP` is what nohup does to the disposition, without nohup's output juggling.
    cmd.args(["-c", "trap '' HUP; exec ./hello --listen 127.0.0.1:0"]);
    let mut server = ctx.start_with(cmd, 1);
    assert!(
        server.log.contains("SIGHUP is ignored"),
        "log:\n{}",
        server.log.text()
    );
    let first = server.pid;
    ctx.install(Version::V2);
    let from = server.log.len();
    signal(first, libc::SIGHUP);
    // The same process answers with the old version; then SIGUSR2 upgrades as usual. Had
    // SIGHUP started an upgrade, the SIGUSR2 one below would be its second.
    assert_eq!(server.hello(), (V1_GREETING.to_string(), first));
    let (old, new) = server.upgrade(libc::SIGUSR2);
    assert_eq!(old, first);
    assert_eq!(server.hello(), (V2_GREETING.to_string(), new));
    assert_eq!(
        server.log.count(|l| l.contains("upgrade started")),
        1,
        "exactly one upgrade (by SIGUSR2); log:\n{}",
        server.log.text()
    );
    assert!(server
        .log
        .find(from, |l| l.contains("upgrade started by SIGUSR2"))
        .is_some());
    assert_only_processes(&[new], SHORT);
}

/// As PID 1 (a container's first process, here a new PID namespace), an upgrade cannot hand
/// over: the server says why, points to the supervisor, and keeps serving.
#[test]
fn pid1_refuses_to_upgrade_and_keeps_serving() {
    let Some(unshare) = which("unshare") else {
        assert!(!in_ci(), "unshare is missing in CI");
        eprintln!("skipped: no unshare");
        return;
    };
    let ctx = Ctx::new();
    let mut cmd = ctx.command(unshare);
    cmd.args(["--pid", "--fork", "./hello", "--listen", "127.0.0.1:0"]);
    let sp = ctx.spawn("unshare hello", cmd);
    let line = sp.log.wait_for_or(
        0,
        LONG,
        |l| parse_serving(l).is_some(),
        || !is_alive(sp.pid),
    );
    let Some((_, line)) = line else {
        let text = sp.log.text();
        // Creating a PID namespace needs privileges a developer's sandbox may lack.
        assert!(
            !in_ci(),
            "hello did not start under unshare --pid in CI; log:\n{text}"
        );
        eprintln!("skipped: unshare --pid failed:\n{text}");
        return;
    };
    let addr = parse_serving(&line).unwrap();
    let (greeting, pid) = hello_at(&addr).unwrap();
    assert_eq!(
        (greeting.as_str(), pid),
        (V1_GREETING, 1),
        "hello is PID 1 inside"
    );

    // Its PID outside the namespace: the child of unshare.
    let mut outer = None;
    assert!(poll_until(SHORT, || {
        outer = children_of(sp.pid).first().map(|p| p.pid);
        outer.is_some()
    }));
    let outer = outer.unwrap();

    ctx.install(Version::V2);
    signal(outer, libc::SIGUSR2);
    let failed = sp.log.wait_for_or(
        0,
        LONG,
        |l| l.contains("upgrade failed"),
        || !is_alive(outer),
    );
    let (_, failed) = failed.unwrap_or_else(|| panic!("no failure logged:\n{}", sp.log.text()));
    assert!(
        failed.contains("PID 1") && failed.contains("handover run"),
        "the reason must name PID 1 and the supervisor: {failed}"
    );
    // Still the same process, same version.
    assert!(is_alive(outer));
    assert_eq!(
        hello_at(&addr).unwrap(),
        (V1_GREETING.to_string(), 1),
        "still serving as before"
    );

    signal(outer, libc::SIGTERM);
    match wait_exit(sp.pid, Duration::from_secs(10)) {
        Ok(_) => {}
        Err(e) => panic!("did not stop: {e}; log:\n{}", sp.log.text()),
    }
}
