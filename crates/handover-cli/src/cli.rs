//! The command line: subcommands, flags, their defaults and their help.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::listen_socket::ListenSpec;
use crate::proxy::{Cidr, ProxySpec};
use crate::readiness::ReadyMode;
use crate::signals::Signal;

/// Shared by every subcommand's help.
macro_rules! common_help {
    () => {
        "Durations are written 30s, 500ms, 2m, 1h or a plain number of seconds.

Control socket (--control): by default next to --pid-file (app.pid -> app.sock) when one is \
given, else $XDG_RUNTIME_DIR/handover/<NAME>.sock, else /run/handover/<NAME>.sock for root and \
/tmp/handover-<UID>/<NAME>.sock for other users (directories created with mode 0700)."
    };
}

const AFTER_HELP: &str = common_help!();

const UPGRADE_AFTER_HELP: &str = concat!(
    "Grey release (--canary, proxy mode only): once ready, the new version gets the share of \
new requests (http://) or connections (tcp://), split deterministically, or with --sticky ip a \
share of the client addresses. Once it has served --min-requests, it is rolled back as soon as \
its error rate (5xx, 502/504; for tcp:// failed connects and resets before the first byte) \
exceeds the old generation's over the same period + --max-error-rate. At --for it is promoted, \
or rolled back if it served fewer than --min-requests (\"not enough traffic\"). The command \
waits for the decision: exit 0 promoted, 1 rolled back, with the reason and figures.

",
    common_help!()
);

const RUN_AFTER_HELP: &str = concat!(
    "Signals: SIGHUP or SIGUSR2 upgrades; SIGTERM or SIGINT stops gracefully (workers get the \
stop signal and drain, then the supervisor exits 0; with --lame-duck they serve on that long \
first); a second SIGTERM/SIGINT kills the workers \
at once. Running as PID 1 (a container's first process), every orphan is reaped.

Each worker gets: the sockets at fds 3.. with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (its \
own PID); NOTIFY_SOCKET (its own, with --ready notify; systemd's is never passed on); \
HANDOVER_HEALTH_PORT (with {port} in --ready); the supervisor's stdin, stdout and stderr.

Socket activation: sockets passed to the supervisor itself (a systemd .socket unit, \
systemd-socket-activate: LISTEN_FDS with LISTEN_PID = this process) serve the --listen they \
match, by NAME= in LISTEN_FDNAMES, else by exact address; a passed socket that matches no \
--listen is an error. They outlive the supervisor, so a restart refuses no connection.

Logs: stderr; filter with HANDOVER_LOG (e.g. HANDOVER_LOG=debug).

",
    common_help!()
);

/// Zero-downtime upgrades for network servers written in any language.
///
/// `handover run` binds the listening sockets once and runs a program with them (the systemd
/// socket-activation protocol: fds from 3, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID). On an
/// upgrade it starts the new version, waits until it is ready, then lets the old one drain.
/// Its own PID never changes.
#[derive(Debug, Parser)]
#[command(name = "handover", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bind the sockets and run COMMAND with them; upgrade it on SIGHUP, SIGUSR2,
    /// `handover upgrade` or a change of a --watch'ed file.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(Box<RunArgs>),
    /// Upgrade a running server and wait for the outcome: exit status 0 once the new version
    /// serves, 1 with the reason if it was rolled back.
    #[command(after_help = UPGRADE_AFTER_HELP)]
    Upgrade(UpgradeArgs),
    /// End the canary in progress now: the canary takes all new traffic, the old generation
    /// drains. The waiting `handover upgrade --canary` exits 0.
    #[command(after_help = AFTER_HELP)]
    Promote(DecideArgs),
    /// End the canary in progress now: the canary drains, the old generation takes all new
    /// traffic again. The waiting `handover upgrade --canary` exits 1.
    #[command(after_help = AFTER_HELP)]
    Abort(DecideArgs),
    /// Show the generation, worker PIDs, states, uptimes and the last upgrade's outcome.
    #[command(after_help = AFTER_HELP)]
    Status(StatusArgs),
    /// Stop a running server gracefully (workers drain, then everything exits) and wait
    /// until it has stopped.
    #[command(after_help = AFTER_HELP)]
    Stop(StopArgs),
}

