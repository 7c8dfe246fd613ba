//! `handover run --listen udp://...` with a Python worker (the kit's `fixtures/udp_worker.py`) that
//! takes the datagram socket from fd 3 and stops reading at SIGTERM: under a steady
//! request/response load through 10 upgrades, every datagram is answered exactly once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use handover_testkit::cli_kit::*;
use handover_testkit::udp::UdpLoad;

const RATE: u32 = 5_000;
const UPGRADES: usize = 10;

/// The one worker pid that is not in `known`, once there is one (bounded).
fn new_worker(sup: &Supervisor, known: &[i32]) -> i32 {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(p) = sup.worker_pids().into_iter().find(|p| !known.contains(p)) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no new worker; log:\n{}",
            sup.log.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_python_udp_worker_answers_every_datagram_exactly_once_through_ten_upgrades() {
    let ctx = Ctx::new();
    let worker = ctx.write_udp_worker();
    let sup = ctx.start(&[
        "--listen",
        "udp://127.0.0.1:0",
        "--",
        worker.to_str().unwrap(),
    ]);
    let line = sup.log.expect(0, "listening on udp://", LONG);
    let addr: SocketAddr = line
        .split("listening on udp://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse the address in {line:?}"));
    assert!(
        line.contains(&format!("udp_127.0.0.1_{}", addr.port())),
        "the fd name: {line}"
    );
    let load = UdpLoad::start(addr, RATE, Duration::from_secs(120));
    let mut generations = vec![new_worker(&sup, &[])];
    assert!(
        load.wait_answers_from(generations[0], 500, LONG),
        "the first worker does not answer; log:\n{}",
        sup.log.text()
    );
    let control = ctx.control().to_str().unwrap().to_string();
    for _ in 0..UPGRADES {
        let old = *generations.last().unwrap();
        let out = ctx.handover(&["upgrade", "--control", &control]);
        assert!(
            out.status.success(),
            "upgrade failed: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            sup.log.text()
        );
        let new = new_worker(&sup, &generations);
        generations.push(new);
        assert!(
            load.wait_answers_from(new, 200, LONG),
            "worker {new} does not answer; log:\n{}",
            sup.log.text()
        );
        assert!(
            poll_until(LONG, || !is_alive(old)),
            "old worker {old} still runs; log:\n{}",
            sup.log.text()
        );
    }
    let stats = load.finish(Duration::from_secs(3), &generations);
    eprintln!("udp under handover run: {}", stats.summary());
    assert_eq!(stats.unanswered_count, 0, "{}", stats.summary());
    assert_eq!(stats.duplicates, 0, "{}", stats.summary());
    assert_eq!(stats.garbage, 0, "{}", stats.summary());
    assert!(
        stats.per_generation.iter().all(|(_, n)| *n > 0),
        "{}",
        stats.summary()
    );
    assert!(
        stats.rate_per_s > RATE as f64 * 0.5,
        "the load did not hold its rate: {}",
        stats.summary()
    );
    assert_eq!(
        sup.log.text().matches("reading no more").count(),
        UPGRADES,
        "each old worker stops reading at SIGTERM; log:\n{}",
        sup.log.text()
    );
    let out = ctx.handover(&["stop", "--control", &control]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = sup.wait_exit(LONG);
    assert_eq!(st, 0, "supervisor exit status; log:\n{}", sup.log.text());
}
