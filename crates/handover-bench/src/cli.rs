//! Command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::load::Mode;
use crate::plan::Phase;
use crate::server::hello::Drain;
use crate::server::peers::Peer;
use crate::supervisors::Row;

/// Longest allowed load run.
pub const MAX_RUN: Duration = Duration::from_secs(30);

/// Load + upgrade benchmark for handover's `hello` example: failures by kind, stale answers,
/// handover time, throughput per 100 ms, latency; (a) handover's drain with upgrades, (b) axum's
/// drain with upgrades, (c) steady state, as ratios of runs in the same invocation.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// Prebuilt v1 `hello` (greeting "v1 Welcome Server"); with --bin-v2, skips building.
    #[arg(long, value_name = "PATH")]
    pub bin_v1: Option<PathBuf>,
    /// Prebuilt v2 `hello` (greeting "v2 Welcome New Server").
    #[arg(long, value_name = "PATH")]
    pub bin_v2: Option<PathBuf>,
    /// Workspace to build `hello` in (into target/bench/v1 and target/bench/v2).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Where report.json, chart.svg, table.txt and server logs go.
    #[arg(long, value_name = "DIR", default_value = "target/bench-report")]
    pub out: PathBuf,
    /// Client modes to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["keepalive", "close"])]
    pub modes: Vec<Mode>,
    /// Connection counts to run.
    #[arg(long, value_delimiter = ',', default_values = ["64", "512"])]
    pub conns: Vec<usize>,
    /// Drains to compare; the first is the subject of the ratios, the second the baseline
    /// (default: handover,axum; with --tls: handover,hyper-util).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub drains: Vec<Drain>,
    /// Serve and load over HTTPS: `hello --tls-cert --tls-key` with a certificate made at
    /// start (ECDSA P-256), a verifying client without session resumption (every new
    /// connection a full handshake), and the hand-made tokio-rustls + hyper-util
    /// `GracefulShutdown` server as the baseline. Needs `hello` built with `--features tls`
    /// (done when the bench builds it); the peers, wrk and idle-conns speak plain HTTP only.
    #[arg(long)]
    pub tls: bool,
    /// Parts of the matrix to run (`idle-conns`: --idle-conns idle keep-alive connections
    /// drained by one upgrade of the first drain; not in the default set).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["upgrade", "steady", "idle"])]
    pub phases: Vec<Phase>,
    /// Duration of each run with upgrades (≤ 30s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Upgrades per upgrade run, the i-th fired at i × --interval.
    #[arg(long, default_value_t = 8)]
    pub upgrades: usize,
    /// Interval between upgrades.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Duration of each steady run (≤ 30s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "3s")]
    pub steady_duration: Duration,
    /// Interleaved steady runs per drain (the throughput ratio is their median).
    #[arg(long, default_value_t = 5)]
    pub ab_runs: usize,
    /// Runs of each (mode, connections) cell, one after the other; the table adds them up per
    /// case (e.g. 4 × 25 upgrades: 100 upgrades per case with every run ≤ 30 s).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: usize,
    /// Upgrades without load per drain (each waits for the old PID to exit).
    #[arg(long, default_value_t = 10)]
    pub idle_upgrades: usize,
    /// Pause between idle upgrades.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "300ms")]
    pub idle_pause: Duration,
    /// Client worker threads (and wrk threads).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Per-request timeout.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "2s")]
    pub timeout: Duration,
    /// How long to keep probing fresh connections after a switch (stale answers).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "300ms")]
    pub linger: Duration,
    /// Pause between handover probes.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "200us")]
    pub probe_interval: Duration,
    /// Give up on an upgrade whose new version has not answered after this long.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub switch_timeout: Duration,
    /// The server's --drain-timeout.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,
    /// The server's --upgrade-timeout.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
    pub upgrade_timeout: Duration,
    /// Also run wrk (steady: req/s next to ours; upgrades: wrk's error counts).
    #[arg(long)]
    pub wrk: bool,
    /// Peers measured in the same upgrade and idle phases (`none` for none); a peer that
    /// cannot be built here is skipped with the reason in the report.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["grace", "tableflip", "nginx"])]
    pub peers: Vec<Peer>,
    /// Idle keep-alive connections for `--phases idle-conns`.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub idle_conns: usize,
    /// The supervisor matrix (issue 16) instead of the library's: `handover run` against PM2,
    /// gunicorn, circus, a systemd-style restart and nginx with two upstreams, in the upgrade
    /// and idle phases (`--supervisor-rows` picks rows; needs --handover-bin or the release
    /// CLI; installs PM2, gunicorn and circus into --supervisor-tools).
    #[arg(long)]
    pub supervisors: bool,
    /// `--supervisors`: the rows to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',', default_values = [
        "handover-hello", "handover-hello-usr2", "handover-node", "handover-python",
        "handover-proxy", "handover-proxy-hello", "handover-proxy-hello-usr2", "pm2",
        "gunicorn", "circus", "restart", "nginx-swap"])]
    pub supervisor_rows: Vec<Row>,
    /// `--supervisors`: also upgrade `handover run` (socket, hello) N times back to back and
    /// report the supervisor's RSS and open fds (0: not run; issue 16 asks for 1000).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub supervisor_footprint: usize,
    /// `--supervisors`: where PM2 (npm) and gunicorn + circus (a pip virtualenv) are installed,
    /// kept between runs.
    #[arg(long, value_name = "DIR", default_value = "target/supervisor-tools")]
    pub supervisor_tools: PathBuf,
    /// `--phases proxy` and `--supervisors`: the handover CLI (default:
    /// <workspace>/target/release/handover).
    #[arg(long, value_name = "PATH")]
    pub handover_bin: Option<PathBuf>,
    /// `--phases proxy`: nginx `worker_processes` (`auto` = one per core, as handover's proxy
    /// runs one thread per core).
    #[arg(long, default_value = "auto")]
    pub nginx_workers: String,
    /// `--phases proxy`: connections of the saturating keep-alive runs.
    #[arg(long, default_value_t = 64)]
    pub proxy_conns: usize,
    /// `--phases proxy`: requests per second of the paced (latency) runs.
    #[arg(long, default_value_t = 2000.0)]
    pub proxy_rate: f64,
    /// `--phases proxy`: connections of the paced runs.
    #[arg(long, default_value_t = 16)]
    pub proxy_rate_conns: usize,
    /// `--phases proxy`: duration of each saturating and each paced run (≤ 30s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "3s")]
    pub proxy_duration: Duration,
    /// `--phases proxy`: rounds of steady runs over all targets (order rotated; medians).
    #[arg(long, default_value_t = 3)]
    pub proxy_rounds: usize,
    /// `--phases proxy`: which steady targets to run besides `direct` (the baseline, always
    /// run): `handover-http`, `nginx-http`, `handover-tcp`, `nginx-stream`, `handover-https`,
    /// `nginx-https` (default: all). The https setups use a certificate the bench makes at
    /// start and also get a `Connection: close` run (handshakes/s). Upgrade runs: those of the
    /// selected handover schemes.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub proxy_targets: Vec<String>,
    /// `--phases proxy`: `handover run --busy-poll` for the handover setups (default: its own).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub proxy_busy_poll: Option<Duration>,
    /// `--phases proxy`: connections of the upgrade runs.
    #[arg(long, default_value_t = 64)]
    pub proxy_upgrade_conns: usize,
    /// `--phases proxy`: upgrades per upgrade run (0: none).
    #[arg(long, default_value_t = 25)]
    pub proxy_upgrades: usize,
    /// `--phases proxy`: interval between them; the run lasts upgrades × interval + 1 s (≤ 30s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "250ms")]
    pub proxy_interval: Duration,
}

