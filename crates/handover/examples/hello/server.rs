//! The `hello` server itself, shared by the `hello` and `hello_v2` examples (each
//! `#[path]`-includes it and sets `DEFAULT_GREETING`): two versions from one cargo build.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use handover::{Handover, ListenAddr};

/// `HELLO_GREETING` at compile time wins over the example's own default, so one example built
/// twice still gives two versions (what the demo script and README do).
const GREETING: &str = match option_env!("HELLO_GREETING") {
    Some(g) => g,
    None => super::DEFAULT_GREETING,
};

/// The seed's demo server, upgradable with `kill -USR2 <pid>`.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to serve: `IP:PORT`, `tcp://IP:PORT` or `unix:PATH`; port 0 picks a free
    /// port. May be given several times.
    #[arg(long = "listen", value_name = "ADDR", default_values = ["127.0.0.1:8080"])]
    listen: Vec<ListenAddr>,
    /// Write the serving PID here (each generation rewrites it; removed at the final stop).
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
    /// How long a new version may take to become ready before it is killed (e.g. 60s).
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "60s")]
    upgrade_timeout: Duration,
    /// How long in-flight requests get to finish at a stop or handover (e.g. 30s).
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "30s")]
    drain_timeout: Duration,
    /// How long a stop keeps serving, with `/healthz` failing, before the drain (e.g. 2s; 0:
    /// drain at once).
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "0s")]
    lame_duck: Duration,
    /// Answer `handover upgrade|status|stop` on this Unix socket (mode 0600).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// How connections are drained: `handover` (lossless, the default), `axum` (axum's own
    /// `with_graceful_shutdown` on the same handover listeners; a baseline for benchmarks) or,
    /// over TLS, `hyper-util` (tokio-rustls and hyper-util's `GracefulShutdown` by hand, the
    /// TLS baseline).
    #[arg(long, value_enum, default_value_t = Drain::Handover)]
    drain: Drain,
    #[cfg(feature = "tls")]
    #[command(flatten)]
    tls: tls::TlsArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Drain {
    Handover,
    Axum,
    HyperUtil,
}

/// Runs the server to its final stop.
pub fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    let mut builder = Handover::builder()
        .upgrade_timeout(args.upgrade_timeout)
        .drain_timeout(args.drain_timeout)
        .lame_duck(args.lame_duck);
    if let Some(p) = &args.pid_file {
        builder = builder.pid_file(p);
    }
    if let Some(p) = &args.control {
        builder = builder.control_socket(p);
    }
    #[cfg(feature = "tls")]
    let (builder, tls) = match tls::config(builder, &args.tls, args.drain) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    #[cfg(not(feature = "tls"))]
    let tls = ();
    #[cfg(not(feature = "tls"))]
    if args.drain == Drain::HyperUtil {
        tracing::error!(
            "cannot start: --drain hyper-util serves TLS only; build with --features tls"
        );
        return ExitCode::from(2);
    }
    // Before the runtime exists: this reads and clears the inheritance variables.
    let handover = match builder.build() {
        Ok(h) => h,
        Err(e) => return failed(e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(handover, &args.listen, args.drain, tls)) {
        Ok(code) => code,
        Err(e) => failed(e),
    }
}

/// Logs why the server did not start and picks the exit status: 2 for a malformed
/// environment, 0 for a stop asked for before it was ready, 1 for the rest (bad arguments
/// already exited 2 through clap).
fn failed(e: handover::Error) -> ExitCode {
    match e {
        handover::Error::Stopped { .. } => tracing::info!("{e}; exiting"),
        _ => tracing::error!("cannot start: {e}"),
    }
    ExitCode::from(e.exit_code())
}

async fn serve(
    mut handover: Handover,
    addrs: &[ListenAddr],
    drain: Drain,
    tls: Tls,
) -> Result<ExitCode, handover::Error> {
    let listeners = addrs
        .iter()
        .map(|a| handover.listen(a))
        .collect::<Result<Vec<_>, _>>()?;
    let app = Router::new()
        .route("/", get(hello))
        .route("/sleep/{ms}", get(sleep_then_hello))
        .route_service(
            handover::http::DEFAULT_HEALTH_PATH,
            handover::http::HealthCheck::new(handover.health()),
        )
        // Turns every handler into its route now, as `axum::serve` does; served as it is, a
        // `Router` would do that again for every request (an allocation and a boxed clone).
        .with_state(());
    // Serving starts before `ready()`: accepting waits for the handshake, and then begins at
    // once, without another trip through this function.
    let addrs: Vec<ListenAddr> = listeners.iter().map(|l| l.local_addr().clone()).collect();
    for l in listeners {
        match drain {
            Drain::Handover => {
                #[cfg(feature = "tls")]
                if let Some(config) = &tls {
                    tokio::spawn(handover::http::serve_tls(l, config.clone(), app.clone()));
                    continue;
                }
                tokio::spawn(handover::http::serve(l, app.clone()));
            }
            Drain::HyperUtil => {
                // `tls::config` let this drain through only with a certificate.
                #[cfg(feature = "tls")]
                if let Some(config) = &tls {
                    let drain = handover.drain_signal();
                    tokio::spawn(tls::serve_hyper_util(l, config.clone(), app.clone(), drain));
                }
            }
            Drain::Axum => {
                let drain = handover.drain_signal();
                let serve =
                    axum::serve(AxumListener(l), app.clone()).with_graceful_shutdown(async move {
                        drain.draining().await;
                    });
                tokio::spawn(async move { serve.await });
            }
        }
    }
    let running = handover.ready().await?;
    let pid = std::process::id();
    #[cfg(feature = "tls")]
    let over = if tls.is_some() { " over TLS" } else { "" };
    #[cfg(not(feature = "tls"))]
    let (over, ()) = ("", tls);
    for addr in addrs {
        tracing::info!("serving {addr}{over} (greeting {GREETING:?}, pid {pid})");
    }
    // A drain is a success, clean or cut at the deadline (the deadline is the operator's choice).
    running.wait().await;
    Ok(ExitCode::SUCCESS)
}