/// `handover run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to listen on, repeatable: IP:PORT, tcp://IP:PORT, udp://IP:PORT or unix:PATH,
    /// optionally prefixed with NAME= to set its LISTEN_FDNAMES entry (default name:
    /// tcp_IP_PORT, udp_IP_PORT or unix_PATH). The worker gets them at fds 3, 4, ... in this
    /// order; a udp:// one is a bound datagram socket, as systemd's ListenDatagram= passes it.
    /// Port 0 picks a free port, which is logged and shown by `handover status`.
    #[arg(
        short,
        long = "listen",
        value_name = "[NAME=]ADDR",
        required_unless_present = "proxy",
        conflicts_with = "proxy"
    )]
    pub listen: Vec<ListenSpec>,

    /// Proxy mode, for programs that can only bind a port of their own: listen on URL
    /// (`http://IP:PORT` or `tcp://IP:PORT`) and forward to the current worker, which gets a
    /// free loopback port in $PORT (see --port-env) and in place of `{port}` in its
    /// arguments. `http://` terminates HTTP/1.1 and h2c and forwards requests over
    /// keep-alive connections; `tcp://` forwards connections. On an upgrade, new requests
    /// go to the new worker once it is ready; the old one gets the stop signal once what it
    /// was serving has finished (or at the drain timeout).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<ProxySpec>,

    /// With --proxy: the environment variable that gives each worker its port.
    /// [default: PORT]
    #[arg(long, value_name = "NAME")]
    pub port_env: Option<String>,

    /// With --proxy: how long a worker has to accept a connection, and to answer with its
    /// response head once the whole request has been sent (504 after that; 502 if it cannot
    /// be reached at all). [default: 60s]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub upstream_timeout: Option<Duration>,

    /// With --proxy http://: how long a client connection may stay idle between requests,
    /// take to send a request head, or pause in the middle of a request body (408 then, if it
    /// had started one); the connection is closed. [default: 75s]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub client_timeout: Option<Duration>,

    /// With --proxy: after forwarding bytes to a worker, a proxy thread polls for the answer
    /// instead of sleeping, for up to this long, while at most a few answers are awaited on
    /// it (a thread wake-up costs tens of microseconds on a virtual machine). Lowers added
    /// latency at moderate load for some CPU; `0` turns it off. [default: 50us]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub busy_poll: Option<Duration>,

    /// With --proxy https://: the certificate chain (PEM), read at start and again at every
    /// upgrade (SIGHUP, SIGUSR2, `handover upgrade`, --watch) before the new worker starts.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// With --proxy https://: the private key (PEM: PKCS#8, PKCS#1 or SEC1), read with the
    /// certificate.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// With --proxy http://: a peer whose X-Forwarded-For/-Proto/-Host headers are kept
    /// and appended to (repeatable; `10.0.0.0/8`, `::1/128`, `127.0.0.1`). From any other
    /// peer they are replaced.
    #[arg(long, value_name = "CIDR")]
    pub trusted_proxy: Vec<Cidr>,

    /// Name of the service: names the default control socket and appears in the logs and
    /// `handover status`. [default: the file name of COMMAND]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// How a new worker proves it is ready:
    /// `notify` (it sends READY=1 to $NOTIFY_SOCKET, the sd_notify protocol; each worker gets
    /// a socket of its own),
    /// `tcp:ADDR` (a TCP connect to ADDR succeeds),
    /// `http:URL` (GET URL answers 2xx; `http:/PATH` means http://127.0.0.1:{port}/PATH),
    /// or `delay:DUR` (it is still running after DUR).
    /// A worker that never sends READY=1 needs one of the other modes.
    /// In ADDR and URL, `{port}` is a free port chosen for each worker and exported to it as
    /// HANDOVER_HEALTH_PORT, so the probe reaches that worker and not the old one.
    /// With --proxy, `{port}` is the worker's own port, `tcp` alone means tcp:127.0.0.1:{port}
    /// and `http:/PATH` probes http://127.0.0.1:{port}/PATH.
    /// [default: notify; with --proxy: tcp]
    #[arg(long, value_name = "MODE")]
    pub ready: Option<ReadyMode>,

    /// How long a new worker has to become ready before it is killed (and, for an upgrade,
    /// the old one kept).
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// How long a replaced or stopped worker has after the stop signal before SIGKILL.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long a stop (SIGTERM, SIGINT, `handover stop`) keeps the workers serving before
    /// they get the stop signal, while the --admin /healthz answers 503, so that load
    /// balancers take this server out of rotation first. A second SIGTERM/SIGINT still kills
    /// at once; upgrades never wait for it.
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    pub lame_duck: Duration,

    /// Serve HTTP on IP:PORT for health checks: `GET /healthz` answers 200 while a worker is
    /// ready (also during upgrades), 503 while none is and from a stop on (the lame duck
    /// and the drain); other paths 404. No authentication: bind it to loopback or a
    /// private address.
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<std::net::SocketAddr>,

    /// The signal that tells a worker to stop accepting, finish its work and exit
    /// (TERM, SIGTERM, 15, ...).
    #[arg(long, value_name = "SIG", default_value = "SIGTERM")]
    pub stop_signal: Signal,

    /// Upgrade when this file changes (repeatable). A change counts once the file has been
    /// left alone for --watch-debounce and is a complete executable (an ELF file whose
    /// headers and sections are all present, or a #! script, with an execute bit set).
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<PathBuf>,

    /// How long a --watch'ed file must stay unchanged before it triggers an upgrade.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub watch_debounce: Duration,

    /// Write the supervisor's PID (which never changes) to this file; removed at exit.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,

    /// Path of the control socket used by `handover upgrade|status|stop` (mode 0600).
    /// [default: see below]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Delay before restarting a worker that exited unexpectedly; doubled after each
    /// failed start up to --restart-backoff-max, reset once a worker has served for 10s.
    /// The listening sockets stay open meanwhile: clients wait, nobody is refused.
    #[arg(long, value_name = "DUR", default_value = "100ms", value_parser = parse_duration)]
    pub restart_backoff: Duration,

    /// Longest delay between restarts.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub restart_backoff_max: Duration,

    /// Most old generations allowed to drain at once; an upgrade requested beyond that is
    /// refused until one of them has exited.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_draining: u32,

    /// Listen backlog of each socket (connections waiting while no worker accepts).
    #[arg(long, value_name = "N", default_value_t = handover::DEFAULT_BACKLOG)]
    pub backlog: i32,

    /// The program to run and its arguments (after `--`). A name without `/` is looked up
    /// in PATH once, at start; upgrades run the file at that path again, so replacing the
    /// file (or a script it runs) deploys the new version.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// How `upgrade`, `status` and `stop` find the control socket.
