//! `--phases proxy` (issue 5): the `hello` upstream direct, behind `handover run --proxy` and
//! behind nginx, in one invocation on loopback:
//!
//! - saturating keep-alive throughput (`--proxy-conns`, back to back) and latency at a fixed
//!   rate (`--proxy-rate` over `--proxy-rate-conns`, paced), for direct, handover http, nginx
//!   http (`upstream { keepalive 64; }`), handover tcp, nginx `stream`, handover https and
//!   nginx https (issue 10: the same as http with TLS terminated by the proxy, the bench's own
//!   certificate, no resumption on either side);
//! - for the https setups also a saturating `Connection: close` run: every request a new
//!   connection and a full handshake, so its req/s is handshakes/s;
//! - upgrades under load through the proxy (`handover upgrade --control SOCK` after renaming the
//!   other build over the binary the worker COMMAND points to), failures by kind: keep-alive and
//!   close clients through the http and https proxies, close clients through the tcp proxy.

pub mod setup;
pub mod table;
mod upgrades;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::generations::Generations;
use crate::load::{self, LoadConfig, Mode};
use crate::plan::progress;
use crate::process::StopReport;
use crate::report::build;
use crate::report::model::{RunReport, Scenario};
use crate::tls::Pki;
use crate::version::Version;
use setup::{Running, Scheme, Target, Tools};

/// What the phase runs.
#[derive(Debug, Clone)]
pub struct ProxyOpts {
    /// Processes and binaries.
    pub tools: Tools,
    /// nginx version line, or why it is missing.
    pub nginx_version: String,
    /// Connections of the saturating runs.
    pub conns: usize,
    /// Requests per second of the paced runs.
    pub rate: f64,
    /// Connections of the paced runs.
    pub rate_conns: usize,
    /// Duration of each saturating and paced run.
    pub duration: Duration,
    /// Interleaved rounds of the steady runs (the table shows the median).
    pub rounds: usize,
    /// Steady targets to run besides `direct` (`handover-http` …; empty: all). Also picks the
    /// upgrade runs: those of a scheme run when its `handover-SCHEME` target is selected.
    pub targets: Vec<String>,
    /// Connections of the upgrade runs.
    pub upgrade_conns: usize,
    /// Upgrades per upgrade run.
    pub upgrades: usize,
    /// Interval between them (the i-th at i × interval).
    pub interval: Duration,
    /// Client threads.
    pub threads: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Grace at stop before SIGKILL.
    pub stop_grace: Duration,
    /// Server logs.
    pub log_dir: PathBuf,
}

/// One steady run's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyRun {
    /// Round (1-based).
    pub round: usize,
    /// The run, as the other phases report it.
    pub run: RunReport,
    /// Latency p50, µs.
    pub p50_us: u64,
    /// Latency p99, µs.
    pub p99_us: u64,
    /// Paced runs: requests sent more than one period after they were due.
    pub late: u64,
    /// Paced runs: send lag behind the schedule, p99, µs.
    pub lag_p99_us: u64,
    /// Paced runs: largest send lag, µs.
    pub lag_max_us: u64,
    /// The proxy's CPU time (user + system, all its threads and processes) per request
    /// answered, µs; none when direct.
    pub proxy_cpu_us_per_req: Option<f64>,
}

/// One target's steady runs.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSteady {
    /// `direct`, `handover http`, `nginx http`, `handover tcp`, `nginx stream`,
    /// `handover https`, `nginx https`.
    pub target: &'static str,
    /// Saturating keep-alive runs.
    pub saturating: Vec<SteadyRun>,
    /// Paced keep-alive runs.
    pub paced: Vec<SteadyRun>,
    /// https setups: saturating `Connection: close` runs (each request a full TLS handshake).
    pub close: Vec<SteadyRun>,
    /// Median req/s of the close runs = handshakes per second.
    pub handshakes_per_s_median: Option<f64>,
    /// Median proxy CPU µs per request (= per handshake) of the close runs.
    pub close_cpu_us_per_req_median: Option<f64>,
    /// Median req/s of the saturating runs.
    pub rps_median: f64,
    /// Median p50 (µs) of the paced runs.
    pub paced_p50_us_median: f64,
    /// Added p50 over direct, µs: median over rounds of (this target's paced p50 − direct's
    /// paced p50 in the same round).
    pub added_p50_us: Option<f64>,
    /// Median req/s of the paced runs (the rate the client held).
    pub paced_rps_median: f64,
    /// Median proxy CPU µs per request of the saturating runs.
    pub cpu_us_per_req_median: Option<f64>,
    /// Median p99 (µs) of the paced runs.
    pub paced_p99_us_median: f64,
    /// Why it did not run, if it did not.
    pub error: Option<String>,
}

