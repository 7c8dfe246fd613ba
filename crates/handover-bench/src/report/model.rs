//! The report's data, as written to `report.json`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::stats::{Failure, Stats, SLICE};
use crate::process::StopReport;
use crate::upgrade::{UpgradeRecord, UpgradeSummary};

/// Latency of successful requests, milliseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// From a histogram in microseconds.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: (h.mean() / 1e3 * 1e3).round() / 1e3,
        }
    }
}

/// Per-100 ms series of one run (index i covers `[i*slice_ms, (i+1)*slice_ms)` from the
/// run's start).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Series {
    /// Slice width, ms.
    pub slice_ms: u64,
    /// Successful requests answered by v1.
    pub v1: Vec<u32>,
    /// Successful requests answered by v2.
    pub v2: Vec<u32>,
    /// Failed requests, all kinds.
    pub failed: Vec<u32>,
    /// Failed requests by kind (kinds that occurred only).
    pub failed_by_kind: BTreeMap<&'static str, Vec<u32>>,
    /// Stale answers.
    pub stale: Vec<u32>,
}

impl Series {
    /// From merged load counts.
    pub fn of(stats: &Stats) -> Self {
        let s = &stats.slices;
        let mut by_kind = BTreeMap::new();
        for (k, kind) in Failure::ALL.iter().enumerate() {
            if s.iter().any(|x| x.failed[k] > 0) {
                by_kind.insert(kind.name(), s.iter().map(|x| x.failed[k]).collect());
            }
        }
        Series {
            slice_ms: SLICE.as_millis() as u64,
            v1: s.iter().map(|x| x.ok[0]).collect(),
            v2: s.iter().map(|x| x.ok[1]).collect(),
            failed: s.iter().map(|x| x.failed_total()).collect(),
            failed_by_kind: by_kind,
            stale: s.iter().map(|x| x.stale).collect(),
        }
    }

    /// Successful requests per slice.
    pub fn ok(&self) -> impl Iterator<Item = u32> + '_ {
        self.v1.iter().zip(&self.v2).map(|(a, b)| a + b)
    }
}

/// Which scenario a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Load with upgrades ((a) for handover's drain, (b) for axum's).
    Upgrade,
    /// Load without upgrades ((c)).
    Steady,
}

/// One load run against one freshly started server.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Short label, e.g. `a`, `b`, `c:hello/handover#2`.
    pub label: String,
    /// Upgrade or steady.
    pub scenario: Scenario,
    /// Server kind, e.g. `hello/handover`.
    pub server: String,
    /// `keepalive` or `close`.
    pub mode: &'static str,
    /// Connections.
    pub conns: usize,
    /// Load generator: `handover-bench` or `wrk`.
    pub generator: &'static str,
    /// Seconds from the load's start until its last request ended.
    pub duration_s: f64,
    /// Requests finished (successful + failed).
    pub requests: u64,
    /// Successful requests (2xx, body with a known greeting).
    pub ok: u64,
    /// Successful requests per second.
    pub rps: f64,
    /// Failed requests by kind.
    pub failures: BTreeMap<&'static str, u64>,
    /// All failed requests.
    pub failed: u64,
    /// Load-client connections answered by an older generation than the one that had
    /// already answered a probe when they were opened.
    pub stale: u64,
    /// Connections opened by the load client.
    pub connections: u64,
    /// Responses carrying `Connection: close`.
    pub announced_closes: u64,
    /// Successful requests by build.
    pub versions: BTreeMap<&'static str, u64>,
    /// Latency of successful requests.
    pub latency_ms: Latency,
    /// Per-slice series (empty for wrk).
    pub series: Series,
    /// Upgrades fired during the run.
    pub upgrades: Vec<UpgradeRecord>,
    /// Their summary.
    pub upgrade_summary: Option<UpgradeSummary>,
    /// How the server stopped.
    pub stop: StopReport,
    /// The server's stdout/stderr.
    pub server_log: String,
}

/// Upgrades without load.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Server kind.
    pub server: String,
    /// Each upgrade.
    pub upgrades: Vec<UpgradeRecord>,
    /// Their summary.
    pub summary: UpgradeSummary,
    /// How the server stopped.
    pub stop: StopReport,
    /// The server's stdout/stderr.
    pub server_log: String,
}

/// Interleaved steady runs of the subject and the baseline.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AbComparison {
    /// Subject (handover's drain).
    pub subject: String,
    /// Baseline (axum's drain).
    pub baseline: String,
    /// req/s of each subject run, in order.
    pub subject_rps: Vec<f64>,
    /// req/s of each baseline run, in order.
    pub baseline_rps: Vec<f64>,
    /// subject/baseline per pair.
    pub ratios: Vec<f64>,
    /// Median of `ratios` (target ≥ 0.98).
    pub median_ratio: Option<f64>,
}

/// Steady runs of one server kind, combined.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyAggregate {
    /// Server kind.
    pub server: String,
    /// Runs combined.
    pub runs: usize,
    /// Requests over all runs.
    pub requests: u64,
    /// Failed requests over all runs.
    pub failed: u64,
    /// Stale answers over all runs.
    pub stale: u64,
    /// Median req/s over the runs.
    pub rps_median: f64,
    /// Latency over all runs' requests.
    pub latency_ms: Latency,
}

/// Ratios that answer the targets for one cell.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Ratios {
    /// (a) req/s ÷ steady req/s of handover's drain (target ≥ 0.90).
    pub a_over_c_rps: Option<f64>,
    /// (b) req/s ÷ steady req/s of axum's drain.
    pub b_over_c_rps: Option<f64>,
    /// (a) p99 ÷ steady p99 of handover's drain (target ≤ 2).
    pub a_over_c_p99: Option<f64>,
    /// Steady handover ÷ axum, median of interleaved pairs (target ≥ 0.98).
    pub steady_ab_median: Option<f64>,
    /// Failed requests in (a) (target 0).
    pub a_failed: Option<u64>,
    /// Failed requests in (b) (the baseline's loss).
    pub b_failed: Option<u64>,
}

/// All runs for one (mode, connections) pair.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// `keepalive` or `close`.
    pub mode: &'static str,
    /// Connections.
    pub conns: usize,
    /// Every run, in the order they ran.
    pub runs: Vec<RunReport>,
    /// Steady runs per server kind, combined.
    pub steady: Vec<SteadyAggregate>,
    /// Interleaved A/B steady comparison.
    pub ab: Option<AbComparison>,
    /// The targets' ratios.
    pub ratios: Ratios,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How the benchmark was run.
    pub meta: serde_json::Value,
    /// One per (mode, connections).
    pub cells: Vec<Cell>,
    /// Upgrades without load, per server kind.
    pub idle: Vec<IdleReport>,
    /// The peers selected with `--peers`: measured, or skipped and why.
    pub peers: Vec<crate::server::peers::PeerStatus>,
    /// Idle keep-alive connections drained by one upgrade (`--phases idle-conns`).
    pub idle_conns: Vec<crate::idle_conns::summary::IdleConnsReport>,
    /// Subject against baseline per case, over every repeat of it.
    pub versus: Vec<super::versus::Versus>,
    /// `--supervisor-footprint N`: the supervisor's RSS and fds over N upgrades.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor_footprint: Option<crate::supervisors::footprint::Footprint>,
    /// Proxy mode against direct and nginx, and upgrades through it (`--phases proxy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<crate::proxy::ProxyReport>,
}