async fn hello() -> String {
    format!("{GREETING} pid={}", std::process::id())
}

async fn sleep_then_hello(Path(ms): Path<u64>) -> String {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    hello().await
}

/// Logs to stderr; `RUST_LOG` takes `info`, `handover=debug,info` and the like. (`Targets`
/// rather than `EnvFilter`: no regex engine in the binary, which keeps it small, and a small
/// file is quicker to copy into place and to start at each upgrade.)
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| "info".parse().expect("valid directive"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .init();
}

/// Lets axum's own server accept from a handover listener. Once handover stops accepting,
/// `accept` never returns again and axum's graceful shutdown takes over.
struct AxumListener(handover::Listener);

impl axum::serve::Listener for AxumListener {
    type Io = handover::Connection;
    type Addr = handover::Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Some(Ok(accepted)) => return accepted,
                Some(Err(e)) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match self.0.local_addr() {
            ListenAddr::Tcp(sa) => Ok(handover::Peer::Tcp(*sa)),
            // `Handover::listen` refuses udp:// addresses, so a listener never has one.
            ListenAddr::Unix(_) | ListenAddr::Udp(_) => Ok(handover::Peer::Unix),
        }
    }
}

/// The server configuration, when serving TLS; nothing without the `tls` feature.
#[cfg(feature = "tls")]
type Tls = Option<std::sync::Arc<handover::tls::rustls::ServerConfig>>;
#[cfg(not(feature = "tls"))]
type Tls = ();

#[cfg(feature = "tls")]
mod tls {
    use std::path::PathBuf;
    use std::time::Duration;

    /// HTTPS options (with `--features tls`).
    #[derive(clap::Args, Debug)]
    pub struct TlsArgs {
        /// Serve HTTPS with this PEM certificate chain (leaf first); needs `--tls-key`.
        #[arg(long, value_name = "PATH", requires = "tls_key")]
        pub tls_cert: Option<PathBuf>,
        /// The PEM private key (PKCS#8, PKCS#1 or SEC1) for `--tls-cert`.
        #[arg(long, value_name = "PATH", requires = "tls_cert")]
        pub tls_key: Option<PathBuf>,
        /// How long a TLS handshake may take before the connection is closed (e.g. 10s).
        #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "10s")]
        pub tls_handshake_timeout: Duration,
    }

    /// Reads the certificate and key now, before `ready()`: a bad file makes this generation
    /// fail to start, so an upgrade to it is rolled back and the old one keeps serving.
    pub fn config(
        builder: handover::Builder,
        args: &TlsArgs,
        drain: super::Drain,
    ) -> Result<(handover::Builder, super::Tls), String> {
        let builder = builder.tls_handshake_timeout(args.tls_handshake_timeout);
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            if drain == super::Drain::HyperUtil {
                return Err(
                    "--drain hyper-util serves TLS only; give --tls-cert and --tls-key".into(),
                );
            }
            return Ok((builder, None));
        };
        if drain == super::Drain::Axum {
            return Err("--drain axum serves plain HTTP only; drop it or the TLS options".into());
        }
        let config = handover::tls::server_config(cert, key, &[b"h2", b"http/1.1"])
            .map_err(|e| e.to_string())?;
        Ok((builder, Some(config)))
    }

    /// The TLS baseline for benchmarks, `--drain hyper-util`: the graceful HTTPS server one
    /// writes by hand from the tokio-rustls and hyper-util examples, on handover's listener so
    /// that it goes through the same upgrade. Accept, handshake and serve each connection in
    /// its own task, every connection watched by hyper-util's `GracefulShutdown`; when the
    /// drain begins, stop accepting and shut the watched connections down gracefully. Nothing
    /// more: no `Connection: close` while draining, no idle grace, no deadline on the
    /// handshake, which is what it is compared for.
    pub async fn serve_hyper_util(
        listener: handover::Listener,
        config: std::sync::Arc<handover::tls::rustls::ServerConfig>,
        app: axum::Router,
        drain: handover::DrainSignal,
    ) {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto;
        use hyper_util::server::graceful::GracefulShutdown;
        use hyper_util::service::TowerToHyperService;

        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let builder = std::sync::Arc::new(auto::Builder::new(TokioExecutor::new()));
        let graceful = GracefulShutdown::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = drain.draining() => break,
            };
            let conn = match accepted {
                Some(Ok((conn, _peer))) => conn,
                Some(Err(e)) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                // A graceful stop began; the drain signal fires with it.
                None => break,
            };
            // Taken before the handshake, so a shutdown during it still reaches this one.
            let watcher = graceful.watcher();
            let (acceptor, builder, app) = (acceptor.clone(), builder.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(conn).await else {
                    return;
                };
                let service = TowerToHyperService::new(app);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                let _ = watcher.watch(conn).await;
            });
        }
        graceful.shutdown().await;
    }
}
