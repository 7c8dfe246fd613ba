//! The library's end-to-end harness: real `hello` processes (the library's example) started
//! from the test's own directory, their `serving` lines parsed, upgrades driven by signal and
//! followed through the log.

use std::ffi::OsStr;
use std::fs;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::binaries::{binaries, Binaries, Version};
use crate::http::{get, get_timeout, hello_at, Addr, Response};
use crate::logs::Log;
use crate::proc::{describe, is_alive};
use crate::reap::{live_processes, reap_all, tag, wait_exit, wait_line_while_alive, Exit};
use crate::scope::Scope;
use crate::sys::signal;
use crate::wait::{poll_until, LONG, SHORT};

/// Parses the address out of a `serving tcp://IP:PORT` / `serving unix:/path` log line.
pub fn parse_serving(line: &str) -> Option<Addr> {
    let rest = &line[line.find("serving ")? + "serving ".len()..];
    let token = rest.split_whitespace().next()?;
    let token = token.trim_end_matches([',', ';', '"', '\'']);
    if let Some(a) = token.strip_prefix("tcp://") {
        a.parse().ok().map(Addr::Tcp)
    } else {
        token
            .strip_prefix("unix:")
            .map(|p| Addr::Unix(PathBuf::from(p)))
    }
}

/// The number right after `prefix` in `line`.
fn number_after(line: &str, prefix: &str) -> Option<i32> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// One end-to-end test of `hello`: a [`Scope`] (serialisation, temp dir, cleanup) whose
/// directory holds the test's own replaceable `hello`.
pub struct Ctx {
    scope: Scope,
    bins: &'static Binaries,
}

impl Deref for Ctx {
    type Target = Scope;
    fn deref(&self) -> &Scope {
        &self.scope
    }
}

impl Ctx {
    /// Builds the binaries if needed and installs v1 as `<dir>/hello`.
    // Not `Default`: making one waits for the other tests of the process and kills leftovers.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Ctx {
        let scope = Scope::new("handover-e2e-");
        let ctx = Ctx {
            scope,
            bins: binaries(),
        };
        ctx.install(Version::V1);
        ctx
    }

    /// `<dir>/hello`: the start path of the server, replaced between upgrades.
    fn exe(&self) -> PathBuf {
        self.path("hello")
    }

    /// Puts a new file at `<dir>/hello.tmp` with `write`, then renames it over `<dir>/hello`:
    /// the running file is never written.
    fn replace_exe(&self, write: impl FnOnce(&Path)) {
        let tmp = self.path("hello.tmp");
        let _ = fs::remove_file(&tmp);
        write(&tmp);
        fs::rename(&tmp, self.exe()).expect("rename over hello");
    }

    /// Replaces `<dir>/hello` with the given version (a hard link to the immutable snapshot when
    /// the temp dir is on the same filesystem, a copy otherwise).
    pub fn install(&self, v: Version) {
        let src = self.bins.for_version(v);
        self.replace_exe(|tmp| {
            if fs::hard_link(src, tmp).is_err() {
                fs::copy(src, tmp).expect("copy hello");
                fs::set_permissions(tmp, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
        });
    }

    /// Replaces `<dir>/hello` with an executable shell script.
    pub fn install_script(&self, body: &str) {
        self.replace_exe(|tmp| {
            fs::write(tmp, body).expect("write script");
            fs::set_permissions(tmp, fs::Permissions::from_mode(0o755)).expect("chmod");
        });
    }

    /// Replaces `<dir>/hello` with a non-executable (0644) copy of v2 (a copy: the snapshot
    /// itself must keep its mode).
    pub fn install_non_executable(&self) {
        let src = self.bins.v2.clone();
        self.replace_exe(|tmp| {
            fs::copy(&src, tmp).expect("copy hello");
            fs::set_permissions(tmp, fs::Permissions::from_mode(0o644)).expect("chmod");
        });
    }

    /// Removes `<dir>/hello`.
    pub fn remove_exe(&self) {
        fs::remove_file(self.exe()).expect("remove hello");
    }

    /// A command with a clean inheritance environment.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let (k, v) = tag();
        cmd.env(k, v)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET");
        match std::env::var_os("HANDOVER_E2E_RUST_LOG") {
            Some(v) => cmd.env("RUST_LOG", v),
            None => cmd.env_remove("RUST_LOG"),
        };
        cmd
    }

    /// Spawns `cmd` with stdout and stderr captured into a [`Log`].
    // Reaping goes through reap_all(), never Child::wait.
    #[allow(clippy::zombie_processes)]
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Spawned {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let log = Log::default();
        log.capture(child.stderr.take().unwrap(), "");
        log.capture(child.stdout.take().unwrap(), "[stdout] ");
        self.keep_log(name, &log);
        // The Child is dropped without waiting: reaping goes through reap_all().
        Spawned {
            pid: child.id() as i32,
            log,
        }
    }

    /// The usual `<dir>/hello --listen 127.0.0.1:0` command.
    pub fn hello_command(&self) -> Command {
        self.command(self.exe())
    }

    /// Starts `<dir>/hello --listen 127.0.0.1:0 <extra args>` and waits until it serves.
    pub fn start(&self, extra: &[&str]) -> Server {
        let mut cmd = self.hello_command();
        cmd.args(["--listen", "127.0.0.1:0"]).args(extra);
        self.start_with(cmd, 1)
    }

    /// Spawns `cmd` (some form of hello) and waits for `listeners` `serving` lines.
    pub fn start_with(&self, cmd: Command, listeners: usize) -> Server {
        let sp = self.spawn("hello", cmd);
        let mut addrs = Vec::new();
        let mut from = 0;
        while addrs.len() < listeners {
            let found =
                wait_line_while_alive(&sp.log, sp.pid, from, LONG, |l| parse_serving(l).is_some());
            match found {
                Ok((i, line)) => {
                    addrs.push(parse_serving(&line).unwrap());
                    from = i + 1;
                }
                Err(why) => panic!(
                    "hello did not log `serving ADDR` for listener {} of {listeners} {why}",
                    addrs.len() + 1,
                ),
            }
        }
        let server = Server {
            pid: sp.pid,
            log: sp.log,
            addrs,
        };
        let (_, pid) = server.hello();
        assert_eq!(pid, server.pid, "GET / answered by an unexpected pid");
        server
    }
}

