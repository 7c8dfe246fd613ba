//! Zero-downtime upgrades and graceful stops for network servers.
//!
//! `kill -USR2 <pid>` (or `SIGHUP`, or [`Running::upgrade`]) makes a handover server start the
//! executable file at its own path again, hand it every listening socket, and wait until the
//! new process says it is ready. Then the old process stops accepting, lets the new one go
//! ahead, finishes what it was doing and exits. No connection is refused (the listening
//! sockets never close; connections queue in the shared backlog), no request fails, none is
//! cut short. If the new binary cannot be executed, exits, or is not ready in time, the old
//! process kills it, logs why, and keeps serving.
//!
//! # How it works
//!
//! 1. **Listeners.** [`Handover::listen`] returns an inherited socket when the previous
//!    generation (or systemd socket activation) passed one for that name or address, and binds
//!    a new one otherwise. Sockets travel by the systemd protocol: fds 3.., `LISTEN_FDS`,
//!    `LISTEN_FDNAMES`, and `LISTEN_PID` set to the child's own PID after the fork.
//!    [`Handover::datagram`] does the same for a UDP socket ([`Datagram`]), which only the
//!    generation serving reads.
//! 2. **Upgrade.** The old process forks and execs the executable at the path it was started
//!    from (absolute, not canonicalised), with the same arguments, working directory and
//!    environment. Only the listeners and one end of a readiness channel reach the child; every
//!    other fd is closed on exec. `SIGUSR2`/`SIGHUP` stay blocked in the child until its
//!    handlers exist, so an early signal cannot kill it.
//! 3. **Readiness handshake.** The child calls [`Handover::ready`]: it sends READY; the parent
//!    stops accepting and answers GO; only then does the child accept. Once the new version has
//!    answered anyone, the old one never answers a fresh connection again. If the parent has
//!    died, the child goes ahead alone.
//! 4. **Drain.** The old process closes nothing abruptly: requests in progress finish, HTTP
//!    keep-alive clients are told `Connection: close`, idle connections are closed after a
//!    grace period, HTTP/2 gets GOAWAY, and a deadline bounds it all ([`http`]).
//! 5. **Rollback.** Exec failure, an exit before ready, or the upgrade timeout: the child is
//!    killed and reaped, the cause is logged and returned as [`UpgradeError`], and the old
//!    process keeps its PID and serves on; a later upgrade may succeed.
//! 6. **Afterwards.** The two keep their channel: the old process reaps its successor whenever
//!    it exits and logs how it ended, and if the successor crashes (a non-zero exit, a signal
//!    other than `SIGTERM`/`SIGINT`) before handing over in turn, while the old one still
//!    drains and is not stopping, the old one takes the listeners back and serves again
//!    (PID file, `MAINPID` and the control socket follow). A successor stopped on purpose tells
//!    the old one first, which then never takes over.
//!
//! Stopping is the same drain: `SIGTERM`/`SIGINT` stop accepting, in-flight work finishes up
//! to the drain deadline, then [`Running::wait`] returns; a second signal exits at once.
//!
//! # Example
//!
//! ```no_run
//! use handover::{Handover, ListenAddr};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Before the runtime starts threads: reads and clears the inheritance variables.
//!     let mut handover = Handover::builder().pid_file("/tmp/app.pid").build()?;
//!     let rt = tokio::runtime::Runtime::new()?;
//!     rt.block_on(async move {
//!         let addr: ListenAddr = "127.0.0.1:8080".parse()?;
//!         let listener = handover.listen(&addr)?;
//!         let running = handover.ready().await?;
//!         let app = axum::Router::new()
//!             .route("/", axum::routing::get(|| async { "hello" }))
//!             .with_state(()); // routes built once, not per request
//!         tokio::spawn(handover::http::serve(listener, app));
//!         running.wait().await;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! # Layout
//!
//! In the order an upgrade goes through them:
//!
//! | module | one reason to change |
//! |---|---|
//! | `handover` | start-up: builder, listener matching, the child's side of the handshake |
//! | `env` | the inheritance protocol: parsing and writing `LISTEN_*` (pure) |
//! | `listener` | binding, validating inherited sockets, gated `accept` ([`Listener`], [`Connection`]) |
//! | `datagram` | UDP sockets: `recv_from` gated like `accept`, `None` once draining ([`Datagram`]) |
//! | `running` | the control loop: triggers in, one upgrade at a time, stop, a successor's end ([`Running`]) |
//! | `attempt` | one upgrade attempt: readiness, exit and timeout race here |
//! | `spawn` | the only fork/exec: fds at 3.., signal mask, `LISTEN_PID` |
//! | `lineage` | what two generations tell each other after the handshake; the resume rule |
//! | `drain` | serving phase, health ([`Health`]) and the count of live connections |
//! | [`blocking`] | the listener and connections for a thread-per-connection server, with the same drain |
//! | [`http`] | hyper/axum serving with the lossless drain; `http/health`: the `/healthz` answer ([`http::HealthCheck`]) |
//! | `tls` | TLS (feature `tls`): PEM loading (`tls/pem`), the acceptor with the drain's handshake rules (`tls/accept`) |
//! | `quic` | QUIC across upgrades (feature `quic`): `quic/endpoint` (`Handover::quic`, `quic::Endpoint`), `quic/socket` (the routing `AsyncUdpSocket`), `quic/route` (the routing decision, pure), `quic/channel` (socketpairs between generations), `quic/cid` (generation-tagged connection IDs), `quic/packet` (a datagram's DCID and kind), `quic/keys` (the lineage secret's keys), `quic/wire` (messages between generations); tests: `quic/tests` (generations in one process), `quic/route/flood` (the in-flight table under an Initial flood), `quic/socket/gro` (GRO batches of mixed owners) |
//! | `control_handler` | the library's answers to the control socket, mapped onto [`Running`] |
//! | `control_socket` | the admin protocol: `protocol` (messages), `server`, `client` (feature `supervisor` makes it public) |
//! | `pidfile`, `systemd` | PID file and `sd_notify` for process managers |
//! | `addr`, `duration` | the `ADDR` and `DUR` forms shared with the CLI |
//! | `error` | what can go wrong, and the exit status for each |
//! | `os` | every system call outside `spawn` (with it, the only `unsafe`), and the one accept-error policy |
//! | `sys` | building blocks for supervisors (feature `supervisor`) |
//!
//! The end-to-end tests (`tests/`) start the `hello` and `hello_v2` examples (v1 and v2, one
//! build) with the workspace's test kit, `crates/handover-testkit` (`handover_testkit::hello_kit`,
//! and `handover_testkit::tls` for `tests/tls.rs`).
//!
//! # Features
//!
//! `http` (default): [`http::serve`]. `control` (default): `Builder::control_socket`.
//! `supervisor` (off): the public `control_socket` client and types and `sys`, which the
//! `handover` command builds on; a server needs neither. `tls` (off): `handover::tls` and
//! `http::serve_tls`. `quic` (off, implies `tls`): `Handover::quic`, QUIC and HTTP/3 whose
//! connections survive upgrades (`handover::quic`).
//!
//! # Process managers and containers
//!
//! With `NOTIFY_SOCKET` set, each generation sends `READY=1` and `MAINPID=<pid>`, an upgrade
//! sends `RELOADING=1`, a stop `STOPPING=1`: systemd `Type=notify` with `NotifyAccess=all`
//! follows the PID change. A process that is PID 1 (a container's first process) cannot hand
//! over to a child, since its exit ends the container: there an upgrade fails with
//! [`UpgradeError::Pid1`] and the server keeps running; run it under the `handover`
//! supervisor instead.

