//! Shared harness for the end-to-end tests: real `hello` processes, real signals, real loopback
//! sockets.
//!
//! * [`binaries`] builds the `hello` example twice (v1: default greeting, v2: `HELLO_GREETING` set)
//!   into `<target>/e2e/{v1,v2}`, once per test process.
//! * [`Ctx`] owns one test: it serialises tests inside a process (so `cargo test` behaves like
//!   nextest's process-per-test), makes the test process a child subreaper (orphaned generations
//!   are reparented to it, so "no zombie" and "no leftover process" can be checked honestly), gives
//!   the test a temp dir holding its own replaceable `hello`, and on drop SIGKILLs and reaps every
//!   descendant (printing the captured logs when the test panicked).
//! * All reaping goes through [`reap_all`] / [`wait_exit`]; never call `Child::wait` on a process
//!   spawned here.
//! * [`Log`] captures a process's stderr and stdout in background threads; every wait has a
//!   deadline.
//! * A std-only HTTP/1.1 client ([`get`], [`Load`], [`PendingRequest`]) that never retries, so
//!   every failure is counted.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
pub mod tls;
pub mod udp;

pub const V1_GREETING: &str = "Welcome Server";
pub const V2_GREETING: &str = "Welcome New Server";

/// Generous upper bound for anything that should happen "soon" (start-up, an upgrade, an exit).
pub const LONG: Duration = Duration::from_secs(30);
/// Bound for things that must already have happened, give or take scheduling.
pub const SHORT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Building the two versions of `hello`
// ---------------------------------------------------------------------------------------------

pub struct Binaries {
    pub v1: PathBuf,
    pub v2: PathBuf,
}

impl Binaries {
    pub fn for_version(&self, v: Version) -> &Path {
        match v {
            Version::V1 => &self.v1,
            Version::V2 => &self.v2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn greeting(self) -> &'static str {
        match self {
            Version::V1 => V1_GREETING,
            Version::V2 => V2_GREETING,
        }
    }
    pub fn other(self) -> Version {
        match self {
            Version::V1 => Version::V2,
            Version::V2 => Version::V1,
        }
    }
}

pub fn workspace_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

fn target_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Builds (debug profile) v1 and v2 of the `hello` example, once per test process, and returns
/// immutable snapshots of them.
///
/// Every test process runs `cargo build` (a no-op unless the sources changed), so while one
/// process copies a binary another may be relinking it. The build and the snapshot are therefore
/// done under an exclusive flock on `<target>/e2e/.lock`, and tests only ever read the
/// snapshots (`<target>/e2e/snap/hello-<version>-<identity>`), which nothing writes after they
/// are created.
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| {
        let e2e = target_root().join("e2e");
        fs::create_dir_all(e2e.join("snap")).expect("create target/e2e/snap");
        let lock = fs::File::create(e2e.join(".lock")).expect("create target/e2e/.lock");
        // SAFETY: flock on a valid fd; released when `lock` is closed at the end of this scope.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", io::Error::last_os_error());
        let v2 = thread::spawn(|| build_hello("v2", Some(V2_GREETING)));
        let v1 = build_hello("v1", None);
        let v2 = v2.join().expect("building v2 panicked");
        prune_snapshots(&e2e.join("snap"));
        let bins = Binaries {
            v1: snapshot(&v1, "v1"),
            v2: snapshot(&v2, "v2"),
        };
        drop(lock);
        bins
    })
}

/// Builds (debug profile) another example of this crate, once per test process, next to
/// `hello` v1 (same target directory and features, so only the example itself is compiled),
/// and returns an immutable snapshot of it. Upgrades re-execute the same file: generations
/// tell themselves apart by their PIDs.
pub fn example_binary(example: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(example) {
        return p.clone();
    }
    let e2e = target_root().join("e2e");
    fs::create_dir_all(e2e.join("snap")).expect("create target/e2e/snap");
    let lock = fs::File::create(e2e.join(".lock")).expect("create target/e2e/.lock");
    // SAFETY: flock on a valid fd; released when `lock` is closed at the end of this scope.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", io::Error::last_os_error());
    let bin = build_example(example, "v1", None);
    let snap = snapshot(&bin, "v1");
    drop(lock);
    built.insert(example.to_string(), snap.clone());
    snap
}