#[derive(Debug, Args)]
pub struct Target {
    /// Path of the control socket. [default: derived from --pid-file or --name as for
    /// `handover run`; with neither, the only socket in the default directory]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// The --name given to `handover run` (or its default, the command's file name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The --pid-file given to `handover run`: the control socket is next to it.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
}

/// `handover upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub target: Target,

    /// Give up waiting for the outcome after this long (the upgrade itself goes on).
    /// [default: wait for the outcome, which the server bounds by its --ready-timeout]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// A grey release (proxy mode): the new version first gets this share of new traffic,
    /// e.g. 10% or 0.5%.
    #[arg(long, value_name = "PERCENT", value_parser = parse_share)]
    pub canary: Option<u32>,

    /// With --canary: how long the canary runs before it is promoted. [default: 60s]
    #[arg(long = "for", value_name = "DUR", value_parser = parse_duration, requires = "canary")]
    pub for_: Option<Duration>,

    /// With --canary: roll back once the canary's error rate exceeds the old generation's by
    /// more than this. [default: 1%]
    #[arg(long, value_name = "PERCENT", value_parser = parse_error_rate, requires = "canary")]
    pub max_error_rate: Option<u32>,

    /// With --canary: requests the canary must serve before the rule applies (and by --for).
    /// [default: 100]
    #[arg(long, value_name = "N", requires = "canary")]
    pub min_requests: Option<u64>,

    /// With --canary: split by client address instead of by request, so that one client
    /// always sees one version.
    #[arg(long, value_name = "BY", requires = "canary")]
    pub sticky: Option<Sticky>,
}

/// `--sticky`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sticky {
    /// By the client's IP address.
    Ip,
}

/// `--for` of `upgrade --canary` when not given.
pub const DEFAULT_CANARY_FOR: Duration = Duration::from_secs(60);
/// `--max-error-rate` when not given, in basis points (1%).
pub const DEFAULT_MAX_ERROR_RATE_BP: u32 = 100;
/// `--min-requests` when not given.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;

/// `handover promote` and `handover abort`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    #[command(flatten)]
    pub target: Target,
}

/// `handover status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,

    /// Print the status as JSON (schema in the README and `handover::control_socket`).
    #[arg(long)]
    pub json: bool,
}

/// `handover stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub target: Target,

    /// Return as soon as the stop has begun instead of waiting until the server is gone.
    #[arg(long)]
    pub no_wait: bool,

    /// Give up waiting after this long (the stop itself goes on). [default: no limit]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

fn parse_share(s: &str) -> Result<u32, String> {
    crate::proxy::parse_share(s)
}

