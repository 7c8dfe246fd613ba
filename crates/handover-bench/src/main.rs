//! `handover-bench`: the load + upgrade benchmark of issue 3. See `--help` and the crate's
//! README for what it measures and how failures are counted.
//!
//! | module | one reason to change |
//! |---|---|
//! | `cli`, `plan` | the command line; the scenario matrix and its order |
//! | `run` | one run: start a server, drive load with or without upgrades, stop it |
//! | `server` | the servers under test (handover's `hello` with its drain, axum's or, over TLS, hyper-util's; peers such as nginx and Go) |
//! | `binaries` | the v1 and v2 builds of `hello` |
//! | `process`, `reaper`, `abort`, `rlimit` | a server's lifecycle; reaping orphans; Ctrl-C; `RLIMIT_NOFILE` |
//! | `load`, `http1`, `wrk` | the load client; the HTTP/1.1 it speaks; the wrk cross-check |
//! | `upgrade`, `probe`, `generations`, `version` | timing upgrades; the fresh-connection probe; who answered |
//! | `idle_conns` | the 10,000 idle keep-alive connections phase |
//! | `proxy`, `cpu` | the `--phases proxy` comparison; CPU time per request |
//! | `tls` | the certificate made at start and the verifying client (`--tls`, https proxy targets) |
//! | `supervisors` | the `--supervisors` matrix: `handover run` against PM2, gunicorn, circus, a systemd-style restart, nginx |
//! | `report` | `report.json`, `chart.svg` and the table (`report::versus`: subject ÷ baseline per case over its repeats) |