fn build_hello(name: &str, greeting: Option<&str>) -> PathBuf {
    build_example("hello", name, greeting)
}

/// Builds `--example example` into `<target>/e2e/<name>`.
fn build_example(example: &str, name: &str, greeting: Option<&str>) -> PathBuf {
    let target = target_root().join("e2e").join(name);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--example", example, "-p", "handover"])
        // The tests of the `tls` feature start hello with --tls-cert: build it with them.
        .args(if cfg!(feature = "tls") {
            &["--features", "tls"][..]
        } else {
            &[]
        })
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null());
    match greeting {
        Some(g) => cmd.env("HELLO_GREETING", g),
        None => cmd.env_remove("HELLO_GREETING"),
    };
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the {example} example: {e}"));
    assert!(
        out.status.success(),
        "building {example} {name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = target.join("debug").join("examples").join(example);
    assert!(
        bin.is_file(),
        "{} missing after a successful build",
        bin.display()
    );
    bin
}

/// An immutable copy of a freshly built binary, named after its identity (inode, size, mtime).
fn snapshot(bin: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(bin).expect("stat built binary");
    let example = bin.file_name().expect("a file").to_string_lossy();
    let snap = target_root().join("e2e").join("snap").join(format!(
        "{example}-{name}-{}-{}-{}.{}",
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    ));
    if !snap.is_file() {
        let tmp = snap.with_extension("tmp");
        fs::copy(bin, &tmp).expect("snapshot hello");
        fs::rename(&tmp, &snap).expect("snapshot hello");
    }
    snap
}

/// Removes snapshots nobody can still be using: older than any test may run (nextest kills a
/// test after 6 minutes, see .config/nextest.toml).
fn prune_snapshots(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(10 * 60));
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process bookkeeping: subreaper, reaping, /proc
// ---------------------------------------------------------------------------------------------

pub fn self_pid() -> i32 {
    std::process::id() as i32
}

fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain prctl on the calling process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            rc,
            0,
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            io::Error::last_os_error()
        );
    });
}

/// A raw `waitpid` status.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

impl Exit {
    pub fn code(self) -> Option<i32> {
        libc::WIFEXITED(self.0).then(|| libc::WEXITSTATUS(self.0))
    }
    pub fn signal(self) -> Option<i32> {
        libc::WIFSIGNALED(self.0).then(|| libc::WTERMSIG(self.0))
    }
    pub fn success(self) -> bool {
        self.code() == Some(0)
    }
}

impl fmt::Debug for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code(), self.signal()) {
            (Some(c), _) => write!(f, "exit status {c}"),
            (_, Some(s)) => write!(f, "killed by signal {s}"),
            _ => write!(f, "wait status {:#x}", self.0),
        }
    }
}

fn reaped() -> MutexGuard<'static, HashMap<i32, Exit>> {
    static REAPED: OnceLock<Mutex<HashMap<i32, Exit>>> = OnceLock::new();
    REAPED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Reaps every exited child of the test process (direct children and reparented orphans) and
/// remembers their statuses for [`wait_exit`].
pub fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        reaped().insert(pid, Exit(status));
    }
}

/// Every exit status the test process has reaped so far (this test's processes: tests are
/// serialised per process).
pub fn reaped_statuses() -> Vec<(i32, Exit)> {
    reap_all();
    let mut v: Vec<(i32, Exit)> = reaped().iter().map(|(p, e)| (*p, *e)).collect();
    v.sort_by_key(|(p, _)| *p);
    v
}

