//! The control socket: `handover upgrade`, `handover status` and `handover stop` talk to a
//! running server (the `handover run` supervisor or a library-mode server) through it.
//!
//! # Transport
//!
//! A Unix stream socket, created with mode `0600` by [`ControlServer::bind`]. Every accepted
//! peer is checked with `SO_PEERCRED`: only the server's own (effective) uid and root may use
//! it; anyone else gets an error reply and the connection is closed. One request per
//! connection:
//!
//! 1. the client writes **one JSON object on one line** (at most [`MAX_REQUEST_BYTES`] bytes
//!    before the `\n`; the end of the stream also ends the line);
//! 2. the server writes **one JSON object on one line** and closes the connection.
//!
//! The request must arrive within [`DEFAULT_READ_TIMEOUT`]. A malformed, unknown, oversized
//! or late request gets an error reply; the server never stops serving because of a client.
//!
//! # Requests
//!
//! | request | JSON | reply `result` |
//! |---|---|---|
//! | upgrade | `{"request":"upgrade"}` | [`UpgradeReport`], sent once the outcome is known |
//! | status | `{"request":"status"}` | [`Status`] |
//! | stop | `{"request":"stop"}` | [`StopReport`], sent when the graceful stop has begun |
//!
//! Unknown fields in a request are ignored, so newer clients can add optional ones.
//!
//! # Replies
//!
//! ```text
//! {"ok":true,"result":{...}}
//! {"ok":false,"error":"the new worker (generation 4, pid 4242) exited with status 3 before it was ready; generation 3 (pid 4100) keeps serving"}
//! ```
//!
//! A failed upgrade is an `ok:false` reply whose `error` says why; the server keeps serving
//! with the previous version.
//!
//! ## `result` of `upgrade`: [`UpgradeReport`]
//!
//! ```json
//! {"pid":4242,"generation":4,"previous_pids":[4100],"duration_ms":812}
//! ```
//!
//! ## `result` of `status`: [`Status`] (`schema_version` 2)
//!
//! ```json
//! {
//!   "schema_version": 2,
//!   "kind": "supervisor",
//!   "name": "app",
//!   "pid": 4000,
//!   "state": "running",
//!   "generation": 4,
//!   "uptime_ms": 3600000,
//!   "restarts": 0,
//!   "listeners": ["tcp://127.0.0.1:8080"],
//!   "workers": [
//!     {"generation": 4, "pid": 4242, "state": "ready", "uptime_ms": 5000},
//!     {"generation": 3, "pid": 4100, "state": "draining", "uptime_ms": 600000}
//!   ],
//!   "last_upgrade": {
//!     "ok": true, "trigger": "control socket", "generation": 4, "pid": 4242,
//!     "error": null, "started_unix_ms": 1767225600000, "duration_ms": 812
//!   },
//!   "resumed": null
//! }
//! ```
//!
//! Field by field, see [`Status`], [`WorkerStatus`], [`UpgradeRecord`] and [`ResumeRecord`].
//! Fields may be added in later versions without changing `schema_version`; a change of
//! meaning bumps it. Version 2: in a library-mode server `last_upgrade` is, until the process
//! tries an upgrade of its own, the upgrade that created it (version 1 said `null` there), and
//! `resumed` is new.
//!
//! ## `result` of `stop`: [`StopReport`]
//!
//! ```json
//! {"pid":4000}
//! ```
//!
//! # A server that upgrades itself
//!
//! Every generation must answer on the same path. The first one [`ControlServer::bind`]s it
//! with [`ControlServer::remove_on_drop`]`(false)`, hands [`ControlServer::try_clone_fd`] to
//! the next generation with its listeners, and stops serving (aborts the `serve` task) once
//! it has handed over; the next one adopts the socket with [`ControlServer::from_listener`].
//! The generation that stops for good removes the file.
//!
//! # Example
//!
//! ```no_run
//! use handover::control_socket::{self, ControlServer, Request, Response, StopReport};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let server = ControlServer::bind("/run/app/control.sock")?;
//! tokio::spawn(server.serve(|request: Request| async move {
//!     match request {
//!         Request::Stop => Ok(Response::Stopping(StopReport { pid: std::process::id() })),
//!         other => Err(format!("{other:?} is not supported here")),
//!     }
//! }));
//! # Ok(()) }
//! // Elsewhere (a blocking call):
//! let reply = control_socket::request("/run/app/control.sock", Request::Status);
//! ```

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Longest accepted request line, newline excluded.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// How long a client has to send its whole request line.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Version of the [`Status`] schema this crate writes.
pub const STATUS_SCHEMA_VERSION: u32 = 2;