mod abort;
mod binaries;
mod cli;
mod cpu;
mod generations;
mod http1;
mod idle_conns;
mod load;
mod plan;
mod probe;
mod process;
mod proxy;
mod reaper;
mod report;
mod rlimit;
mod run;
mod server;
mod supervisors;
mod tls;
mod upgrade;
mod version;
mod wrk;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use cli::Args;
use plan::{progress, Phase, Plan};
use report::model::Report;
use run::Settings;
use server::hello::Hello;
use server::peers::{self, Peer, PeerOpts};
use server::ServerKind;
use upgrade::measure::ProbeOpts;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("handover-bench: {e}");
        return ExitCode::from(2);
    }
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handover-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> std::io::Result<()> {
    let workspace = args
        .workspace
        .clone()
        .unwrap_or_else(binaries::default_workspace);
    let bins = binaries::resolve(
        args.bin_v1.clone(),
        args.bin_v2.clone(),
        &workspace,
        args.tls,
    )?;
    // Before any server starts, so they inherit it.
    let nofile = rlimit::raise_nofile();
    // Only after the builds: from here on, orphaned server generations are ours to reap.
    reaper::become_subreaper()?;
    abort::install();
    if args.wrk && !wrk::available() {
        return Err(std::io::Error::other(
            "--wrk: wrk is not installed (apt-get install wrk)",
        ));
    }
    // One certificate for every server of the invocation, so both drains sign alike.
    let pki = if args.tls {
        Some(Arc::new(tls::Pki::new()?))
    } else {
        None
    };
    let kinds: Vec<Arc<dyn ServerKind>> = args
        .drains()
        .into_iter()
        .map(|drain| {
            Arc::new(Hello {
                drain,
                bins: bins.clone(),
                drain_timeout: args.drain_timeout,
                upgrade_timeout: args.upgrade_timeout,
                tls: pki.clone(),
            }) as Arc<dyn ServerKind>
        })
        .collect();
    let log_dir = args.out.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let selected: Vec<Peer> = args
        .peers
        .iter()
        .copied()
        .filter(|&p| p != Peer::None)
        .collect();
    // Absolute: `go build` runs in another directory and needs an absolute GOCACHE.
    let peer_dir = std::env::current_dir()?.join(&args.out).join("peers");
    std::fs::create_dir_all(&peer_dir)?;
    let peer_opts = PeerOpts {
        drain_timeout: args.drain_timeout,
    };
    let mut supervisor_tools = Vec::new();
    let mut footprint_kind = None;
    let (kinds, peer_kinds, peers) = if args.supervisors {
        // The rows take the peers' place in the plan (upgrade runs and idle handovers); no
        // library drain runs, so there are no steady A/B pairs.
        let handover = args
            .handover_bin
            .clone()
            .unwrap_or_else(|| workspace.join("target/release/handover"));
        let tools = supervisors::tools::setup(&args.supervisor_tools, handover);
        for n in &tools.notes {
            progress(&format!("supervisors: {n}"));
        }
        supervisor_tools.clone_from(&tools.notes);
        let (rows, status) =
            supervisors::prepare(&args.supervisor_rows, &tools, &bins, args.drain_timeout);
        if args.supervisor_footprint > 0 {
            footprint_kind = supervisors::prepare(
                &[supervisors::Row::HandoverHello],
                &tools,
                &bins,
                args.drain_timeout,
            )
            .0
            .pop()
            .zip(tools.handover.clone().ok());
        }
        (Vec::new(), rows, status)
    } else if args.tls {
        let peers = peers::skipped(&selected, "serves plain HTTP only (--tls)");
        (kinds, Vec::new(), peers)
    } else {
        let (peer_kinds, peers) = peers::prepare(&selected, &peer_dir, &peer_opts);
        (kinds, peer_kinds, peers)
    };
    let settings = Settings {
        threads: args.threads,
        timeout: args.timeout,
        probe: ProbeOpts {
            switch_timeout: args.switch_timeout,
            linger: args.linger,
            interval: args.probe_interval,
            probe_timeout: Duration::from_secs(1),
        },
        ready_timeout: Duration::from_secs(15),
        stop_grace: args.drain_timeout + Duration::from_secs(2),
        settle: Duration::from_millis(200),
        log_dir,
    };
    let plan = Plan {
        kinds: kinds.clone(),
        peers: peer_kinds,
        modes: args.modes.clone(),
        conns: args.conns.clone(),
        phases: args.phases.clone(),
        duration: args.duration,
        upgrades: args.upgrades,
        interval: args.interval,
        steady_duration: args.steady_duration,
        ab_runs: args.ab_runs,
        idle_upgrades: args.idle_upgrades,
        idle_pause: args.idle_pause,
        wrk: args.wrk,
        repeat: args.repeat,
    };
    let (cells, idle) = plan::execute(&plan, &settings);
    let idle_conns = match kinds.first() {
        Some(kind) if args.phases.contains(&Phase::IdleConns) && !abort::requested() => {
            idle_conns_phase(kind, args, nofile, &settings)
        }
        _ => Vec::new(),
    };
    let proxy = (args.phases.contains(&Phase::Proxy) && !abort::requested())
        .then(|| proxy_phase(args, &bins, &workspace, &settings));
    let supervisor_footprint = match footprint_kind {
        Some((kind, handover)) if !abort::requested() => {
            progress(&format!(
                "supervisor footprint: {} x{} upgrades",
                kind.name(),
                args.supervisor_footprint
            ));
            let log = settings.log_dir.join("footprint.log");
            match supervisors::footprint::measure(
                &kind,
                &handover,
                args.supervisor_footprint,
                (args.supervisor_footprint / 10).max(1),
                &log,
                settings.ready_timeout,
                settings.stop_grace,
            ) {
                Ok(f) => {
                    for l in supervisors::footprint::lines(&f) {
                        progress(&l);
                    }
                    Some(f)
                }
                Err(e) => {
                    progress(&format!("supervisor footprint failed: {e}"));
                    None
                }
            }
        }
        _ => None,
    };
    let mut meta = meta(args, &bins);
    meta["nofile"] = serde_json::to_value(nofile).unwrap_or_default();
    meta["left_behind_at_exit"] = left_behind().into();
    if args.supervisors {
        meta["supervisor_tools"] = supervisor_tools.into();
    }
    let report = Report {
        meta,
        versus: report::versus::of(&cells, args.tls),
        cells,
        idle,
        peers,
        idle_conns,
        supervisor_footprint,
        proxy,
    };
    report::write(&args.out, &report)?;
    print!("{}", report::table::render(&report));
    progress(&format!(
        "wrote {0}/report.json, {0}/summary.svg, {0}/chart.svg, {0}/table.txt",
        args.out.display()
    ));
    if abort::requested() {
        return Err(std::io::Error::other("interrupted; the report is partial"));
    }
    Ok(())
}

