//! Harness for the `handover` end-to-end tests: the real binary, a Python worker, real
//! signals, loopback sockets.
//!
//! * [`Ctx`] owns one test: it makes the test process a child subreaper (so workers of a
//!   supervisor that died are re-parented to us, not to init), gives the test a temporary
//!   directory, and on drop SIGKILLs and reaps every descendant, printing the captured logs
//!   when the test failed.
//! * [`Supervisor`] is a running `handover run`, its stdout and stderr captured line by line.
//! * Every wait polls a condition until a deadline; nothing sleeps to wait for readiness.
//! * A std-only HTTP/1.0 client that never retries, so every failure is counted.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bound for anything that should happen soon (a start, an upgrade, an exit).
pub const LONG: Duration = Duration::from_secs(30);
/// Bound for things that must already have happened, give or take scheduling.
pub const SHORT: Duration = Duration::from_secs(5);

pub const HANDOVER: &str = env!("CARGO_BIN_EXE_handover");
const WORKER_PY: &str = include_str!("worker.py");

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl on the calling process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            rc,
            0,
            "PR_SET_CHILD_SUBREAPER: {}",
            io::Error::last_os_error()
        );
    });
}

#[derive(Clone, Debug)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub comm: String,
}

pub fn proc_stat(pid: i32) -> Option<ProcInfo> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        state,
        comm: s[open + 1..close].to_string(),
    })
}

/// Alive and not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some(p) if p.state != 'Z' && p.state != 'X')
}

fn all_procs() -> Vec<ProcInfo> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Every descendant of `root`, zombies included.
pub fn descendants(root: i32) -> Vec<ProcInfo> {
    let procs = all_procs();
    let mut by_parent: HashMap<i32, Vec<&ProcInfo>> = HashMap::new();
    for p in &procs {
        by_parent.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for c in by_parent.get(&pid).into_iter().flatten() {
            out.push((*c).clone());
            stack.push(c.pid);
        }
    }
    out
}