/// Waits until `pid` has exited. `Ok(Some(status))` when the test process reaped it (it was a
/// child or an orphan reparented to us), `Ok(None)` when it disappeared (reaped by its own
/// parent), `Err` on timeout.
pub fn wait_exit(pid: i32, timeout: Duration) -> Result<Option<Exit>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        reap_all();
        if let Some(st) = reaped().get(&pid) {
            return Ok(Some(*st));
        }
        match proc_stat(pid) {
            None => return Ok(None),
            Some(p) if p.state == 'Z' && p.ppid != self_pid() => {
                // A zombie whose parent is someone else: it has exited.
                if Instant::now() >= deadline {
                    return Err(format!(
                        "pid {pid} exited but its parent {} never reaped it",
                        p.ppid
                    ));
                }
            }
            Some(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!("pid {pid} still alive after {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(10));
    }
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
    let comm = s[open + 1..close].to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        state,
        comm,
    })
}

pub fn is_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some(p) if p.state != 'Z' && p.state != 'X')
}

pub fn all_procs() -> Vec<ProcInfo> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Every descendant of `root` (children, grandchildren, ...), zombies included.
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

pub fn children_of(pid: i32) -> Vec<ProcInfo> {
    all_procs().into_iter().filter(|p| p.ppid == pid).collect()
}

/// Environment variable (name, value) set on everything a test spawns; descendants inherit it.
fn tag() -> &'static (String, String) {
    static TAG: OnceLock<(String, String)> = OnceLock::new();
    TAG.get_or_init(|| {
        (
            "HANDOVER_E2E_TAG".to_string(),
            format!("{}-{:?}", self_pid(), Instant::now()),
        )
    })
}

fn has_tag(pid: i32) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let (k, v) = tag();
    let want = format!("{k}={v}");
    env.split(|&b| b == 0).any(|e| e == want.as_bytes())
}

/// Live (non-zombie) processes of this test: descendants of the test process (the server
/// generations and whatever they started; tests are serialised per process) and, since a /proc
/// scan is not atomic and a generation may be in the middle of being reparented to us, any
/// process carrying this process's environment tag.
pub fn live_processes() -> Vec<ProcInfo> {
    let all = all_procs();
    let mut by_parent: HashMap<i32, Vec<&ProcInfo>> = HashMap::new();
    for p in &all {
        by_parent.entry(p.ppid).or_default().push(p);
    }
    let mut ours = HashSet::new();
    let mut stack = vec![self_pid()];
    while let Some(pid) = stack.pop() {
        for c in by_parent.get(&pid).into_iter().flatten() {
            if ours.insert(c.pid) {
                stack.push(c.pid);
            }
        }
    }
    all.into_iter()
        .filter(|p| p.state != 'Z' && p.state != 'X')
        .filter(|p| ours.contains(&p.pid) || (p.ppid > 2 && has_tag(p.pid)))
        .collect()
}

pub fn describe(procs: &[ProcInfo]) -> String {
    procs
        .iter()
        .map(|p| format!("{}[{}] ppid={} state={}", p.comm, p.pid, p.ppid, p.state))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls until `f` returns true or the deadline passes.
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

/// Waits until the live processes of this test are exactly `pids`.
pub fn assert_only_processes(pids: &[i32], timeout: Duration) {
    let want: HashSet<i32> = pids.iter().copied().collect();
    let ok = poll_until(timeout, || {
        reap_all();
        live_processes()
            .iter()
            .map(|p| p.pid)
            .collect::<HashSet<_>>()
            == want
    });
    assert!(
        ok,
        "expected exactly the processes {pids:?}, found: {}",
        describe(&live_processes())
    );
}

/// Asserts that no process of this test is a zombie left by one of the server generations
/// (a zombie whose parent is still alive and is not the test process).
pub fn assert_no_zombies() {
    reap_all();
    let zombies: Vec<ProcInfo> = descendants(self_pid())
        .into_iter()
        .filter(|p| p.state == 'Z' && p.ppid != self_pid())
        .collect();
    assert!(
        zombies.is_empty(),
        "zombie processes left by a server generation: {}",
        describe(&zombies)
    );
}

pub fn fd_targets(pid: i32) -> Vec<String> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut v: Vec<(u32, String)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let n: u32 = e.file_name().to_str()?.parse().ok()?;
            let t = fs::read_link(e.path()).ok()?;
            Some((n, t.display().to_string()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(n, t)| format!("{n} -> {t}")).collect()
}

/// Number of open fds of `pid`, read until three consecutive reads agree (in-flight connections
/// being torn down settle quickly).
pub fn settled_fd_count(pid: i32) -> usize {
    let count = || {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + SHORT;
    let mut last = count();
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(30));
        let c = count();
        if c == last {
            same += 1;
        } else {
            same = 0;
            last = c;
        }
    }
    last
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we started (or that was reparented to us).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

pub fn try_signal(pid: i32, sig: i32) -> bool {
    // SAFETY: as above.
    unsafe { libc::kill(pid, sig) == 0 }
}

fn kill_all_descendants() {
    for _ in 0..100 {
        reap_all();
        let live = live_processes();
        if live.is_empty() {
            break;
        }
        for p in live {
            try_signal(p.pid, libc::SIGKILL);
        }
        thread::sleep(Duration::from_millis(20));
    }
    reap_all();
}

/// Searches `PATH` for an executable.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

// ---------------------------------------------------------------------------------------------
// Captured output
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// Capture threads still reading (their pipe is not at EOF yet).
    open: usize,
}

