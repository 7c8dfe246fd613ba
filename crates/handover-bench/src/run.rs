//! One run: start a fresh server, drive load (ours or wrk) with or without upgrades, stop it,
//! and put the numbers together.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::generations::Generations;
use crate::load::stats::Stats;
use crate::load::{self, LoadConfig, Mode};
use crate::process::Server;
use crate::report::build;
use crate::report::model::{IdleReport, RunReport, Scenario};
use crate::server::ServerKind;
use crate::upgrade::measure::{Ctx, ProbeOpts};
use crate::upgrade::{schedule, Current, UpgradeSummary};
use crate::wrk::{self, WrkLoad, WrkResult};

/// Settings shared by every run of an invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Client worker threads (and wrk threads).
    pub threads: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Probe settings for upgrades.
    pub probe: ProbeOpts,
    /// How long a server may take to answer after start.
    pub ready_timeout: Duration,
    /// Grace between the stop signal and SIGKILL.
    pub stop_grace: Duration,
    /// Pause after the server answers, before load starts.
    pub settle: Duration,
    /// Where server logs and wrk files go.
    pub log_dir: PathBuf,
}

/// Who generates the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    /// This crate's client.
    Ours,
    /// wrk, counting bodies when `count` (slower).
    Wrk {
        /// Count responses by greeting.
        count: bool,
    },
}

/// What to run.
#[derive(Clone)]
pub struct RunSpec {
    /// Label in the report.
    pub label: String,
    /// Upgrade or steady.
    pub scenario: Scenario,
    /// Server under test.
    pub kind: Arc<dyn ServerKind>,
    /// Keep-alive or close.
    pub mode: Mode,
    /// Connections.
    pub conns: usize,
    /// Load duration.
    pub duration: Duration,
    /// Upgrades during the load (0 for steady).
    pub upgrades: usize,
    /// Interval between upgrades.
    pub interval: Duration,
    /// Load generator.
    pub generator: Generator,
}

/// A run's report plus its raw latency histogram (for combining runs).
pub struct RunData {
    /// The report.
    pub report: RunReport,
    /// Latency histogram (µs).
    pub latency: Option<Histogram<u64>>,
}

fn log_path(set: &Settings, label: &str) -> PathBuf {
    let name: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    set.log_dir.join(format!("{name}.log"))
}

/// Executes `spec`.
pub fn execute(spec: &RunSpec, set: &Settings) -> io::Result<RunData> {
    let log = log_path(set, &spec.label);
    let (server, version, pid) = Server::start(Arc::clone(&spec.kind), &log, set.ready_timeout)?;
    crate::abort::sleep(set.settle);
    let generations = Arc::new(Generations::new(pid));
    let mut cur = Current { version, pid };
    let start = Instant::now();
    let ctx = Ctx {
        server: &server,
        generations: &generations,
        run_start: start,
        opts: set.probe,
    };
    let end = start + spec.duration;
    let (load, records) = std::thread::scope(|s| {
        let upgrader = (spec.upgrades > 0).then(|| {
            s.spawn(|| schedule::under_load(&ctx, spec.upgrades, spec.interval, end, &mut cur))
        });
        let load = drive(spec, set, &server, &generations, start);
        let records = upgrader
            .map(|h| h.join().expect("upgrader panicked"))
            .unwrap_or_default();
        (load, records)
    });
    let stop = server.stop(cur.pid, set.stop_grace);
    let load = load?;
    let mut report = match &load {
        Loaded::Ours(stats, elapsed) => {
            build::from_stats(&header(spec, "handover-bench"), stats, *elapsed)
        }
        Loaded::Wrk(w) => build::from_wrk(&header(spec, "wrk"), w),
    };
    report.upgrade_summary = (!records.is_empty()).then(|| UpgradeSummary::of(&records));
    report.upgrades = records;
    report.stop = stop;
    report.server_log = log.display().to_string();
    Ok(RunData {
        report,
        latency: match load {
            Loaded::Ours(stats, _) => Some(stats.latency),
            Loaded::Wrk(_) => None,
        },
    })
}

fn header(spec: &RunSpec, generator: &'static str) -> build::Header {
    build::Header {
        label: spec.label.clone(),
        scenario: spec.scenario,
        server: spec.kind.name(),
        mode: spec.mode.label(),
        conns: spec.conns,
        generator,
    }
}

enum Loaded {
    Ours(Stats, Duration),
    Wrk(WrkResult),
}

fn drive(
    spec: &RunSpec,
    set: &Settings,
    server: &Server,
    gens: &Arc<Generations>,
    start: Instant,
) -> io::Result<Loaded> {
    match spec.generator {
        Generator::Ours => {
            let cfg = LoadConfig {
                addr: server.addr,
                mode: spec.mode,
                conns: spec.conns,
                threads: set.threads,
                duration: spec.duration,
                timeout: set.timeout,
                greetings: Arc::new(server.greetings.clone()),
                generations: Arc::clone(gens),
                rate: None,
                tls: server.tls.clone(),
            };
            let (stats, elapsed) = load::run(&cfg, start)?;
            Ok(Loaded::Ours(stats, elapsed))
        }
        Generator::Wrk { count } => {
            use crate::server::hello::{GREETING_V1, GREETING_V2};
            let w = wrk::run(&WrkLoad {
                addr: server.addr,
                mode: spec.mode,
                conns: spec.conns,
                threads: set.threads,
                duration: spec.duration,
                timeout: set.timeout,
                count: count.then_some((GREETING_V1, GREETING_V2)),
                dir: &set.log_dir,
            })?;
            Ok(Loaded::Wrk(w))
        }
    }
}

/// `k` upgrades without load against a fresh server of `kind`.
pub fn idle(
    kind: &Arc<dyn ServerKind>,
    k: usize,
    pause: Duration,
    set: &Settings,
) -> io::Result<IdleReport> {
    let log = log_path(set, &format!("idle-{}", kind.name()));
    let (server, version, pid) = Server::start(Arc::clone(kind), &log, set.ready_timeout)?;
    crate::abort::sleep(set.settle);
    let generations = Generations::new(pid);
    let mut cur = Current { version, pid };
    let ctx = Ctx {
        server: &server,
        generations: &generations,
        run_start: Instant::now(),
        opts: set.probe,
    };
    let exit_timeout = set.stop_grace + Duration::from_secs(2);
    let records = schedule::idle(&ctx, k, exit_timeout, pause, &mut cur);
    let stop = server.stop(cur.pid, set.stop_grace);
    Ok(IdleReport {
        server: kind.name(),
        summary: UpgradeSummary::of(&records),
        upgrades: records,
        stop,
        server_log: log.display().to_string(),
    })
}
