//! Typed errors: what went wrong at start-up, and why an upgrade was rolled back.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::addr::ListenAddr;
use crate::env::EnvError;
use crate::spawn::ExitStatus;

/// Why the server could not start or get its listeners.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket-inheritance environment variables are malformed or inconsistent.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// An inherited file descriptor cannot be served.
    #[error("inherited fd {fd}{}: {reason}", name.as_deref().map(|n| format!(" (named {n:?})")).unwrap_or_default())]
    Inherited {
        /// The descriptor number.
        fd: RawFd,
        /// Its `LISTEN_FDNAMES` entry, if any.
        name: Option<String>,
        /// What is wrong with it.
        reason: String,
    },
    /// A new listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: ListenAddr,
        /// The system's reason.
        source: io::Error,
    },
    /// The same name was given to two listeners.
    #[error("a listener named {0:?} was already requested")]
    DuplicateName(String),
    /// A name that cannot be passed in `LISTEN_FDNAMES`.
    #[error(
        "invalid listener name {0:?}: use printable ASCII without ':' (at most 255 characters)"
    )]
    InvalidName(String),
    /// The path of the running executable could not be determined.
    #[error("cannot determine the executable to run at upgrade: {0}")]
    Executable(io::Error),
    /// The readiness handshake with the previous generation failed, or the previous
    /// generation did not answer within the upgrade timeout.
    #[error("readiness handshake with the previous generation failed: {0}")]
    Handshake(io::Error),
    /// A stop signal arrived before this process was ready (while it waited for the previous
    /// generation's go-ahead): it stops without having served.
    #[error("stopped by {signal} before it was ready")]
    Stopped {
        /// `"SIGTERM"` or `"SIGINT"`.
        signal: &'static str,
    },
    /// The PID file could not be written.
    #[error(transparent)]
    PidFile(io::Error),
    /// Another system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The system's reason.
        source: io::Error,
    },
}

impl Error {
    /// The exit status a server should end with for this error, the same as the `handover`
    /// command's: 2 for a malformed environment (the inheritance variables, or an inherited
    /// fd that is not a listening socket), 0 for [`Error::Stopped`] (a stop asked for before
    /// anything was served is a graceful stop), 1 for any other start-up error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Env(_) | Error::Inherited { .. } => 2,
            Error::Stopped { .. } => 0,
            _ => 1,
        }
    }
}

/// Why an upgrade did not happen. The running process keeps serving in every case.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// PID 1 cannot hand over to a child: the container would end when it exits.
    #[error("cannot upgrade while running as PID 1 (in a container, the first process exiting ends the container); run the server under the `handover run` supervisor instead")]
    Pid1,
    /// This process is already draining and no longer owns the listeners.
    #[error("this process is draining (stopping or already handed over) and cannot upgrade")]
    Draining,
    /// The new executable could not be started.
    #[error("cannot execute {path}: {message}")]
    Exec {
        /// The executable that was tried.
        path: PathBuf,
        /// The system's reason, e.g. `No such file or directory (os error 2)`.
        message: String,
    },
    /// Preparing the new process failed before exec.
    #[error("cannot start the new process: {0}")]
    Spawn(String),
    /// The new process ended before it was ready.
    #[error("the new process (pid {pid}) {status} before it was ready")]
    Exited {
        /// Its PID.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// The new process did not become ready in time; it was killed.
    #[error("the new process (pid {pid}) was not ready within {timeout:?}; it was killed")]
    Timeout {
        /// Its PID.
        pid: u32,
        /// The upgrade timeout.
        timeout: Duration,
    },
    /// The new process closed the readiness channel without saying it was ready.
    #[error("the new process (pid {pid}) closed the readiness channel without becoming ready; it was killed")]
    ChannelClosed {
        /// Its PID.
        pid: u32,
    },
    /// The next generation number would pass 2^53 - 1 (see `HANDOVER_GENERATION`).
    #[error("cannot upgrade: generation {current} is the last one a generation number can count to (2^53 - 1)")]
    GenerationLimit {
        /// This process's generation.
        current: u64,
    },
    /// The upgrade was abandoned because a graceful stop began.
    #[error("the upgrade was cancelled because this process is stopping")]
    Cancelled,
    /// The control task of this process is gone (the runtime is shutting down).
    #[error("the handover control task is not running")]
    NotRunning,
}