/// Longest reply a client accepts.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// How long the server waits for a client to take its reply.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handled at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// A request, written as `{"request":"upgrade"}`, `{"request":"status"}` or
/// `{"request":"stop"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Start a new generation and hand over to it; the reply comes once it is ready (or has
    /// failed and was rolled back).
    Upgrade,
    /// Report the server's state.
    Status,
    /// Stop gracefully: stop accepting, let in-flight work finish, exit.
    Stop,
}

/// The `result` of a successful request, one variant per [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// The reply to [`Request::Upgrade`] when the new generation took over.
    Upgraded(UpgradeReport),
    /// The reply to [`Request::Status`].
    Status(Status),
    /// The reply to [`Request::Stop`].
    Stopping(StopReport),
}

/// A successful upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// PID of the process that now accepts new connections.
    pub pid: u32,
    /// Its generation number (1 for the first worker), when the server counts them.
    #[serde(default)]
    pub generation: Option<u64>,
    /// PIDs of the processes now draining (the previous version).
    #[serde(default)]
    pub previous_pids: Vec<u32>,
    /// From the request to the new generation being ready, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
}

/// A graceful stop has begun.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReport {
    /// PID of the process that is stopping (the supervisor, or the library-mode server).
    pub pid: u32,
}

/// What answers on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerKind {
    /// The `handover run` supervisor: a stable PID, workers as children.
    Supervisor,
    /// A server using the library directly: the PID changes at each upgrade.
    Library,
    /// A kind this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

/// The server as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerState {
    /// The first generation is not ready yet.
    Starting,
    /// A generation is ready and serving.
    Running,
    /// An upgrade is in progress (a new generation is starting); the old one still serves.
    Upgrading,
    /// No generation serves (the last one exited unexpectedly); a new one is being started.
    /// Connections wait in the listen backlog meanwhile.
    Restarting,
    /// A graceful stop is in progress.
    Stopping,
    /// A state this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

/// One process of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Started, not ready yet.
    Starting,
    /// Ready: accepts new connections.
    Ready,
    /// Told to stop (an upgrade replaced it, or the server is stopping); finishing its work.
    Draining,
    /// Killed (not ready in time, or its drain deadline passed); about to be reaped.
    Killed,
    /// A state this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

/// The reply to [`Request::Status`]; the JSON schema is in the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`STATUS_SCHEMA_VERSION`] of the server that wrote this.
    pub schema_version: u32,
    /// `"supervisor"` or `"library"`.
    pub kind: ServerKind,
    /// The service name (`--name`), if any.
    #[serde(default)]
    pub name: Option<String>,
    /// PID of the process answering: the supervisor (stable), or the library-mode server.
    pub pid: u32,
    /// `"starting"`, `"running"`, `"upgrading"`, `"restarting"` or `"stopping"`.
    pub state: ServerState,
    /// Generation of the process serving new connections (1 for the first; 0 when none
    /// serves yet).
    #[serde(default)]
    pub generation: u64,
    /// Milliseconds since the server (the supervisor, or this process) started.
    #[serde(default)]
    pub uptime_ms: u64,
    /// Workers restarted after exiting unexpectedly, since the start.
    #[serde(default)]
    pub restarts: u64,
    /// The listening sockets, as `tcp://IP:PORT` or `unix:PATH`.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Every live process of the server, newest generation first.
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
    /// The most recent upgrade attempt, or `null` if there was none. A library-mode server
    /// that has not tried one itself shows the upgrade that created it (`generation` and `pid`
    /// are its own then).
    #[serde(default)]
    pub last_upgrade: Option<UpgradeRecord>,
    /// Library mode: set when this process took the listeners back because the generation it
    /// had handed over to crashed after it was ready; `null` otherwise (and always for the
    /// supervisor, which restarts a crashed worker instead).
    #[serde(default)]
    pub resumed: Option<ResumeRecord>,
}

