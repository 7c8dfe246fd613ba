//! Building blocks for supervisors such as the `handover` command: bind sockets, start a
//! program with them by the systemd socket-activation protocol, reap it, write a PID file, talk
//! to systemd. A server using the library directly needs none of this.

use std::ffi::OsString;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::addr::ListenAddr;
use crate::os;
use crate::spawn::{self, SpawnFailure, SpawnRequest};

pub use crate::os::{
    after_accept_error, remove_created_file, signal_name, signal_number, AcceptError, ACCEPT_PAUSE,
};

pub use crate::spawn::ExitStatus;

/// A listening socket (or, for `udp://`, a bound datagram socket) made by [`bind`].
#[derive(Debug)]
pub struct Bound {
    /// The socket (close-on-exec, non-blocking, listening).
    pub fd: OwnedFd,
    /// The address it is bound to, with the real port when 0 was asked for.
    pub local: ListenAddr,
    /// The Unix socket file this call created; remove it at the final stop.
    pub created_file: Option<PathBuf>,
}

/// Binds a listening socket the way the library does (`SO_REUSEADDR` for TCP and UDP, a stale
/// Unix socket file replaced, a live one refused); a `udp://` address gets a bound datagram
/// socket, as systemd's `ListenDatagram=` passes it.
pub fn bind(addr: &ListenAddr, backlog: i32) -> io::Result<Bound> {
    let (socket, created_file) = crate::listener::bind(addr, backlog)?;
    let local = match addr {
        ListenAddr::Tcp(_) => socket
            .local_addr()?
            .as_socket()
            .map(ListenAddr::Tcp)
            .unwrap_or_else(|| addr.clone()),
        ListenAddr::Udp(_) => socket
            .local_addr()?
            .as_socket()
            .map(ListenAddr::Udp)
            .unwrap_or_else(|| addr.clone()),
        ListenAddr::Unix(_) => addr.clone(),
    };
    Ok(Bound {
        fd: socket.into(),
        local,
        created_file,
    })
}

/// A listening socket this process was handed by systemd socket activation (or anything
/// speaking its protocol, such as `systemd-socket-activate`), validated.
#[derive(Debug)]
pub struct Activated {
    /// The socket (close-on-exec, non-blocking, listening, a stream socket).
    pub fd: OwnedFd,
    /// Its `LISTEN_FDNAMES` entry, when the variable was set.
    pub name: Option<String>,
    /// The address it is bound to, read from the socket (`getsockname`).
    pub local: ListenAddr,
    /// The fd number it arrived at (3, 4, ...), for messages.
    pub inherited_fd: RawFd,
}

/// Takes the listening sockets passed by systemd socket activation: reads `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES` as `sd_listen_fds(3)` does (the same strict parser the
/// library uses at start-up), removes them (and handover's own inheritance variables) from
/// the environment whatever they held, and checks every fd: open, a socket, a stream socket,
/// listening, TCP or Unix.
///
/// No variables, or a `LISTEN_PID` naming another process, give an empty list (the latter
/// with a warning logged: the variables were inherited by accident). A malformed value or an
/// fd that fails a check is an error naming the variable or fd ([`crate::Error::Env`],
/// [`crate::Error::Inherited`]; exit status 2 by [`crate::Error::exit_code`]).
///
/// Call it before the process has started threads: it changes the process environment.
pub fn take_activated_listeners() -> Result<Vec<Activated>, crate::Error> {
    let me = crate::spawn::own_pid();
    let parsed = crate::env::parse(|k| std::env::var_os(k), me);
    for var in crate::env::PROTOCOL_VARS {
        // Sound: documented to run before other threads exist.
        std::env::remove_var(var);
    }
    let inheritance = match parsed? {
        crate::env::Parsed::Inherited(inh) => inh,
        crate::env::Parsed::NotForUs { listen_pid } => {
            tracing::warn!(
                "LISTEN_PID={listen_pid} is not this process ({me}); ignoring LISTEN_FDS"
            );
            return Ok(Vec::new());
        }
        crate::env::Parsed::Ignored { reason } => {
            tracing::warn!("ignoring inherited sockets: {reason}");
            return Ok(Vec::new());
        }
        crate::env::Parsed::Nothing => return Ok(Vec::new()),
    };
    if inheritance.readiness_fd.is_some() {
        // Only a handover generation sets it for its successor; a supervisor has no
        // predecessor to answer, so the fd is left alone.
        tracing::warn!("ignoring HANDOVER_SYNC_FD: a supervisor is never a handover generation");
    }
    let sockets = crate::listener::adopt_inherited(&inheritance.fds, &[])?;
    Ok(sockets
        .into_iter()
        .zip(&inheritance.fds)
        .map(|(s, f)| Activated {
            fd: s.socket.into(),
            name: s.name,
            local: s.addr,
            inherited_fd: f.fd,
        })
        .collect())
}

