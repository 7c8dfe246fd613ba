//! Upgrades and how they are timed: handover time is from just before the upgrade action
//! (rename + signal) to the first 200 from the new build on a fresh connection; then fresh
//! connections keep probing for a linger period, and any answer from the old generation is
//! *stale*.

pub mod measure;
pub mod schedule;

use serde::Serialize;

use crate::probe::ProbeCounts;
use crate::version::Version;

/// The generation serving now, as far as the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Its build.
    pub version: Version,
    /// Its PID.
    pub pid: u32,
}

/// One upgrade.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeRecord {
    /// 1-based index within its series.
    pub index: usize,
    /// Build replaced.
    pub from: Version,
    /// Build switched to.
    pub to: Version,
    /// PID signalled.
    pub old_pid: u32,
    /// PID of the first new-build answer.
    pub new_pid: Option<u32>,
    /// When the action started, ms since the run started.
    pub at_ms: f64,
    /// Action start → first 200 from the new build on a fresh connection (`None`: never
    /// within the switch timeout).
    pub handover_ms: Option<f64>,
    /// How long the action itself (rename + signal) took.
    pub action_ms: f64,
    /// Probes until the switch.
    pub before: ProbeCounts,
    /// Probes during the linger after the switch; `after.ok_old` are stale answers.
    pub after: ProbeCounts,
    /// Action start → old PID exited, if seen before the next upgrade.
    pub old_exit_ms: Option<f64>,
    /// Why the upgrade could not be done, if so.
    pub error: Option<String>,
    /// The probe's own round trip just before the action (same load, nothing upgrading).
    pub probe_floor: Option<ProbeFloor>,
}

/// Fresh-connection probes answered (200) while nothing was upgrading, and their median round
/// trip: about the least a handover time can be under that load (see [`measure::probe_floor`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProbeFloor {
    /// Probes answered with a 200.
    pub probes: usize,
    /// Probes not answered so (timed out, refused, reset, another status).
    pub unanswered: usize,
    /// The median round trip of those answered, ms (`None`: none was).
    pub median_ms: Option<f64>,
}

/// Aggregate of a series of upgrades.
#[derive(Debug, Default, Clone, Serialize)]
pub struct UpgradeSummary {
    /// Upgrades fired.
    pub count: usize,
    /// Upgrades where the new build answered.
    pub switched: usize,
    /// Median handover time, ms.
    pub handover_ms_median: Option<f64>,
    /// Fastest handover, ms.
    pub handover_ms_min: Option<f64>,
    /// Slowest handover, ms.
    pub handover_ms_max: Option<f64>,
    /// Fresh-connection probes answered by the old build after the switch (must be 0).
    pub stale: u32,
    /// Failed probes before the switch (fresh connections lost during the handover).
    pub probe_errors_before: u32,
    /// Failed probes after the switch.
    pub probe_errors_after: u32,
    /// Median time until the old PID exited, ms.
    pub old_exit_ms_median: Option<f64>,
    /// Slowest old PID exit, ms.
    pub old_exit_ms_max: Option<f64>,
    /// Upgrades whose old PID was seen exiting.
    pub old_exited: usize,
    /// Median over the upgrades of the probe's round trip just before each (the floor of
    /// the handover time under that load), ms.
    pub probe_floor_ms_median: Option<f64>,
    /// Probes of those floors that got no 200 (a server that leaves fresh connections
    /// waiting under load shows here, and as `none` in the table if no probe was answered).
    pub probe_floor_unanswered: usize,
}

/// Median of `v` (sorted in place); `None` if empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

impl UpgradeSummary {
    /// Summarises `records`.
    pub fn of(records: &[UpgradeRecord]) -> Self {
        let mut ho: Vec<f64> = records.iter().filter_map(|r| r.handover_ms).collect();
        let mut ex: Vec<f64> = records.iter().filter_map(|r| r.old_exit_ms).collect();
        let mut floor: Vec<f64> = records
            .iter()
            .filter_map(|r| r.probe_floor.and_then(|f| f.median_ms))
            .collect();
        UpgradeSummary {
            count: records.len(),
            switched: ho.len(),
            handover_ms_min: ho.iter().copied().reduce(f64::min),
            handover_ms_max: ho.iter().copied().reduce(f64::max),
            handover_ms_median: median(&mut ho),
            stale: records.iter().map(|r| r.after.ok_old).sum(),
            probe_errors_before: records.iter().map(|r| r.before.errors()).sum(),
            probe_errors_after: records.iter().map(|r| r.after.errors()).sum(),
            old_exited: ex.len(),
            old_exit_ms_max: ex.iter().copied().reduce(f64::max),
            old_exit_ms_median: median(&mut ex),
            probe_floor_ms_median: median(&mut floor),
            probe_floor_unanswered: records
                .iter()
                .filter_map(|r| r.probe_floor.map(|f| f.unanswered))
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(handover_ms: Option<f64>, floor_ms: Option<f64>) -> UpgradeRecord {
        UpgradeRecord {
            index: 1,
            from: Version::V1,
            to: Version::V2,
            old_pid: 1,
            new_pid: Some(2),
            at_ms: 0.0,
            handover_ms,
            action_ms: 0.5,
            before: ProbeCounts::default(),
            after: ProbeCounts::default(),
            old_exit_ms: None,
            error: None,
            probe_floor: floor_ms.map(|median_ms| ProbeFloor {
                probes: 10,
                unanswered: 1,
                median_ms: Some(median_ms),
            }),
        }
    }

    #[test]
    fn the_floor_is_the_median_of_the_upgrades_that_measured_one() {
        let s = UpgradeSummary::of(&[
            record(Some(12.0), Some(9.0)),
            record(Some(30.0), None),
            record(None, Some(1.0)),
            record(Some(14.0), Some(11.0)),
        ]);
        assert_eq!(s.probe_floor_ms_median, Some(9.0));
        assert_eq!(s.probe_floor_unanswered, 3);
        assert_eq!(s.handover_ms_median, Some(14.0));
        assert_eq!(
            UpgradeSummary::of(&[record(Some(1.0), None)]).probe_floor_ms_median,
            None
        );
        // No probe answered in any window: no median, and the count says why.
        let mut silent = record(Some(200.0), None);
        silent.probe_floor = Some(ProbeFloor {
            probes: 0,
            unanswered: 1,
            median_ms: None,
        });
        let s = UpgradeSummary::of(&[silent]);
        assert_eq!(
            (s.probe_floor_ms_median, s.probe_floor_unanswered),
            (None, 1)
        );
        assert_eq!(crate::report::summary::floor_cell(&s), "none");
        assert_eq!(
            crate::report::summary::floor_cell(&UpgradeSummary::default()),
            "-"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