#![warn(missing_docs)]

mod addr;
mod attempt;
pub mod blocking;
#[cfg(feature = "control")]
mod control_handler;
mod datagram;
mod drain;
mod duration;
mod env;
mod error;
mod handover;
mod lineage;
mod listener;
mod os;
mod pidfile;
#[cfg(feature = "quic")]
pub mod quic;
mod running;
mod spawn;
#[cfg(feature = "supervisor")]
pub mod sys;
mod systemd;

#[cfg(feature = "supervisor")]
pub mod control_socket;
#[cfg(all(feature = "control", not(feature = "supervisor")))]
mod control_socket;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "tls")]
pub mod tls;

pub use addr::{AddrParseError, ListenAddr};
pub use attempt::Upgraded;
pub use datagram::Datagram;
pub use drain::{DrainReason, DrainSignal, Health};
pub use duration::{parse_duration, DurationParseError};
pub use env::EnvError;
pub use error::{Error, UpgradeError};
#[cfg(feature = "tls")]
pub use handover::DEFAULT_TLS_HANDSHAKE_TIMEOUT;
pub use handover::{
    Builder, Handover, DEFAULT_BACKLOG, DEFAULT_DRAIN_TIMEOUT, DEFAULT_IDLE_GRACE,
    DEFAULT_UPGRADE_TIMEOUT,
};
pub use listener::{Connection, Listener, Peer};
pub use running::{Exit, Running};
pub use spawn::ExitStatus;