/// Lines written by a process tree to its stdout/stderr (all generations share the same pipe).
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<LogState>, Condvar)>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Log {
    fn state(&self) -> MutexGuard<'_, LogState> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn capture<R: Read + Send + 'static>(&self, reader: R, prefix: &'static str) {
        let log = self.clone();
        self.state().open += 1;
        thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
                        log.push(format!("{prefix}{line}"));
                    }
                }
            }
            log.state().open -= 1;
            log.inner.1.notify_all();
        });
    }

    /// Waits until every captured pipe is at EOF (all writers, including descendants that
    /// inherited it, have exited), so that nothing a dead process wrote is still in flight.
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        while st.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .inner
                .1
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    pub fn push(&self, line: String) {
        self.state().lines.push(line);
        self.inner.1.notify_all();
    }

    /// Number of lines so far: use it as the `from` of a later wait.
    pub fn len(&self) -> usize {
        self.state().lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn lines(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    pub fn find(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<(usize, String)> {
        let st = self.state();
        st.lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| pred(l))
            .map(|(i, l)| (i, l.clone()))
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.state().lines.iter().filter(|l| pred(l)).count()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.find(0, |l| l.contains(needle)).is_some()
    }

    /// Waits for the first line at index >= `from` matching `pred`. `give_up` is polled between
    /// wake-ups: once it returns true, the wait ends within a second (lines a process wrote just
    /// before exiting may still be in the pipe).
    pub fn wait_for_or(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
        mut give_up: impl FnMut() -> bool,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        match self.wait_until(from, deadline, &pred, &mut give_up) {
            Ok(found) => Some(found),
            Err(seen) if give_up() => {
                let grace = deadline.min(Instant::now() + Duration::from_secs(1));
                self.wait_until(seen, grace, &pred, &mut || false).ok()
            }
            Err(_) => None,
        }
    }

    /// The first matching line at index >= `from`, or `Err(lines seen)` at the deadline or as
    /// soon as `give_up` returns true.
    fn wait_until(
        &self,
        from: usize,
        deadline: Instant,
        pred: &dyn Fn(&str) -> bool,
        give_up: &mut dyn FnMut() -> bool,
    ) -> Result<(usize, String), usize> {
        let mut seen = from;
        loop {
            {
                let st = self.state();
                if let Some(i) = (seen..st.lines.len()).find(|&i| pred(&st.lines[i])) {
                    return Ok((i, st.lines[i].clone()));
                }
                seen = seen.max(st.lines.len());
                let now = Instant::now();
                if now >= deadline {
                    return Err(seen);
                }
                let slice = (deadline - now).min(Duration::from_millis(50));
                let _ = self.inner.1.wait_timeout(st, slice);
            }
            if give_up() {
                return Err(seen);
            }
        }
    }

    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        self.wait_for_or(from, timeout, pred, || false)
    }
}

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
pub fn number_after(line: &str, prefix: &str) -> Option<i32> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Test context
// ---------------------------------------------------------------------------------------------