fn idle_conns_phase(
    kind: &Arc<dyn ServerKind>,
    args: &Args,
    nofile: rlimit::NoFile,
    settings: &Settings,
) -> Vec<idle_conns::summary::IdleConnsReport> {
    progress(&format!(
        "idle-conns: {} x{} keep-alive connections, one upgrade",
        kind.name(),
        args.idle_conns
    ));
    let spec = idle_conns::IdleConnsSpec {
        kind,
        n: args.idle_conns,
        drain_timeout: args.drain_timeout,
        nofile,
    };
    match idle_conns::run(&spec, settings) {
        Ok(r) => {
            for l in idle_conns::summary::lines(&r) {
                progress(&l);
            }
            vec![r]
        }
        Err(e) => {
            progress(&format!("idle-conns {} failed: {e}", kind.name()));
            Vec::new()
        }
    }
}

fn proxy_phase(
    args: &Args,
    bins: &binaries::Binaries,
    workspace: &std::path::Path,
    settings: &Settings,
) -> proxy::ProxyReport {
    let (nginx, stream_module, nginx_version) = proxy::setup::find_nginx();
    let handover = args
        .handover_bin
        .clone()
        .unwrap_or_else(|| workspace.join("target/release/handover"));
    progress(&format!(
        "proxy: {} vs direct and {nginx_version} (stream module: {})",
        handover.display(),
        if stream_module.is_some() { "yes" } else { "no" }
    ));
    let opts = proxy::ProxyOpts {
        tools: proxy::setup::Tools {
            handover,
            nginx,
            stream_module,
            nginx_workers: args.nginx_workers.clone(),
            nginx_user: peers::nginx::user_directive(),
            bins: bins.clone(),
            drain_timeout: args.drain_timeout,
            busy_poll: args.proxy_busy_poll,
            tls: None,
        },
        nginx_version,
        conns: args.proxy_conns,
        rate: args.proxy_rate,
        rate_conns: args.proxy_rate_conns,
        duration: args.proxy_duration,
        rounds: args.proxy_rounds,
        targets: args.proxy_targets.clone(),
        upgrade_conns: args.proxy_upgrade_conns,
        upgrades: args.proxy_upgrades,
        interval: args.proxy_interval,
        threads: args.threads,
        timeout: args.timeout,
        stop_grace: settings.stop_grace,
        log_dir: settings.log_dir.join("proxy"),
    };
    proxy::execute(&opts)
}

/// Last line of defence: kills and reaps anything still below this process (each run's stop
/// should have left nothing) and says how many there were.
fn left_behind() -> usize {
    let left = reaper::descendants();
    for d in &left {
        let _ = reaper::signal(d.pid, libc::SIGKILL);
    }
    if !left.is_empty() {
        progress(&format!("killed {} processes left behind", left.len()));
        std::thread::sleep(Duration::from_millis(200));
        reaper::reap_exited();
    }
    left.len()
}

fn meta(args: &Args, bins: &binaries::Binaries) -> serde_json::Value {
    serde_json::json!({
        "tool": concat!("handover-bench ", env!("CARGO_PKG_VERSION")),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "started_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "bins": bins,
        "threads": args.threads,
        "tls": args.tls,
        "drains": args.drains().iter().map(|d| d.label()).collect::<Vec<_>>(),
        "timeout_ms": args.timeout.as_millis() as u64,
        "upgrade_run_s": args.duration.as_secs_f64(),
        "upgrades": args.upgrades,
        "interval_s": args.interval.as_secs_f64(),
        "steady_run_s": args.steady_duration.as_secs_f64(),
        "ab_runs": args.ab_runs,
        "repeat": args.repeat,
        "idle_upgrades": args.idle_upgrades,
        "linger_ms": args.linger.as_millis() as u64,
        "probe_interval_us": args.probe_interval.as_micros() as u64,
        "drain_timeout_ms": args.drain_timeout.as_millis() as u64,
        "slice_ms": load::stats::SLICE.as_millis() as u64,
        "proxy": {
            "conns": args.proxy_conns,
            "rate": args.proxy_rate,
            "rate_conns": args.proxy_rate_conns,
            "duration_s": args.proxy_duration.as_secs_f64(),
            "rounds": args.proxy_rounds,
            "upgrade_conns": args.proxy_upgrade_conns,
            "upgrades": args.proxy_upgrades,
            "interval_s": args.proxy_interval.as_secs_f64(),
            "nginx_workers": args.nginx_workers,
        },
    })
}
