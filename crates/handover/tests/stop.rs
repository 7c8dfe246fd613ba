//! Graceful stop: SIGTERM/SIGINT finish in-flight requests and exit 0; a second signal ends the
//! process at once with a non-zero status.

use std::time::{Duration, Instant};

use handover_testkit::hello_kit::*;

fn graceful_stop_finishes_in_flight_request(sig: i32) {
    let ctx = Ctx::new();
    let server = ctx.start(&[]);
    let pending = PendingRequest::send(server.addr(), "/sleep/1500");
    pending.wait_accepted_by(server.pid, server.addr());
    let sent_at = pending.sent_at;
    let reader = pending.finish_in_background();

    let signalled = Instant::now();
    server.signal(sig);
    let (resp, arrived) = reader.join().unwrap();
    let resp = resp.unwrap_or_else(|e| {
        panic!(
            "in-flight request cut by the graceful stop: {e}\nlog:\n{}",
            server.log.text()
        )
    });
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.greeting_pid(),
        Some((V1_GREETING.to_string(), server.pid))
    );
    assert!(arrived - sent_at >= Duration::from_millis(1400));

    let st = wait_exit(server.pid, LONG)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log.text()))
        .expect("our child");
    assert!(
        st.success(),
        "graceful stop ended with {st:?}; log:\n{}",
        server.log.text()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "graceful stop took {:?}",
        signalled.elapsed()
    );
    assert_only_processes(&[], SHORT);
}

#[test]
fn sigterm_finishes_in_flight_request_then_exits_0() {
    graceful_stop_finishes_in_flight_request(libc::SIGTERM);
}

#[test]
fn sigint_finishes_in_flight_request_then_exits_0() {
    graceful_stop_finishes_in_flight_request(libc::SIGINT);
}

/// SIGTERM while a 10 s request runs, then (once the server has acknowledged the first one with
/// `STOPPING=1` on NOTIFY_SOCKET) a second SIGTERM: the process exits promptly, non-zero.
#[test]
fn second_sigterm_stops_at_once() {
    let ctx = Ctx::new();
    let notify = Notify::bind(ctx.path("notify.sock"));
    let mut cmd = ctx.hello_command();
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &notify.path);
    let server = ctx.start_with(cmd, 1);
    let pending = PendingRequest::send(server.addr(), "/sleep/10000");
    pending.wait_accepted_by(server.pid, server.addr());
    let reader = pending.finish_in_background();

    let from = notify.len();
    server.signal(libc::SIGTERM);
    notify.expect_field(from, "STOPPING=1");
    assert!(
        is_alive(server.pid),
        "exited before the in-flight request finished"
    );

    let second = Instant::now();
    server.signal(libc::SIGTERM);
    let st = wait_exit(server.pid, SHORT)
        .unwrap_or_else(|e| {
            panic!(
                "second SIGTERM did not stop the process: {e}; log:\n{}",
                server.log.text()
            )
        })
        .expect("our child");
    let took = second.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?} after the second SIGTERM"
    );
    assert!(!st.success(), "forced stop must not report success: {st:?}");
    let (resp, _) = reader.join().unwrap();
    assert!(
        !matches!(&resp, Ok(r) if r.status == 200),
        "the 10 s request cannot have completed: {resp:?}"
    );
    assert_only_processes(&[], SHORT);
}

/// `--drain-timeout 1s`: a request that would take 10 s does not hold the stop up.
#[test]
fn drain_timeout_bounds_the_graceful_stop() {
    let ctx = Ctx::new();
    let server = ctx.start(&["--drain-timeout", "1s"]);
    let pending = PendingRequest::send(server.addr(), "/sleep/10000");
    pending.wait_accepted_by(server.pid, server.addr());
    let reader = pending.finish_in_background();

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let st = wait_exit(server.pid, LONG)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log.text()))
        .expect("our child");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "stopped after {took:?}, before the 1s drain deadline"
    );
    assert!(
        took < Duration::from_secs(5),
        "stopped only after {took:?} with a 1s drain deadline"
    );
    assert_eq!(st.signal(), None, "ended by a signal: {st:?}");
    let (resp, _) = reader.join().unwrap();
    assert!(
        !matches!(&resp, Ok(r) if r.status == 200),
        "the 10 s request cannot have completed: {resp:?}"
    );
    assert_only_processes(&[], SHORT);
}