/// One end-to-end test: serialisation, a temp dir with its own `hello`, cleanup.
pub struct Ctx {
    pub dir: tempfile::TempDir,
    pub bins: &'static Binaries,
    logs: Mutex<Vec<(String, Log)>>,
    _serial: MutexGuard<'static, ()>,
}

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ctx {
    /// Builds the binaries if needed and installs v1 as `<dir>/hello`.
    pub fn new() -> Ctx {
        let guard = serial();
        let bins = binaries();
        become_subreaper();
        // Anything left over from an earlier test in this process (should be nothing).
        kill_all_descendants();
        reaped().clear();
        let dir = tempfile::Builder::new()
            .prefix("handover-e2e-")
            .tempdir()
            .expect("tempdir");
        let ctx = Ctx {
            dir,
            bins,
            logs: Mutex::new(Vec::new()),
            _serial: guard,
        };
        ctx.install(Version::V1);
        ctx
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `<dir>/hello`: the start path of the server, replaced between upgrades.
    pub fn exe(&self) -> PathBuf {
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

    pub fn remove_exe(&self) {
        fs::remove_file(self.exe()).expect("remove hello");
    }

    /// A command with a clean inheritance environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
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
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), log.clone()));
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
            let pid = sp.pid;
            let found = sp.log.wait_for_or(
                from,
                LONG,
                |l| parse_serving(l).is_some(),
                || !is_alive(pid),
            );
            match found {
                Some((i, line)) => {
                    addrs.push(parse_serving(&line).unwrap());
                    from = i + 1;
                }
                None => panic!(
                    "hello (pid {}) did not log `serving ADDR` for {} listener(s) (alive: {}); log:\n{}",
                    sp.pid,
                    listeners,
                    is_alive(sp.pid),
                    sp.log.text()
                ),
            }
        }
        let server = Server {
            pid: sp.pid,
            first_pid: sp.pid,
            log: sp.log,
            addrs,
        };
        let (_, pid) = server.hello();
        assert_eq!(pid, server.pid, "GET / answered by an unexpected pid");
        server
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        kill_all_descendants();
        if thread::panicking() {
            for (name, log) in self.logs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                eprintln!(
                    "----- captured output of {name} -----\n{}\n----- end of {name} -----",
                    log.text()
                );
            }
        }
    }
}

pub struct Spawned {
    pub pid: i32,
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

pub struct Server {
    /// The current generation (updated by [`Server::upgrade`]).
    pub pid: i32,
    /// The generation the test spawned.
    pub first_pid: i32,
    pub log: Log,
    /// Listener addresses in the order their `serving` lines appeared.
    pub addrs: Vec<Addr>,
}

impl Server {
    pub fn addr(&self) -> &Addr {
        &self.addrs[0]
    }

    pub fn tcp_addr(&self) -> &Addr {
        self.addrs
            .iter()
            .find(|a| matches!(a, Addr::Tcp(_)))
            .expect("no tcp listener")
    }

    pub fn unix_addr(&self) -> &Addr {
        self.addrs
            .iter()
            .find(|a| matches!(a, Addr::Unix(_)))
            .expect("no unix listener")
    }

    pub fn get(&self, path: &str) -> Result<Response, String> {
        get(self.addr(), path)
    }

