//! Turning a load generator's raw counts into a [`RunReport`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::model::{Latency, RunReport, Scenario, Series};
use crate::load::stats::{Failure, Stats};
use crate::wrk::WrkResult;

/// What identifies a run in the report.
#[derive(Debug, Clone)]
pub struct Header {
    /// Label.
    pub label: String,
    /// Upgrade or steady.
    pub scenario: Scenario,
    /// Server kind name.
    pub server: String,
    /// Mode label.
    pub mode: &'static str,
    /// Connections.
    pub conns: usize,
    /// `handover-bench` or `wrk`.
    pub generator: &'static str,
}

/// An empty report for `h`, to be filled in.
pub fn base(h: &Header) -> RunReport {
    RunReport {
        label: h.label.clone(),
        scenario: h.scenario,
        server: h.server.clone(),
        mode: h.mode,
        conns: h.conns,
        generator: h.generator,
        duration_s: 0.0,
        requests: 0,
        ok: 0,
        rps: 0.0,
        failures: BTreeMap::new(),
        failed: 0,
        stale: 0,
        connections: 0,
        announced_closes: 0,
        versions: BTreeMap::new(),
        latency_ms: Latency::default(),
        series: Series::default(),
        upgrades: Vec::new(),
        upgrade_summary: None,
        stop: Default::default(),
        server_log: String::new(),
    }
}

/// A run of this crate's client: merged counts and the time until its last request ended.
pub fn from_stats(h: &Header, stats: &Stats, elapsed: Duration) -> RunReport {
    let t = stats.total();
    let mut r = base(h);
    r.duration_s = elapsed.as_secs_f64();
    r.ok = u64::from(t.ok_total());
    r.failed = u64::from(t.failed_total());
    r.requests = r.ok + r.failed;
    r.rps = round1(r.ok as f64 / r.duration_s.max(1e-9));
    for (k, kind) in Failure::ALL.iter().enumerate() {
        r.failures.insert(kind.name(), u64::from(t.failed[k]));
    }
    r.stale = u64::from(t.stale);
    r.connections = stats.connections;
    r.announced_closes = stats.announced_closes;
    r.versions.insert("v1", u64::from(t.ok[0]));
    r.versions.insert("v2", u64::from(t.ok[1]));
    r.latency_ms = Latency::of(&stats.latency);
    r.series = Series::of(stats);
    r
}

/// A wrk run.
pub fn from_wrk(h: &Header, w: &WrkResult) -> RunReport {
    let mut r = base(h);
    r.duration_s = w.duration_s;
    let wrong = if w.counted { w.wrong } else { 0 };
    r.ok = w.requests.saturating_sub(w.non2xx + wrong);
    let fails = [
        ("connect", w.connect),
        ("read", w.read),
        ("write", w.write),
        ("timeout", w.timeout),
        ("non_2xx", w.non2xx),
        ("wrong_body", wrong),
    ];
    r.failures = fails.into_iter().collect();
    // wrk's timeouts are slow responses that still count in `requests`.
    r.failed = w.connect + w.read + w.write + w.non2xx + wrong;
    r.requests = r.ok + r.failed;
    r.rps = round1(r.ok as f64 / w.duration_s.max(1e-9));
    if w.counted {
        r.versions.insert("v1", w.v1);
        r.versions.insert("v2", w.v2);
    }
    r.latency_ms = Latency {
        p50: w.p50_ms,
        p99: w.p99_ms,
        max: w.p99_ms.max(w.max_ms),
        ..Latency::default()
    };
    r
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