/// A process started by [`Ctx::spawn`], its output captured.
pub struct Spawned {
    /// Its pid.
    pub pid: i32,
    /// Its stderr, and its stdout with `[stdout] ` before each line.
    pub log: Log,
}

impl Spawned {
    /// Waits for the process to exit and returns its status (it is our child).
    pub fn wait(&self, timeout: Duration) -> Exit {
        match wait_exit(self.pid, timeout) {
            Ok(Some(st)) => {
                self.log.wait_eof(SHORT);
                st
            }
            Ok(None) => panic!("pid {} vanished without being reaped by us", self.pid),
            Err(e) => panic!("{e}; log:\n{}", self.log.text()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A running server and its generations
// ---------------------------------------------------------------------------------------------

/// A running `hello` and its generations.
pub struct Server {
    /// The current generation (updated by [`Server::upgrade`]).
    pub pid: i32,
    /// The output of every generation (they share the pipes).
    pub log: Log,
    /// Listener addresses in the order their `serving` lines appeared.
    pub addrs: Vec<Addr>,
}

impl Server {
    /// The first listener's address.
    pub fn addr(&self) -> &Addr {
        &self.addrs[0]
    }

    /// The first TCP listener's address.
    pub fn tcp_addr(&self) -> &Addr {
        self.addrs
            .iter()
            .find(|a| matches!(a, Addr::Tcp(_)))
            .expect("no tcp listener")
    }

    /// The first unix-socket listener's address.
    pub fn unix_addr(&self) -> &Addr {
        self.addrs
            .iter()
            .find(|a| matches!(a, Addr::Unix(_)))
            .expect("no unix listener")
    }

    /// [`get`] of `path` from the first listener.
    pub fn get(&self, path: &str) -> Result<Response, String> {
        get(self.addr(), path)
    }

    /// `GET /` must answer 200 `<greeting> pid=<pid>`; returns both.
    pub fn hello(&self) -> (String, i32) {
        hello_at(self.addr())
            .unwrap_or_else(|e| panic!("GET / failed: {e}\nlog:\n{}", self.log.text()))
    }

    /// Sends `sig` to the current generation.
    pub fn signal(&self, sig: i32) {
        signal(self.pid, sig)
    }

    /// Waits for `upgrade complete: pid OLD handed over to pid NEW` at or after log line `from`
    /// and returns NEW. Panics (with the log) on `upgrade failed:` or timeout.
    pub fn wait_upgrade_complete(&self, from: usize, old: i32) -> i32 {
        let done = format!("upgrade complete: pid {old} handed over to pid ");
        let found = self.log.wait_for_or(
            from,
            LONG,
            |l| l.contains(&done) || l.contains("upgrade failed:"),
            || !is_alive(old),
        );
        match found {
            Some((_, line)) if line.contains(&done) => number_after(&line, &done)
                .unwrap_or_else(|| panic!("cannot parse the new pid in {line:?}")),
            Some((_, line)) => panic!(
                "upgrade of pid {old} failed: {line}\nlog:\n{}",
                self.log.text()
            ),
            None => {
                reap_all();
                panic!(
                    "no `upgrade complete: pid {old} ...` (old generation alive: {}); processes now: [{}]; GET / now: {:?}; log:\n{}",
                    is_alive(old),
                    describe(&live_processes()),
                    get_timeout(self.addr(), "/", Duration::from_secs(2)),
                    self.log.text()
                )
            }
        }
    }

    /// Waits for `upgrade failed:` at or after `from`; panics if the upgrade completes instead.
    pub fn wait_upgrade_failed(&self, from: usize, timeout: Duration) -> String {
        let found = self.log.wait_for(from, timeout, |l| {
            l.contains("upgrade failed:") || l.contains("upgrade complete:")
        });
        match found {
            Some((_, line)) if line.contains("upgrade failed:") => line,
            Some((_, line)) => panic!(
                "expected a failed upgrade, got: {line}\nlog:\n{}",
                self.log.text()
            ),
            None => panic!(
                "no `upgrade failed:` within {timeout:?}; log:\n{}",
                self.log.text()
            ),
        }
    }

    /// Sends `sig` to the current generation, waits for the handover, for the old generation to
    /// exit with status 0 (when it was reaped by us) and for `GET /` to come from the new one.
    /// Returns (old pid, new pid).
    pub fn upgrade(&mut self, sig: i32) -> (i32, i32) {
        let old = self.pid;
        let from = self.log.len();
        signal(old, sig);
        let new = self.wait_upgrade_complete(from, old);
        assert_ne!(new, old, "the pid did not change");
        self.pid = new;
        self.wait_exited_ok(old);
        self.wait_answering_pid(new);
        (old, new)
    }

    /// Waits for an old generation to exit; if the test process reaped it, its status must be 0.
    pub fn wait_exited_ok(&self, pid: i32) {
        self.wait_exited_ok_within(pid, LONG);
    }

    /// [`Server::wait_exited_ok`] with a deadline of the test's choosing (a drain deadline).
    pub fn wait_exited_ok_within(&self, pid: i32, within: Duration) {
        match wait_exit(pid, within) {
            Ok(Some(st)) => assert!(
                st.success(),
                "old generation {pid} ended with {st:?}; log:\n{}",
                self.log.text()
            ),
            Ok(None) => {}
            Err(e) => panic!(
                "old generation did not exit: {e}; log:\n{}",
                self.log.text()
            ),
        }
    }

    /// Polls `GET /` until it is answered by `pid`; every response must be a 200.
    pub fn wait_answering_pid(&self, pid: i32) {
        let mut last = None;
        let ok = poll_until(SHORT, || {
            let (_, p) = self.hello();
            last = Some(p);
            p == pid
        });
        assert!(ok, "GET / still answered by pid {last:?}, expected {pid}");
    }

    /// Sends SIGTERM to the current generation and returns its exit status.
    pub fn stop(&self) -> Exit {
        self.signal(libc::SIGTERM);
        match wait_exit(self.pid, LONG) {
            Ok(Some(st)) => st,
            Ok(None) => panic!("pid {} was reaped by someone else", self.pid),
            Err(e) => panic!("{e}; log:\n{}", self.log.text()),
        }
    }
}
