//! The concise human table printed to stdout.

use std::fmt::Write;

use super::model::{Cell, Report, RunReport, Scenario, SteadyAggregate};
use super::summary::{floor_cell, idle_line, opt};

const COLS: [(&str, usize); 18] = [
    ("run", 24),
    ("server", 15),
    ("requests", 9),
    ("req/s", 8),
    ("failed", 6),
    ("conn", 5),
    ("read", 5),
    ("write", 5),
    ("tmo", 4),
    ("non2xx", 6),
    ("body", 4),
    ("stale", 5),
    ("ho-med", 6),
    ("ho-max", 6),
    ("floor", 6),
    ("p50", 6),
    ("p99", 6),
    ("max", 6),
];

fn line(out: &mut String, cells: &[String]) {
    let mut s = String::new();
    for (i, ((_, w), c)) in COLS.iter().zip(cells).enumerate() {
        if i < 2 {
            let _ = write!(s, "{c:<w$} ");
        } else {
            let _ = write!(s, "{c:>w$} ");
        }
    }
    let _ = writeln!(out, "{}", s.trim_end());
}

fn fail(r: &RunReport, k: &str) -> String {
    r.failures.get(k).copied().unwrap_or(0).to_string()
}

fn run_row(out: &mut String, label: String, r: &RunReport) {
    let (ho_med, ho_max, floor, probe_stale) = match &r.upgrade_summary {
        Some(u) => (
            opt(u.handover_ms_median),
            opt(u.handover_ms_max),
            floor_cell(u),
            u.stale,
        ),
        None => ("-".into(), "-".into(), "-".into(), 0),
    };
    let body = r.failures.get("wrong_body").copied().unwrap_or(0)
        + r.failures.get("protocol").copied().unwrap_or(0);
    line(
        out,
        &[
            label,
            r.server.clone(),
            r.requests.to_string(),
            format!("{:.0}", r.rps),
            r.failed.to_string(),
            fail(r, "connect"),
            fail(r, "read"),
            fail(r, "write"),
            fail(r, "timeout"),
            fail(r, "non_2xx"),
            body.to_string(),
            (r.stale + u64::from(probe_stale)).to_string(),
            ho_med,
            ho_max,
            floor,
            format!("{:.2}", r.latency_ms.p50),
            format!("{:.2}", r.latency_ms.p99),
            format!("{:.1}", r.latency_ms.max),
        ],
    );
}

fn steady_row(out: &mut String, s: &SteadyAggregate) {
    let dash = || "-".to_string();
    line(
        out,
        &[
            format!("(c) steady, median of {}", s.runs),
            s.server.clone(),
            s.requests.to_string(),
            format!("{:.0}", s.rps_median),
            s.failed.to_string(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            s.stale.to_string(),
            dash(),
            dash(),
            dash(),
            format!("{:.2}", s.latency_ms.p50),
            format!("{:.2}", s.latency_ms.p99),
            format!("{:.1}", s.latency_ms.max),
        ],
    );
}

fn label(r: &RunReport) -> String {
    match r.label.as_str() {
        "a" => "(a) upgrades".into(),
        "b" => "(b) upgrades".into(),
        l if l.starts_with("peer:") => "(p) peer upgrades".into(),
        l => l.into(),
    }
}

fn cell(out: &mut String, c: &Cell) {
    let _ = writeln!(out, "\n== {} / {} connections", c.mode, c.conns);
    let header: Vec<String> = COLS.iter().map(|(h, _)| h.to_string()).collect();
    line(out, &header);
    for r in c.runs.iter().filter(|r| r.scenario == Scenario::Upgrade) {
        run_row(out, label(r), r);
    }
    for s in &c.steady {
        steady_row(out, s);
    }
    for r in c
        .runs
        .iter()
        .filter(|r| r.generator == "wrk" && r.scenario == Scenario::Steady)
    {
        run_row(out, label(r), r);
    }
    notes(out, c);
    fastest(out, c);
    let x = &c.ratios;
    let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
    let n = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    let _ = writeln!(
        out,
        "ratios: a/c req/s {} (target ≥0.90) | a/c p99 {} (≤2) | steady {} {} (median of pairs, ≥0.98) | b/c req/s {} | failed a={} (0) b={}",
        f(x.a_over_c_rps),
        f(x.a_over_c_p99),
        c.ab.as_ref()
            .map_or_else(|| "a/b".into(), |ab| format!("{}/{}", ab.subject, ab.baseline)),
        f(x.steady_ab_median),
        f(x.b_over_c_rps),
        n(x.a_failed),
        n(x.b_failed),
    );
    if let Some(ab) = c.ab.as_ref().filter(|ab| !ab.ratios.is_empty()) {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "A/B steady req/s in run order: {} [{}] vs {} [{}]",
            ab.subject,
            list(&ab.subject_rps),
            ab.baseline,
            list(&ab.baseline_rps)
        );
    }
}

