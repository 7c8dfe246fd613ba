//! The hello demo over HTTP/3 (feature `quic`): `GET /` answers `<greeting> pid=<pid>`,
//! `GET /sleep/<ms>` the same after that many milliseconds. Upgraded by `SIGUSR2` like
//! `hello`: the new process becomes the only reader of the UDP socket and forwards the
//! datagrams of the old process's connections to it, so those connections go on (see the
//! library's `quic` module for how).
//!
//! ```text
//! cargo build --example h3 --features quic
//! target/debug/examples/h3 --listen udp://127.0.0.1:4433 \
//!     --tls-cert cert.pem --tls-key key.pem --pid-file /tmp/h3.pid &
//! kill -USR2 $(cat /tmp/h3.pid)   # a new pid answers new connections; old ones go on
//! ```
//!
//! At a handover the old generation keeps serving its connections for `--goaway-after`
//! (default 0s), then sends HTTP/3 GOAWAY on each, answers every request below the GOAWAY's
//! stream ID, and closes the connection with `H3_NO_ERROR` once no request has been in
//! progress for `--goaway-grace` (default 1s: a request the client sent just before it read
//! the GOAWAY is still on its way). It keeps accepting on its endpoint meanwhile: a handshake that was in
//! flight at the switch still reaches it. It exits when its connections are gone, or at the
//! drain deadline.
//!
//! `--no-quic-forwarding` turns the routing off (`quic::Options { forwarding: false }`): only
//! the serving generation reads the socket, as for `Datagram`, and the old generation's
//! connections starve at an upgrade: the baseline the tests use to show they can fail.
//! `--plain-quinn` serves the same application on a plain quinn endpoint bound by quinn
//! itself, without handover's socket: the baseline for throughput; it cannot be upgraded (the
//! new process cannot bind the port, so an upgrade is rolled back).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use handover::tls::rustls;
use handover::{quic, Handover, ListenAddr};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What `GET /` answers before ` pid=<pid>` unless `HELLO_GREETING` was set at build time or
/// `--greeting` is given.
const DEFAULT_GREETING: &str = match option_env!("HELLO_GREETING") {
    Some(g) => g,
    None => "Welcome Server",
};

/// Concurrent request streams a client may open (quinn's default, set here because the
/// GOAWAY below is computed from it).
const MAX_STREAMS: u32 = 100;

/// The HTTP/3 hello server, upgradable with `kill -USR2 <pid>`.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// The UDP address: `udp://IP:PORT` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "udp://127.0.0.1:4433")]
    listen: ListenAddr,
    /// The PEM certificate chain (leaf first).
    #[arg(long, value_name = "PATH")]
    tls_cert: PathBuf,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, value_name = "PATH")]
    tls_key: PathBuf,
    /// Write the serving PID here (each generation rewrites it; removed at the final stop).
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
    /// How long a new version may take to become ready before it is killed (e.g. 60s).
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "60s")]
    upgrade_timeout: Duration,
    /// How long the old generation's connections get at a stop or handover (e.g. 30s).
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "30s")]
    drain_timeout: Duration,
    /// How long a draining generation serves its connections as before, then sends GOAWAY
    /// (for long-lived connections; bounded by the drain timeout).
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "0s")]
    goaway_after: Duration,
    /// How long a connection sent GOAWAY must be quiet (no request in progress, none
    /// arriving) before it is closed: a request the client sent before it read the GOAWAY is
    /// still on its way, later on a starved machine (at least 4 round trips are waited).
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "1s")]
    goaway_grace: Duration,
    /// What `GET /` answers before ` pid=<pid>`.
    #[arg(long, default_value = DEFAULT_GREETING)]
    greeting: String,
    /// No routing between generations: the old generation's connections starve at an upgrade.
    #[arg(long, conflicts_with = "plain_quinn")]
    no_quic_forwarding: bool,
    /// A plain quinn endpoint bound by quinn (a throughput baseline; cannot be upgraded).
    #[arg(long)]
    plain_quinn: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // Read before `ready()`: a bad file makes this generation fail to start, so an upgrade to
    // it is rolled back and the old one keeps serving.
    let tls = match handover::tls::server_config(&args.tls_cert, &args.tls_key, &[b"h3"]) {
        Ok(c) => Arc::unwrap_or_clone(c),
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let mut builder = Handover::builder()
        .upgrade_timeout(args.upgrade_timeout)
        .drain_timeout(args.drain_timeout);
    if let Some(p) = &args.pid_file {
        builder = builder.pid_file(p);
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
    match runtime.block_on(run(handover, tls, args)) {
        Ok(code) => code,
        Err(e) => failed(e),
    }
}

fn failed(e: handover::Error) -> ExitCode {
    match e {
        handover::Error::Stopped { .. } => tracing::info!("{e}; exiting"),
        _ => tracing::error!("cannot start: {e}"),
    }
    ExitCode::from(e.exit_code())
}

/// The transport both modes use.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_STREAMS.into());
    Arc::new(t)
}