    /// `GET /` must answer 200 `<greeting> pid=<pid>`; returns both.
    pub fn hello(&self) -> (String, i32) {
        hello_at(self.addr())
            .unwrap_or_else(|e| panic!("GET / failed: {e}\nlog:\n{}", self.log.text()))
    }

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
        match wait_exit(pid, LONG) {
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

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 client (std only, never retries)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "tcp://{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn connect(addr: &Addr, timeout: Duration) -> io::Result<Stream> {
        let s = match addr {
            Addr::Tcp(a) => {
                let s = TcpStream::connect_timeout(a, timeout)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Stream::Tcp(s)
            }
            Addr::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Stream::Unix(s)
            }
        };
        Ok(s)
    }

    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The server announced it will close the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    /// Splits a `<greeting> pid=<pid>` body.
    pub fn greeting_pid(&self) -> Option<(String, i32)> {
        let (g, p) = self.body.trim().rsplit_once(" pid=")?;
        Some((g.to_string(), p.trim().parse().ok()?))
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The connection was closed before a single byte of a response arrived.
    CleanEof,
    Io(io::Error),
    Protocol(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::CleanEof => write!(f, "connection closed before any response byte"),
            ReadError::Io(e) => write!(f, "{e} ({:?})", e.kind()),
            ReadError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

fn read_line(r: &mut impl BufRead, first: bool) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf).map_err(ReadError::Io)?;
    if n == 0 {
        return Err(if first {
            ReadError::CleanEof
        } else {
            ReadError::Protocol("connection closed in the middle of a response".into())
        });
    }
    if !buf.ends_with(b"\n") {
        return Err(ReadError::Protocol("connection closed mid-line".into()));
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or until EOF).
pub fn read_response(r: &mut impl BufRead) -> Result<Response, ReadError> {
    let status_line = read_line(r, true)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Protocol(format!(
            "bad status line {status_line:?}"
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReadError::Protocol(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, false)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| ReadError::Protocol(format!("bad header {line:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: String::new(),
    };
    let mut body = Vec::new();
    if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ReadError::Protocol(format!("bad content-length {len:?}")))?;
        body.resize(len, 0);
        r.read_exact(&mut body).map_err(ReadError::Io)?;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(r, false)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ReadError::Protocol(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !read_line(r, false)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(ReadError::Io)?;
            read_line(r, false)?;
        }
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body).map_err(ReadError::Io)?;
    }
    resp.body = String::from_utf8_lossy(&body).into_owned();
    Ok(resp)
}

pub fn request_bytes(path: &str, close: bool) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

/// One request on a fresh connection (`Connection: close`), 10 s timeouts.
pub fn get(addr: &Addr, path: &str) -> Result<Response, String> {
    get_timeout(addr, path, Duration::from_secs(10))
}

pub fn get_timeout(addr: &Addr, path: &str, timeout: Duration) -> Result<Response, String> {
    let mut s = Stream::connect(addr, timeout)
        .map_err(|e| format!("connect {addr}: {e} ({:?})", e.kind()))?;
    s.write_all(&request_bytes(path, true))
        .map_err(|e| format!("write: {e} ({:?})", e.kind()))?;
    read_response(&mut BufReader::new(s)).map_err(|e| format!("read: {e}"))
}

/// `GET /` → (greeting, pid), checking the status and body shape.
pub fn hello_at(addr: &Addr) -> Result<(String, i32), String> {
    let r = get(addr, "/")?;
    if r.status != 200 {
        return Err(format!("status {} body {:?}", r.status, r.body));
    }
    r.greeting_pid()
        .ok_or_else(|| format!("unexpected body {:?}", r.body))
}

/// A request written on its own connection; the response is read later.
pub struct PendingRequest {
    stream: Stream,
    pub local: Option<SocketAddr>,
    pub sent_at: Instant,
}

impl PendingRequest {
    pub fn send(addr: &Addr, path: &str) -> PendingRequest {
        let timeout = Duration::from_secs(30);
        let mut stream =
            Stream::connect(addr, timeout).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .write_all(&request_bytes(path, true))
            .expect("write request");
        PendingRequest {
            local: stream.local_tcp_addr(),
            stream,
            sent_at: Instant::now(),
        }
    }

    /// Reads the response in a background thread; the handle yields it with its arrival time.
    pub fn finish_in_background(self) -> JoinHandle<(Result<Response, String>, Instant)> {
        thread::spawn(move || {
            let r = read_response(&mut BufReader::new(self.stream)).map_err(|e| e.to_string());
            (r, Instant::now())
        })
    }

    /// Waits until `pid` has accepted this (TCP) connection: its socket inode shows up in
    /// `/proc/<pid>/fd` (not-yet-accepted connections have no inode).
    pub fn wait_accepted_by(&self, pid: i32, server: &Addr) {
        let (Addr::Tcp(server), Some(local)) = (server, self.local) else {
            panic!("wait_accepted_by needs a tcp connection");
        };
        let ok = poll_until(LONG, || {
            tcp_inode(*server, local).is_some_and(|ino| socket_inodes(pid).contains(&ino))
        });
        assert!(ok, "pid {pid} never accepted the connection from {local}");
    }
}

fn proc_net_addr(a: SocketAddr) -> Option<String> {
    match a {
        SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        )),
        SocketAddr::V6(_) => None,
    }
}