/// Zombie children of `pid` (children it has not reaped).
pub fn zombies_of(pid: i32) -> Vec<ProcInfo> {
    all_procs()
        .into_iter()
        .filter(|p| p.ppid == pid && p.state == 'Z')
        .collect()
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// Waits for `pid` (a child of the test process) to exit and reaps it.
pub fn wait_child(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if r < 0 || Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` until it returns true or the deadline passes.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn kill_all_descendants() {
    let me = std::process::id() as i32;
    for _ in 0..200 {
        let live: Vec<ProcInfo> = descendants(me)
            .into_iter()
            .filter(|p| p.state != 'Z' && p.state != 'X')
            .collect();
        reap_all();
        if live.is_empty() {
            break;
        }
        for p in live {
            // SAFETY: SIGKILL to a descendant of this test.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(10));
    }
    reap_all();
}

fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            break;
        }
    }
}

/// The Python 3 interpreter, by absolute path (no shims between exec and the worker).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed for these tests (apt-get install python3)");
        assert!(out.status.success(), "python3 -c failed");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

// ---------------------------------------------------------------------------------------------
// Captured output
// ---------------------------------------------------------------------------------------------

/// Lines written by a process tree to its stdout and stderr.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Log {
    fn lines_mut(&self) -> MutexGuard<'_, Vec<String>> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn capture<R: Read + Send + 'static>(&self, reader: R, prefix: &'static str) {
        let log = self.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        log.lines_mut().push(format!("{prefix}{line}"));
                        log.inner.1.notify_all();
                    }
                }
            }
        });
    }

    /// Number of lines so far: the `from` of a later wait.
    pub fn len(&self) -> usize {
        self.lines_mut().len()
    }

    pub fn text(&self) -> String {
        self.lines_mut().join("\n")
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.lines_mut().iter().any(|l| l.contains(needle))
    }

    /// The first line at index >= `from` containing `needle`, waiting up to `timeout`.
    pub fn wait_for(&self, from: usize, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines_mut();
        loop {
            if let Some(l) = lines.iter().skip(from).find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = self
                .inner
                .1
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Like [`Log::wait_for`], panicking with the log when the line does not come.
    pub fn expect(&self, from: usize, needle: &str, timeout: Duration) -> String {
        self.wait_for(from, needle, timeout).unwrap_or_else(|| {
            panic!(
                "no line containing {needle:?} within {timeout:?}; log:\n{}",
                self.text()
            )
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Test context and the supervisor under test
// ---------------------------------------------------------------------------------------------

/// One test: a temporary directory, and cleanup of every process it started. Tests in one
/// process run one at a time (as under nextest), so "every descendant" is this test's.
pub struct Ctx {
    pub dir: tempfile::TempDir,
    logs: Mutex<Vec<Log>>,
    _serial: MutexGuard<'static, ()>,
}

impl Ctx {
    pub fn new() -> Ctx {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        become_subreaper();
        kill_all_descendants();
        let dir = tempfile::Builder::new()
            .prefix("handover-cli-")
            .tempdir()
            .expect("tempdir");
        Ctx {
            dir,
            logs: Mutex::new(Vec::new()),
            _serial: serial,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
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

    pub fn write_worker_mode(
        &self,
        name: &str,
        version: &str,
        behaviour: &str,
        mode: u32,
    ) -> PathBuf {
        let text = WORKER_PY
            .replacen("#!/usr/bin/env python3", &format!("#!{}", python()), 1)
            .replace("@VERSION@", version)
            .replace("@BEHAVIOUR@", behaviour);
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
                c.args(rest).arg(HANDOVER);
                c
            }
            None => Command::new(HANDOVER),
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
        self.logs.lock().unwrap().push(log.clone());
        let pid = child.id() as i32;
        // Reaped by `Supervisor::wait_exit` or the context's drop, never by `Child::wait`.
        std::mem::forget(child);
        let line = log.expect(0, "listening on ", LONG);
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
            Command::new(HANDOVER)
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

impl Drop for Ctx {
    fn drop(&mut self) {
        kill_all_descendants();
        if thread::panicking() {
            for log in self.logs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                eprintln!("---- handover log ----\n{}\n----", log.text());
            }
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
                // SAFETY: SIGKILL to our own child that overran.
                unsafe { libc::kill(pid, libc::SIGKILL) };
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
    pub pid: i32,
    /// The first TCP listener's address.
    pub addr: Option<SocketAddr>,
    pub log: Log,
    pub control: PathBuf,
}

impl Supervisor {
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the supervisor listens on TCP")
    }

    /// Waits for the supervisor to exit; its raw wait status.
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        wait_child(self.pid, timeout).unwrap_or_else(|| {
            panic!(
                "handover (pid {}) still running after {timeout:?}",
                self.pid
            )
        })
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

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// Why a request failed.
#[derive(Debug, Clone)]
pub enum Failure {
    Refused,
    Other(String),
}

/// `GET path` over HTTP/1.0 (one connection per request); the body.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, Failure> {
    let mut s = TcpStream::connect_timeout(&addr, SHORT).map_err(|e| {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            Failure::Refused
        } else {
            Failure::Other(format!("connect: {e}"))
        }
    })?;
    let other = |what: &str, e: io::Error| Failure::Other(format!("{what}: {e}"));
    s.set_read_timeout(Some(LONG))
        .map_err(|e| other("timeout", e))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .map_err(|e| other("write", e))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| other("read", e))?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| Failure::Other(format!("incomplete response {resp:?}")))?;
    if !head.starts_with("HTTP/1.0 200") {
        return Err(Failure::Other(format!("status: {head:?}")));
    }
    Ok(body.to_string())
}

/// The `pid=` of a worker's answer.
pub fn pid_of(body: &str) -> i32 {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}

/// The version (first word) of a worker's answer.
pub fn version_of(body: &str) -> String {
    body.split_whitespace().next().unwrap_or("").to_string()
}

/// Clients sending requests one after another until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub ok: usize,
    pub failures: Vec<String>,
    /// Answers per version.
    pub versions: BTreeMap<String, usize>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let threads = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let stats = Arc::clone(&stats);
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let r = get(addr, "/");
                        let mut s = stats.lock().unwrap();
                        match r {
                            Ok(body) => {
                                s.ok += 1;
                                *s.versions.entry(version_of(&body)).or_default() += 1;
                            }
                            Err(e) => s.failures.push(format!("{e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            stats,
            threads,
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    /// Waits until `n` more answers of `version` have arrived.
    pub fn wait_answers(&self, version: &str, n: usize) {
        let base = self.stats().versions.get(version).copied().unwrap_or(0);
        let ok = poll_until(LONG, || {
            self.stats().versions.get(version).copied().unwrap_or(0) >= base + n
        });
        assert!(
            ok,
            "fewer than {n} answers from {version}: {:?}",
            self.stats()
        );
    }

    pub fn finish(self) -> Stats {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let s = self.stats.lock().unwrap().clone();
        s
    }
}

/// The proxy-mode test worker (stdlib Python; binds the port it is given).
const PORT_WORKER_PY: &str = include_str!("port_worker.py");

/// Writes the proxy-mode worker as `<dir>/app.py` (atomically) with `version` and `mode`.
pub fn write_app(ctx: &Ctx, version: &str, mode: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let text = PORT_WORKER_PY
        .replacen("#!/usr/bin/env python3", &format!("#!{}", python()), 1)
        .replace("@VERSION@", version)
        .replace("@MODE@", mode);
    let path = ctx.path("app.py");
    let tmp = ctx.path(".app.py.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}
