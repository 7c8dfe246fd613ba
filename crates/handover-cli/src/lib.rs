//! `handover`: the supervisor for zero-downtime upgrades of servers written in any language.
//! See README.md for usage, and `handover --help`.
//!
//! `main.rs` only calls [`main`]; everything is here, so that the state machine is tested as a
//! unit (`supervisor/tests.rs`).
//!
//! | module | one reason to change |
//! |---|---|
//! | `cli` | the command line and its help |
//! | `run` | start-up order and clean-up of `handover run` |
//! | `supervisor` | the state machine: upgrade, rollback, restart, drain, stop |
//! | `supervisor::canary` | the grey release's transitions: start, promote, roll back, by rule or by hand |
//! | `supervisor::handoff` | socket mode: the old workers stop accepting before a library worker's successor accepts |
//! | `supervisor::stop` | the stop: lame duck, then every worker drains; a second signal kills |
//! | `supervisor::report` | the supervisor's `status` answer |
//! | `events` | what the supervisor reacts to |
//! | `worker` | one worker, and [`Launch`](worker::Launch), the seam that starts and signals workers |
//! | `pending_upgrade` | one upgrade's bookkeeping: who waits for it, its record |
//! | `restart` | the restart backoff |
//! | `readiness`, `notify`, `probe` | readiness modes; per-worker `NOTIFY_SOCKET`; TCP/HTTP probes |
//! | `reaper` | the one place that reaps children |
//! | `signals`, `watch`, `control_handler` | the triggers: signals, a watched file, the control socket |
//! | `listen_socket`, `paths` | the listening sockets; where files live |
//! | `activation` | which `--listen` takes which socket-activated socket |
//! | `metrics` | the Prometheus metrics the supervisor keeps (names in its docs) |
//! | `proxy` | proxy mode (`--proxy`): forwarding to workers that bind their own port |
//! | `client`, `status` | `handover upgrade/promote/abort/status/stop` |
//! | `admin` | `--admin`: the HTTP listener answering `/healthz` and `/metrics` for the supervisor |
//!
//! System calls go through `handover::sys`; this crate has no `unsafe`.
//!
//! The end-to-end tests (`tests/`) run the real binary with the workspace's test kit,
//! `crates/handover-testkit` (`handover_testkit::cli_kit`: the supervisor harness, the Python
//! workers of its `fixtures/`, `/proc` and log helpers).

#![forbid(unsafe_code)]

mod activation;
mod admin;
mod cli;
mod client;
mod control_handler;
mod events;
mod listen_socket;
mod metrics;
mod notify;
mod paths;
mod pending_upgrade;
mod probe;
mod proxy;
mod readiness;
mod reaper;
mod restart;
mod run;
mod signals;
mod status;
mod supervisor;
mod watch;
mod worker;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// `handover`: parses the command line, sets up logging and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let default_level = match cli.command {
        cli::Command::Run(_) => "info",
        _ => "warn",
    };
    init_logging(default_level);
    match cli.command {
        cli::Command::Run(args) => run::main(*args),
        cli::Command::Upgrade(args) => client::upgrade(args),
        cli::Command::Promote(args) => client::decide(args, true),
        cli::Command::Abort(args) => client::decide(args, false),
        cli::Command::Status(args) => client::status(args),
        cli::Command::Stop(args) => client::stop(args),
    }
}

/// Logs go to stderr (workers share it); `HANDOVER_LOG` filters them like `RUST_LOG`.
fn init_logging(default_level: &str) {
    let filter =
        EnvFilter::try_from_env("HANDOVER_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
