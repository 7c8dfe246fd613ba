//! Servers under test. A [`ServerKind`] knows how to start the first generation and how to
//! upgrade it; everything else (load, probing, stopping, reaping) is generic.
//!
//! The peers (Go grace, tableflip, nginx binary upgrade, in [`peers`]) implement
//! [`ServerKind`] too (start command + upgrade action + greetings); every scenario runs for
//! them like for `hello`.

pub mod hello;
pub mod peers;

use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use crate::version::{Greetings, Version};

/// A server that can be started as v1 and upgraded in place to the other build.
pub trait ServerKind: Send + Sync {
    /// Name for reports, e.g. `hello/handover`.
    fn name(&self) -> String;

    /// Body prefixes of its v1 and v2 builds.
    fn greetings(&self) -> Greetings;

    /// Prepares `dir` (a fresh private directory) and returns the command that starts the
    /// first generation (v1) serving `GET /` on `127.0.0.1:port`.
    fn start(&self, dir: &Path, port: u16) -> io::Result<Command>;

    /// Untimed preparation for an upgrade to `to` (e.g. copying the binary next to the
    /// running one).
    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()>;

    /// The upgrade action itself, timed as part of the handover: e.g. rename the prepared
    /// binary over the running one and signal `current_pid`.
    fn upgrade(&self, dir: &Path, to: Version, current_pid: u32) -> io::Result<()>;

    /// Whether the started command forks the server off and exits (nginx with `daemon on`):
    /// its exit is then no sign of failure while waiting for the first answer.
    fn daemonizes(&self) -> bool {
        false
    }

    /// The client side of TLS when it serves HTTPS (the load, the readiness check and the
    /// handover probe then all speak TLS with it); none: plain HTTP.
    fn client_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        None
    }

    /// Signal that asks the serving generation for a graceful stop.
    fn stop_signal(&self) -> libc::c_int {
        libc::SIGTERM
    }

    /// The process to send the stop signal to, given the PID that last answered (nginx:
    /// its master, from the pid file in `dir`, not the worker that answered).
    fn stop_target(&self, _dir: &Path, serving_pid: u32) -> u32 {
        serving_pid
    }

    /// More processes to signal at the stop, besides [`ServerKind::stop_target`] (a proxy's
    /// upstream that is not the proxy's child).
    fn also_stop(&self, _dir: &Path, _serving_pid: u32) -> Vec<(u32, libc::c_int)> {
        Vec::new()
    }

    /// The first generation's standard input (the systemd-style row passes the socket it
    /// holds there, as a shell then moves it to fd 3).
    fn stdin(&self, _dir: &Path) -> io::Result<std::process::Stdio> {
        Ok(std::process::Stdio::null())
    }
}