/// A library-mode process serving again after its successor crashed, in [`Status::resumed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// PID of the successor that crashed.
    pub successor_pid: u32,
    /// Its generation number.
    pub successor_generation: u64,
    /// How it ended, e.g. `"was killed by signal SIGSEGV"`, `"exited with status 101"`.
    pub successor_ended: String,
    /// When this process took over again, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// One process in [`Status::workers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its generation number.
    pub generation: u64,
    /// Its PID.
    pub pid: u32,
    /// `"starting"`, `"ready"`, `"draining"` or `"killed"`.
    pub state: WorkerState,
    /// Milliseconds since it was started.
    pub uptime_ms: u64,
}

/// The outcome of an upgrade attempt, in [`Status::last_upgrade`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    /// Whether the new generation took over.
    pub ok: bool,
    /// What asked for it: `"SIGHUP"`, `"SIGUSR2"`, `"control socket"`, `"watch: PATH"`.
    pub trigger: String,
    /// The generation that was started, if one was.
    #[serde(default)]
    pub generation: Option<u64>,
    /// The PID of the new process, if one was started.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Why it failed (`null` on success).
    #[serde(default)]
    pub error: Option<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long it took until the outcome was known, in milliseconds.
    pub duration_ms: u64,
}

/// The wire form of a reply.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Reply {
    fn error(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            result: None,
            error: Some(message.into()),
        }
    }

    fn from_outcome(outcome: Result<Response, String>) -> Reply {
        let value = match outcome {
            Ok(Response::Upgraded(r)) => serde_json::to_value(r),
            Ok(Response::Status(s)) => serde_json::to_value(s),
            Ok(Response::Stopping(s)) => serde_json::to_value(s),
            Err(e) => return Reply::error(e),
        };
        match value {
            Ok(v) => Reply {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Reply::error(format!("cannot encode the reply: {e}")),
        }
    }

    fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self)
            .unwrap_or_else(|_| br#"{"ok":false,"error":"cannot encode the reply"}"#.to_vec());
        line.push(b'\n');
        line
    }
}

/// Milliseconds since the Unix epoch, for [`UpgradeRecord::started_unix_ms`].
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Answers control requests. Implemented for every
/// `Fn(Request) -> impl Future<Output = Result<Response, String>>` closure; an `Err` becomes
/// an `{"ok":false,"error":...}` reply.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. For [`Request::Upgrade`], resolve only once the outcome is known.
    fn handle(&self, request: Request) -> impl Future<Output = Result<Response, String>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, String>> + Send,
{
    fn handle(&self, request: Request) -> impl Future<Output = Result<Response, String>> + Send {
        self(request)
    }
}

/// A listening control socket.
///
/// Made by [`ControlServer::bind`] (which creates the socket file) or adopted from a previous
/// generation with [`ControlServer::from_listener`]. When a server made by `bind` is dropped
/// (or the future of [`ControlServer::serve`] is), the socket file is removed if it is still
/// the one this server created; see [`ControlServer::remove_on_drop`] to keep it, as a server
/// that hands its sockets to a successor must.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file.
    identity: Option<(u64, u64)>,
    remove_on_drop: bool,
    read_timeout: Duration,
    connection_guard: Option<ConnectionGuardFn>,
}

