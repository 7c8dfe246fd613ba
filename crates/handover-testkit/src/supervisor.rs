//! The supervisor's end-to-end harness: the real `handover` binary (`handover run`, and the
//! client commands against its control socket) with Python workers written into the test's
//! directory.

use std::fs;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::binaries::package_bin;
use crate::logs::Log;
use crate::proc::descendants;
use crate::reap::{wait_exit, wait_line_while_alive};
use crate::scope::Scope;
use crate::sys::try_signal;
use crate::tools::python;
use crate::wait::{poll_until, LONG};

/// The `handover-cli` test worker (stdlib Python, takes its socket from fd 3).
const WORKER_PY: &str = include_str!("../fixtures/worker.py");
/// The proxy-mode test worker (stdlib Python; binds the port it is given).
const PORT_WORKER_PY: &str = include_str!("../fixtures/port_worker.py");
/// The UDP test worker (stdlib Python, takes its datagram socket from fd 3).
const UDP_WORKER_PY: &str = include_str!("../fixtures/udp_worker.py");

/// The `handover` binary under test (built by cargo with `handover-cli`'s tests).
pub fn handover_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| package_bin("handover"))
}

/// One test of the supervisor: a [`Scope`] whose directory is the working directory and
/// `XDG_RUNTIME_DIR` of every `handover` it runs.
pub struct Ctx {
    scope: Scope,
}

impl Deref for Ctx {
    type Target = Scope;
    fn deref(&self) -> &Scope {
        &self.scope
    }
}

impl Ctx {
    /// A fresh test (see [`Scope::new`]).
    // Not `Default`: making one waits for the other tests of the process and kills leftovers.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Ctx {
        Ctx {
            scope: Scope::new("handover-cli-"),
        }
    }

    /// The control socket path every test uses.
    pub fn control(&self) -> PathBuf {
        self.path("control.sock")
    }

    /// Writes the Python worker as `<dir>/<name>` (atomically: temporary file, then rename),
    /// with `version` and `behaviour` (serve, exit3, hang) filled in.
    pub fn write_worker(&self, name: &str, version: &str, behaviour: &str) -> PathBuf {
        self.write_worker_mode(name, version, behaviour, 0o755)
    }

    /// [`Ctx::write_worker`] with another file mode.
    pub fn write_worker_mode(
        &self,
        name: &str,
        version: &str,
        behaviour: &str,
        mode: u32,
    ) -> PathBuf {
        let text = WORKER_PY
            .replace("@VERSION@", version)
            .replace("@BEHAVIOUR@", behaviour);
        self.write_script(name, &text, mode)
    }

    /// Writes the UDP worker (`fixtures/udp_worker.py`: answers each datagram with its bytes and
    /// ` pid=<pid>`) as `<dir>/udp_worker.py`, executable.
    pub fn write_udp_worker(&self) -> PathBuf {
        self.write_script("udp_worker.py", UDP_WORKER_PY, 0o755)
    }

    /// Writes `text` (a `#!/usr/bin/env python3` script, run by [`python`] instead) as
    /// `<dir>/<name>` with `mode`: beside it first, then renamed over.
    fn write_script(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let text = text.replacen("#!/usr/bin/env python3", &format!("#!{}", python()), 1);
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        fs::write(&tmp, text).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
        fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Starts `handover run --control <dir>/control.sock <args>` and waits until it listens.
    pub fn start(&self, args: &[&str]) -> Supervisor {
        self.start_with(args, |_| {})
    }

    /// [`Ctx::start`] with a chance to adjust the command (environment, ...).
    pub fn start_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Supervisor {
        let control = self.control();
        let mut full = vec!["run", "--control", control.to_str().unwrap()];
        full.extend_from_slice(args);
        self.launch(&[], &full, adjust)
    }

    /// Starts `wrapper... handover <args>` (no `--control` added) and waits until it listens.
    pub fn launch(
        &self,
        wrapper: &[&str],
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Supervisor {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(handover_exe());
                c
            }
            None => Command::new(handover_exe()),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .env("HANDOVER_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("cannot start handover");
        let log = Log::default();
        log.capture(child.stdout.take().unwrap(), "");
        log.capture(child.stderr.take().unwrap(), "");
        self.keep_log("handover", &log);
        let pid = child.id() as i32;
        // Reaped by `Supervisor::wait_exit` or the scope's drop, never by `Child::wait`.
        std::mem::forget(child);
        let line = wait_line_while_alive(&log, pid, 0, LONG, |l| l.contains("listening on "))
            .map(|(_, line)| line)
            .unwrap_or_else(|why| panic!("handover did not log `listening on` {why}"));
        let addr = line
            .split("listening on tcp://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        Supervisor {
            pid,
            addr,
            log,
            control: self.control(),
        }
    }

    /// Runs `handover <args>` (a client command) to completion, bounded.
    pub fn handover(&self, args: &[&str]) -> Output {
        run_bounded(
            Command::new(handover_exe())
                .args(args)
                .current_dir(self.dir.path())
                .env("XDG_RUNTIME_DIR", self.dir.path()),
        )
    }

    /// `handover status --json` against this test's control socket.
    pub fn status(&self) -> serde_json::Value {
        let out = self.handover(&[
            "status",
            "--json",
            "--control",
            self.control().to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// Polls `status --json` until `f` accepts it.
    pub fn wait_status(
        &self,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + LONG;
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "status never showed {what}: {s:#}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs a command to completion within [`LONG`] (killing it otherwise).
pub fn run_bounded(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run handover");
    let pid = child.id() as i32;
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            if !poll_until(LONG, || done.load(Ordering::SeqCst)) {
                // Our own child overran.
                try_signal(pid, libc::SIGKILL);
            }
        })
    };
    let out = child.wait_with_output().expect("waiting for handover");
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    out
}

/// A running `handover run`.
pub struct Supervisor {
    /// Its pid.
    pub pid: i32,
    /// The first TCP listener's address.
    pub addr: Option<SocketAddr>,
    /// Its stdout and stderr.
    pub log: Log,
    /// Its control socket.
    pub control: PathBuf,
}

impl Supervisor {
    /// The first TCP listener's address (panics when it listens on none).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the supervisor listens on TCP")
    }

    /// Waits for the supervisor to exit; its raw wait status.
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        match wait_exit(self.pid, timeout) {
            Ok(Some(st)) => st.0,
            Ok(None) => panic!("handover (pid {}) was reaped by someone else", self.pid),
            Err(_) => panic!(
                "handover (pid {}) still running after {timeout:?}",
                self.pid
            ),
        }
    }

    /// PIDs of its live worker processes.
    pub fn worker_pids(&self) -> Vec<i32> {
        descendants(self.pid)
            .into_iter()
            .filter(|p| p.ppid == self.pid && p.state != 'Z')
            .map(|p| p.pid)
            .collect()
    }
}

/// Writes the proxy-mode worker as `<dir>/app.py` (atomically) with `version` and `mode`.
pub fn write_app(ctx: &Ctx, version: &str, mode: &str) -> PathBuf {
    let text = PORT_WORKER_PY
        .replace("@VERSION@", version)
        .replace("@MODE@", mode);
    ctx.write_script("app.py", &text, 0o755)
}
