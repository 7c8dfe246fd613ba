//! Counting the idle-connection scenario's outcomes and judging them against the target.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::{ConnResult, End};
use crate::process::StopReport;
use crate::report::summary::opt;
use crate::rlimit::NoFile;
use crate::upgrade::{median, UpgradeRecord};
use crate::version::Version;

/// Outcome of the idle-connection scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleConnsReport {
    /// Server kind.
    pub server: String,
    /// Connections asked for.
    pub requested: usize,
    /// Connections whose first request got a 200 from v1.
    pub opened: usize,
    /// First requests that failed, by kind (or answered wrongly: `not_v1_200`).
    pub open_failed: BTreeMap<String, u64>,
    /// ms to open all connections.
    pub open_ms: f64,
    /// Connections that ended before the upgrade (must be 0).
    pub ended_before_upgrade: usize,
    /// Closed with FIN after the upgrade, within the drain deadline.
    pub closed_clean: usize,
    /// Closed with FIN after the upgrade, but after the drain deadline.
    pub closed_clean_late: usize,
    /// Reset (RST) after the upgrade.
    pub reset: usize,
    /// The server sent unrequested bytes.
    pub unexpected_data: usize,
    /// Other read errors.
    pub read_errors: usize,
    /// Still open when the benchmark gave up (drain deadline + 5 s).
    pub still_open: usize,
    /// Everything but a clean close within the deadline, over all opened connections plus
    /// failed opens and failed reconnects (target 0).
    pub errors: usize,
    /// Upgrade action → first close, ms.
    pub first_close_ms: Option<f64>,
    /// Upgrade action → median close, ms.
    pub median_close_ms: Option<f64>,
    /// Upgrade action → last close (time to drain), ms.
    pub drain_ms: Option<f64>,
    /// The drain deadline (the server's `--drain-timeout`), ms.
    pub deadline_ms: f64,
    /// Upgrade action → old PID exited, ms.
    pub old_exit_ms: Option<f64>,
    /// The upgrade (handover time, probe counts: a fresh connection answered by the new
    /// version is what ends its probing).
    pub upgrade: Option<UpgradeRecord>,
    /// Clients that reconnected after their connection ended.
    pub reconnects: usize,
    /// Reconnected clients answered by the new version's new PID.
    pub reconnect_new: usize,
    /// Reconnected clients answered by the old generation (stale; must be 0).
    pub reconnect_old: usize,
    /// Reconnects that failed, by kind.
    pub reconnect_failed: BTreeMap<String, u64>,
    /// The open-files limit.
    pub nofile: NoFile,
    /// Whether every check passed.
    pub pass: bool,
    /// The checks that failed.
    pub problems: Vec<String>,
    /// How the server stopped.
    pub stop: StopReport,
    /// The server's stdout/stderr.
    pub server_log: String,
}

/// What `build` counts.
pub struct Input<'a> {
    /// Server kind.
    pub server: String,
    /// Connections asked for.
    pub requested: usize,
    /// ms to open them.
    pub open_ms: f64,
    /// Ended before the upgrade.
    pub ended_before_upgrade: usize,
    /// Each client's story.
    pub results: &'a [ConnResult],
    /// The upgrade, if it could be fired.
    pub upgrade: Option<UpgradeRecord>,
    /// When its action started.
    pub t0: Instant,
    /// The drain deadline.
    pub deadline: Duration,
    /// The open-files limit.
    pub nofile: NoFile,
}

fn bump(m: &mut BTreeMap<String, u64>, k: &str) {
    *m.entry(k.to_string()).or_default() += 1;
}

fn ms_since(t0: Instant, at: Instant) -> f64 {
    let d = at.saturating_duration_since(t0).as_secs_f64();
    (d * 1e6).round() / 1e3
}