/// Makes a value held for as long as one control connection is handled.
type ConnectionGuardFn = Arc<dyn Fn() -> Box<dyn Send> + Send + Sync>;

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .field("remove_on_drop", &self.remove_on_drop)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl ControlServer {
    /// Creates the control socket at `path` with mode `0600` and listens on it. Must be called
    /// within a Tokio runtime.
    ///
    /// Never follows or replaces someone else's file: a socket file left by a process that
    /// has gone (connecting is refused) and owned by this uid is removed first; anything else
    /// at `path` (a live socket, a regular file, a symbolic link, another user's socket) is an
    /// error. The parent directory must exist; put it somewhere only this user can write
    /// (such as `$XDG_RUNTIME_DIR`).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<ControlServer> {
        let path = path.as_ref().to_path_buf();
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        remove_stale_socket(&path).map_err(with_path)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
        // On Linux, bind(2) creates the file with the mode of the socket's inode (minus the
        // umask): setting it first means the file never exists with looser permissions.
        // SAFETY: fchmod on a valid fd.
        unsafe { libc::fchmod(socket.as_raw_fd(), 0o600) };
        // bind(2) fails with EADDRINUSE if anything exists at `path`: nothing is replaced.
        socket.bind(&SockAddr::unix(&path)?).map_err(with_path)?;
        let meta = std::fs::symlink_metadata(&path).map_err(with_path)?;
        let cleanup = |e: io::Error| {
            let _ = std::fs::remove_file(&path);
            with_path(e)
        };
        if !meta.file_type().is_socket() || meta.uid() != euid() {
            return Err(with_path(io::Error::other(
                "the socket file was replaced while it was being created",
            )));
        }
        if meta.mode() & 0o777 != 0o600 {
            // Other systems, or a umask that removed the owner's bits.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(cleanup)?;
        }
        socket.listen(128).map_err(cleanup)?;
        socket.set_nonblocking(true).map_err(cleanup)?;
        let std_listener: std::os::unix::net::UnixListener = socket.into();
        let listener = UnixListener::from_std(std_listener).map_err(cleanup)?;
        Ok(ControlServer {
            listener,
            path,
            identity: Some((meta.dev(), meta.ino())),
            remove_on_drop: true,
            read_timeout: DEFAULT_READ_TIMEOUT,
            connection_guard: None,
        })
    }

    /// Adopts an already listening control socket, such as one inherited from the previous
    /// generation at an upgrade (pass it on with [`ControlServer::try_clone_fd`]). Its file
    /// is not removed on drop unless [`ControlServer::remove_on_drop`] says so. Must be
    /// called within a Tokio runtime.
    pub fn from_listener(listener: std::os::unix::net::UnixListener) -> io::Result<ControlServer> {
        let path = listener
            .local_addr()?
            .as_pathname()
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the control socket is not bound to a path",
                )
            })?;
        listener.set_nonblocking(true)?;
        let identity = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(ControlServer {
            listener: UnixListener::from_std(listener)?,
            path,
            identity,
            remove_on_drop: false,
            read_timeout: DEFAULT_READ_TIMEOUT,
            connection_guard: None,
        })
    }

    /// Whether dropping the server removes its socket file (if it is still the same file).
    /// Default: `true` after [`ControlServer::bind`], `false` after
    /// [`ControlServer::from_listener`]. A server that may hand the socket to a successor
    /// should say `false` and remove the file itself at its final stop.
    pub fn remove_on_drop(mut self, remove: bool) -> ControlServer {
        self.remove_on_drop = remove;
        self
    }

    /// A duplicate of the listening socket (close-on-exec), to hand to the next generation;
    /// take it before [`ControlServer::serve`] consumes the server.
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Changes how long a client has to send its request (default [`DEFAULT_READ_TIMEOUT`]).
    pub fn with_read_timeout(mut self, timeout: Duration) -> ControlServer {
        self.read_timeout = timeout;
        self
    }

    /// Calls `make` for each accepted connection and keeps its result until the reply has
    /// been written: a server that drains before exiting can count control connections like
    /// any other, so a reply to `upgrade` or `stop` is not cut off by the exit.
    pub fn with_connection_guard<G: Send + 'static>(
        mut self,
        make: impl Fn() -> G + Send + Sync + 'static,
    ) -> ControlServer {
        self.connection_guard = Some(Arc::new(move || Box::new(make()) as Box<dyn Send>));
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections forever, each in its own task (so a pending upgrade does not hold
    /// up a status request), at most 64 at a time. Returns only if the socket itself fails
    /// for good.
    pub async fn serve<H: Handler>(self, handler: H) -> io::Result<()> {
        let handler = Arc::new(handler);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let me = euid();
        loop {
            let permit = Arc::clone(&slots)
                .acquire_owned()
                .await
                .map_err(|_| io::Error::other("connection limit closed"))?;
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if is_transient_accept_error(&e) => {
                    tracing::warn!("control socket {}: accept: {e}", self.path.display());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let handler = Arc::clone(&handler);
            let read_timeout = self.read_timeout;
            let guard = self.connection_guard.as_ref().map(|make| make());
            tokio::spawn(async move {
                handle_connection(stream, &*handler, me, read_timeout).await;
                drop(guard);
                drop(permit);
            });
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        // Remove the file only if it is still ours (nobody replaced it meanwhile).
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if Some((m.dev(), m.ino())) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn euid() -> u32 {
    // SAFETY: plain syscall without arguments.
    unsafe { libc::geteuid() }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
        )
    )
}

/// Removes a dead socket file of ours at `path`; anything else there is an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket; refusing to replace it",
        ));
    }
    if meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "is a socket owned by uid {}, not by this user (uid {}); refusing to replace it",
                meta.uid(),
                euid()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is serving this control socket (is the server already running?)",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Still the same file? Then nobody listens on it: remove it.
            let again = std::fs::symlink_metadata(path)?;
            if (again.dev(), again.ino()) != (meta.dev(), meta.ino()) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "was replaced while checking whether it is stale",
                ));
            }
            tracing::debug!("removing stale control socket {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// Why a request line could not be read.
#[derive(Debug)]
enum ReadError {
    TooLong,
    Empty,
    Io(io::Error),
}

async fn handle_connection<H: Handler>(
    mut stream: UnixStream,
    handler: &H,
    me: u32,
    read_timeout: Duration,
) {
    let reply = match stream.peer_cred() {
        Ok(cred) if cred.uid() == me || cred.uid() == 0 => {
            match tokio::time::timeout(read_timeout, read_line(&mut stream)).await {
                Err(_) => Reply::error(format!(
                    "no complete request within {read_timeout:?}; send one JSON line such as {{\"request\":\"status\"}}"
                )),
                Ok(Err(ReadError::TooLong)) => Reply::error(format!(
                    "request too long (more than {MAX_REQUEST_BYTES} bytes)"
                )),
                Ok(Err(ReadError::Empty)) => Reply::error(
                    "empty request; send one JSON line such as {\"request\":\"status\"}",
                ),
                Ok(Err(ReadError::Io(e))) => {
                    tracing::debug!("control socket: reading a request: {e}");
                    return;
                }
                Ok(Ok(line)) => match parse_request(&line) {
                    Ok(request) => Reply::from_outcome(handler.handle(request).await),
                    Err(message) => Reply::error(message),
                },
            }
        }
        Ok(cred) => {
            tracing::warn!(
                "control socket: refused a client with uid {} (only uid {me} and root may control this server)",
                cred.uid()
            );
            Reply::error(format!(
                "permission denied: uid {} may not control this server (only uid {me} and root may)",
                cred.uid()
            ))
        }
        Err(e) => Reply::error(format!("cannot check the peer's credentials: {e}")),
    };
    let line = reply.to_line();
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&line).await?;
        stream.shutdown().await?;
        // Take what the client may still be sending (bounded), so that closing does not
        // turn into a reset before it has read the reply.
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// Reads up to the first `\n` (or the end of the stream), at most [`MAX_REQUEST_BYTES`].
async fn read_line(stream: &mut UnixStream) -> Result<Vec<u8>, ReadError> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES + 1];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await.map_err(ReadError::Io)?;
        let end = if n == 0 {
            Some(len)
        } else {
            buf[len..len + n]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| len + i)
        };
        if let Some(end) = end {
            buf.truncate(end);
            return if buf.iter().all(u8::is_ascii_whitespace) {
                Err(ReadError::Empty)
            } else {
                Ok(buf)
            };
        }
        len += n;
        if len > MAX_REQUEST_BYTES {
            return Err(ReadError::TooLong);
        }
    }
}

