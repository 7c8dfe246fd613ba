//! The proxy phase's part of the table.

use std::fmt::Write;

use super::{ProxyReport, UpgradeRun};
use crate::load::stats::Failure;

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.prec$}"))
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "MET",
        Some(false) => "MISSED",
        None => "n/a",
    }
}

/// Issue 16's target for a proxy-mode upgrade: the new worker answers through the proxy within
/// this many ms of `handover upgrade` (median).
const HANDOVER_TARGET_MS: f64 = 10.0;

/// The median handover time of a run's upgrades; none when none was timed.
fn handover_p50(u: &UpgradeRun) -> Option<f64> {
    let v: Vec<f64> = u.upgrades.iter().filter_map(|x| x.handover_ms).collect();
    (!v.is_empty()).then(|| super::median(v))
}

/// "p50 X ms max Y ms" of `v`, with "(n of m)" when some upgrades have no figure.
fn spread(v: &[f64], of: usize) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    let max = v.iter().copied().fold(0.0, f64::max);
    let p50 = super::median(v.to_vec());
    let some = if v.len() < of {
        format!(" ({} of {of})", v.len())
    } else {
        String::new()
    };
    format!("p50 {p50:.1} ms max {max:.1} ms{some}")
}

/// One line per upgrade run (also the progress line).
pub fn upgrade_line(u: &UpgradeRun) -> String {
    let Some(r) = &u.run else {
        return format!(
            "{:<26} did not run: {}",
            u.case,
            u.error.as_deref().unwrap_or("?")
        );
    };
    let kinds: Vec<String> = Failure::ALL
        .iter()
        .map(|k| format!("{}={}", k.name(), r.failures.get(k.name()).unwrap_or(&0)))
        .collect();
    let took: Vec<f64> = u.upgrades.iter().map(|x| x.took_ms).collect();
    let handover: Vec<f64> = u.upgrades.iter().filter_map(|x| x.handover_ms).collect();
    format!(
        "{:<26} upgrades {}/{}  ok {:>8} ({:>7.0} req/s; v1 {} v2 {})  failed {}  [{}]  handover {}  command {}  stop {:.0} ms{}",
        u.case,
        u.done,
        u.requested,
        r.ok,
        r.rps,
        r.versions.get("v1").unwrap_or(&0),
        r.versions.get("v2").unwrap_or(&0),
        r.failed,
        kinds.join(" "),
        spread(&handover, u.upgrades.len()),
        spread(&took, u.upgrades.len()),
        u.stop.stop_ms,
        if u.stop.killed + u.stop.left_behind > 0 || !u.stop.abnormal_exits.is_empty() {
            format!(
                " (killed {}, left {}, abnormal {:?})",
                u.stop.killed, u.stop.left_behind, u.stop.abnormal_exits
            )
        } else {
            String::new()
        }
    )
}