/// One upgrade through the proxy.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyUpgrade {
    /// 1-based.
    pub index: usize,
    /// Build it switched to.
    pub to: Version,
    /// Seconds from the run's start when `handover upgrade` was invoked.
    pub at_s: f64,
    /// Rename + `handover upgrade` until it returned, ms.
    pub took_ms: f64,
    /// Handover time, ms: from the rename + `handover upgrade` to the first answer of the new
    /// build through the proxy, on a fresh connection (probed alongside the command, as in the
    /// supervisor matrix); none when it never answered within the switch timeout.
    pub handover_ms: Option<f64>,
    /// It reported success.
    pub ok: bool,
    /// Its output (stdout + stderr), trimmed.
    pub output: String,
}

/// One upgrade run.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeRun {
    /// `handover http keepalive` etc.
    pub case: String,
    /// The load run (failures by kind in `run.failures`).
    pub run: Option<RunReport>,
    /// Upgrades requested.
    pub requested: usize,
    /// Upgrades that succeeded.
    pub done: usize,
    /// Every upgrade.
    pub upgrades: Vec<ProxyUpgrade>,
    /// The stop.
    pub stop: StopReport,
    /// Why it did not run, if it did not.
    pub error: Option<String>,
    /// The supervisor's log.
    pub log: String,
}

/// Target checks of issue 5.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyTargets {
    /// handover http req/s ÷ nginx http req/s (target ≥ 1.0).
    pub http_rps_ratio: Option<f64>,
    /// handover tcp req/s ÷ nginx stream req/s (target ≥ 1.0).
    pub tcp_rps_ratio: Option<f64>,
    /// Proxy CPU per request, handover http ÷ nginx http (below 1: handover is cheaper).
    pub http_cpu_ratio: Option<f64>,
    /// Same for handover tcp ÷ nginx stream.
    pub tcp_cpu_ratio: Option<f64>,
    /// Paced p50 of handover http − direct, µs (target ≤ 50).
    pub http_added_p50_us: Option<f64>,
    /// Same for nginx http (reference).
    pub nginx_http_added_p50_us: Option<f64>,
    /// Paced p50 of handover tcp − direct, µs (target ≤ 50).
    pub tcp_added_p50_us: Option<f64>,
    /// Same for nginx stream (reference).
    pub nginx_stream_added_p50_us: Option<f64>,
    /// handover https req/s ÷ nginx https req/s, keep-alive (target ≥ 1.0).
    pub https_rps_ratio: Option<f64>,
    /// Proxy CPU per request, handover https ÷ nginx https, keep-alive.
    pub https_cpu_ratio: Option<f64>,
    /// Handshakes/s (close-mode req/s), handover https ÷ nginx https.
    pub https_handshake_ratio: Option<f64>,
    /// Proxy CPU per handshake, handover https ÷ nginx https.
    pub https_handshake_cpu_ratio: Option<f64>,
    /// Failed requests per upgrade case (target 0).
    pub upgrade_failed: Vec<(String, u64)>,
}

/// The phase's report (`proxy` in report.json).
#[derive(Debug, Clone, Serialize)]
pub struct ProxyReport {
    /// nginx version (or why not found).
    pub nginx: String,
    /// nginx `worker_processes`.
    pub nginx_workers: String,
    /// Saturating connections.
    pub conns: usize,
    /// Paced rate and connections.
    pub rate: f64,
    /// Paced connections.
    pub rate_conns: usize,
    /// Steady run duration, s.
    pub duration_s: f64,
    /// How paced latency is measured.
    pub latency_note: &'static str,
    /// Per target.
    pub steady: Vec<TargetSteady>,
    /// Upgrade runs.
    pub upgrade_runs: Vec<UpgradeRun>,
    /// Upgrade interval, s.
    pub interval_s: f64,
    /// The targets.
    pub targets: ProxyTargets,
}

const TARGETS: [Target; 7] = [
    Target::Direct,
    Target::Handover(Scheme::Http),
    Target::Nginx(Scheme::Http),
    Target::Handover(Scheme::Tcp),
    Target::Nginx(Scheme::Tcp),
    Target::Handover(Scheme::Https),
    Target::Nginx(Scheme::Https),
];

/// The upgrade runs, in order (each runs when its handover target is selected).
const UPGRADE_CASES: [(Scheme, Mode); 5] = [
    (Scheme::Http, Mode::Keepalive),
    (Scheme::Http, Mode::Close),
    (Scheme::Tcp, Mode::Close),
    (Scheme::Https, Mode::Keepalive),
    (Scheme::Https, Mode::Close),
];

