//! handover's `hello` example, with either its own lossless drain or axum's plain
//! `with_graceful_shutdown` on the same handover listeners (`--drain handover|axum`); over
//! HTTPS (`--tls`), its drain or the hand-made tokio-rustls + hyper-util `GracefulShutdown`
//! server (`--drain hyper-util`), both with the bench's certificate.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::ServerKind;
use crate::binaries::Binaries;
use crate::tls::Pki;
use crate::version::{Greetings, Version};

/// Greeting of the v1 build (`HELLO_GREETING` at build time).
pub const GREETING_V1: &str = "v1 Welcome Server";
/// Greeting of the v2 build.
pub const GREETING_V2: &str = "v2 Welcome New Server";

const RUNNING: &str = "hello";
const NEXT: &str = "hello.next";

/// Which drain the example uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Drain {
    /// handover's drain (`handover::http::serve`).
    Handover,
    /// axum's `with_graceful_shutdown` on handover's listeners.
    Axum,
    /// HTTPS only: tokio-rustls and hyper-util's `GracefulShutdown` by hand on handover's
    /// listeners (the TLS baseline).
    HyperUtil,
}

impl Drain {
    /// The `--drain` value.
    pub fn label(self) -> &'static str {
        match self {
            Drain::Handover => "handover",
            Drain::Axum => "axum",
            Drain::HyperUtil => "hyper-util",
        }
    }

    /// Whether this drain can serve HTTPS (axum's `serve` speaks plain HTTP only).
    pub fn serves_tls(self) -> bool {
        self != Drain::Axum
    }

    /// Whether it can serve plain HTTP (the hand-made baseline is a TLS server).
    pub fn serves_plain(self) -> bool {
        self != Drain::HyperUtil
    }
}

/// The `hello` example with one drain.
#[derive(Debug, Clone)]
pub struct Hello {
    /// Drain under test.
    pub drain: Drain,
    /// The v1 and v2 builds.
    pub bins: Binaries,
    /// `--drain-timeout`.
    pub drain_timeout: Duration,
    /// `--upgrade-timeout`.
    pub upgrade_timeout: Duration,
    /// Serve HTTPS with this certificate (`--tls-cert`, `--tls-key`); none: plain HTTP.
    pub tls: Option<Arc<Pki>>,
}

impl Hello {
    fn bin(&self, v: Version) -> &Path {
        match v {
            Version::V1 => &self.bins.v1,
            Version::V2 => &self.bins.v2,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl ServerKind for Hello {
    fn name(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "hello" };
        format!("{scheme}/{}", self.drain.label())
    }

    fn greetings(&self) -> Greetings {
        Greetings::new(GREETING_V1, GREETING_V2)
    }

    fn start(&self, dir: &Path, port: u16) -> io::Result<Command> {
        let running: PathBuf = dir.join(RUNNING);
        std::fs::copy(self.bin(Version::V1), &running)?;
        let mut cmd = Command::new(&running);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--drain", self.drain.label()])
            .args(["--drain-timeout", &ms(self.drain_timeout)])
            .args(["--upgrade-timeout", &ms(self.upgrade_timeout)])
            .arg("--pid-file")
            .arg(dir.join("hello.pid"));
        if let Some(pki) = &self.tls {
            cmd.arg("--tls-cert")
                .arg(&pki.cert)
                .arg("--tls-key")
                .arg(&pki.key);
        }
        Ok(cmd)
    }

    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()> {
        std::fs::copy(self.bin(to), dir.join(NEXT)).map(|_| ())
    }

    fn upgrade(&self, dir: &Path, _to: Version, current_pid: u32) -> io::Result<()> {
        std::fs::rename(dir.join(NEXT), dir.join(RUNNING))?;
        // SAFETY: kill with a positive pid.
        if unsafe { libc::kill(current_pid as libc::pid_t, libc::SIGUSR2) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn client_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.as_ref().map(|p| Arc::clone(&p.client))
    }
}
