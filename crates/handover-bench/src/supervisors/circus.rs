//! circus: `circusd` binds the socket (`[socket:web]`) and runs one gunicorn `gthread` worker
//! of the WSGI app on it (`--bind fd://$(circus.sockets.web)`, `use_sockets = True`).
//! Upgrade: rename the other version over `app.py`, then `circusctl reload` (graceful: circus
//! starts the new process, then stops the old one with SIGTERM and `graceful_timeout`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::app::App;
use super::read_pid;
use crate::server::hello::{GREETING_V1, GREETING_V2};
use crate::server::ServerKind;
use crate::version::{Greetings, Version};

const APP: App = App::Wsgi;
const PID: &str = "circusd.pid";

/// circus with gunicorn on its socket.
#[derive(Debug, Clone)]
pub struct Circus {
    /// `circusd` in the virtualenv (`circusctl` and `gunicorn` next to it).
    pub circusd: PathBuf,
    /// `graceful_timeout` and gunicorn's `--graceful-timeout`.
    pub drain_timeout: Duration,
}

fn endpoint(dir: &Path) -> String {
    format!("ipc://{}/ctl.sock", dir.display())
}

/// The circus configuration for `app:wsgi` in `dir` on `port`.
pub fn config(bin: &Path, dir: &Path, port: u16, drain: Duration) -> String {
    let d = dir.display();
    let secs = drain.as_secs().max(1);
    format!(
        "[circus]\nendpoint = {ctl}\npubsub_endpoint = ipc://{d}/pub.sock\nstatsd = false\n\
         check_delay = 1\n\n[watcher:web]\ncmd = {gunicorn} --chdir {d} --worker-class gthread \
         --workers 1 --threads 8 --graceful-timeout {secs} --no-control-socket \
         --bind fd://$(circus.sockets.web) \
         app:wsgi\nuse_sockets = True\nnumprocesses = 1\ngraceful_timeout = {secs}\n\
         copy_env = True\n\n[env:web]\nPYTHONDONTWRITEBYTECODE = 1\n\n[socket:web]\n\
         host = 127.0.0.1\nport = {port}\n",
        ctl = endpoint(dir),
        gunicorn = bin.join("gunicorn").display(),
    )
}

impl Circus {
    fn bin(&self) -> &Path {
        self.circusd.parent().unwrap_or(Path::new("."))
    }
}

impl ServerKind for Circus {
    fn name(&self) -> String {
        "circus/wsgi".into()
    }

    fn greetings(&self) -> Greetings {
        Greetings::new(GREETING_V1, GREETING_V2)
    }

    fn start(&self, dir: &Path, port: u16) -> io::Result<Command> {
        APP.install(dir, Version::V1)?;
        std::fs::write(
            dir.join("circus.ini"),
            config(self.bin(), dir, port, self.drain_timeout),
        )?;
        let mut cmd = Command::new(&self.circusd);
        cmd.arg("--pidfile")
            .arg(dir.join(PID))
            .arg(dir.join("circus.ini"));
        Ok(cmd)
    }

    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()> {
        APP.prepare(dir, to)
    }

    fn upgrade(&self, dir: &Path, _to: Version, _worker_pid: u32) -> io::Result<()> {
        APP.swap(dir)?;
        let out = Command::new(self.bin().join("circusctl"))
            .arg("--endpoint")
            .arg(endpoint(dir))
            .args(["--timeout", "10", "reload"])
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "circusctl reload: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    fn stop_target(&self, dir: &Path, serving_pid: u32) -> u32 {
        read_pid(&dir.join(PID)).unwrap_or(serving_pid)
    }
}
