//! `handover run`: check the input, set everything up in an order that loses no signal and no
//! child, run the supervisor, and clean up.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use handover::control_socket::ControlServer;
use handover::sys::{self, SystemdNotifier};

use crate::cli::RunArgs;
use crate::events::Events;
use crate::listen_socket::{self, ListenSocket};
use crate::paths::{self, RuntimeDir};
use crate::proxy::{self, ProxySpec};
use crate::readiness::{ReadyMode, HEALTH_PORT_VAR};
use crate::restart::Backoff;
use crate::supervisor::{Config, Outcome, Supervisor};
use crate::worker::ProcessLauncher;
use crate::{admin, control_handler, reaper, signals, watch};

/// Runs the supervisor; errors are printed as `handover: ...` with exit status 1, or 2 for a
/// malformed socket-activation environment (as the library's servers).
pub fn main(args: RunArgs) -> ExitCode {
    // First, while this process has one thread: it reads and clears LISTEN_* from the
    // environment, so no worker ever sees what systemd passed to the supervisor.
    let activated = match sys::take_activated_listeners() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("handover: socket activation: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    match run(args, activated) {
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(Outcome::Killed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("handover: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: RunArgs, activated: Vec<sys::Activated>) -> Result<Outcome, String> {
    if args.proxy.is_some() && !activated.is_empty() {
        return Err(format!(
            "socket activation passed {} socket(s), but --proxy binds its own address; \
             use --listen with socket activation",
            activated.len()
        ));
    }
    if args.proxy.is_none()
        && (args.port_env.is_some()
            || args.upstream_timeout.is_some()
            || args.busy_poll.is_some()
            || args.client_timeout.is_some()
            || !args.trusted_proxy.is_empty())
    {
        return Err(
            "--port-env, --upstream-timeout, --client-timeout, --busy-poll and --trusted-proxy need --proxy".into(),
        );
    }
    let https = args
        .proxy
        .is_some_and(|p| p.protocol == proxy::Protocol::Https);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) if https => Some(Arc::new(proxy::TlsFront::load(cert, key)?)),
        (None, None) if !https => None,
        _ if https => return Err("--proxy https:// needs --tls-cert and --tls-key".into()),
        _ => return Err("--tls-cert and --tls-key need --proxy https://".into()),
    };
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let command = Path::new(&args.command[0]);
    let program = find_executable(command, &cwd)?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => command
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "handover".into()),
    };
    paths::validate_name(&name)?;
    if let Some(w) = ready_mode(&args).warning() {
        tracing::warn!("{w}");
    }
    let control_path =
        paths::control_path(args.control.as_deref(), args.pid_file.as_deref(), &name);
    paths::prepare_control_dir(&control_path)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Handlers first: no SIGCHLD and no stop signal may be lost once a worker exists.
        reaper::start(tx.clone()).map_err(|e| format!("cannot handle SIGCHLD: {e}"))?;
        signals::start(tx.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
        let control = ControlServer::bind(&control_path)
            .map_err(|e| format!("cannot create the control socket: {e}"))?;
        let listeners = listen_socket::bind_all(&args.listen, args.backlog, activated)?;
        let proxy_listener = match args.proxy {
            Some(spec) => {
                let (spec, listener) = proxy::bind(spec, args.backlog)?;
                Some((spec, listener, tls))
            }
            None => None,
        };
        let guard = Cleanup {
            listeners: &listeners,
            pid_file: args.pid_file.clone(),
        };
        if let Some(p) = &args.pid_file {
            sys::write_pid_file(p, std::process::id())
                .map_err(|e| format!("cannot write the PID file {}: {e}", p.display()))?;
        }
        let runtime_dir = RuntimeDir::create(&name)?;
        for l in &listeners {
            let from = if l.inherited {
                ", from socket activation"
            } else {
                ""
            };
            tracing::info!("listening on {} (fd name {:?}{from})", l.local, l.name);
        }
        if let Some((spec, _, _)) = &proxy_listener {
            tracing::info!(
                "listening on tcp://{} (proxy {spec}; workers get their port in ${})",
                spec.addr,
                port_env(&args)
            );
        }
        tracing::info!(
            "{name}: supervisor pid {}; control socket {}",
            std::process::id(),
            control_path.display()
        );
        if std::process::id() == 1 {
            tracing::info!("running as PID 1: every orphaned process is reaped here");
        }
        let outcome = supervise(
            &args,
            name,
            program,
            &listeners,
            proxy_listener,
            &runtime_dir,
            tx,
            rx,
            control,
        )
        .await;
        drop(guard);
        outcome
    })
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    args: &RunArgs,
    name: String,
    program: PathBuf,
    listeners: &[ListenSocket],
    proxy_listener: Option<(
        ProxySpec,
        std::net::TcpListener,
        Option<Arc<proxy::TlsFront>>,
    )>,
    runtime_dir: &RuntimeDir,
    tx: Events,
    rx: tokio::sync::mpsc::UnboundedReceiver<crate::events::Event>,
    control: ControlServer,
) -> Result<Outcome, String> {
    let systemd = SystemdNotifier::from_env();
    let launcher = ProcessLauncher {
        program: sys::Program {
            path: program,
            args: args.command.clone(),
            cwd: std::env::current_dir().map_err(|e| e.to_string())?,
            env: worker_env(),
        },
        listeners: listeners.iter().map(ListenSocket::as_pass).collect(),
        ready: ready_mode(args),
        runtime_dir: runtime_dir.path().to_path_buf(),
        events: tx.clone(),
        port_env: args.proxy.map(|_| port_env(args).to_string()),
    };
    let mut shown: Vec<String> = listeners.iter().map(|l| l.local.to_string()).collect();
    shown.extend(proxy_listener.as_ref().map(|(spec, _, _)| spec.to_string()));
    let cfg = Config {
        name,
        listeners: shown,
        ready_timeout: args.ready_timeout,
        drain_timeout: args.drain_timeout,
        lame_duck: args.lame_duck,
        stop_signal: args.stop_signal,
        max_draining: args.max_draining as usize,
        backoff: Backoff::new(args.restart_backoff, args.restart_backoff_max),
    };
    // Counters for the supervisor's whole life (an upgrade never resets them).
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let mut supervisor = Supervisor::new(cfg, Box::new(launcher), tx.clone(), systemd)
        .with_metrics(std::sync::Arc::clone(&metrics));
    // Kept until the supervisor is done; dropping it ends every proxied connection.
    let mut _proxy_runtime = None;
    if let Some((spec, listener, tls)) = proxy_listener {
        let settings = proxy::Settings {
            upstream_timeout: args.upstream_timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
            busy_poll: args.busy_poll.unwrap_or(DEFAULT_BUSY_POLL),
            client_timeout: args.client_timeout.unwrap_or(DEFAULT_CLIENT_TIMEOUT),
            trusted: args.trusted_proxy.clone(),
            tls,
            metrics: Some(std::sync::Arc::clone(&metrics)),
        };
        let (proxy, rt) = proxy::start(spec, listener, settings)?;
        supervisor = supervisor.with_proxy(proxy);
        _proxy_runtime = Some(rt);
    }
    let admin = match args.admin {
        Some(addr) => {
            let listener = admin::bind(addr)?;
            // The bound address: with port 0 this is where it really listens.
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(
                "admin: http://{addr}{} answers health checks, {} the metrics",
                admin::HEALTH_PATH,
                admin::METRICS_PATH
            );
            Some(admin::serve(
                listener,
                supervisor.health(),
                std::sync::Arc::clone(&metrics),
            )?)
        }
        None => None,
    };
    supervisor.start()?;
    let control = control_handler::serve(control, tx.clone());
    watch::start(&args.watch, args.watch_debounce, &tx);
    drop(tx);
    let outcome = supervisor.run(rx).await;
    // Dropping the server removes the socket file.
    control.abort();
    let _ = control.await;
    if let Some(a) = admin {
        a.abort();
    }
    tracing::info!("stopped");
    Ok(outcome)
}