/// A program to start with listening sockets.
#[derive(Debug, Clone)]
pub struct Program {
    /// Path of the executable (see [`find_program`]).
    pub path: PathBuf,
    /// The full argument vector, `argv[0]` included.
    pub args: Vec<OsString>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The environment; the socket-activation variables (`LISTEN_PID`, `LISTEN_FDS`,
    /// `LISTEN_FDNAMES`) and handover's own inheritance variables in it are replaced.
    pub env: Vec<(OsString, OsString)>,
}

/// Starts `program` with `listeners` (fd, name) at fds 3.. and `LISTEN_FDS`,
/// `LISTEN_FDNAMES` and `LISTEN_PID` (its own PID) set; no other fd of this process reaches it,
/// and it starts with no signal blocked. With no listeners none of these variables is set
/// (and any in `program.env` is removed): the program inherits nothing. Blocking until the exec has succeeded or failed;
/// returns the PID. The caller must reap it ([`try_reap`], [`reap_any`]).
pub fn spawn_with_listeners(program: &Program, listeners: &[(RawFd, String)]) -> io::Result<u32> {
    spawn::spawn(SpawnRequest {
        exe: &program.path,
        args: &program.args,
        cwd: &program.cwd,
        env: program.env.clone(),
        listeners,
        owned: &[],
        readiness: None,
        block_upgrade_signals: false,
        generation: None,
    })
    .map(|s| s.pid as u32)
    .map_err(spawn_error)
}

pub use crate::lineage::{REPLACED, STOPPED_ACCEPTING};

/// A supervisor's end of a worker's readiness handshake: the handshake a new generation of the
/// library has with its predecessor ([`crate::Handover::ready`]: it says READY, then waits for
/// the go-ahead before its listeners accept), with the supervisor in the predecessor's place.
/// Made by [`spawn_with_handshake`].
///
/// A worker that does not use the library never speaks on it: [`WorkerHandshake::ready`]
/// then only ends when the worker exits.
#[derive(Debug)]
pub struct WorkerHandshake {
    channel: tokio::net::UnixStream,
}

impl WorkerHandshake {
    /// Waits for the worker's READY: `true` once it is ready and waits for
    /// [`WorkerHandshake::go`] before it accepts; `false` if the channel closed first (the
    /// worker exited, or closed an fd it does not use).
    pub async fn ready(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        loop {
            match self.channel.read(&mut byte).await {
                Ok(1) if byte[0] == crate::attempt::READY => return true,
                Ok(1) => tracing::debug!(
                    "unexpected byte {:#04x} on a worker's readiness channel; ignored",
                    byte[0]
                ),
                _ => return false,
            }
        }
    }

    /// Lets the worker accept (the go-ahead, without an upgrade record). An error means it is
    /// gone.
    pub async fn go(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.channel.write_all(&[crate::attempt::GO_AHEAD]).await
    }

