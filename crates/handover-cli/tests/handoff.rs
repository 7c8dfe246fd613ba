//! Socket-mode upgrades of a worker that uses the library (`hello`): the supervisor holds the
//! new worker in its handshake until the old one has stopped accepting, so no fresh connection
//! is answered by the old version once the new one has answered anyone.

use std::fs;

use handover_testkit::binaries::binaries;
use handover_testkit::cli_kit::*;
use handover_testkit::sys::free_port;

const UPGRADES: usize = 10;

/// Puts `from` in place as `<dir>/hello` the way a deploy does: copied beside it, renamed over.
fn install(ctx: &Ctx, from: &std::path::Path) -> std::path::PathBuf {
    let next = ctx.path("hello.next");
    fs::copy(from, &next).unwrap();
    let path = ctx.path("hello");
    fs::rename(&next, &path).unwrap();
    path
}

/// Ten upgrades of `hello` under `handover run --listen` while eight clients open a connection
/// per request without pause: no request fails, and not one connection made after the new
/// worker's first answer is answered by an older one (the timing is taken on the safe side,
/// see `Stats::stale`). Without the hand-off (the new worker accepting from its READY on, the
/// old one until it has acted on its SIGTERM) the old workers answer some of them.
#[test]
fn a_library_worker_takes_over_without_a_stale_answer() {
    takes_over_without_a_stale_answer(&[], &[], LONG);
}

/// The same with workers that have a lame duck of their own (`hello --lame-duck 60s`): told on
/// its channel that it is replaced, the old worker stops accepting at once and drains at its
/// stop signal, instead of serving on for a minute (and saying `STOPPING=1` as its lame duck
/// begins, which let the new one accept beside it: stale answers). The drain timeout is
/// longer than the lame duck, so that no SIGKILL ends a lame duck early; each old worker must
/// be gone within 5 s of its upgrade (it has no request in progress for long).
#[test]
fn a_library_worker_with_a_lame_duck_is_replaced_at_once() {
    takes_over_without_a_stale_answer(&["--drain-timeout", "120s"], &["--lame-duck", "60s"], SHORT);
}

/// Ten upgrades under load (`run_args` for `handover run`, `worker_args` for hello); each old
/// worker must exit within `exit_within` once the new one answers.
fn takes_over_without_a_stale_answer(
    run_args: &[&str],
    worker_args: &[&str],
    exit_within: std::time::Duration,
) {
    let ctx = Ctx::new();
    let bins = binaries();
    let addr = format!("127.0.0.1:{}", free_port());
    let hello = install(&ctx, &bins.v1);
    let mut args = vec!["--listen", &addr];
    args.extend_from_slice(run_args);
    args.extend(["--", hello.to_str().unwrap(), "--listen", &addr]);
    args.extend_from_slice(worker_args);
    let sup = ctx.start(&args);
    sup.log.expect(0, "is ready (", LONG);
    upgrade_without_a_stale_answer(&ctx, &sup, UPGRADES, exit_within, |i| {
        install(&ctx, if i % 2 == 0 { &bins.v2 } else { &bins.v1 });
    });
    let handed_off = sup
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("is ready (READY on its handshake channel)"))
        .count();
    assert_eq!(handed_off, UPGRADES + 1, "every worker used the handshake");
}
