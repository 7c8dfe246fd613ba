//! The subject against the baseline per case (mode × connections), over every repeat of the
//! case (`--repeat`): upgrades and lost requests by kind summed, req/s under upgrades and in
//! steady runs as medians, and their ratios. This is what answers "0 failed over 100
//! upgrades" when one run (≤ 30 s) holds fewer. Over TLS a `Connection: close` request is one
//! full handshake, so its req/s are handshakes/s.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::model::{Cell, RunReport};
use crate::upgrade::median;

/// One server's side of a case.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    /// Server kind.
    pub server: String,
    /// Upgrade runs combined.
    pub upgrade_runs: usize,
    /// Upgrades fired over them.
    pub upgrades: usize,
    /// Upgrades whose new build answered.
    pub switched: usize,
    /// Requests finished in the upgrade runs.
    pub requests: u64,
    /// Requests lost in the upgrade runs (target 0 for the subject).
    pub failed: u64,
    /// Those by kind (kinds that occurred only).
    pub failures: BTreeMap<&'static str, u64>,
    /// Stale answers in the upgrade runs (load and probes).
    pub stale: u64,
    /// Median req/s of the upgrade runs.
    pub upgrade_rps: Option<f64>,
    /// Median req/s of the steady runs.
    pub steady_rps: Option<f64>,
}

/// Subject and baseline in one case.
#[derive(Debug, Clone, Serialize)]
pub struct Versus {
    /// `keepalive` or `close`.
    pub mode: &'static str,
    /// Connections.
    pub conns: usize,
    /// What one successful request is: `req/s`, or `handshakes/s` for close over TLS.
    pub unit: &'static str,
    /// Cells (repeats) combined.
    pub cells: usize,
    /// The subject (the first drain).
    pub subject: Side,
    /// The baseline (the second drain), when one ran.
    pub baseline: Option<Side>,
    /// Subject ÷ baseline, median req/s under upgrades.
    pub upgrade_ratio: Option<f64>,
    /// Subject ÷ baseline, median of every interleaved steady pair.
    pub steady_ratio: Option<f64>,
    /// Steady pairs behind `steady_ratio`.
    pub steady_pairs: usize,
}

/// One entry per distinct (mode, connections), in the order the cells ran.
pub fn of(cells: &[Cell], tls: bool) -> Vec<Versus> {
    let mut keys: Vec<(&'static str, usize)> = Vec::new();
    for c in cells {
        if !keys.contains(&(c.mode, c.conns)) {
            keys.push((c.mode, c.conns));
        }
    }
    keys.into_iter()
        .filter_map(|(mode, conns)| {
            let mine: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.mode == mode && c.conns == conns)
                .collect();
            case(mode, conns, &mine, tls)
        })
        .collect()
}

fn case(mode: &'static str, conns: usize, cells: &[&Cell], tls: bool) -> Option<Versus> {
    let abs: Vec<_> = cells.iter().filter_map(|c| c.ab.as_ref()).collect();
    let steady = |pick: fn(&super::model::AbComparison) -> &Vec<f64>| -> Option<f64> {
        let mut all: Vec<f64> = abs.iter().flat_map(|ab| pick(ab).iter().copied()).collect();
        median(&mut all)
    };
    let mut subject = side(cells, "a")?;
    subject.steady_rps = steady(|ab| &ab.subject_rps);
    let baseline = side(cells, "b").map(|mut b| {
        b.steady_rps = steady(|ab| &ab.baseline_rps);
        b
    });
    let mut pairs: Vec<f64> = abs
        .iter()
        .flat_map(|ab| ab.ratios.iter().copied())
        .collect();
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => Some((x / y * 1000.0).round() / 1000.0),
        _ => None,
    };
    Some(Versus {
        mode,
        conns,
        unit: if tls && mode == "close" {
            "handshakes/s"
        } else {
            "req/s"
        },
        cells: cells.len(),
        upgrade_ratio: ratio(
            subject.upgrade_rps,
            baseline.as_ref().and_then(|b| b.upgrade_rps),
        ),
        steady_pairs: pairs.len(),
        steady_ratio: median(&mut pairs).map(|m| (m * 1000.0).round() / 1000.0),
        subject,
        baseline,
    })
}

/// The upgrade runs labelled `label` over `cells`, combined; none if there are none.
fn side(cells: &[&Cell], label: &str) -> Option<Side> {
    let runs: Vec<&RunReport> = cells
        .iter()
        .flat_map(|c| c.runs.iter().filter(|r| r.label == label))
        .collect();
    let first = runs.first()?;
    let mut s = Side {
        server: first.server.clone(),
        upgrade_runs: runs.len(),
        ..Side::default()
    };
    for r in &runs {
        let u = r.upgrade_summary.as_ref();
        s.upgrades += u.map_or(0, |u| u.count);
        s.switched += u.map_or(0, |u| u.switched);
        s.requests += r.requests;
        s.failed += r.failed;
        s.stale += r.stale + u.map_or(0, |u| u64::from(u.stale));
        for (k, n) in r.failures.iter().filter(|(_, n)| **n > 0) {
            *s.failures.entry(k).or_default() += n;
        }
    }
    let mut rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
    s.upgrade_rps = median(&mut rps);
    Some(s)
}

