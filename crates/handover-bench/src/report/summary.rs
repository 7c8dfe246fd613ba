//! Combining runs: steady aggregates, the interleaved A/B comparison, the targets' ratios,
//! and one-line summaries for progress output.

use std::sync::Arc;

use hdrhistogram::Histogram;

use super::model::{
    AbComparison, Cell, IdleReport, Latency, Ratios, RunReport, Scenario, SteadyAggregate,
};
use crate::load::Mode;
use crate::run::RunData;
use crate::server::ServerKind;
use crate::upgrade::median;

/// Builds a cell from its runs; `kinds[0]` is the subject, `kinds[1]` the baseline.
pub fn cell(mode: Mode, conns: usize, runs: Vec<RunData>, kinds: &[Arc<dyn ServerKind>]) -> Cell {
    let names: Vec<String> = kinds.iter().map(|k| k.name()).collect();
    let steady: Vec<SteadyAggregate> = names.iter().filter_map(|n| steady_of(&runs, n)).collect();
    let ab = match names.as_slice() {
        [subject, baseline, ..] => Some(ab_of(&runs, subject, baseline)),
        _ => None,
    };
    let reports: Vec<RunReport> = runs.into_iter().map(|d| d.report).collect();
    let by_label = |l: &str| reports.iter().find(|r| r.label == l);
    let steady_of_name =
        |n: Option<&String>| n.and_then(|n| steady.iter().find(|s| &s.server == n));
    let (a, b) = (by_label("a"), by_label("b"));
    let (ca, cb) = (steady_of_name(names.first()), steady_of_name(names.get(1)));
    let ratio = |x: f64, y: f64| (y > 0.0).then(|| round3(x / y));
    let ratios = Ratios {
        a_over_c_rps: a.zip(ca).and_then(|(a, c)| ratio(a.rps, c.rps_median)),
        b_over_c_rps: b.zip(cb).and_then(|(b, c)| ratio(b.rps, c.rps_median)),
        a_over_c_p99: a
            .zip(ca)
            .and_then(|(a, c)| ratio(a.latency_ms.p99, c.latency_ms.p99)),
        steady_ab_median: ab.as_ref().and_then(|x| x.median_ratio),
        a_failed: a.map(|r| r.failed),
        b_failed: b.map(|r| r.failed),
    };
    Cell {
        mode: mode.label(),
        conns,
        runs: reports,
        steady,
        ab,
        ratios,
    }
}

fn is_steady_ours(r: &RunReport, server: &str) -> bool {
    r.scenario == Scenario::Steady && r.generator == "handover-bench" && r.server == server
}

fn steady_of(runs: &[RunData], server: &str) -> Option<SteadyAggregate> {
    let mine: Vec<&RunData> = runs
        .iter()
        .filter(|d| is_steady_ours(&d.report, server))
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut hist: Option<Histogram<u64>> = None;
    for h in mine.iter().filter_map(|d| d.latency.as_ref()) {
        match hist.as_mut() {
            Some(acc) => {
                let _ = acc.add(h);
            }
            None => hist = Some(h.clone()),
        }
    }
    let mut rps: Vec<f64> = mine.iter().map(|d| d.report.rps).collect();
    Some(SteadyAggregate {
        server: server.to_string(),
        runs: mine.len(),
        requests: mine.iter().map(|d| d.report.requests).sum(),
        failed: mine.iter().map(|d| d.report.failed).sum(),
        stale: mine.iter().map(|d| d.report.stale).sum(),
        rps_median: median(&mut rps).unwrap_or(0.0),
        latency_ms: hist.as_ref().map(Latency::of).unwrap_or_default(),
    })
}

fn ab_of(runs: &[RunData], subject: &str, baseline: &str) -> AbComparison {
    let rps = |n: &str| -> Vec<f64> {
        runs.iter()
            .filter(|d| is_steady_ours(&d.report, n))
            .map(|d| d.report.rps)
            .collect()
    };
    let (s, b) = (rps(subject), rps(baseline));
    let ratios: Vec<f64> = s
        .iter()
        .zip(&b)
        .filter(|(_, b)| **b > 0.0)
        .map(|(s, b)| round3(s / b))
        .collect();
    let median_ratio = median(&mut ratios.clone()).map(round3);
    AbComparison {
        subject: subject.to_string(),
        baseline: baseline.to_string(),
        subject_rps: s,
        baseline_rps: b,
        ratios,
        median_ratio,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Failure kinds that occurred, as `kind=n` (or `0`).
pub fn failures_text(r: &RunReport) -> String {
    let parts: Vec<String> = r
        .failures
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(" ")
    }
}

/// One line about a finished run.
pub fn run_line(r: &RunReport) -> String {
    let mut s = format!(
        "{:.0} req/s, {} ok, failed {} [{}], stale {}, p50 {:.2} p99 {:.2} ms",
        r.rps,
        r.ok,
        r.failed,
        failures_text(r),
        r.stale,
        r.latency_ms.p50,
        r.latency_ms.p99
    );
    if let Some(u) = &r.upgrade_summary {
        s += &format!(
            ", upgrades {}/{} handover median {} max {} ms, probe stale {} errors {}",
            u.switched,
            u.count,
            opt(u.handover_ms_median),
            opt(u.handover_ms_max),
            u.stale,
            u.probe_errors_before + u.probe_errors_after
        );
    }
    if r.stop.killed > 0 || r.stop.left_behind > 0 {
        s += &format!(", KILLED {} LEFT {}", r.stop.killed, r.stop.left_behind);
    }
    s
}

/// One line about idle handovers.
pub fn idle_line(r: &IdleReport) -> String {
    let u = &r.summary;
    format!(
        "idle {}: switched {}/{}, handover median {} min {} max {} ms (probe floor {} ms), stale {}, probe errors {}, old exit median {} max {} ms",
        r.server,
        u.switched,
        u.count,
        opt(u.handover_ms_median),
        opt(u.handover_ms_min),
        opt(u.handover_ms_max),
        floor_cell(u),
        u.stale,
        u.probe_errors_before + u.probe_errors_after,
        opt(u.old_exit_ms_median),
        opt(u.old_exit_ms_max)
    )
}

/// The probe floor of a series: its median (`x.yz` below 1 ms, else `x.y`), `none` if probes
/// ran but none was answered with a 200, `-` if none ran.
pub fn floor_cell(u: &crate::upgrade::UpgradeSummary) -> String {
    match u.probe_floor_ms_median {
        Some(m) if m < 1.0 => format!("{m:.2}"),
        Some(m) => format!("{m:.1}"),
        None if u.probe_floor_unanswered > 0 => "none".into(),
        None => "-".into(),
    }
}

/// `x.y` or `-`.
pub fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}