    /// Waits, after the go-ahead, for the worker to say it has stopped accepting
    /// ([`STOPPED_ACCEPTING`]: the library says it once its listeners are paused, at a stop or
    /// when told [`WorkerHandshake::replaced`]; so does a worker in another language that
    /// speaks the handshake): `true` then, `false` if the channel closed first. Anything else
    /// on the channel is dropped: the other notices the library sends its predecessor (it is
    /// stopping, it handed over) mean nothing to a supervisor. Cancel-safe.
    pub async fn stopped_accepting(&self) -> bool {
        let mut buf = [0u8; 64];
        loop {
            if self.channel.readable().await.is_err() {
                return false;
            }
            match self.channel.try_read(&mut buf) {
                Ok(0) => return false,
                Ok(n) if buf[..n].contains(&STOPPED_ACCEPTING) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
    }

    /// Tells the worker it is being replaced ([`REPLACED`]): a library worker stops accepting
    /// at once and says [`WorkerHandshake::stopped_accepting`], and its stop that follows skips
    /// the lame duck. One byte into a channel the worker keeps reading never blocks; an error
    /// means the worker is gone.
    pub fn replaced(&self) -> io::Result<()> {
        match self.channel.try_write(&[REPLACED])? {
            1 => Ok(()),
            _ => Err(io::ErrorKind::WriteZero.into()),
        }
    }

    /// Keeps the channel open until the worker closes it (it exits), reading and dropping
    /// whatever it still sends.
    pub async fn closed(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        while matches!(self.channel.read(&mut buf).await, Ok(n) if n > 0) {}
    }
}

/// [`spawn_with_listeners`], with a readiness channel at the fd after the listeners
/// (`HANDOVER_SYNC_FD`) and `HANDOVER_GENERATION=generation`, as a handover generation starts
/// its successor: a worker using the library then waits in [`crate::Handover::ready`] for
/// [`WorkerHandshake::go`] before it accepts. Must run inside a tokio runtime.
pub fn spawn_with_handshake(
    program: &Program,
    listeners: &[(RawFd, String)],
    generation: u64,
) -> io::Result<(u32, WorkerHandshake)> {
    use std::os::fd::AsRawFd;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let pid = spawn::spawn(SpawnRequest {
        exe: &program.path,
        args: &program.args,
        cwd: &program.cwd,
        env: program.env.clone(),
        listeners,
        owned: &[],
        readiness: Some(theirs.as_raw_fd()),
        block_upgrade_signals: false,
        generation: Some(generation),
    })
    .map(|s| s.pid as u32)
    .map_err(spawn_error)?;
    // Only the worker holds its end now, so its exit closes the channel.
    drop(theirs);
    ours.set_nonblocking(true)?;
    let channel = tokio::net::UnixStream::from_std(ours)?;
    Ok((pid, WorkerHandshake { channel }))
}

fn spawn_error(e: SpawnFailure) -> io::Error {
    match e {
        SpawnFailure::Exec { path, source } => io::Error::new(
            source.kind(),
            format!("cannot execute {}: {source}", path.display()),
        ),
        SpawnFailure::Prepare(e) => e,
    }
}

/// Finds a program the way a shell does: a name with a `/` is a path (made absolute against
/// `cwd`), any other is looked up in `PATH`.
pub fn find_program(name: &Path, cwd: &Path) -> io::Result<PathBuf> {
    os::find_program(name, cwd).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: not found in PATH", name.display()),
        )
    })
}

/// Reaps `pid` if it has ended; `None` while it runs.
pub fn try_reap(pid: u32) -> io::Result<Option<ExitStatus>> {
    spawn::try_reap(pid as libc::pid_t)
}

/// Reaps any ended child of this process: `Some((pid, status))`, or `None` when no child has
/// ended (or there is none). A supervisor that is PID 1 must reap from one place only, so
/// that it does not race its own per-child waits: use this, not [`try_reap`], there.
pub fn reap_any() -> Option<(u32, ExitStatus)> {
    spawn::reap_any().map(|(pid, st)| (pid as u32, st))
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    os::kill(pid as libc::pid_t, signal)
}

/// Writes `pid` to `path` atomically (temporary file + rename; a symlink at `path` is
/// replaced, never followed).
pub fn write_pid_file(path: &Path, pid: u32) -> io::Result<()> {
    crate::pidfile::write_pid_file(path, pid)
}

/// Removes the PID file at `path` if it still names `pid`; `Ok(true)` when removed.
pub fn remove_pid_file_if_ours(path: &Path, pid: u32) -> io::Result<bool> {
    crate::pidfile::remove_pid_file_if_ours(path, pid)
}

/// Sends `sd_notify` messages to the socket named by `NOTIFY_SOCKET`.
#[derive(Debug, Clone)]
pub struct SystemdNotifier(crate::systemd::Notifier);

impl SystemdNotifier {
    /// The notifier for this process's `NOTIFY_SOCKET`, if set and usable.
    pub fn from_env() -> Option<Self> {
        crate::systemd::Notifier::from_env(|k| std::env::var_os(k)).map(SystemdNotifier)
    }

    /// Sends one message such as `READY=1`; failures are logged, not returned.
    pub fn notify(&self, state: &str) {
        self.0.notify_or_warn(state);
    }
}

/// This process's effective user id.
pub fn euid() -> u32 {
    os::euid()
}

/// `CLOCK_MONOTONIC` in microseconds, for systemd's `MONOTONIC_USEC=`.
pub fn monotonic_usec() -> u64 {
    os::monotonic_usec()
}

/// Creates a private directory (mode 0700) from a `mkdtemp(3)` template ending in `XXXXXX`.
pub fn make_private_dir(template: &Path) -> io::Result<PathBuf> {
    os::mkdtemp(template)
}
