//! The lame-duck stop of a library-mode server (`hello --lame-duck DUR`), end to end: after
//! `SIGTERM` `/healthz` answers 503 while `/` is still served on new connections, then the
//! drain and a clean exit; a second `SIGTERM` exits at once; an upgrade is not a stop, so
//! `/healthz` stays 200 through it and it does not wait for the lame duck.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handover_testkit::hello_kit::*;

/// The line the server logs when its lame duck begins.
const LAME_DUCK_BEGINS: &str = "lame duck for";

fn health(server: &Server) -> u16 {
    match server.get("/healthz") {
        Ok(r) => r.status,
        Err(e) => panic!("GET /healthz failed: {e}; log:\n{}", server.log.text()),
    }
}

#[test]
fn sigterm_with_a_lame_duck_fails_health_but_serves_then_exits() {
    let ctx = Ctx::new();
    let server = ctx.start(&["--lame-duck", "3s"]);
    assert_eq!(health(&server), 200);
    let from = server.log.len();
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    assert!(
        server
            .log
            .wait_for(from, SHORT, |l| l.contains(LAME_DUCK_BEGINS))
            .is_some(),
        "no lame-duck line; log:\n{}",
        server.log.text()
    );
    let r = server.get("/healthz").expect("GET /healthz in lame duck");
    assert_eq!(r.status, 503, "body {:?}", r.body);
    assert_eq!(r.body, "stopping\n");
    // New connections are still accepted and served by the same process.
    for _ in 0..5 {
        let (greeting, pid) = server.hello();
        assert_eq!((greeting.as_str(), pid), (V1_GREETING, server.pid));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the checks above ran inside the lame duck (took {:?})",
        t0.elapsed()
    );
    let st = match wait_exit(server.pid, LONG) {
        Ok(Some(st)) => st,
        other => panic!("no exit: {other:?}; log:\n{}", server.log.text()),
    };
    assert!(st.success(), "{st:?}; log:\n{}", server.log.text());
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "exited after {:?}, before its lame duck was over",
        t0.elapsed()
    );
    assert!(server.log.contains("lame duck over; draining"));
}

#[test]
fn a_second_sigterm_in_lame_duck_exits_at_once() {
    let ctx = Ctx::new();
    let server = ctx.start(&["--lame-duck", "60s"]);
    let from = server.log.len();
    server.signal(libc::SIGTERM);
    assert!(server
        .log
        .wait_for(from, SHORT, |l| l.contains(LAME_DUCK_BEGINS))
        .is_some());
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let st = match wait_exit(server.pid, SHORT) {
        Ok(Some(st)) => st,
        other => panic!(
            "no exit within {SHORT:?}: {other:?}; log:\n{}",
            server.log.text()
        ),
    };
    assert_eq!(st.code(), Some(1), "{st:?}");
    assert!(t0.elapsed() < SHORT, "{:?}", t0.elapsed());
}

#[test]
fn an_upgrade_keeps_health_200_and_does_not_wait_for_the_lame_duck() {
    let ctx = Ctx::new();
    let mut server = ctx.start(&["--lame-duck", "60s"]);
    // Probes on fresh connections all through the upgrade, as a load balancer sends them.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr().clone();
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut bad) = (0usize, Vec::new());
            let until = Instant::now() + LONG;
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                match get(&addr, "/healthz") {
                    Ok(r) if r.status == 200 => ok += 1,
                    other => bad.push(format!("{other:?}")),
                }
            }
            (ok, bad)
        })
    };
    ctx.install(Version::V2);
    let t0 = Instant::now();
    let (_, new) = server.upgrade(libc::SIGUSR2);
    let took = t0.elapsed();
    server.wait_answering_pid(new);
    assert_eq!(health(&server), 200);
    stop.store(true, Ordering::SeqCst);
    let (ok, bad) = prober.join().unwrap();
    assert!(
        bad.is_empty(),
        "health probes failed during the upgrade: {bad:?}"
    );
    assert!(ok > 0);
    assert!(
        took < Duration::from_secs(30),
        "the upgrade took {took:?}: it must not wait for the 60 s lame duck"
    );
    eprintln!("upgrade took {took:?}; {ok} health probes, all 200");
}
