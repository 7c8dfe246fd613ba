//! gunicorn's binary upgrade with one `gthread` worker (sync workers have no keep-alive) of
//! the WSGI app, daemonized (`-D`: gunicorn ignores `WINCH` otherwise) with a pid file.
//! Upgrade, the nginx dance gunicorn documents: rename the other version over `app.py`,
//! `USR2` to the master (it re-executes itself; the new master renames the old pid file to
//! `.oldbin` and writes its own), wait for the new master and its worker, `WINCH` to the old
//! master (its workers stop gracefully); then, off the clock, once they have exited, `QUIT`
//! to the old master.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::app::App;
use super::read_pid;
use crate::reaper;
use crate::server::hello::{GREETING_V1, GREETING_V2};
use crate::server::peers::kill;
use crate::server::ServerKind;
use crate::version::{Greetings, Version};

const PID: &str = "gunicorn.pid";
const APP: App = App::Wsgi;
/// Longest wait for the new master and its worker.
const NEW_MASTER_TIMEOUT: Duration = Duration::from_secs(10);

/// gunicorn with its binary upgrade.
#[derive(Debug, Clone)]
pub struct Gunicorn {
    /// The `gunicorn` script in the virtualenv.
    pub gunicorn: PathBuf,
    /// `--graceful-timeout`.
    pub drain_timeout: Duration,
}

/// gunicorn's `gthread` command line for `app:wsgi` in `dir`, binding `bind`.
pub fn command(gunicorn: &Path, dir: &Path, bind: &str, drain: Duration) -> Command {
    let mut cmd = Command::new(gunicorn);
    cmd.arg("--chdir")
        .arg(dir)
        .args([
            "--worker-class",
            "gthread",
            "--workers",
            "1",
            "--threads",
            "8",
        ])
        .args(["--bind", bind])
        .arg("--graceful-timeout")
        .arg(drain.as_secs().max(1).to_string())
        .arg("app:wsgi")
        // A rewritten app.py must not be read from a stale .pyc.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Waits for a master other than `old` in the pid file, with a worker below it.
fn wait_new_master(dir: &Path, old: u32) -> io::Result<u32> {
    let deadline = Instant::now() + NEW_MASTER_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(pid) = read_pid(&dir.join(PID)).filter(|&p| p != old) {
            if reaper::has_child(pid) {
                return Ok(pid);
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Err(io::Error::other(format!(
        "no new gunicorn master with a worker within {NEW_MASTER_TIMEOUT:?}"
    )))
}

impl ServerKind for Gunicorn {
    fn name(&self) -> String {
        "gunicorn-gthread/wsgi".into()
    }

    fn greetings(&self) -> Greetings {
        Greetings::new(GREETING_V1, GREETING_V2)
    }

    fn start(&self, dir: &Path, port: u16) -> io::Result<Command> {
        APP.install(dir, Version::V1)?;
        let mut cmd = command(
            &self.gunicorn,
            dir,
            &format!("127.0.0.1:{port}"),
            self.drain_timeout,
        );
        cmd.arg("--daemon")
            .arg("--pid")
            .arg(dir.join(PID))
            .arg("--error-logfile")
            .arg(dir.join("gunicorn.log"));
        Ok(cmd)
    }

    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()> {
        APP.prepare(dir, to)
    }

    fn upgrade(&self, dir: &Path, _to: Version, _worker_pid: u32) -> io::Result<()> {
        let old = read_pid(&dir.join(PID)).ok_or_else(|| io::Error::other("no gunicorn.pid"))?;
        APP.swap(dir)?;
        kill(old, libc::SIGUSR2)?;
        wait_new_master(dir, old)?;
        kill(old, libc::SIGWINCH)?;
        let limit = self.drain_timeout + Duration::from_secs(2);
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while reaper::has_child(old) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = kill(old, libc::SIGQUIT);
        });
        Ok(())
    }

    fn daemonizes(&self) -> bool {
        true
    }

    fn stop_target(&self, dir: &Path, serving_pid: u32) -> u32 {
        read_pid(&dir.join(PID)).unwrap_or(serving_pid)
    }
}