fn is_https(t: Target) -> bool {
    matches!(
        t,
        Target::Handover(Scheme::Https) | Target::Nginx(Scheme::Https)
    )
}

fn log_of(o: &ProxyOpts, name: &str) -> PathBuf {
    o.log_dir
        .join(format!("proxy-{}.log", name.replace([' ', '/'], "-")))
}

/// Whether `--proxy-targets` asks for `t` (`direct`, the baseline, always runs).
fn selected(o: &ProxyOpts, t: Target) -> bool {
    t == Target::Direct
        || o.targets.is_empty()
        || o.targets.iter().any(|n| n.replace('-', " ") == t.name())
}

/// Runs the phase.
pub fn execute(o: &ProxyOpts) -> ProxyReport {
    let _ = std::fs::create_dir_all(&o.log_dir);
    // The certificate exists for this phase only (removed when `o` goes out of scope), and only
    // when an https setup will run; if it cannot be made, those setups fail saying so.
    let with_tls;
    let o = if o.tools.tls.is_none() && TARGETS.iter().any(|t| is_https(*t) && selected(o, *t)) {
        let mut x = o.clone();
        match Pki::new() {
            Ok(p) => x.tools.tls = Some(Arc::new(p)),
            Err(e) => progress(&format!("proxy https: {e}")),
        }
        with_tls = x;
        &with_tls
    } else {
        o
    };
    let mut steady: Vec<TargetSteady> = TARGETS
        .iter()
        .map(|t| TargetSteady {
            target: t.name(),
            saturating: Vec::new(),
            paced: Vec::new(),
            close: Vec::new(),
            handshakes_per_s_median: None,
            close_cpu_us_per_req_median: None,
            rps_median: 0.0,
            paced_p50_us_median: 0.0,
            added_p50_us: None,
            paced_rps_median: 0.0,
            cpu_us_per_req_median: None,
            paced_p99_us_median: 0.0,
            error: None,
        })
        .collect();
    for round in 1..=o.rounds {
        // Rotate the order each round so no target always runs first (warm caches, turbo).
        for k in 0..TARGETS.len() {
            let i = (k + round - 1) % TARGETS.len();
            if crate::abort::requested() || steady[i].error.is_some() || !selected(o, TARGETS[i]) {
                continue;
            }
            match steady_round(o, TARGETS[i], round) {
                Ok((sat, paced, close)) => {
                    let close_note = close.as_ref().map_or_else(String::new, |c| {
                        format!(
                            "; close {:.0} handshakes/s, {} failed",
                            c.run.rps, c.run.failed
                        )
                    });
                    progress(&format!(
                        "proxy {} #{round}: {:.0} req/s saturating; paced p50 {} µs p99 {} µs, {} late, {} failed{close_note}",
                        TARGETS[i].name(),
                        sat.run.rps,
                        paced.p50_us,
                        paced.p99_us,
                        paced.late,
                        sat.run.failed + paced.run.failed
                    ));
                    steady[i].saturating.push(sat);
                    steady[i].paced.push(paced);
                    steady[i].close.extend(close);
                }
                Err(e) => {
                    progress(&format!("proxy {}: {e}", TARGETS[i].name()));
                    steady[i].error = Some(e.to_string());
                }
            }
        }
    }
    let direct: Vec<(usize, u64)> = steady[0]
        .paced
        .iter()
        .map(|r| (r.round, r.p50_us))
        .collect();
    for s in &mut steady {
        let diffs: Vec<f64> = s
            .paced
            .iter()
            .filter_map(|r| {
                let d = direct.iter().find(|d| d.0 == r.round)?;
                Some(r.p50_us as f64 - d.1 as f64)
            })
            .collect();
        s.added_p50_us = (!diffs.is_empty()).then(|| median(diffs));
        s.rps_median = median(s.saturating.iter().map(|r| r.run.rps).collect());
        s.paced_p50_us_median = median(s.paced.iter().map(|r| r.p50_us as f64).collect());
        s.paced_rps_median = median(s.paced.iter().map(|r| r.run.rps).collect());
        s.paced_p99_us_median = median(s.paced.iter().map(|r| r.p99_us as f64).collect());
        let cpu: Vec<f64> = s
            .saturating
            .iter()
            .filter_map(|r| r.proxy_cpu_us_per_req)
            .collect();
        s.cpu_us_per_req_median = (!cpu.is_empty()).then(|| median(cpu));
        s.handshakes_per_s_median =
            (!s.close.is_empty()).then(|| median(s.close.iter().map(|r| r.run.rps).collect()));
        let cpu: Vec<f64> = s
            .close
            .iter()
            .filter_map(|r| r.proxy_cpu_us_per_req)
            .collect();
        s.close_cpu_us_per_req_median = (!cpu.is_empty()).then(|| median(cpu));
    }
    let mut upgrade_runs = Vec::new();
    for (scheme, mode) in UPGRADE_CASES {
        if crate::abort::requested() || o.upgrades == 0 {
            break;
        }
        if !selected(o, Target::Handover(scheme)) {
            continue;
        }
        let r = upgrade_run(o, scheme, mode);
        progress(&table::upgrade_line(&r));
        upgrade_runs.push(r);
    }
    let targets = targets(&steady, &upgrade_runs);
    ProxyReport {
        nginx: o.nginx_version.clone(),
        nginx_workers: o.tools.nginx_workers.clone(),
        conns: o.conns,
        rate: o.rate,
        rate_conns: o.rate_conns,
        duration_s: o.duration.as_secs_f64(),
        latency_note: "paced runs: each connection sends at rate/conns with absolute deadlines; \
                       latency from the actual send to the whole response; lag = send time \
                       behind schedule (tokio's timer fires on 1 ms ticks, so sends lag their deadline by up to \
                       ~2 ms, in JSON), late = sends more than one period behind",
        steady,
        upgrade_runs,
        interval_s: o.interval.as_secs_f64(),
        targets,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn targets(steady: &[TargetSteady], ups: &[UpgradeRun]) -> ProxyTargets {
    let get = |name: &str| {
        steady
            .iter()
            .find(|s| s.target == name && s.error.is_none() && !s.saturating.is_empty())
    };
    let ratio = |a: &str, b: &str| match (get(a), get(b)) {
        (Some(a), Some(b)) if b.rps_median > 0.0 => Some(a.rps_median / b.rps_median),
        _ => None,
    };
    let added = |a: &str| get(a).and_then(|a| a.added_p50_us);
    let cpu_ratio = |a: &str, b: &str| {
        let (a, b) = (
            get(a)?.cpu_us_per_req_median?,
            get(b)?.cpu_us_per_req_median?,
        );
        (b > 0.0).then(|| a / b)
    };
    let close_ratio = |f: fn(&TargetSteady) -> Option<f64>| {
        let (a, b) = (f(get("handover https")?)?, f(get("nginx https")?)?);
        (b > 0.0).then(|| a / b)
    };
    ProxyTargets {
        http_cpu_ratio: cpu_ratio("handover http", "nginx http"),
        tcp_cpu_ratio: cpu_ratio("handover tcp", "nginx stream"),
        http_rps_ratio: ratio("handover http", "nginx http"),
        tcp_rps_ratio: ratio("handover tcp", "nginx stream"),
        http_added_p50_us: added("handover http"),
        nginx_http_added_p50_us: added("nginx http"),
        tcp_added_p50_us: added("handover tcp"),
        nginx_stream_added_p50_us: added("nginx stream"),
        https_rps_ratio: ratio("handover https", "nginx https"),
        https_cpu_ratio: cpu_ratio("handover https", "nginx https"),
        https_handshake_ratio: close_ratio(|s| s.handshakes_per_s_median),
        https_handshake_cpu_ratio: close_ratio(|s| s.close_cpu_us_per_req_median),
        upgrade_failed: ups
            .iter()
            .filter_map(|u| Some((u.case.clone(), u.run.as_ref()?.failed)))
            .collect(),
    }
}

/// A round's saturating, paced and (https only) close runs.
type Round = (SteadyRun, SteadyRun, Option<SteadyRun>);

/// Starts `target`, runs one saturating and one paced load (and for https a saturating close
/// load), stops it.
fn steady_round(o: &ProxyOpts, target: Target, round: usize) -> io::Result<Round> {
    let running = setup::start(target, &o.tools, &log_of(o, target.name()))?;
    crate::abort::sleep(Duration::from_millis(200));
    let sat = load_run(
        o,
        &running,
        target.name(),
        Mode::Keepalive,
        o.conns,
        None,
        o.duration,
    );
    let paced = sat.as_ref().ok().map(|_| {
        load_run(
            o,
            &running,
            target.name(),
            Mode::Keepalive,
            o.rate_conns,
            Some(o.rate),
            o.duration,
        )
    });
    let close = match &paced {
        Some(Ok(_)) if is_https(target) => Some(load_run(
            o,
            &running,
            target.name(),
            Mode::Close,
            o.conns,
            None,
            o.duration,
        )),
        _ => None,
    };
    let stop = running.stop(o.stop_grace);
    let mut sat = sat?;
    let mut paced = paced.expect("ran after a successful saturating run")?;
    let mut close = close.transpose()?;
    sat.round = round;
    paced.round = round;
    if let Some(c) = close.as_mut() {
        c.round = round;
    }
    sat.run.stop = stop;
    Ok((sat, paced, close))
}

fn load_run(
    o: &ProxyOpts,
    running: &Running,
    name: &str,
    mode: Mode,
    conns: usize,
    rate: Option<f64>,
    duration: Duration,
) -> io::Result<SteadyRun> {
    let cfg = LoadConfig {
        addr: running.addr,
        mode,
        conns,
        threads: o.threads,
        duration,
        timeout: o.timeout,
        greetings: Arc::new(setup::greetings()),
        generations: Arc::new(Generations::new(0)),
        rate,
        tls: running.tls.clone(),
    };
    let cpu_before = running.proxy_cpu_ticks();
    let start = Instant::now();
    let (stats, elapsed) = load::run(&cfg, start)?;
    let cpu_after = running.proxy_cpu_ticks();
    let header = build::Header {
        label: format!(
            "proxy {name} {}",
            match (rate, mode) {
                (Some(_), _) => "paced",
                (None, Mode::Close) => "close",
                (None, Mode::Keepalive) => "saturating",
            }
        ),
        scenario: Scenario::Steady,
        server: name.to_string(),
        mode: mode.label(),
        conns,
        generator: "handover-bench",
    };
    let run = build::from_stats(&header, &stats, elapsed);
    let proxy_cpu_us_per_req = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) if run.ok > 0 => {
            Some(a.saturating_sub(b) as f64 * crate::cpu::tick_us() / run.ok as f64)
        }
        _ => None,
    };
    let q = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    Ok(SteadyRun {
        round: 0,
        p50_us: q(&stats.latency, 0.5),
        p99_us: q(&stats.latency, 0.99),
        late: stats.late,
        lag_p99_us: q(&stats.lag, 0.99),
        lag_max_us: stats.lag.max(),
        proxy_cpu_us_per_req,
        run,
    })
}

