//! The handover rows: `handover run` holding the socket (`--listen`) with `hello`, the Node.js
//! server with the README's drain, or the stdlib Python worker; and `handover run --proxy
//! http://` with the stock Node.js server or `hello` binding its own `{port}`. Upgrade: rename
//! the other version over the worker's file, then `handover upgrade --control SOCK` (timed
//! until it returns, which is when the new worker is ready and the old one is told to drain),
//! or `SIGUSR2` to the supervisor (the `-usr2` rows: returns at once; the probe sees the
//! switch).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::app::App;
use super::read_pid;
use crate::server::hello::{GREETING_V1, GREETING_V2};
use crate::server::ServerKind;
use crate::version::{Greetings, Version};

const CONTROL: &str = "control.sock";
const PID: &str = "supervisor.pid";

/// `handover run` with one worker program.
#[derive(Debug, Clone)]
pub struct HandoverRun {
    /// The CLI.
    pub handover: PathBuf,
    /// `node` or `python3`, for those apps.
    pub interpreter: Option<PathBuf>,
    /// The worker.
    pub app: App,
    /// `--proxy http://` instead of `--listen`.
    pub proxy: bool,
    /// Upgrade by `SIGUSR2` to the supervisor (systemd's `ExecReload=kill -USR2 $MAINPID`)
    /// instead of `handover upgrade`.
    pub by_signal: bool,
    /// `--drain-timeout`.
    pub drain_timeout: Duration,
}

impl HandoverRun {
    fn worker(&self, dir: &Path, port: u16) -> Vec<String> {
        let file = self.app.path(dir).display().to_string();
        let mut argv: Vec<String> = self
            .interpreter
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        argv.push(file);
        if let App::Hello(_) = self.app {
            // Behind the proxy each worker binds a port of its own (`{port}`, filled in per
            // worker by the supervisor); in socket mode it takes the supervisor's listener.
            let listen = if self.proxy {
                "127.0.0.1:{port}".to_string()
            } else {
                format!("127.0.0.1:{port}")
            };
            argv.extend([
                "--listen".into(),
                listen,
                "--drain-timeout".into(),
                format!("{}ms", self.drain_timeout.as_millis()),
            ]);
        }
        argv
    }
}

impl ServerKind for HandoverRun {
    fn name(&self) -> String {
        let mode = if self.proxy { "proxy" } else { "socket" };
        let action = if self.by_signal { "-usr2" } else { "" };
        format!("handover-{mode}{action}/{}", self.app.label())
    }

    fn greetings(&self) -> Greetings {
        Greetings::new(GREETING_V1, GREETING_V2)
    }

    fn start(&self, dir: &Path, port: u16) -> io::Result<Command> {
        self.app.install(dir, Version::V1)?;
        let mut cmd = Command::new(&self.handover);
        cmd.arg("run");
        if self.proxy {
            cmd.arg("--proxy").arg(format!("http://127.0.0.1:{port}"));
        } else {
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
        }
        // The README's Node.js setup speaks the supervisor's handshake: `--ready notify`, the
        // default, as for hello and the Python worker.
        cmd.arg("--control")
            .arg(dir.join(CONTROL))
            .arg("--pid-file")
            .arg(dir.join(PID))
            .arg("--drain-timeout")
            .arg(format!("{}ms", self.drain_timeout.as_millis()))
            .arg("--")
            .args(self.worker(dir, port));
        // A rewritten worker.py must not be read from a stale .pyc.
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        Ok(cmd)
    }

    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()> {
        self.app.prepare(dir, to)
    }

    fn upgrade(&self, dir: &Path, _to: Version, _worker_pid: u32) -> io::Result<()> {
        self.app.swap(dir)?;
        if self.by_signal {
            let pid = read_pid(&dir.join(PID))
                .ok_or_else(|| io::Error::other("no supervisor pid file to signal"))?;
            return crate::reaper::signal(pid, libc::SIGUSR2);
        }
        let out = Command::new(&self.handover)
            .arg("upgrade")
            .arg("--control")
            .arg(dir.join(CONTROL))
            .args(["--timeout", "10s"])
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "handover upgrade: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    fn stop_target(&self, dir: &Path, serving_pid: u32) -> u32 {
        read_pid(&dir.join(PID)).unwrap_or(serving_pid)
    }
}