/// `--upstream-timeout` unless given.
const DEFAULT_UPSTREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// `--client-timeout`: as nginx's `keepalive_timeout`.
const DEFAULT_CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(75);
/// `--busy-poll`: covers a worker's answer to a small request on loopback (measured: 50 µs
/// takes the added p50 from ~70 to ~30 µs; longer budgets did not lower it further).
const DEFAULT_BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(50);

/// `--port-env`, or its default.
fn port_env(args: &RunArgs) -> &str {
    args.port_env.as_deref().unwrap_or("PORT")
}

/// `--ready`, or its default: `notify`, or with `--proxy` a TCP connect to the worker's port.
fn ready_mode(args: &RunArgs) -> ReadyMode {
    match (&args.ready, args.proxy) {
        (Some(mode), _) => mode.clone(),
        (None, Some(_)) => "tcp".parse().expect("a valid mode"),
        (None, None) => ReadyMode::Notify,
    }
}

/// Our environment minus what belongs to us alone: systemd's `NOTIFY_SOCKET` (each worker
/// gets its own) and a stale `HANDOVER_HEALTH_PORT`. `LISTEN_*` are replaced at spawn.
fn worker_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| k != "NOTIFY_SOCKET" && k != HEALTH_PORT_VAR)
        .collect()
}

/// Resolves COMMAND like a shell and checks it can be executed, naming it otherwise.
fn find_executable(command: &Path, cwd: &Path) -> Result<PathBuf, String> {
    let shown = command.display();
    let path = sys::find_program(command, cwd).map_err(|e| format!("cannot run {shown}: {e}"))?;
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "cannot run {shown}: {} is not a file",
            path.display()
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "cannot run {shown}: {} is not executable (chmod +x it, or run it through its interpreter)",
            path.display()
        ));
    }
    Ok(path)
}

/// Removes what the supervisor created, however `run` ends after binding.
struct Cleanup<'a> {
    listeners: &'a [ListenSocket],
    pid_file: Option<PathBuf>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for l in self.listeners {
            l.remove_created_file();
        }
        if let Some(p) = &self.pid_file {
            if let Err(e) = sys::remove_pid_file_if_ours(p, std::process::id()) {
                tracing::warn!("cannot remove the PID file {}: {e}", p.display());
            }
        }
    }
}