async fn run(
    mut handover: Handover,
    tls: rustls::ServerConfig,
    args: Args,
) -> Result<ExitCode, handover::Error> {
    let app = App {
        body: Arc::new(format!("{} pid={}", args.greeting, std::process::id())),
        goaway_after: args.goaway_after,
        goaway_grace: args.goaway_grace,
        drain: handover.drain_signal(),
        connections: Arc::new(watch::Sender::new(0)),
    };
    if args.plain_quinn {
        return plain(handover, tls, &args, app).await;
    }
    let options = quic::Options {
        forwarding: !args.no_quic_forwarding,
        transport: Some(transport()),
    };
    let endpoint = handover.quic(&args.listen, tls, options)?;
    let running = handover.ready().await?;
    let mode = if args.no_quic_forwarding {
        ", forwarding off"
    } else {
        ""
    };
    tracing::info!(
        "serving {} over HTTP/3 (greeting {:?}, pid {}, generation {}{mode})",
        endpoint.local_addr(),
        args.greeting,
        std::process::id(),
        endpoint.generation()
    );
    let quinn = endpoint.endpoint().clone();
    tokio::spawn(accept_loop(quinn.clone(), app.clone()));
    // The drain: once this generation hands over (or stops) and its connections are gone,
    // drop the endpoint, whose drain guard is what `Running::wait` waits for; the drain
    // deadline ends the wait otherwise.
    let drain = handover_drained(app.clone(), quinn);
    tokio::spawn(async move {
        drain.await;
        let stats = endpoint.stats();
        let generation = endpoint.generation();
        tracing::info!("connections gone; routing of generation {generation}: {stats:?}");
        drop(endpoint);
    });
    let exit = running.wait().await;
    tracing::info!(
        "exiting ({:?}, {} connections abandoned at the deadline)",
        exit.reason,
        exit.abandoned_connections
    );
    Ok(ExitCode::SUCCESS)
}

/// Resolves once this process drains and every connection has ended (and quinn has sent its
/// last close frames).
async fn handover_drained(app: App, quinn: quinn::Endpoint) {
    app.drain.draining().await;
    let _ = app.connections.subscribe().wait_for(|n| *n == 0).await;
    quinn.wait_idle().await;
}

/// `--plain-quinn`: the same application on an endpoint quinn binds itself.
async fn plain(
    handover: Handover,
    tls: rustls::ServerConfig,
    args: &Args,
    app: App,
) -> Result<ExitCode, handover::Error> {
    let cannot = |e: String| {
        tracing::error!("cannot start: {e}");
        Ok(ExitCode::from(1))
    };
    let ListenAddr::Udp(addr) = args.listen else {
        return cannot("--listen must be udp://IP:PORT".into());
    };
    let crypto = match quinn::crypto::rustls::QuicServerConfig::try_from(tls) {
        Ok(c) => c,
        Err(e) => return cannot(format!("TLS configuration for QUIC: {e}")),
    };
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    let endpoint = match quinn::Endpoint::server(config, addr) {
        Ok(e) => e,
        Err(e) => return cannot(format!("bind {addr}: {e}")),
    };
    let running = handover.ready().await?;
    let local = endpoint.local_addr().unwrap_or(addr);
    tracing::info!(
        "serving udp://{local} over HTTP/3 (greeting {:?}, pid {}, plain quinn)",
        args.greeting,
        std::process::id()
    );
    tokio::spawn(accept_loop(endpoint.clone(), app));
    running.wait().await;
    Ok(ExitCode::SUCCESS)
}

