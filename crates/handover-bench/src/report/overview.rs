//! The one-screen summary that opens the report (issue 16): for every server, per cell, the
//! requests it failed (bars on a log scale, a zero drawn as a plain `0` with no bar) and its
//! handover time under load (median as a dot, max as the end of a line, log scale); the idle
//! handover time; and the cells' steady-state ratios. Every number is read from the
//! [`Report`], so it is also in `report.json`.

use std::fmt::Write;

use super::model::{Report, Scenario};

/// Width of the picture (the timelines below use the same).
pub const W: f64 = 1000.0;
const NAME_W: f64 = 200.0;
const ROW_H: f64 = 18.0;

/// One server's figures in one cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Failed requests.
    pub failed: u64,
    /// Stale answers.
    pub stale: u64,
    /// Handover time, median and max, ms.
    pub handover_ms: Option<(f64, f64)>,
}

/// What the overview draws, taken from the report.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// `keepalive/64` … in run order.
    pub cells: Vec<String>,
    /// Servers in first-seen order, with one entry per cell (`None`: not run there).
    pub servers: Vec<(String, Vec<Option<Figures>>)>,
    /// Idle handover time per server, median and max, ms.
    pub idle: Vec<(String, Option<(f64, f64)>)>,
    /// Steady-state ratio (subject ÷ baseline, median of interleaved pairs) per cell.
    pub steady: Vec<(String, Option<f64>)>,
}

impl Overview {
    /// The upgrade runs of our load client, per server and cell.
    pub fn of(report: &Report) -> Self {
        let mut o = Overview::default();
        for (ci, c) in report.cells.iter().enumerate() {
            o.cells.push(format!("{}/{}", c.mode, c.conns));
            o.steady
                .push((format!("{}/{}", c.mode, c.conns), c.ratios.steady_ab_median));
            for r in c
                .runs
                .iter()
                .filter(|r| r.scenario == Scenario::Upgrade && r.generator == "handover-bench")
            {
                let i = match o.servers.iter().position(|(n, _)| *n == r.server) {
                    Some(i) => i,
                    None => {
                        o.servers.push((r.server.clone(), Vec::new()));
                        o.servers.len() - 1
                    }
                };
                let row = &mut o.servers[i].1;
                row.resize(report.cells.len(), None);
                let u = r.upgrade_summary.as_ref();
                row[ci] = Some(Figures {
                    failed: r.failed,
                    stale: r.stale,
                    handover_ms: u.and_then(|u| u.handover_ms_median.zip(u.handover_ms_max)),
                });
            }
        }
        for (_, row) in &mut o.servers {
            row.resize(o.cells.len(), None);
        }
        for i in &report.idle {
            let s = &i.summary;
            o.idle.push((
                i.server.clone(),
                s.handover_ms_median.zip(s.handover_ms_max),
            ));
        }
        o
    }
}