fn parse_request(line: &[u8]) -> Result<Request, String> {
    const HINT: &str =
        r#"expected a JSON object such as {"request":"status"} (requests: upgrade, status, stop)"#;
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| format!("invalid request: not JSON ({e}); {HINT}"))?;
    match value.get("request") {
        None => Err(format!("invalid request: no \"request\" field; {HINT}")),
        Some(serde_json::Value::String(name)) => {
            serde_json::from_value(value.clone()).map_err(|_| {
                let shown: String = name.chars().take(64).collect();
                format!("unknown request {shown:?}; {HINT}")
            })
        }
        Some(_) => Err(format!(
            "invalid request: \"request\" must be a string; {HINT}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Why a control request did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers at the path (no file, or the server is gone).
    #[error("cannot connect to the control socket {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// Sending the request or reading the reply failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// No reply within the timeout given to [`request_with_timeout`].
    #[error("no reply on the control socket {path} within {timeout:?}")]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout.
        timeout: Duration,
    },
    /// The reply is not what the protocol says.
    #[error("invalid reply on the control socket {path}: {reason}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered `{"ok":false,"error":...}`: for an upgrade, the reason it was
    /// rolled back.
    #[error("{0}")]
    Failed(String),
}

/// Sends `request` to the control socket at `path` and waits for the reply, however long it
/// takes (an upgrade replies once the new generation is ready or has failed). Blocking.
pub fn request(path: impl AsRef<Path>, request: Request) -> Result<Response, ClientError> {
    request_with_timeout(path, request, None)
}

/// [`request`] with an optional bound on the whole exchange.
pub fn request_with_timeout(
    path: impl AsRef<Path>,
    request: Request,
    timeout: Option<Duration>,
) -> Result<Response, ClientError> {
    let path = path.as_ref();
    let deadline = timeout.map(|t| (Instant::now() + t, t));
    let io_err = |source: io::Error| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let protocol = |reason: String| ClientError::Protocol {
        path: path.to_path_buf(),
        reason,
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let remaining =
        |deadline: Option<(Instant, Duration)>| -> Result<Option<Duration>, ClientError> {
            match deadline {
                None => Ok(None),
                Some((at, t)) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        Err(ClientError::Timeout {
                            path: path.to_path_buf(),
                            timeout: t,
                        })
                    } else {
                        Ok(Some(left))
                    }
                }
            }
        };
    stream
        .set_write_timeout(remaining(deadline)?)
        .map_err(io_err)?;
    let mut line = serde_json::to_vec(&request).map_err(|e| protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;

    let mut reply = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(remaining(deadline)?)
            .map_err(io_err)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                remaining(deadline)?;
                continue;
            }
            Err(e) => return Err(io_err(e)),
        };
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply.contains(&b'\n') {
            break;
        }
        if reply.len() > MAX_REPLY_BYTES {
            return Err(protocol(format!("longer than {MAX_REPLY_BYTES} bytes")));
        }
    }
    let end = reply
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(reply.len());
    if end == 0 {
        return Err(protocol(
            "the server closed the connection without replying".into(),
        ));
    }
    decode_reply(request, &reply[..end]).map_err(|e| match e {
        DecodeError::Failed(msg) => ClientError::Failed(msg),
        DecodeError::Protocol(reason) => protocol(reason),
    })
}