/// Counts and judges.
pub fn build(i: Input) -> IdleConnsReport {
    let mut r = IdleConnsReport {
        server: i.server,
        requested: i.requested,
        open_ms: i.open_ms.round(),
        ended_before_upgrade: i.ended_before_upgrade,
        deadline_ms: i.deadline.as_secs_f64() * 1e3,
        nofile: i.nofile,
        ..Default::default()
    };
    let old_pid = i.upgrade.as_ref().map(|u| u.old_pid);
    let new_pid = i.upgrade.as_ref().and_then(|u| u.new_pid);
    let mut closes = Vec::new();
    for c in i.results {
        match c.open {
            Ok(a) if a.status == 200 && a.version == Some(Version::V1) => r.opened += 1,
            Ok(_) => bump(&mut r.open_failed, "not_v1_200"),
            Err(k) => bump(&mut r.open_failed, k),
        }
        let Some((end, at)) = c.end else { continue };
        let t = ms_since(i.t0, at);
        match end {
            End::Fin if at >= i.t0 && t <= r.deadline_ms => r.closed_clean += 1,
            End::Fin if at >= i.t0 => r.closed_clean_late += 1,
            End::Fin => {}
            End::Reset => r.reset += 1,
            End::Data => r.unexpected_data += 1,
            End::Error => r.read_errors += 1,
            End::StillOpen => r.still_open += 1,
        }
        if matches!(end, End::Fin | End::Reset) && at >= i.t0 {
            closes.push(t);
        }
        r.reconnects += usize::from(c.reconnect.is_some());
        match c.reconnect {
            Some(Ok(a)) if a.status == 200 && a.version == Some(Version::V2) => {
                if a.pid.is_some() && (a.pid == old_pid || (new_pid.is_some() && a.pid != new_pid))
                {
                    r.reconnect_old += 1;
                } else {
                    r.reconnect_new += 1;
                }
            }
            Some(Ok(a)) if a.status == 200 && a.version == Some(Version::V1) => {
                r.reconnect_old += 1
            }
            Some(Ok(_)) => bump(&mut r.reconnect_failed, "wrong_answer"),
            Some(Err(k)) => bump(&mut r.reconnect_failed, k),
            None => {}
        }
    }
    r.first_close_ms = closes.iter().copied().reduce(f64::min);
    r.drain_ms = closes.iter().copied().reduce(f64::max);
    r.median_close_ms = median(&mut closes);
    r.old_exit_ms = i.upgrade.as_ref().and_then(|u| u.old_exit_ms);
    r.upgrade = i.upgrade;
    let open_failed: u64 = r.open_failed.values().sum();
    let reconnect_failed: u64 = r.reconnect_failed.values().sum();
    r.errors = open_failed as usize
        + r.ended_before_upgrade
        + r.closed_clean_late
        + r.reset
        + r.unexpected_data
        + r.read_errors
        + r.still_open
        + r.reconnect_old
        + reconnect_failed as usize;
    judge(&mut r);
    r
}

fn judge(r: &mut IdleConnsReport) {
    let mut p = Vec::new();
    if r.opened != r.requested {
        p.push(format!("opened {} of {}", r.opened, r.requested));
    }
    if r.errors > 0 {
        p.push(format!("{} errors", r.errors));
    }
    if r.closed_clean != r.opened {
        p.push(format!(
            "{} of {} closed cleanly within the deadline",
            r.closed_clean, r.opened
        ));
    }
    match &r.upgrade {
        None => p.push("no upgrade".into()),
        Some(u) if u.handover_ms.is_none() => p.push("the new version never answered".into()),
        Some(u) if u.after.ok_old > 0 => p.push(format!("{} stale probe answers", u.after.ok_old)),
        Some(_) => {}
    }
    if r.reconnect_new != r.reconnects {
        p.push(format!(
            "{} of {} reconnects answered by the new version",
            r.reconnect_new, r.reconnects
        ));
    }
    match r.old_exit_ms {
        Some(ms) if ms <= r.deadline_ms => {}
        Some(ms) => p.push(format!("old process exited after {ms:.0} ms")),
        None => p.push("old process not seen exiting".into()),
    }
    r.pass = p.is_empty();
    r.problems = p;
}

/// The report's lines for the table.
pub fn lines(r: &IdleConnsReport) -> Vec<String> {
    let kinds = |m: &BTreeMap<String, u64>| {
        let v: Vec<String> = m.iter().map(|(k, n)| format!("{k}={n}")).collect();
        if v.is_empty() {
            "0".into()
        } else {
            v.join(" ")
        }
    };
    let ho = r.upgrade.as_ref().and_then(|u| u.handover_ms);
    vec![
        format!(
            "{}: {} {} idle keep-alive connections (RLIMIT_NOFILE {}/{}): opened {} in {:.0} ms, open failed [{}], ended before upgrade {}",
            r.server,
            if r.pass { "PASS" } else { "FAIL" },
            r.requested,
            r.nofile.soft,
            r.nofile.hard,
            r.opened,
            r.open_ms,
            kinds(&r.open_failed),
            r.ended_before_upgrade
        ),
        format!(
            "  closed-clean {} (late {}), reset {}, unexpected data {}, read errors {}, still open {}, errors {}",
            r.closed_clean,
            r.closed_clean_late,
            r.reset,
            r.unexpected_data,
            r.read_errors,
            r.still_open,
            r.errors
        ),
        format!(
            "  time to drain (upgrade → last close) {} ms (first {}, median {}; deadline {:.0}), old exit {} ms, handover {} ms",
            opt(r.drain_ms),
            opt(r.first_close_ms),
            opt(r.median_close_ms),
            r.deadline_ms,
            opt(r.old_exit_ms),
            opt(ho)
        ),
        format!(
            "  reconnects {}: new version {}, old version {}, failed [{}]{}",
            r.reconnects,
            r.reconnect_new,
            r.reconnect_old,
            kinds(&r.reconnect_failed),
            if r.problems.is_empty() {
                String::new()
            } else {
                format!("\n  ! {}", r.problems.join("; "))
            }
        ),
    ]
}
