//! A rolling restart behind a load balancer, on loopback, as Kubernetes does it: three
//! replicas of `hello` behind the test's own balancer (`fleet/lb.rs`: polls `/healthz` every
//! 500 ms, stops sending new connections to a replica whose probe failed, never retries).
//! Each replica in turn: start its replacement on a new port, register it once healthy,
//! `SIGTERM` the old one; keep-alive and close load runs through the balancer all along.
//!
//! With `--lame-duck 2s` no request fails: the old replica answers 503 on `/healthz` but keeps
//! serving until the balancer has taken it out, and only then drains. Without it the same
//! harness loses requests: the balancer sends connections to a replica that has stopped
//! accepting until its next probe, which shows the harness can fail.

#[path = "fleet/lb.rs"]
mod lb;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use handover_testkit::hello_kit::*;
use lb::Lb;

/// The balancer's probe period (a kubelet `periodSeconds`, shortened).
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Requests each load must have had answered before the roll and after it.
const WARM: usize = 30;

fn tcp(server: &Server) -> SocketAddr {
    match server.tcp_addr() {
        Addr::Tcp(a) => *a,
        Addr::Unix(_) => unreachable!("a tcp listener"),
    }
}

/// What a roll cost: the loads' figures, the connections the balancer dropped.
struct Rolled {
    keep_alive: LoadStats,
    close: LoadStats,
    took: Duration,
}

impl Rolled {
    fn failed(&self) -> usize {
        self.keep_alive.failures.len() + self.close.failures.len()
    }

    fn total(&self) -> usize {
        self.failed() + self.keep_alive.ok + self.close.ok
    }

    fn report(&self, what: &str) {
        eprintln!(
            "fleet {what}: failed/total {}/{} in {:.1}s\n  keep-alive: {}\n  close: {}",
            self.failed(),
            self.total(),
            self.took.as_secs_f64(),
            self.keep_alive.summary(),
            self.close.summary()
        );
    }
}

/// Starts three replicas with `extra` arguments behind a balancer, rolls each under load.
fn roll(extra: &[&str]) -> Rolled {
    let ctx = Ctx::new();
    let lb = Lb::start(PROBE_EVERY);
    let start_replica = || {
        let r = ctx.start(extra);
        lb.add(tcp(&r));
        assert!(
            lb.wait_healthy(tcp(&r), SHORT),
            "the balancer never found replica pid {} healthy; log:\n{}",
            r.pid,
            r.log.text()
        );
        r
    };
    let mut replicas: Vec<Server> = (0..3).map(|_| start_replica()).collect();
    let t0 = Instant::now();
    let keep_alive = Load::start(&lb.addr(), 3, LoadMode::KeepAlive);
    let close = Load::start(&lb.addr(), 3, LoadMode::Close);
    keep_alive.wait_more(WARM);
    close.wait_more(WARM);
    for slot in replicas.iter_mut() {
        let new = start_replica();
        let old = std::mem::replace(slot, new);
        old.signal(libc::SIGTERM);
        match wait_exit(old.pid, LONG) {
            Ok(Some(st)) => assert!(st.success(), "old replica {} ended {st:?}", old.pid),
            other => panic!("old replica {} did not exit: {other:?}", old.pid),
        }
        // The balancer learns it is gone only from its probes, as an endpoint controller
        // does; it is forgotten once they have failed.
        assert!(
            poll_until(SHORT, || !lb.is_healthy(tcp(&old))),
            "the balancer still finds the exited replica healthy"
        );
        lb.remove(tcp(&old));
        assert!(
            lb.sent_to(tcp(slot)) > 0 || poll_until(SHORT, || lb.sent_to(tcp(slot)) > 0),
            "the new replica got no connection"
        );
    }
    keep_alive.wait_more(WARM);
    close.wait_more(WARM);
    let rolled = Rolled {
        keep_alive: keep_alive.finish(),
        close: close.finish(),
        took: t0.elapsed(),
    };
    // Every request of the new replicas' era was answered by one of them.
    for r in &replicas {
        assert!(
            rolled.keep_alive.by_pid.contains_key(&r.pid)
                || rolled.close.by_pid.contains_key(&r.pid),
            "replica {} answered nothing",
            r.pid
        );
    }
    assert_eq!(lb.dropped(), 0, "the balancer always had a healthy replica");
    rolled
}

#[test]
fn a_rolling_restart_with_a_lame_duck_loses_no_request() {
    let rolled = roll(&["--lame-duck", "2s"]);
    rolled.report("with --lame-duck 2s");
    rolled.keep_alive.assert_no_failures();
    rolled.close.assert_no_failures();
}

#[test]
fn the_same_roll_without_a_lame_duck_loses_requests() {
    let rolled = roll(&[]);
    rolled.report("without a lame duck");
    assert!(
        rolled.failed() > 0,
        "the harness must be able to fail: without a lame duck the balancer sends connections to a replica that no longer accepts"
    );
}
