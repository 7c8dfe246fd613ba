//! gunicorn's binary upgrade with one `gthread` worker (sync workers have no keep-alive) of
//! the WSGI app, daemonized (`-D`: gunicorn ignores `WINCH` otherwise) with a pid file.
//! Upgrade, the nginx dance gunicorn documents: rename the other version over `app.py`,
//! `USR2` to the master (it re-executes itself as its child), wait for the new master (a
//! child of the old one; gunicorn 27 writes its pid to `PIDFILE.2`, older ones renamed the
//! old file to `.oldbin`, so it is found by ancestry) and its worker, `WINCH` to the old
//! master (its workers stop gracefully); then, off the clock, once they have exited, `QUIT`
//! to the old master. The current master's PID is kept in `DIR/master` for the stop.

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
/// The serving master, rewritten at each upgrade.
const MASTER: &str = "master";
/// Upgrades done so far.
const UPGRADES: &str = "upgrades";
/// gunicorn's log (`--error-logfile`).
const LOG: &str = "gunicorn.log";
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
        // Its default, ~/.gunicorn/gunicorn.ctl, would be shared by every gunicorn here.
        .arg("--no-control-socket")
        // A rewritten app.py must not be read from a stale .pyc.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Waits for a new master: a child of `old` with a worker below it.
fn wait_new_master(old: u32) -> io::Result<u32> {
    let deadline = Instant::now() + NEW_MASTER_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(pid) = reaper::children(old)
            .into_iter()
            .find(|&c| reaper::has_child(c))
        {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Err(io::Error::other(format!(
        "no new gunicorn master with a worker within {NEW_MASTER_TIMEOUT:?}"
    )))
}

/// How many times a new master logged its promotion.
fn promotions(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join(LOG))
        .map(|t| t.matches("Master has been promoted").count())
        .unwrap_or(0)
}

/// The serving master: the last upgrade's, else the first one's pid file.
fn master(dir: &Path) -> Option<u32> {
    read_pid(&dir.join(MASTER)).or_else(|| read_pid(&dir.join(PID)))
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
            .arg(dir.join(LOG));
        Ok(cmd)
    }

    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()> {
        // A new master ignores USR2 until it has seen its parent (the last upgrade's old
        // master) exit ("USR2 signal ignored. Parent exists"), which it logs as "Master has
        // been promoted": wait, off the clock, for one such line per upgrade done.
        let done = read_pid(&dir.join(UPGRADES)).unwrap_or(0) as usize;
        let deadline = Instant::now() + self.drain_timeout + Duration::from_secs(5);
        while promotions(dir) < done && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        APP.prepare(dir, to)
    }

    fn upgrade(&self, dir: &Path, _to: Version, _worker_pid: u32) -> io::Result<()> {
        let old = master(dir).ok_or_else(|| io::Error::other("no gunicorn.pid"))?;
        APP.swap(dir)?;
        kill(old, libc::SIGUSR2)?;
        let new = wait_new_master(old)?;
        std::fs::write(dir.join(MASTER), new.to_string())?;
        let done = read_pid(&dir.join(UPGRADES)).unwrap_or(0);
        std::fs::write(dir.join(UPGRADES), (done + 1).to_string())?;
        kill(old, libc::SIGWINCH)?;
        let limit = self.drain_timeout + Duration::from_secs(2);
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            // Its children are its workers and the new master.
            while reaper::children(old).iter().any(|&c| c != new) && Instant::now() < deadline {
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
        master(dir).unwrap_or(serving_pid)
    }
}