fn case_name(scheme: Scheme, mode: Mode) -> String {
    format!("handover {} {}", scheme.name(), mode.label())
}

/// Load through handover's proxy with `o.upgrades` upgrades at fixed intervals.
fn upgrade_run(o: &ProxyOpts, scheme: Scheme, mode: Mode) -> UpgradeRun {
    let case = case_name(scheme, mode);
    let log = log_of(o, &format!("upgrade {case}"));
    let mut out = UpgradeRun {
        case: case.clone(),
        run: None,
        requested: o.upgrades,
        done: 0,
        upgrades: Vec::new(),
        stop: StopReport::default(),
        error: None,
        log: log.display().to_string(),
    };
    progress(&format!(
        "proxy upgrades: {case}, {} conns, {} upgrades every {:?} ...",
        o.upgrade_conns, o.upgrades, o.interval
    ));
    let running = match setup::start(Target::Handover(scheme), &o.tools, &log) {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    crate::abort::sleep(Duration::from_millis(200));
    // Load until half an interval after the last upgrade's slot, plus a second to see the
    // old generation's requests finish.
    let duration = o.interval * o.upgrades as u32 + Duration::from_secs(1);
    let cfg = LoadConfig {
        addr: running.addr,
        mode,
        conns: o.upgrade_conns,
        threads: o.threads,
        duration,
        timeout: o.timeout,
        greetings: Arc::new(setup::greetings()),
        generations: Arc::new(Generations::new(0)),
        rate: None,
        tls: running.tls.clone(),
    };
    let start = Instant::now();
    let (load, ups) = std::thread::scope(|s| {
        let up = s.spawn(|| upgrades::fire(o, &running, start, start + duration));
        let load = load::run(&cfg, start);
        (load, up.join().expect("upgrader panicked"))
    });
    out.stop = running.stop(o.stop_grace);
    out.done = ups.iter().filter(|u| u.ok).count();
    out.upgrades = ups;
    match load {
        Ok((stats, elapsed)) => {
            let header = build::Header {
                label: format!("proxy upgrade {case}"),
                scenario: Scenario::Upgrade,
                server: case.clone(),
                mode: mode.label(),
                conns: o.upgrade_conns,
                generator: "handover-bench",
            };
            let mut run = build::from_stats(&header, &stats, elapsed);
            run.stop = out.stop.clone();
            run.server_log = out.log.clone();
            out.run = Some(run);
        }
        Err(e) => out.error = Some(format!("load: {e}")),
    }
    out
}