/// The rows whose median handover time is the cell's best, as issue 16 counts it: within
/// max(10 %, 1 ms) of the smallest median.
fn fastest(out: &mut String, c: &Cell) {
    let medians: Vec<(&str, f64)> = c
        .runs
        .iter()
        .filter(|r| r.scenario == Scenario::Upgrade)
        .filter_map(|r| {
            Some((
                r.server.as_str(),
                r.upgrade_summary.as_ref()?.handover_ms_median?,
            ))
        })
        .collect();
    best_line(out, "handover time", &medians);
}

/// `WHAT best (median within …): rows`, when there is any median.
fn best_line(out: &mut String, what: &str, medians: &[(&str, f64)]) {
    if let Some((best, rows)) = within_best(medians) {
        let _ = writeln!(
            out,
            "{what} best (median within max(10 %, 1 ms) of {best:.1} ms): {}",
            rows.join(", ")
        );
    }
}

/// The smallest median and every row within max(10 %, 1 ms) of it, in the given order.
fn within_best<'a>(medians: &[(&'a str, f64)]) -> Option<(f64, Vec<&'a str>)> {
    let best = medians.iter().map(|&(_, m)| m).reduce(f64::min)?;
    let limit = best + (best * 0.1).max(1.0);
    let rows = medians
        .iter()
        .filter(|&&(_, m)| m <= limit)
        .map(|&(name, _)| name)
        .collect();
    Some((best, rows))
}

/// Upgrades that went wrong and processes that did not stop cleanly.
fn notes(out: &mut String, c: &Cell) {
    for r in &c.runs {
        for u in r.upgrades.iter().filter(|u| u.error.is_some()) {
            let _ = writeln!(
                out,
                "! {} {}: upgrade {} ({} pid {}): {} (server log: {})",
                label(r),
                r.server,
                u.index,
                u.from.label_to(u.to),
                u.old_pid,
                u.error.as_deref().unwrap_or_default(),
                r.server_log
            );
        }
        let st = &r.stop;
        if st.killed > 0 || st.left_behind > 0 || !st.abnormal_exits.is_empty() {
            let _ = writeln!(
                out,
                "! {} {}: stop killed {} left {} abnormal exits {:?}",
                label(r),
                r.server,
                st.killed,
                st.left_behind,
                st.abnormal_exits
            );
        }
    }
}

/// Renders the whole table.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for p in &report.peers {
        let _ = writeln!(out, "peer {}: {}", p.name, p.detail);
    }
    for c in &report.cells {
        cell(&mut out, c);
    }
    let tls = report.meta["tls"].as_bool().unwrap_or(false);
    super::versus::render(&mut out, &report.versus, tls);
    if !report.idle.is_empty() {
        let _ = writeln!(
            out,
            "\n== idle handover (no load; upgrade action → first new-version 200 on a fresh connection)"
        );
        for r in &report.idle {
            let _ = writeln!(out, "{}", idle_line(r));
            for u in r.upgrades.iter().filter(|u| u.error.is_some()) {
                let _ = writeln!(
                    out,
                    "! idle {}: upgrade {} (pid {}): {} (server log: {})",
                    r.server,
                    u.index,
                    u.old_pid,
                    u.error.as_deref().unwrap_or_default(),
                    r.server_log
                );
            }
        }
        let medians: Vec<(&str, f64)> = report
            .idle
            .iter()
            .filter_map(|r| Some((r.server.as_str(), r.summary.handover_ms_median?)))
            .collect();
        best_line(&mut out, "idle handover", &medians);
    }
    if !report.idle_conns.is_empty() {
        let _ = writeln!(
            out,
            "\n== idle keep-alive connections drained by one upgrade (FIN within the deadline, old exit, reconnects answered by the new version)"
        );
        for r in &report.idle_conns {
            for l in crate::idle_conns::summary::lines(r) {
                let _ = writeln!(out, "{l}");
            }
        }
    }
    if let Some(p) = &report.proxy {
        crate::proxy::table::render(&mut out, p);
    }
    if let Some(f) = &report.supervisor_footprint {
        let _ = writeln!(
            out,
            "\n== supervisor footprint (RSS and open fds of `handover run`, one worker left at each sample)"
        );
        for l in crate::supervisors::footprint::lines(f) {
            let _ = writeln!(out, "{l}");
        }
    }
    let _ = writeln!(
        out,
        "\nfailed = requests lost (never retried); stale = load connections opened after the new version had answered a probe but served by an older one, plus probes answered by the old version after the switch (both must be 0); ho = handover time, ms; floor = median round trip of the same probe under the same load just before each upgrade (each handover time includes at least one such trip), ms; latency in ms."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::within_best;

    #[test]
    fn best_is_within_ten_percent_or_one_millisecond() {
        let rows = [("a", 20.2), ("b", 18.3), ("c", 20.1), ("d", 24.1)];
        // 18.3 + 1.83 = 20.13: c is in, a just out.
        assert_eq!(within_best(&rows), Some((18.3, vec!["b", "c"])));
        // Under 10 ms the 1 ms floor counts: 3.6 + 1.0.
        let rows = [("a", 3.6), ("b", 4.6), ("c", 4.7)];
        assert_eq!(within_best(&rows), Some((3.6, vec!["a", "b"])));
        assert_eq!(within_best(&[]), None);
    }
}