/// Renders the proxy section.
pub fn render(out: &mut String, p: &ProxyReport) {
    let _ = writeln!(
        out,
        "\n== proxy mode (issue 5; loopback; {}; nginx worker_processes {})",
        p.nginx, p.nginx_workers
    );
    let _ = writeln!(
        out,
        "saturating: keep-alive, {} conns, back to back, {:.0}s; paced: keep-alive, {:.0} req/s over {} conns, {:.0}s; {} round(s), medians",
        p.conns,
        p.duration_s,
        p.rate,
        p.rate_conns,
        p.duration_s,
        p.steady.first().map_or(0, |s| s.saturating.len())
    );
    let _ = writeln!(out, "({})", p.latency_note);
    let _ = writeln!(
        out,
        "(+p50 = median over rounds of (target p50 − direct p50 in the same round); ×direct = median req/s ratio)"
    );
    let direct = p
        .steady
        .iter()
        .find(|s| s.target == "direct" && s.error.is_none())
        .map(|s| s.rps_median);
    let _ = writeln!(
        out,
        "{:<14} {:>10} {:>8} {:>11} {:>13} {:>9} {:>13} {:>14} {:>6} {:>7}",
        "target",
        "sat req/s",
        "×direct",
        "cpu µs/req",
        "paced p50 µs",
        "+p50 µs",
        "paced p99 µs",
        "paced req/s",
        "late",
        "failed"
    );
    for s in &p.steady {
        if s.error.is_none() && s.saturating.is_empty() {
            continue; // not asked for (`--proxy-targets`)
        }
        if let Some(e) = &s.error {
            let _ = writeln!(out, "{:<14} skipped: {e}", s.target);
            continue;
        }
        let failed: u64 = s
            .saturating
            .iter()
            .chain(&s.paced)
            .map(|r| r.run.failed)
            .sum();
        let late: u64 = s.paced.iter().map(|r| r.late).sum();
        let (x, added) = match direct {
            Some(rps) if rps > 0.0 => {
                (format!("{:.2}", s.rps_median / rps), opt(s.added_p50_us, 0))
            }
            _ => ("n/a".into(), "n/a".into()),
        };
        let _ = writeln!(
            out,
            "{:<14} {:>10.0} {:>8} {:>11} {:>13.0} {:>9} {:>13.0} {:>14.0} {:>6} {:>7}",
            s.target,
            s.rps_median,
            x,
            opt(s.cpu_us_per_req_median, 2),
            s.paced_p50_us_median,
            added,
            s.paced_p99_us_median,
            s.paced_rps_median,
            late,
            failed
        );
    }
    let t = &p.targets;
    let verdicts = [
        (
            "http: ",
            "nginx",
            "nginx",
            t.http_rps_ratio,
            t.http_cpu_ratio,
            t.http_added_p50_us,
            t.nginx_http_added_p50_us,
        ),
        (
            "tcp:  ",
            "nginx-stream",
            "nginx stream",
            t.tcp_rps_ratio,
            t.tcp_cpu_ratio,
            t.tcp_added_p50_us,
            t.nginx_stream_added_p50_us,
        ),
    ];
    for (label, peer, peer_name, rps, cpu, added, peer_added) in verdicts {
        let _ = writeln!(
            out,
            "{label}handover/{peer} throughput {} (target ≥ 1.0: {}), CPU per request {}; added p50 handover {} µs (target ≤ 50: {}), {peer_name} {} µs",
            opt(rps, 2),
            verdict(rps.map(|r| r >= 1.0)),
            opt(cpu, 2),
            opt(added, 0),
            verdict(added.map(|a| a <= 50.0)),
            opt(peer_added, 0),
        );
    }
    https_lines(out, p);
    if !p.upgrade_runs.is_empty() {
        let _ = writeln!(
            out,
            "\n== proxy upgrades under load (`handover upgrade --control` every {:.0} ms, alternating v1/v2; client never retries; target 0 failed; handover = rename + command → first answer of the new build through the proxy on a fresh connection, command = until `handover upgrade` returned)",
            p.interval_s * 1e3
        );
        for u in &p.upgrade_runs {
            let _ = writeln!(out, "{}", upgrade_line(u));
            let met = u
                .run
                .as_ref()
                .map(|r| r.failed == 0 && u.done == u.requested);
            let _ = writeln!(
                out,
                "  -> 0 failed: {}; handover p50 ≤ {HANDOVER_TARGET_MS:.0} ms (issue 16): {}",
                verdict(met),
                verdict(handover_p50(u).map(|p| p <= HANDOVER_TARGET_MS))
            );
            for x in u.upgrades.iter().filter(|x| !x.ok) {
                let _ = writeln!(
                    out,
                    "  ! upgrade {} (→{:?}) at {:.2}s: {} (log: {})",
                    x.index, x.to, x.at_s, x.output, u.log
                );
            }
        }
    }
}

/// The https setups' close runs and verdict (nothing when neither ran, so the table of a run
/// without them is as before).
fn https_lines(out: &mut String, p: &ProxyReport) {
    let ran: Vec<_> = p
        .steady
        .iter()
        .filter(|s| s.target.ends_with("https") && s.error.is_none() && !s.close.is_empty())
        .collect();
    if ran.is_empty() {
        return;
    }
    let close: Vec<String> = ran
        .iter()
        .map(|s| {
            let failed: u64 = s.close.iter().map(|r| r.run.failed).sum();
            format!(
                "{} {} handshakes/s (cpu {} µs each, {failed} failed)",
                s.target,
                opt(s.handshakes_per_s_median, 0),
                opt(s.close_cpu_us_per_req_median, 1)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "https close (`Connection: close`, {} conns, full handshakes, no resumption): {}",
        p.conns,
        close.join("; ")
    );
    let t = &p.targets;
    let _ = writeln!(
        out,
        "https: handover/nginx throughput {} (target ≥ 1.0: {}), handshakes/s ratio {}; CPU per request {}, per handshake {}",
        opt(t.https_rps_ratio, 2),
        verdict(t.https_rps_ratio.map(|r| r >= 1.0)),
        opt(t.https_handshake_ratio, 2),
        opt(t.https_cpu_ratio, 2),
        opt(t.https_handshake_cpu_ratio, 2),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_gives_median_and_max_and_says_how_many_were_timed() {
        assert_eq!(spread(&[], 3), "n/a");
        assert_eq!(spread(&[9.0, 30.0, 11.0], 3), "p50 11.0 ms max 30.0 ms");
        assert_eq!(spread(&[9.0, 12.0], 3), "p50 10.5 ms max 12.0 ms (2 of 3)");
    }
}