impl Args {
    /// Checks the bounds the benchmark promises (every run ≤ 30 s, upgrades inside the run).
    pub fn validate(&self) -> Result<(), String> {
        if self.duration > MAX_RUN || self.steady_duration > MAX_RUN {
            return Err("--duration and --steady-duration are capped at 30s".into());
        }
        if self.duration.is_zero() || self.steady_duration.is_zero() {
            return Err("durations must be positive".into());
        }
        if self.upgrades > 0 && self.interval * self.upgrades as u32 >= self.duration {
            return Err(format!(
                "{} upgrades every {:?} do not fit in --duration {:?}",
                self.upgrades, self.interval, self.duration
            ));
        }
        if self.conns.iter().any(|&c| c == 0 || c > 10_000) || self.threads == 0 {
            return Err("--conns must be 1..=10000 and --threads ≥ 1".into());
        }
        if self.modes.is_empty() || self.conns.is_empty() {
            return Err("--modes and --conns need at least one value".into());
        }
        self.check_tls()?;
        if self.idle_conns == 0 || self.idle_conns > 50_000 {
            return Err("--idle-conns must be 1..=50000".into());
        }
        if self.peers.contains(&Peer::None) && self.peers.len() > 1 {
            return Err("--peers none cannot be combined with other peers".into());
        }
        const NAMES: [&str; 6] = [
            "handover-http",
            "nginx-http",
            "handover-tcp",
            "nginx-stream",
            "handover-https",
            "nginx-https",
        ];
        if let Some(bad) = self
            .proxy_targets
            .iter()
            .find(|t| !NAMES.contains(&t.as_str()))
        {
            return Err(format!(
                "--proxy-targets: unknown target {bad:?} (expected some of {})",
                NAMES.join(", ")
            ));
        }
        if self.proxy_duration.is_zero()
            || self.proxy_duration > MAX_RUN
            || self.proxy_interval * self.proxy_upgrades as u32 + Duration::from_secs(1) > MAX_RUN
        {
            return Err(
                "--proxy-duration and --proxy-upgrades × --proxy-interval + 1s must fit in 30s"
                    .into(),
            );
        }
        if !(self.proxy_rate > 0.0 && self.proxy_rate <= 1e6)
            || [
                self.proxy_conns,
                self.proxy_rate_conns,
                self.proxy_upgrade_conns,
            ]
            .iter()
            .any(|&c| c == 0 || c > 10_000)
            || self.proxy_rounds == 0
            || self.proxy_rounds > 20
        {
            return Err(
                "--proxy-rate 0..1e6, --proxy-*conns 1..=10000, --proxy-rounds 1..=20".into(),
            );
        }
        if self.supervisor_footprint > 100_000 {
            return Err("--supervisor-footprint ≤ 100000".into());
        }
        if self.ab_runs > 20 || self.upgrades > 100 || self.idle_upgrades > 100 {
            return Err("--ab-runs ≤ 20, --upgrades and --idle-upgrades ≤ 100".into());
        }
        if self.repeat == 0 || self.repeat > 20 {
            return Err("--repeat must be 1..=20".into());
        }
        Ok(())
    }