/// What every connection task shares.
#[derive(Clone)]
struct App {
    /// `<greeting> pid=<pid>`.
    body: Arc<String>,
    goaway_after: Duration,
    goaway_grace: Duration,
    drain: handover::DrainSignal,
    /// Connections being served (a handshake counts from its first datagram).
    connections: Arc<watch::Sender<usize>>,
}

/// Accepts for as long as the endpoint is open: during the drain too, since a handshake that
/// was in flight at the switch is forwarded here and completes here.
async fn accept_loop(endpoint: quinn::Endpoint, app: App) {
    while let Some(incoming) = endpoint.accept().await {
        app.connections.send_modify(|n| *n += 1);
        let app = app.clone();
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            if let Err(e) = connection(incoming, &app).await {
                tracing::debug!("connection from {peer}: {e}");
            }
            app.connections.send_modify(|n| *n -= 1);
        });
    }
}

/// Serves one connection until the client closes it or, after this generation began to
/// drain, until it has been sent GOAWAY, every request below the GOAWAY is answered, and none
/// arrived for a quiet time: then it is closed with `H3_NO_ERROR`.
async fn connection(incoming: quinn::Incoming, app: &App) -> Result<(), String> {
    let quic = incoming.await.map_err(|e| format!("handshake: {e}"))?;
    let mut h3 = h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(quic.clone()))
        .await
        .map_err(|e| format!("h3 setup: {e}"))?;
    let mut requests = JoinSet::new();
    // Set once GOAWAY went out: when the connection falls quiet, close it.
    let mut quiet_until: Option<tokio::time::Instant> = None;
    let goaway = async {
        app.drain.draining().await;
        tokio::time::sleep(app.goaway_after).await;
    };
    tokio::pin!(goaway);
    let mut sent_goaway = false;
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let body = Arc::clone(&app.body);
                    requests.spawn(async move {
                        if let Err(e) = request(resolver, &body).await {
                            tracing::debug!("request: {e}");
                        }
                    });
                    quiet_until = None;
                }
                // The client said GOAWAY and its requests are done.
                Ok(None) => break,
                Err(e) if e.is_h3_no_error() => break,
                Err(e) => return Err(format!("{e}")),
            },
            () = &mut goaway, if !sent_goaway => {
                sent_goaway = true;
                // Every stream the client can have opened so far is below last accepted +
                // MAX_STREAMS: none is refused, each gets its answer.
                h3.shutdown(MAX_STREAMS as usize).await.map_err(|e| format!("GOAWAY: {e}"))?;
                if requests.is_empty() {
                    quiet_until = Some(quiet_deadline(&quic, app.goaway_grace));
                }
            }
            Some(_) = requests.join_next() => {
                if sent_goaway && requests.is_empty() {
                    quiet_until = Some(quiet_deadline(&quic, app.goaway_grace));
                }
            }
            () = sleep_until(quiet_until), if quiet_until.is_some() => {
                quic.close(h3::error::Code::H3_NO_ERROR.value().try_into().expect("a varint"), b"");
                break;
            }
        }
    }
    // Requests still running when the client closed: let them end with the connection.
    while requests.join_next().await.is_some() {}
    Ok(())
}

/// After GOAWAY and the last answer: a request the client sent before it read the GOAWAY
/// takes about one round trip to arrive; wait `grace`, and at least 4 round trips.
fn quiet_deadline(quic: &quinn::Connection, grace: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + (quic.rtt() * 4).max(grace)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;

/// Answers one request: `GET /`, `GET /sleep/<ms>`, 404 otherwise.
async fn request(resolver: Resolver, body: &str) -> Result<(), String> {
    let (req, mut stream) = resolver
        .resolve_request()
        .await
        .map_err(|e| format!("read request: {e}"))?;
    let path = req.uri().path();
    let (status, text) = if path == "/" {
        (200, body.to_owned())
    } else if let Some(ms) = path
        .strip_prefix("/sleep/")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        (200, body.to_owned())
    } else {
        (404, "not found".to_owned())
    };
    let resp = http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(())
        .expect("a valid response");
    stream
        .send_response(resp)
        .await
        .map_err(|e| format!("send response: {e}"))?;
    stream
        .send_data(Bytes::from(text))
        .await
        .map_err(|e| format!("send body: {e}"))?;
    stream.finish().await.map_err(|e| format!("finish: {e}"))
}