/// Where `v` falls on a log scale from 0 to `max` over `width` (0 and below: nothing).
pub fn log_len(v: f64, max: f64, width: f64) -> f64 {
    if v <= 0.0 || max <= 0.0 {
        return 0.0;
    }
    width * (1.0 + v).log10() / (1.0 + max).log10()
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The overview as SVG elements starting at `y0`; returns them and the height used.
pub fn render(o: &Overview, y0: f64) -> (String, f64) {
    let mut s = String::new();
    let mut y = y0;
    let ncells = o.cells.len().max(1) as f64;
    let col_w = (W - NAME_W - 20.0) / ncells;
    let head = |s: &mut String, y: f64, text: &str| {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{:.0}" font-size="15" font-weight="bold">{}</text>"#,
            y + 16.0,
            xml(text)
        );
    };
    let columns = |s: &mut String, y: f64| {
        for (i, c) in o.cells.iter().enumerate() {
            let _ = writeln!(
                s,
                r##"<text x="{:.0}" y="{:.0}" font-weight="bold" fill="#333">{}</text>"##,
                NAME_W + i as f64 * col_w,
                y + 12.0,
                xml(c)
            );
        }
    };
    let name = |s: &mut String, y: f64, n: &str| {
        let _ = writeln!(s, r#"<text x="10" y="{:.0}">{}</text>"#, y + 13.0, xml(n));
    };
    // Failed requests.
    head(
        &mut s,
        y,
        "Failed requests during upgrades, per server and cell (log scale; 0 = no bar)",
    );
    y += 24.0;
    columns(&mut s, y);
    y += 18.0;
    let max_failed = o
        .servers
        .iter()
        .flat_map(|(_, r)| r.iter().flatten().map(|f| f.failed))
        .max()
        .unwrap_or(0) as f64;
    let bar_w = col_w - 60.0;
    for (n, row) in &o.servers {
        name(&mut s, y, n);
        for (i, f) in row.iter().enumerate() {
            let x = NAME_W + i as f64 * col_w;
            let Some(f) = f else {
                let _ = writeln!(
                    s,
                    r##"<text x="{x:.0}" y="{:.0}" fill="#999">not run</text>"##,
                    y + 13.0
                );
                continue;
            };
            let len = log_len(f.failed as f64, max_failed, bar_w);
            if len > 0.0 {
                let _ = writeln!(
                    s,
                    r##"<rect x="{x:.0}" y="{:.0}" width="{len:.1}" height="{:.0}" fill="#d62728"/>"##,
                    y + 3.0,
                    ROW_H - 6.0
                );
            }
            let stale = if f.stale > 0 {
                format!(" (stale {})", f.stale)
            } else {
                String::new()
            };
            let color = if f.failed == 0 { "#2ca02c" } else { "#000" };
            let _ = writeln!(
                s,
                r#"<text x="{:.0}" y="{:.0}" fill="{color}">{}{stale}</text>"#,
                x + len + 4.0,
                y + 13.0,
                f.failed
            );
        }
        y += ROW_H;
    }
    // Handover time.
    y += 10.0;
    head(
        &mut s,
        y,
        "Handover time under load, ms: dot = median, line to max (log scale)",
    );
    y += 24.0;
    columns(&mut s, y);
    y += 18.0;
    let max_ms = o
        .servers
        .iter()
        .flat_map(|(_, r)| {
            r.iter()
                .flatten()
                .filter_map(|f| f.handover_ms.map(|h| h.1))
        })
        .chain(o.idle.iter().filter_map(|(_, h)| h.map(|h| h.1)))
        .fold(0.0, f64::max);
    for (n, row) in &o.servers {
        name(&mut s, y, n);
        for (i, f) in row.iter().enumerate() {
            let x = NAME_W + i as f64 * col_w;
            let text = match f.as_ref().and_then(|f| f.handover_ms) {
                Some((med, max)) => {
                    whisker(&mut s, x, y, med, max, max_ms, bar_w);
                    format!("{med:.1} / {max:.1}")
                }
                None if f.is_some() => "no switch".into(),
                None => "not run".into(),
            };
            let _ = writeln!(
                s,
                r##"<text x="{:.0}" y="{:.0}" font-size="9" fill="#333">{text}</text>"##,
                x + bar_w + 2.0,
                y + 13.0
            );
        }
        y += ROW_H;
    }
    // Idle handover time.
    if !o.idle.is_empty() {
        y += 10.0;
        head(
            &mut s,
            y,
            "Idle handover time, ms (no load): dot = median, line to max",
        );
        y += 24.0;
        for (n, h) in &o.idle {
            name(&mut s, y, n);
            let text = match h {
                Some((med, max)) => {
                    whisker(&mut s, NAME_W, y, *med, *max, max_ms, 2.0 * bar_w);
                    format!("median {med:.1}, max {max:.1}")
                }
                None => "no switch".into(),
            };
            let _ = writeln!(
                s,
                r##"<text x="{:.0}" y="{:.0}" fill="#333">{text}</text>"##,
                NAME_W + 2.0 * bar_w + 8.0,
                y + 13.0
            );
            y += ROW_H;
        }
    }
    // Steady-state ratios.
    y += 10.0;
    let ratios: Vec<String> = o
        .steady
        .iter()
        .filter_map(|(c, r)| r.map(|r| format!("{c}: {r:.3}")))
        .collect();
    let text = if ratios.is_empty() {
        "Steady state: no steady A/B runs in this report".to_string()
    } else {
        format!(
            "Steady state, handover ÷ axum drain (median of interleaved pairs, target ≥ 0.98): {}",
            ratios.join(", ")
        )
    };
    let _ = writeln!(
        s,
        r#"<text x="10" y="{:.0}" font-size="13">{}</text>"#,
        y + 14.0,
        xml(&text)
    );
    y += 30.0;
    (s, y - y0)
}

fn whisker(s: &mut String, x: f64, y: f64, med: f64, max: f64, scale: f64, w: f64) {
    let (xm, xx) = (x + log_len(med, scale, w), x + log_len(max, scale, w));
    let cy = y + ROW_H / 2.0;
    let _ = writeln!(
        s,
        r##"<line x1="{x:.0}" y1="{cy:.1}" x2="{xx:.1}" y2="{cy:.1}" stroke="#bbb"/><line x1="{xm:.1}" y1="{cy:.1}" x2="{xx:.1}" y2="{cy:.1}" stroke="#1f77b4" stroke-width="2"/><circle cx="{xm:.1}" cy="{cy:.1}" r="3.5" fill="#1f77b4"/>"##
    );
}

/// The overview alone, as a whole SVG document (`summary.svg`).
pub fn document(report: &Report) -> String {
    let (body, h) = render(&Overview::of(report), 10.0);
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{:.0}" viewBox="0 0 {W} {:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"#,
        h + 20.0,
        h + 20.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scale_draws_nothing_for_zero() {
        assert_eq!(log_len(0.0, 1000.0, 100.0), 0.0);
        assert_eq!(log_len(5.0, 0.0, 100.0), 0.0);
        assert!((log_len(1000.0, 1000.0, 100.0) - 100.0).abs() < 1e-9);
        let (one, ten) = (log_len(1.0, 1000.0, 100.0), log_len(10.0, 1000.0, 100.0));
        assert!(one > 0.0 && ten > one && ten < 100.0);
    }

    #[test]
    fn every_server_and_cell_is_drawn_with_its_numbers() {
        let o = Overview {
            cells: vec!["keepalive/64".into(), "close/64".into()],
            servers: vec![
                (
                    "handover-socket/hello".into(),
                    vec![
                        Some(Figures {
                            failed: 0,
                            stale: 0,
                            handover_ms: Some((3.5, 9.0)),
                        }),
                        None,
                    ],
                ),
                (
                    "pm2-cluster/node".into(),
                    vec![
                        Some(Figures {
                            failed: 127,
                            stale: 2,
                            handover_ms: None,
                        }),
                        Some(Figures::default()),
                    ],
                ),
            ],
            idle: vec![("pm2-cluster/node".into(), Some((300.0, 410.0)))],
            steady: vec![
                ("keepalive/64".into(), Some(0.991)),
                ("close/64".into(), None),
            ],
        };
        let (svg, h) = render(&o, 0.0);
        assert!(h > 100.0);
        for needle in [
            "handover-socket/hello",
            "pm2-cluster/node",
            "keepalive/64",
            ">127 (stale 2)<",
            ">0<",
            "3.5 / 9.0",
            "no switch",
            "not run",
            "median 300.0, max 410.0",
            "keepalive/64: 0.991",
        ] {
            assert!(svg.contains(needle), "missing {needle:?} in {svg}");
        }
        // One red bar: pm2's 127; the zeros have none.
        assert_eq!(svg.matches(r##"fill="#d62728""##).count(), 1);
    }
}