    /// The drains to run: `--drains`, or the default pair for the scheme.
    pub fn drains(&self) -> Vec<Drain> {
        match (self.drains.is_empty(), self.tls) {
            (false, _) => self.drains.clone(),
            (true, false) => vec![Drain::Handover, Drain::Axum],
            (true, true) => vec![Drain::Handover, Drain::HyperUtil],
        }
    }

    /// `--tls` against what serves or speaks plain HTTP only, and the plain runs against the
    /// TLS-only baseline.
    fn check_tls(&self) -> Result<(), String> {
        let drains = self.drains();
        if self.tls {
            if let Some(d) = drains.iter().find(|d| !d.serves_tls()) {
                return Err(format!(
                    "--tls: --drains {} serves plain HTTP only (use handover,hyper-util)",
                    d.label()
                ));
            }
            if self.wrk {
                return Err("--tls: --wrk is not supported (the wrk runs speak plain HTTP)".into());
            }
            if self.phases.contains(&Phase::IdleConns) {
                return Err("--tls: --phases idle-conns speaks plain HTTP only".into());
            }
        } else if let Some(d) = drains.iter().find(|d| !d.serves_plain()) {
            return Err(format!(
                "--drains {} serves HTTPS only: add --tls",
                d.label()
            ));
        }
        Ok(())
    }
}

/// `250ms`, `3s`, `200us`, `1.5s`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use us, ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("200us"), Ok(Duration::from_micros(200)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3x").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        let a = Args::parse_from(["handover-bench"]);
        assert_eq!(a.validate(), Ok(()));
        let bad = Args::parse_from(["handover-bench", "--duration", "31s"]);
        assert!(bad.validate().is_err());
    }

    fn parse(extra: &[&str]) -> Args {
        Args::parse_from(["handover-bench"].iter().chain(extra))
    }

    #[test]
    fn tls_picks_the_hyper_util_baseline() {
        assert_eq!(parse(&[]).drains(), [Drain::Handover, Drain::Axum]);
        let a = parse(&["--tls"]);
        assert_eq!(a.drains(), [Drain::Handover, Drain::HyperUtil]);
        assert_eq!(a.validate(), Ok(()));
        let only = parse(&["--tls", "--drains", "hyper-util"]);
        assert_eq!(only.drains(), [Drain::HyperUtil]);
        assert_eq!(only.validate(), Ok(()));
    }

    #[test]
    fn tls_refuses_what_speaks_plain_http_only() {
        for (extra, says) in [
            (
                &["--tls", "--drains", "handover,axum"][..],
                "axum serves plain",
            ),
            (&["--tls", "--wrk"][..], "--wrk"),
            (
                &["--tls", "--phases", "upgrade,idle-conns"][..],
                "idle-conns",
            ),
            (&["--drains", "handover,hyper-util"][..], "add --tls"),
        ] {
            let e = parse(extra).validate().unwrap_err();
            assert!(e.contains(says), "{extra:?}: {e}");
        }
    }

    #[test]
    fn repeat_is_bounded() {
        assert_eq!(parse(&["--repeat", "4"]).validate(), Ok(()));
        for n in ["0", "21"] {
            let e = parse(&["--repeat", n]).validate().unwrap_err();
            assert!(e.contains("--repeat"), "{e}");
        }
    }

    #[test]
    fn https_targets_are_known() {
        let ok = ["--proxy-targets", "handover-https,nginx-https"];
        let a = Args::parse_from(["handover-bench"].into_iter().chain(ok));
        assert_eq!(a.validate(), Ok(()));
        let bad = Args::parse_from(["handover-bench", "--proxy-targets", "nginx-tls"]);
        assert!(bad.validate().is_err());
    }
}
