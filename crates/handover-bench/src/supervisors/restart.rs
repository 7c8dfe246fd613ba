//! A systemd-style restart of a socket-activated `hello`: the benchmark holds the listening
//! socket, as systemd does for a `.socket` unit, and passes it to each generation on fd 3
//! with `LISTEN_FDS=1` and `LISTEN_PID`. Upgrade (`systemctl restart`): SIGTERM to the running
//! one, wait for it to exit (it drains), then start the other build. Nothing is refused (the
//! socket stays open, connections wait in its backlog), but the two never overlap.
//!
//! The socket reaches fd 3 without `unsafe`: it is the child's standard input, and a shell
//! moves it (`exec 3<&0 </dev/null`) and sets `LISTEN_PID=$$` before it `exec`s `hello`, so
//! `LISTEN_PID` is the PID `hello` runs as.

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::app::App;
use crate::binaries::Binaries;
use crate::reaper;
use crate::server::hello::{GREETING_V1, GREETING_V2};
use crate::server::peers::kill;
use crate::server::ServerKind;
use crate::version::{Greetings, Version};

const SHELL: &str = r#"exec 3<&0 </dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#;

/// Restart with a held socket.
#[derive(Debug)]
pub struct Restart {
    app: App,
    drain_timeout: Duration,
    /// The socket of the run in progress, with its directory (runs are sequential).
    held: Mutex<Option<(PathBuf, TcpListener)>>,
}

impl Restart {
    /// The row for `hello` built as `bins`.
    pub fn new(bins: Binaries, drain_timeout: Duration) -> Self {
        Restart {
            app: App::Hello(bins),
            drain_timeout,
            held: Mutex::new(None),
        }
    }

    fn command(&self, dir: &Path, port: u16) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SHELL)
            .arg(self.app.path(dir))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--drain-timeout")
            .arg(format!("{}ms", self.drain_timeout.as_millis()));
        cmd
    }

    fn socket(&self, dir: &Path) -> io::Result<Stdio> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_ref() {
            Some((d, l)) if d == dir => Ok(Stdio::from(std::os::fd::OwnedFd::from(l.try_clone()?))),
            _ => Err(io::Error::other(
                "the restart row holds no socket for this run",
            )),
        }
    }

    fn port(&self) -> io::Result<u16> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let (_, l) = held
            .as_ref()
            .ok_or_else(|| io::Error::other("no socket held"))?;
        Ok(l.local_addr()?.port())
    }
}

impl ServerKind for Restart {
    fn name(&self) -> String {
        "systemd-style-restart/hello".into()
    }

    fn greetings(&self) -> Greetings {
        Greetings::new(GREETING_V1, GREETING_V2)
    }

    fn start(&self, dir: &Path, port: u16) -> io::Result<Command> {
        self.app.install(dir, Version::V1)?;
        // A new run's socket replaces (closes) the last run's.
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((dir.to_path_buf(), listener));
        Ok(self.command(dir, port))
    }

    fn stdin(&self, dir: &Path) -> io::Result<Stdio> {
        self.socket(dir)
    }

    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()> {
        self.app.prepare(dir, to)
    }

    fn upgrade(&self, dir: &Path, _to: Version, current_pid: u32) -> io::Result<()> {
        kill(current_pid, libc::SIGTERM)?;
        let deadline = Instant::now() + self.drain_timeout + Duration::from_secs(2);
        while !reaper::exited(current_pid) {
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "pid {current_pid} still running {:?} after SIGTERM",
                    self.drain_timeout
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        self.app.swap(dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("restarts.log"))?;
        // Reaped by the benchmark (a subreaper) at the stop, not through the handle.
        let _child = self
            .command(dir, self.port()?)
            .stdin(self.socket(dir)?)
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        Ok(())
    }
}