fn parse_error_rate(s: &str) -> Result<u32, String> {
    crate::proxy::parse_percent(s, "--max-error-rate")
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    handover::parse_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_every_default() {
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").unwrap();
        let help = run.render_long_help().to_string();
        for needle in [
            "[default: notify; with --proxy: tcp]",
            "[default: PORT]",
            "[default: 60s]",
            "[default: 50us]",
            "[default: 75s]",
            "[default: 30s]",
            "[default: SIGTERM]",
            "[default: 1s]",
            "[default: 100ms]",
            "[default: 3]",
            "[default: 1024]",
            "[default: the file name of COMMAND]",
            "$XDG_RUNTIME_DIR/handover/<NAME>.sock",
            "HANDOVER_HEALTH_PORT",
        ] {
            assert!(
                help.contains(needle),
                "`run --help` lacks {needle:?}:\n{help}"
            );
        }
    }

    #[test]
    fn upgrade_parses_a_canary_and_refuses_its_flags_alone() {
        let cli = Cli::try_parse_from([
            "handover",
            "upgrade",
            "--canary",
            "10%",
            "--for",
            "30s",
            "--max-error-rate",
            "0.5%",
            "--min-requests",
            "20",
            "--sticky",
            "ip",
        ])
        .unwrap();
        let Command::Upgrade(u) = cli.command else {
            panic!("not upgrade")
        };
        assert_eq!(u.canary, Some(1000));
        assert_eq!(u.for_, Some(Duration::from_secs(30)));
        assert_eq!((u.max_error_rate, u.min_requests), (Some(50), Some(20)));
        assert_eq!(u.sticky, Some(Sticky::Ip));
        let err = |args: &[&str]| {
            Cli::try_parse_from(args)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let e = err(&["handover", "upgrade", "--for", "30s"]);
        assert!(e.contains("--canary"), "{e}");
        let e = err(&["handover", "upgrade", "--canary", "150%"]);
        assert!(e.contains("above 100%"), "{e}");
        let e = err(&["handover", "upgrade", "--canary", "ten"]);
        assert!(e.contains("expected a percentage"), "{e}");
        assert!(Cli::try_parse_from(["handover", "promote"]).is_ok());
        assert!(Cli::try_parse_from(["handover", "abort", "--name", "web"]).is_ok());
    }

    #[test]
    fn run_parses_a_full_command_line() {
        let cli = Cli::try_parse_from([
            "handover",
            "run",
            "--listen",
            "127.0.0.1:0",
            "-l",
            "web=unix:/tmp/x.sock",
            "--ready",
            "http:/healthz",
            "--ready-timeout",
            "5",
            "--stop-signal",
            "INT",
            "--",
            "./server",
            "--flag",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.listen.len(), 2);
        assert_eq!(run.listen[1].name.as_deref(), Some("web"));
        assert_eq!(run.ready_timeout, Duration::from_secs(5));
        assert_eq!(run.stop_signal.number, libc::SIGINT);
        assert_eq!(
            run.command,
            vec![OsString::from("./server"), "--flag".into()]
        );
    }

    #[test]
    fn run_parses_proxy_mode() {
        let cli = Cli::try_parse_from([
            "handover",
            "run",
            "--proxy",
            "tcp://127.0.0.1:5432",
            "--port-env",
            "PGPORT",
            "--upstream-timeout",
            "5s",
            "--",
            "./db",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert!(run.listen.is_empty());
        assert_eq!(run.proxy.unwrap().to_string(), "tcp://127.0.0.1:5432");
        assert_eq!(run.port_env.as_deref(), Some("PGPORT"));
        assert_eq!(run.upstream_timeout, Some(Duration::from_secs(5)));
        assert_eq!(run.ready, None);
    }

    #[test]
    fn bad_input_is_explained() {
        let err = |args: &[&str]| {
            Cli::try_parse_from(args)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let e = err(&["handover", "run", "--listen", "nowhere", "--", "x"]);
        assert!(e.contains("invalid listen address \"nowhere\""), "{e}");
        let e = err(&[
            "handover",
            "run",
            "-l",
            "127.0.0.1:1",
            "--ready-timeout",
            "3x",
            "--",
            "x",
        ]);
        assert!(e.contains("invalid duration \"3x\""), "{e}");
        let e = err(&[
            "handover",
            "run",
            "-l",
            "127.0.0.1:1",
            "--stop-signal",
            "SIGNOPE",
            "--",
            "x",
        ]);
        assert!(e.contains("unknown signal \"SIGNOPE\""), "{e}");
        let e = err(&[
            "handover",
            "run",
            "-l",
            "127.0.0.1:1",
            "--ready",
            "smoke",
            "--",
            "x",
        ]);
        assert!(e.contains("unknown readiness mode"), "{e}");
        let e = err(&["handover", "run", "-l", "127.0.0.1:1"]);
        assert!(e.contains("COMMAND"), "{e}");
        let e = err(&["handover", "run", "--proxy", "127.0.0.1:80", "--", "x"]);
        assert!(
            e.contains("expected http://IP:PORT, https://IP:PORT or tcp://IP:PORT"),
            "{e}"
        );
        let e = err(&[
            "handover",
            "run",
            "--proxy",
            "http://127.0.0.1:80",
            "-l",
            "127.0.0.1:1",
            "--",
            "x",
        ]);
        assert!(e.contains("cannot be used with"), "{e}");
        let e = err(&[
            "handover",
            "run",
            "--proxy",
            "http://127.0.0.1:80",
            "--trusted-proxy",
            "10.0.0.0/99",
            "--",
            "x",
        ]);
        assert!(e.contains("invalid network"), "{e}");
    }
}