enum DecodeError {
    Failed(String),
    Protocol(String),
}

fn decode_reply(request: Request, line: &[u8]) -> Result<Response, DecodeError> {
    let reply: Reply = serde_json::from_slice(line)
        .map_err(|e| DecodeError::Protocol(format!("not a reply object: {e}")))?;
    if !reply.ok {
        return Err(DecodeError::Failed(reply.error.unwrap_or_else(|| {
            "the server reported an error without a message".into()
        })));
    }
    let result = reply.result.unwrap_or(serde_json::Value::Null);
    let bad = |e: serde_json::Error| DecodeError::Protocol(format!("unexpected result: {e}"));
    Ok(match request {
        Request::Upgrade => Response::Upgraded(serde_json::from_value(result).map_err(bad)?),
        Request::Status => Response::Status(serde_json::from_value(result).map_err(bad)?),
        Request::Stop => Response::Stopping(serde_json::from_value(result).map_err(bad)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream as StdStream;

    fn status() -> Status {
        Status {
            schema_version: STATUS_SCHEMA_VERSION,
            kind: ServerKind::Supervisor,
            name: Some("app".into()),
            pid: 42,
            state: ServerState::Running,
            generation: 2,
            uptime_ms: 1000,
            restarts: 0,
            listeners: vec!["tcp://127.0.0.1:8080".into()],
            workers: vec![WorkerStatus {
                generation: 2,
                pid: 43,
                state: WorkerState::Ready,
                uptime_ms: 500,
            }],
            last_upgrade: None,
            resumed: None,
        }
    }

    async fn handler(request: Request) -> Result<Response, String> {
        match request {
            Request::Status => Ok(Response::Status(status())),
            Request::Stop => Ok(Response::Stopping(StopReport { pid: 42 })),
            Request::Upgrade => Err("the new worker exited with status 3".into()),
        }
    }

    /// Starts a server in a runtime of its own thread; returns its path.
    fn server(dir: &Path, read_timeout: Duration) -> PathBuf {
        let path = dir.join("control.sock");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = ControlServer::bind(&p)
                    .unwrap()
                    .with_read_timeout(read_timeout);
                tx.send(()).unwrap();
                server.serve(handler).await.unwrap();
            });
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        path
    }

    fn raw(path: &Path, bytes: &[u8]) -> serde_json::Value {
        let mut s = StdStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.ends_with('\n'), "{out:?}");
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        serde_json::from_str(&out).unwrap()
    }

    fn error_of(v: &serde_json::Value) -> String {
        assert_eq!(v["ok"], false, "{v}");
        v["error"].as_str().unwrap().to_string()
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path(), DEFAULT_READ_TIMEOUT);
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            request(&path, Request::Status).unwrap(),
            Response::Status(status())
        );
        assert_eq!(
            request(&path, Request::Stop).unwrap(),
            Response::Stopping(StopReport { pid: 42 })
        );
        match request(&path, Request::Upgrade) {
            Err(ClientError::Failed(msg)) => assert!(msg.contains("status 3"), "{msg}"),
            other => panic!("{other:?}"),
        }
        let v = raw(&path, b"{\"request\":\"status\",\"extra\":1}\n");
        assert_eq!(v["ok"], true);
        assert_eq!(v["result"]["workers"][0]["state"], "ready");
        assert_eq!(v["result"]["kind"], "supervisor");
        // The end of the stream also ends the line.
        assert_eq!(raw(&path, b"{\"request\":\"stop\"}")["ok"], true);
    }

    #[test]
    fn garbage_gets_an_error_reply_and_the_server_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path(), DEFAULT_READ_TIMEOUT);
        let cases: &[(&[u8], &str)] = &[
            (b"garbage\n", "not JSON"),
            (b"\xff\xfe\n", "not JSON"),
            (b"{\"request\":\"dance\"}\n", "unknown request \"dance\""),
            (b"{\"request\":7}\n", "must be a string"),
            (b"{}\n", "no \"request\" field"),
            (b"[1,2]\n", "no \"request\" field"),
            (b"\n", "empty request"),
            (b"", "empty request"),
        ];
        for (input, needle) in cases {
            let e = error_of(&raw(&path, input));
            assert!(e.contains(needle), "{input:?}: {e}");
        }
        let long = vec![b'x'; MAX_REQUEST_BYTES + 10];
        assert!(error_of(&raw(&path, &long)).contains("too long"));
        let mut long_line = vec![b' '; MAX_REQUEST_BYTES + 1];
        long_line.extend_from_slice(b"{\"request\":\"status\"}\n");
        assert!(error_of(&raw(&path, &long_line)).contains("too long"));
        // Exactly at the limit is fine.
        let mut at_limit = vec![b' '; MAX_REQUEST_BYTES - 20];
        at_limit.extend_from_slice(b"{\"request\":\"stop\"}");
        assert_eq!(at_limit.len(), MAX_REQUEST_BYTES - 2);
        assert_eq!(raw(&path, &at_limit)["ok"], true);
        assert!(request(&path, Request::Status).is_ok());
    }

    #[test]
    fn a_silent_client_times_out_without_blocking_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path(), Duration::from_millis(300));
        let mut idle = StdStream::connect(&path).unwrap();
        // Another client is served while the first one says nothing.
        assert!(request(&path, Request::Status).is_ok());
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = String::new();
        idle.read_to_string(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(error_of(&v).contains("no complete request"), "{v}");
    }

    #[test]
    fn bind_replaces_only_a_stale_socket_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let path = dir.path().join("c.sock");

        // A stale socket (nobody listening) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = ControlServer::bind(&path).unwrap();
        // A live one is refused, and left alone.
        let e = ControlServer::bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        drop(server);
        assert!(
            !path.exists(),
            "dropping the server removes its socket file"
        );

        // A regular file is never replaced.
        std::fs::write(&path, "precious").unwrap();
        let e = ControlServer::bind(&path).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        std::fs::remove_file(&path).unwrap();

        // Nor is a symbolic link followed.
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(ControlServer::bind(&path).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn an_adopted_socket_serves_and_is_kept_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inherited.sock");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let first = ControlServer::bind(&p).unwrap().remove_on_drop(false);
                let fd = first.try_clone_fd().unwrap();
                drop(first);
                assert!(p.exists(), "remove_on_drop(false) keeps the file");
                // The next generation adopts the same socket.
                let adopted =
                    ControlServer::from_listener(std::os::unix::net::UnixListener::from(fd))
                        .unwrap();
                assert_eq!(adopted.path(), p);
                tx.send(()).unwrap();
                adopted.serve(handler).await.unwrap();
            });
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(
            request(&path, Request::Stop),
            Ok(Response::Stopping(StopReport { pid: 42 }))
        ));
    }

    #[test]
    fn client_errors_name_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing.sock");
        let e = request(&path, Request::Status).unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains("nothing.sock"), "{e}");
    }

    #[test]
    fn status_schema_is_stable() {
        let v = serde_json::to_value(status()).unwrap();
        for field in [
            "schema_version",
            "kind",
            "name",
            "pid",
            "state",
            "generation",
            "uptime_ms",
            "restarts",
            "listeners",
            "workers",
            "last_upgrade",
            "resumed",
        ] {
            assert!(v.get(field).is_some(), "missing {field}: {v}");
        }
        assert_eq!(v["state"], "running");
        // Unknown states from a newer server still decode.
        let mut newer = v.clone();
        newer["state"] = "hibernating".into();
        newer["workers"][0]["state"] = "dreaming".into();
        let s: Status = serde_json::from_value(newer).unwrap();
        assert_eq!(s.state, ServerState::Unknown);
        assert_eq!(s.workers[0].state, WorkerState::Unknown);
    }
}