/// Inode of the server-side socket of the TCP connection `local` (server) <- `remote` (client).
/// 0/None while the connection waits in the accept queue.
pub fn tcp_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let (l, r) = (proc_net_addr(local)?, proc_net_addr(remote)?);
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 9 && f[1] == l && f[2] == r {
            f[9].parse().ok().filter(|&ino| ino != 0)
        } else {
            None
        }
    })
}

pub fn socket_inodes(pid: i32) -> HashSet<u64> {
    fd_targets(pid)
        .iter()
        .filter_map(|t| t.split_once("socket:[")?.1.strip_suffix(']')?.parse().ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Continuous load
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// A new connection per request (`Connection: close`).
    Close,
    /// Persistent connections; a connection is replaced only after a response that says
    /// `Connection: close`. Anything else (reset, EOF instead of a response, timeout) is a failure.
    KeepAlive,
}

#[derive(Default, Debug)]
pub struct LoadStats {
    pub ok: usize,
    pub failures: Vec<String>,
    pub by_pid: BTreeMap<i32, usize>,
    pub by_greeting: BTreeMap<String, usize>,
    pub connections: usize,
}

impl LoadStats {
    fn merge(&mut self, o: LoadStats) {
        self.ok += o.ok;
        self.failures.extend(o.failures);
        for (k, v) in o.by_pid {
            *self.by_pid.entry(k).or_default() += v;
        }
        for (k, v) in o.by_greeting {
            *self.by_greeting.entry(k).or_default() += v;
        }
        self.connections += o.connections;
    }

    pub fn summary(&self) -> String {
        let mut f = self.failures.clone();
        f.truncate(20);
        format!(
            "ok={} failed={} connections={} by_pid={:?} by_greeting={:?} first failures={f:#?}",
            self.ok,
            self.failures.len(),
            self.connections,
            self.by_pid,
            self.by_greeting
        )
    }

    pub fn assert_no_failures(&self) {
        assert!(
            self.failures.is_empty(),
            "requests failed: {}",
            self.summary()
        );
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    seen: Arc<Mutex<HashSet<i32>>>,
    workers: Vec<JoinHandle<LoadStats>>,
}

impl Load {
    /// `threads` clients issuing `GET /` back to back until stopped.
    pub fn start(addr: &Addr, threads: usize, mode: LoadMode) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let workers = (0..threads)
            .map(|_| {
                let (addr, stop, ok, seen) = (addr.clone(), stop.clone(), ok.clone(), seen.clone());
                thread::spawn(move || load_worker(&addr, mode, &stop, &ok, &seen))
            })
            .collect();
        Load {
            stop,
            ok,
            seen,
            workers,
        }
    }

    pub fn ok_count(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have succeeded.
    pub fn wait_more(&self, n: usize) {
        let target = self.ok_count() + n;
        assert!(
            poll_until(LONG, || self.ok_count() >= target),
            "load stalled at {} successful requests (wanted {target})",
            self.ok_count()
        );
    }

    pub fn has_seen(&self, pid: i32) -> bool {
        self.seen.lock().unwrap().contains(&pid)
    }

    pub fn wait_seen(&self, pid: i32) {
        assert!(
            poll_until(LONG, || self.has_seen(pid)),
            "no load request was answered by pid {pid}"
        );
    }

    pub fn finish(self) -> LoadStats {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = LoadStats::default();
        for w in self.workers {
            total.merge(w.join().expect("load worker panicked"));
        }
        total
    }
}

fn load_worker(
    addr: &Addr,
    mode: LoadMode,
    stop: &AtomicBool,
    ok: &AtomicUsize,
    seen: &Mutex<HashSet<i32>>,
) -> LoadStats {
    let timeout = Duration::from_secs(10);
    let mut st = LoadStats::default();
    let mut conn: Option<BufReader<Stream>> = None;
    let close = mode == LoadMode::Close;
    let req = request_bytes("/", close);
    while !stop.load(Ordering::SeqCst) {
        let c = match conn.take() {
            Some(c) => c,
            None => match Stream::connect(addr, timeout) {
                Ok(s) => {
                    st.connections += 1;
                    BufReader::new(s)
                }
                Err(e) => {
                    st.failures.push(format!("connect: {e} ({:?})", e.kind()));
                    continue;
                }
            },
        };
        let mut c = c;
        if let Err(e) = c.get_mut().write_all(&req) {
            st.failures.push(format!("write: {e} ({:?})", e.kind()));
            continue;
        }
        match read_response(&mut c) {
            Ok(resp) => {
                match (resp.status, resp.greeting_pid()) {
                    (200, Some((greeting, pid))) => {
                        st.ok += 1;
                        ok.fetch_add(1, Ordering::SeqCst);
                        *st.by_pid.entry(pid).or_default() += 1;
                        *st.by_greeting.entry(greeting).or_default() += 1;
                        seen.lock().unwrap().insert(pid);
                    }
                    _ => st
                        .failures
                        .push(format!("status {} body {:?}", resp.status, resp.body)),
                }
                if !close && !resp.closes() {
                    conn = Some(c);
                }
            }
            Err(e) => st.failures.push(format!("read: {e}")),
        }
    }
    st
}

// ---------------------------------------------------------------------------------------------
// NOTIFY_SOCKET receiver
// ---------------------------------------------------------------------------------------------

/// A unix datagram socket standing in for systemd's notify socket. Each datagram is one message.
pub struct Notify {
    pub path: PathBuf,
    msgs: Arc<(Mutex<Vec<String>>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Notify {
    pub fn bind(path: PathBuf) -> Notify {
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let msgs: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (msgs.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    m.0.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    m.1.notify_all();
                }
            }
        });
        Notify { path, msgs, stop }
    }

    pub fn messages(&self) -> Vec<String> {
        self.msgs.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.msgs.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of the first message at or after `from` that has a line equal to `field`.
    pub fn wait_field(&self, from: usize, field: &str, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let mut g = self.msgs.0.lock().unwrap();
        loop {
            if let Some(i) = (from..g.len()).find(|&i| g[i].lines().any(|l| l == field)) {
                return Some(i);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = self.msgs.1.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Like [`Notify::wait_field`] but panics with all messages on timeout.
    pub fn expect_field(&self, from: usize, field: &str) -> usize {
        self.wait_field(from, field, LONG).unwrap_or_else(|| {
            panic!(
                "no notify message with {field:?} (from index {from}); got {:?}",
                self.messages()
            )
        })
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Inheritance helpers
// ---------------------------------------------------------------------------------------------

/// Makes `fd` (of the test process) the child's fd 3, inheritable.
pub fn pass_as_fd3(cmd: &mut Command, fd: RawFd) {
    pass_fds(cmd, &[fd]);
}

/// Makes `fds` (of the test process) the child's fds 3, 4, ... in order, inheritable.
pub fn pass_fds(cmd: &mut Command, fds: &[RawFd]) {
    // Move them out of the low range first so that no dup2 clobbers a source. The copies stay
    // open (close-on-exec) in the test process, which is short-lived.
    let high: Vec<RawFd> = fds
        .iter()
        .map(|&fd| {
            // SAFETY: fcntl on a valid fd.
            let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
            assert!(h >= 100, "F_DUPFD_CLOEXEC: {}", io::Error::last_os_error());
            h
        })
        .collect();
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &h) in high.iter().enumerate() {
                if libc::dup2(h, 3 + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().unwrap().port()
}

pub fn raw_fd<T: AsRawFd>(t: &T) -> RawFd {
    t.as_raw_fd()
}
