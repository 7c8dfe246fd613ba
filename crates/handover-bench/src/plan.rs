//! The scenario matrix: for each (mode, connections) cell, upgrade runs per server kind
//! ((a) handover's drain, (b) axum's, then each peer), interleaved steady A/B runs ((c)),
//! optional wrk cross-checks; then idle handovers per kind and peer.

use std::sync::Arc;
use std::time::Duration;

use crate::load::Mode;
use crate::report::model::{Cell, IdleReport, Scenario};
use crate::report::summary;
use crate::run::{self, Generator, RunData, RunSpec, Settings};
use crate::server::ServerKind;

/// Which parts of the matrix run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Load with upgrades ((a), (b)).
    Upgrade,
    /// Steady load, interleaved A/B ((c)).
    Steady,
    /// Upgrades without load (handover time).
    Idle,
    /// Many idle keep-alive connections drained by one upgrade (`--idle-conns`).
    IdleConns,
    /// `handover run --proxy` against direct and nginx, and upgrades through it (`--proxy-*`).
    Proxy,
}

/// The matrix to run.
#[derive(Clone)]
pub struct Plan {
    /// Servers: the first is the subject (handover's drain), the second the baseline.
    pub kinds: Vec<Arc<dyn ServerKind>>,
    /// Peers (grace, tableflip, nginx) that could be built: upgrade runs and idle handovers.
    pub peers: Vec<Arc<dyn ServerKind>>,
    /// Modes.
    pub modes: Vec<Mode>,
    /// Connection counts.
    pub conns: Vec<usize>,
    /// Phases.
    pub phases: Vec<Phase>,
    /// Upgrade-run duration.
    pub duration: Duration,
    /// Upgrades per upgrade run.
    pub upgrades: usize,
    /// Interval between them.
    pub interval: Duration,
    /// Duration of each steady run.
    pub steady_duration: Duration,
    /// Steady runs per kind (interleaved).
    pub ab_runs: usize,
    /// Idle upgrades per kind.
    pub idle_upgrades: usize,
    /// Pause between idle upgrades.
    pub idle_pause: Duration,
    /// Also run wrk.
    pub wrk: bool,
    /// Times each (mode, connections) cell runs, one after the other.
    pub repeat: usize,
}

/// Runs every cell, then the idle handovers.
pub fn execute(plan: &Plan, set: &Settings) -> (Vec<Cell>, Vec<IdleReport>) {
    let mut cells = Vec::new();
    let loaded = plan.phases.contains(&Phase::Upgrade) || plan.phases.contains(&Phase::Steady);
    for &mode in plan.modes.iter().filter(|_| loaded) {
        for &conns in &plan.conns {
            for round in 1..=plan.repeat {
                if crate::abort::requested() {
                    break;
                }
                cells.push(cell(plan, set, mode, conns, round));
            }
        }
    }
    let mut idle = Vec::new();
    if plan.phases.contains(&Phase::Idle) {
        for kind in plan.kinds.iter().chain(&plan.peers) {
            if crate::abort::requested() {
                break;
            }
            progress(&format!(
                "idle: {} x{} upgrades",
                kind.name(),
                plan.idle_upgrades
            ));
            match run::idle(kind, plan.idle_upgrades, plan.idle_pause, set) {
                Ok(r) => {
                    progress(&summary::idle_line(&r));
                    idle.push(r);
                }
                Err(e) => progress(&format!("idle {} failed: {e}", kind.name())),
            }
        }
    }
    (cells, idle)
}

fn spec(
    plan: &Plan,
    label: String,
    kind: &Arc<dyn ServerKind>,
    mode: Mode,
    conns: usize,
    upgrade: bool,
    generator: Generator,
) -> RunSpec {
    RunSpec {
        label,
        scenario: if upgrade {
            Scenario::Upgrade
        } else {
            Scenario::Steady
        },
        kind: Arc::clone(kind),
        mode,
        conns,
        duration: if upgrade {
            plan.duration
        } else {
            plan.steady_duration
        },
        upgrades: if upgrade { plan.upgrades } else { 0 },
        interval: plan.interval,
        generator,
    }
}

fn cell(plan: &Plan, set: &Settings, mode: Mode, conns: usize, round: usize) -> Cell {
    let mut specs = Vec::new();
    let tag = tag(mode, conns, round, plan.repeat);
    if plan.phases.contains(&Phase::Upgrade) {
        for (i, kind) in plan.kinds.iter().enumerate() {
            let label = match i {
                0 => "a".to_string(),
                1 => "b".to_string(),
                _ => format!("upgrade:{}", kind.name()),
            };
            specs.push(spec(plan, label, kind, mode, conns, true, Generator::Ours));
        }
        for kind in &plan.peers {
            let label = format!("peer:{}", kind.name());
            specs.push(spec(plan, label, kind, mode, conns, true, Generator::Ours));
        }
    }
    if plan.phases.contains(&Phase::Steady) {
        for r in 0..plan.ab_runs {
            let mut order: Vec<_> = plan.kinds.iter().collect();
            if r % 2 == 1 {
                order.reverse();
            }
            for kind in order {
                let label = format!("c:{}#{}", kind.name(), r + 1);
                specs.push(spec(plan, label, kind, mode, conns, false, Generator::Ours));
            }
        }
    }
    if plan.wrk {
        for kind in &plan.kinds {
            let steady = Generator::Wrk { count: false };
            let upgrade = Generator::Wrk { count: true };
            if plan.phases.contains(&Phase::Steady) {
                let label = format!("wrk-steady:{}", kind.name());
                specs.push(spec(plan, label, kind, mode, conns, false, steady));
            }
            if plan.phases.contains(&Phase::Upgrade) {
                let label = format!("wrk-upgrade:{}", kind.name());
                specs.push(spec(plan, label, kind, mode, conns, true, upgrade));
            }
        }
    }
    let mut runs: Vec<RunData> = Vec::new();
    for s in specs {
        if crate::abort::requested() {
            break;
        }
        let label = format!("{tag} {}", s.label);
        progress(&format!(
            "{label}: {} ({:?}) ...",
            s.kind.name(),
            s.duration
        ));
        match run::execute(
            &RunSpec {
                label: s.label.clone(),
                ..s
            },
            &run_settings(set, &tag),
        ) {
            Ok(d) => {
                progress(&format!("{label}: {}", summary::run_line(&d.report)));
                runs.push(d);
            }
            Err(e) => progress(&format!("{label}: run failed: {e}")),
        }
    }
    summary::cell(mode, conns, runs, &plan.kinds)
}

/// Names a cell in progress lines and its log directory: `keepalive-64`, or with
/// `--repeat`, `keepalive-64-r2`.
fn tag(mode: Mode, conns: usize, round: usize, repeat: usize) -> String {
    if repeat > 1 {
        format!("{}-{conns}-r{round}", mode.label())
    } else {
        format!("{}-{conns}", mode.label())
    }
}

fn run_settings(set: &Settings, tag: &str) -> Settings {
    let log_dir = set.log_dir.join(tag);
    let _ = std::fs::create_dir_all(&log_dir);
    Settings {
        log_dir,
        ..set.clone()
    }
}

/// A timestamped progress line on stderr.
pub fn progress(msg: &str) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = t.as_secs() % 86_400;
    eprintln!("[{:02}:{:02}:{:02}] {msg}", s / 3600, s / 60 % 60, s % 60);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_cells_get_their_own_log_directories() {
        assert_eq!(tag(Mode::Close, 64, 1, 1), "close-64");
        assert_eq!(tag(Mode::Keepalive, 512, 3, 4), "keepalive-512-r3");
    }
}