fn kinds(f: &BTreeMap<&'static str, u64>) -> String {
    if f.is_empty() {
        return "none".into();
    }
    f.iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn side_line(out: &mut String, s: &Side, unit: &str) {
    let rate = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
    let _ = writeln!(
        out,
        "  {}: {} upgrades ({} switched) in {} runs, {} requests, failed {} [{}], stale {}, {unit} under upgrades {}, steady {}",
        s.server,
        s.upgrades,
        s.switched,
        s.upgrade_runs,
        s.requests,
        s.failed,
        kinds(&s.failures),
        s.stale,
        rate(s.upgrade_rps),
        rate(s.steady_rps),
    );
}

/// The section of the table; empty when there is nothing to combine.
pub fn render(out: &mut String, all: &[Versus], tls: bool) {
    if all.is_empty() {
        return;
    }
    let scheme = if tls {
        "HTTPS (--tls: ECDSA P-256, no session resumption; close = one full handshake per request)"
    } else {
        "HTTP"
    };
    let _ = writeln!(
        out,
        "\n== per case over all its runs, {scheme}; ratios subject ÷ baseline"
    );
    for v in all {
        let _ = writeln!(
            out,
            "{} / {} connections ({} cells, {}):",
            v.mode, v.conns, v.cells, v.unit
        );
        side_line(out, &v.subject, v.unit);
        if let Some(b) = &v.baseline {
            side_line(out, b, v.unit);
        }
        let _ = writeln!(
            out,
            "  ratio {}: under upgrades {}, steady {} (median of {} pairs); failed {} (target 0)",
            v.unit,
            times(v.upgrade_ratio),
            times(v.steady_ratio),
            v.steady_pairs,
            v.subject.failed,
        );
    }
}

/// `1.027x`, or `-` when there is no ratio.
fn times(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.3}x"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::build::{base, Header};
    use crate::report::model::{AbComparison, Ratios, Scenario};
    use crate::upgrade::UpgradeSummary;

    fn upgrade_run(label: &str, server: &str, rps: f64, lost: &[(&'static str, u64)]) -> RunReport {
        let mut r = base(&Header {
            label: label.into(),
            scenario: Scenario::Upgrade,
            server: server.into(),
            mode: "close",
            conns: 64,
            generator: "handover-bench",
        });
        r.rps = rps;
        r.requests = 1000;
        for &(k, n) in lost {
            r.failures.insert(k, n);
            r.failed += n;
        }
        r.upgrade_summary = Some(UpgradeSummary {
            count: 25,
            switched: 25,
            stale: 1,
            ..UpgradeSummary::default()
        });
        r
    }

    fn cell(a: RunReport, b: RunReport, pair: (f64, f64)) -> Cell {
        Cell {
            mode: "close",
            conns: 64,
            runs: vec![a, b],
            steady: Vec::new(),
            ab: Some(AbComparison {
                subject: "https/handover".into(),
                baseline: "https/hyper-util".into(),
                subject_rps: vec![pair.0],
                baseline_rps: vec![pair.1],
                ratios: vec![pair.0 / pair.1],
                median_ratio: Some(pair.0 / pair.1),
            }),
            ratios: Ratios::default(),
        }
    }

    /// Four repeats of one case: 100 upgrades, the losses of every run added by kind, the
    /// medians over all runs and pairs, and close over TLS counted in handshakes/s.
    #[test]
    fn repeats_of_a_case_add_up() {
        let cells: Vec<Cell> = (0..4u32)
            .map(|i| {
                let f = 2.0 * f64::from(i);
                cell(
                    upgrade_run("a", "https/handover", 2000.0 + f, &[]),
                    upgrade_run(
                        "b",
                        "https/hyper-util",
                        1000.0,
                        &[("read", 3), ("connect", u64::from(i))],
                    ),
                    (2100.0 + f, 1000.0),
                )
            })
            .collect();
        let v = of(&cells, true);
        assert_eq!(v.len(), 1);
        let v = &v[0];
        assert_eq!((v.cells, v.unit), (4, "handshakes/s"));
        assert_eq!((v.subject.upgrades, v.subject.switched), (100, 100));
        assert_eq!((v.subject.failed, v.subject.stale), (0, 4));
        assert!(v.subject.failures.is_empty());
        let b = v.baseline.as_ref().unwrap();
        assert_eq!(b.failed, 12 + 6);
        assert_eq!(b.failures.get("read"), Some(&12));
        assert_eq!(b.failures.get("connect"), Some(&6));
        assert_eq!(v.subject.upgrade_rps, Some(2003.0));
        assert_eq!(v.upgrade_ratio, Some(2.003));
        assert_eq!((v.steady_pairs, v.steady_ratio), (4, Some(2.103)));
        let mut out = String::new();
        render(&mut out, std::slice::from_ref(v), true);
        assert!(out.contains("https/hyper-util: 100 upgrades"), "{out}");
        assert!(out.contains("failed 18 [connect=6 read=12]"), "{out}");
        assert!(out.contains("under upgrades 2.003x"), "{out}");
    }

    #[test]
    fn plain_keep_alive_counts_requests_and_a_lone_subject_has_no_ratio() {
        let mut a = upgrade_run("a", "hello/handover", 5000.0, &[]);
        a.mode = "keepalive";
        let only = Cell {
            mode: "keepalive",
            conns: 64,
            runs: vec![a],
            steady: Vec::new(),
            ab: None,
            ratios: Ratios::default(),
        };
        let v = of(&[only], false);
        assert_eq!(v[0].unit, "req/s");
        assert!(v[0].baseline.is_none());
        assert_eq!((v[0].upgrade_ratio, v[0].steady_ratio), (None, None));
        let mut out = String::new();
        render(&mut out, &v, false);
        assert!(
            out.contains("under upgrades -, steady - (median of 0 pairs)"),
            "{out}"
        );
        assert!(of(&[], false).is_empty());
    }
}
