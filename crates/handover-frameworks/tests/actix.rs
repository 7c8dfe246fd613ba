//! examples/actix.rs end to end: actix-web on a handover listener, upgraded by `SIGUSR2`
//! five times while keep-alive and one-request-per-connection clients send requests without
//! pause. Not one request may fail.

use handover_testkit::hello_kit::*;

/// Installs the actix example as `<dir>/actix` and starts it on a free loopback port.
fn start(ctx: &Ctx) -> Server {
    let exe = ctx.path("actix");
    std::fs::copy(handover_testkit::binaries::example("actix"), &exe)
        .expect("copy the actix example");
    let mut cmd = ctx.command(&exe);
    cmd.arg("127.0.0.1:0");
    ctx.start_with(cmd, 1)
}

#[test]
fn actix_upgraded_five_times_under_load_without_a_failed_request() {
    let ctx = Ctx::new();
    let mut server = start(&ctx);
    let keep_alive = Load::start(server.addr(), 8, LoadMode::KeepAlive);
    let close = Load::start(server.addr(), 4, LoadMode::Close);
    keep_alive.wait_more(200);
    close.wait_more(50);
    for _ in 0..5 {
        // Waits for the handover, the old process's exit with status 0 and `GET /` from the
        // new one.
        let (_old, new) = server.upgrade(libc::SIGUSR2);
        // The keep-alive clients moved over too: the drain's `Connection: close` did it.
        keep_alive.wait_seen(new);
        close.wait_seen(new);
        keep_alive.wait_more(200);
    }
    let (keep_alive, close) = (keep_alive.finish(), close.finish());
    eprintln!("keep-alive: {}", keep_alive.summary());
    eprintln!("close: {}", close.summary());
    keep_alive.assert_no_failures();
    close.assert_no_failures();
    assert_eq!(keep_alive.by_pid.len(), 6, "{}", keep_alive.summary());
    let exit = server.stop();
    assert!(exit.success(), "the last generation ended with {exit:?}");
}
