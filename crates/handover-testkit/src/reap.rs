//! The test process as a subreaper: every exit status it reaps is remembered, the processes a
//! test leaves behind are found (by ancestry and by an environment tag) and killed.
//!
//! All reaping goes through [`reap_all`] / [`wait_exit`]; never call `Child::wait` on a process
//! a test started.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::logs::Log;
use crate::proc::{
    all_procs, descendants, describe, is_alive, proc_stat, self_pid, tree, ProcInfo,
};
use crate::sys::{reap_one, try_signal};
use crate::wait::{poll_until, SHORT};

/// A raw `waitpid` status.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

impl Exit {
    /// The exit code, when the process exited (rather than being killed).
    pub fn code(self) -> Option<i32> {
        libc::WIFEXITED(self.0).then(|| libc::WEXITSTATUS(self.0))
    }
    /// The signal that killed the process, if one did.
    pub fn signal(self) -> Option<i32> {
        libc::WIFSIGNALED(self.0).then(|| libc::WTERMSIG(self.0))
    }
    /// Exited with code 0.
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

/// Forgets the statuses of an earlier test of this process.
pub(crate) fn forget_reaped() {
    reaped().clear();
}

/// Reaps every exited child of the test process (direct children and reparented orphans) and
/// remembers their statuses for [`wait_exit`].
pub fn reap_all() {
    while let Some((pid, status)) = reap_one() {
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

/// Environment variable (name, value) set on what a test spawns with a tagged command;
/// descendants inherit it.
pub(crate) fn tag() -> &'static (String, String) {
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
    let ours = tree(&all, self_pid());
    all.into_iter()
        .filter(|p| p.state != 'Z' && p.state != 'X')
        .filter(|p| ours.contains(&p.pid) || (p.ppid > 2 && has_tag(p.pid)))
        .collect()
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

/// SIGKILLs and reaps every live process of this test (bounded: about two seconds).
pub(crate) fn kill_all_descendants() {
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

/// How `pid` ended, for a panic message once it is gone: its exit status when the test process
/// reaped it (what the kit spawns is its child, or reparented to it), or why there is none.
pub fn how_it_ended(pid: i32) -> String {
    if is_alive(pid) {
        return "still running".to_string();
    }
    match wait_exit(pid, SHORT) {
        Ok(Some(st)) => format!("{st:?}"),
        Ok(None) => "exited, reaped by another process (status unknown)".to_string(),
        Err(e) => e,
    }
}

/// Waits up to `timeout` for the first line of `log` at index >= `from` matching `pred`, but
/// only while `pid` runs: a start that crashed fails the test at once rather than at the
/// deadline. `Err` names what happened instead (`pid`'s exit status, or the timeout) and
/// carries the whole log.
pub fn wait_line_while_alive(
    log: &Log,
    pid: i32,
    from: usize,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Result<(usize, String), String> {
    if let Some(found) = log.wait_for_or(from, timeout, &pred, || !is_alive(pid)) {
        return Ok(found);
    }
    let ended = how_it_ended(pid);
    if !is_alive(pid) {
        // Its last words may still be in the pipes.
        log.wait_eof(SHORT);
    }
    let why = if is_alive(pid) {
        format!("within {timeout:?} (pid {pid} still running)")
    } else {
        format!("before pid {pid} ended ({ended})")
    };
    Err(format!("{why}; log:\n{}", log.text()))
}
