//! A hand-written SVG chart: the overview ([`super::overview`]) first, then per cell, one panel per run (upgrade runs, and the median steady
//! run of each server) with throughput per 100 ms slice by version, dashed lines at upgrade
//! moments and red marks where requests failed.
//!
//! Why not `plotters`: the chart is rectangles, polylines and text, about 200 lines here;
//! plotters' SVG backend measures text through a font backend (`ab_glyph` or `font-kit` with
//! system fonts), which would add a font stack and its build time to a benchmark that runs
//! in CI, and its output would depend on the fonts installed. This file writes the same bytes
//! everywhere, so two reports diff cleanly.

use std::fmt::Write;

use super::model::{Cell, Report, RunReport, Scenario};
use super::summary::opt;

const W: f64 = super::overview::W;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL_H: f64 = 150.0;
const PLOT_TOP: f64 = 24.0;
const PLOT_H: f64 = 100.0;
const HEAD_H: f64 = 28.0;

/// The chart for the whole report.
pub fn render(report: &Report) -> String {
    // The one-screen overview first, then the timelines.
    let (mut body, used) = super::overview::render(&super::overview::Overview::of(report), 10.0);
    let mut y = 10.0 + used;
    for c in &report.cells {
        let runs = chosen(c);
        if runs.is_empty() {
            continue;
        }
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.0}" font-size="16" font-weight="bold">{} / {} connections</text>"#,
            y + 18.0,
            c.mode,
            c.conns
        );
        y += HEAD_H;
        let max_rps = runs
            .iter()
            .flat_map(|r| r.series.ok())
            .max()
            .unwrap_or(1)
            .max(1) as f64
            * slices_per_sec(runs[0]);
        let span_s = runs
            .iter()
            .map(|r| r.series.v1.len() as f64 / slices_per_sec(r))
            .fold(1.0, f64::max);
        for r in runs {
            panel(&mut body, r, y, max_rps, span_s);
            y += PANEL_H;
        }
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h:.0}" viewBox="0 0 {W} {h:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
{body}<text x="10" y="{ly:.0}" fill="#555">blue: v1 answers/s, orange: v2 answers/s, black: all; dashed: upgrade signal; red: failed requests in that 100 ms slice (count); purple: stale answers</text>
</svg>
"##,
        h = y + 30.0,
        ly = y + 16.0
    )
}

fn slices_per_sec(r: &RunReport) -> f64 {
    1000.0 / r.series.slice_ms.max(1) as f64
}

/// Upgrade runs by this client, then the median steady run of each server.
fn chosen(c: &Cell) -> Vec<&RunReport> {
    let ours = |r: &&RunReport| r.generator == "handover-bench";
    let mut v: Vec<&RunReport> = c
        .runs
        .iter()
        .filter(ours)
        .filter(|r| r.scenario == Scenario::Upgrade)
        .collect();
    for s in &c.steady {
        let mut steady: Vec<&RunReport> = c
            .runs
            .iter()
            .filter(ours)
            .filter(|r| r.scenario == Scenario::Steady && r.server == s.server)
            .collect();
        steady.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        if let Some(m) = steady.get(steady.len() / 2) {
            v.push(m);
        }
    }
    v
}

fn title(r: &RunReport) -> String {
    let name = match (r.label.as_str(), r.scenario) {
        ("a", _) => "(a) upgrades".to_string(),
        ("b", _) => "(b) upgrades".to_string(),
        (l, _) if l.starts_with("peer:") => "(p) peer upgrades".to_string(),
        (_, Scenario::Steady) => "(c) steady, median run".to_string(),
        (l, _) => l.to_string(),
    };
    let mut t = format!(
        "{name} — {}: {:.0} req/s, failed {}, stale {}, p99 {:.2} ms",
        r.server, r.rps, r.failed, r.stale, r.latency_ms.p99
    );
    if let Some(u) = &r.upgrade_summary {
        t += &format!(
            ", {}/{} upgrades switched, handover median {} ms max {} ms",
            u.switched,
            u.count,
            opt(u.handover_ms_median),
            opt(u.handover_ms_max)
        );
    }
    t
}

fn panel(out: &mut String, r: &RunReport, y0: f64, max_rps: f64, span_s: f64) {
    let pw = W - LEFT - RIGHT;
    let top = y0 + PLOT_TOP;
    let x_of = |t_s: f64| LEFT + pw * (t_s / span_s).min(1.0);
    let y_of = |rps: f64| top + PLOT_H * (1.0 - (rps / max_rps).min(1.0));
    let sps = slices_per_sec(r);
    let dt = 1.0 / sps;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.0}" font-size="12">{}</text>"#,
        y0 + 16.0,
        xml(&title(r))
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top:.0}" width="{pw:.0}" height="{PLOT_H}" fill="none" stroke="#999"/>"##
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = max_rps * frac;
        let _ = writeln!(
            out,
            r##"<text x="{:.0}" y="{:.0}" text-anchor="end" fill="#555">{:.0}k/s</text>"##,
            LEFT - 4.0,
            y_of(v) + 4.0,
            v / 1000.0
        );
    }
    let mut t = 0.0;
    while t <= span_s + 1e-9 {
        let _ = writeln!(
            out,
            r##"<text x="{:.0}" y="{:.0}" text-anchor="middle" fill="#555">{t:.0}s</text>"##,
            x_of(t),
            top + PLOT_H + 13.0
        );
        t += if span_s > 15.0 { 2.0 } else { 1.0 };
    }
    for u in &r.upgrades {
        let x = x_of(u.at_ms / 1000.0);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top:.0}" x2="{x:.1}" y2="{:.0}" stroke="#888" stroke-dasharray="3,3"/>"##,
            top + PLOT_H
        );
    }
    // Only whole slices: the last one holds just the requests that ended after the run.
    let full = ((r.duration_s * sps).floor() as usize).max(1);
    let ok: Vec<u32> = r.series.ok().take(full).collect();
    for (series, color, width) in [
        (&r.series.v1, "#1f77b4", 1.2),
        (&r.series.v2, "#ff7f0e", 1.2),
        (&ok, "#000", 0.8),
    ] {
        let pts: Vec<String> = series
            .iter()
            .take(full)
            .enumerate()
            .map(|(i, &n)| {
                format!(
                    "{:.1},{:.1}",
                    x_of((i as f64 + 0.5) * dt),
                    y_of(f64::from(n) * sps)
                )
            })
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{}"/>"#,
            pts.join(" ")
        );
    }
    marks(out, &r.series.failed, "#d62728", top, dt, &x_of);
    marks(out, &r.series.stale, "#9467bd", top + 12.0, dt, &x_of);
}

fn marks(
    out: &mut String,
    counts: &[u32],
    color: &str,
    y: f64,
    dt: f64,
    x_of: &dyn Fn(f64) -> f64,
) {
    for (i, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let x = x_of((i as f64 + 0.5) * dt);
        let rad = 2.0 + f64::from(n).sqrt().min(6.0);
        let _ = writeln!(
            out,
            r#"<circle cx="{x:.1}" cy="{:.1}" r="{rad:.1}" fill="{color}" fill-opacity="0.7"/><text x="{:.1}" y="{:.1}" fill="{color}" font-size="9">{n}</text>"#,
            y + 6.0,
            x + rad + 1.0,
            y + 9.0
        );
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
