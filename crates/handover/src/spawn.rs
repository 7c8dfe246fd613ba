//! Starting the next generation: clone (as vfork), place the listeners at fds 3.., exec.
//!
//! This is the one place that calls `clone`/`execve`. `std::process::Command` cannot be used
//! because `LISTEN_PID` must hold the child's own PID, which only exists after the fork, and
//! `Command` builds the environment block before forking. So the whole `argv`/`envp` is prepared
//! here beforehand, with a fixed-width slot for the PID digits, and the child only runs
//! async-signal-safe code (the parent is multi-threaded: no allocation, no locks after fork).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::env::{self, FIRST_FD};

/// Everything the child needs, prepared before the fork.
pub(crate) struct SpawnRequest<'a> {
    /// Absolute path of the executable (not canonicalised).
    pub exe: &'a Path,
    /// The full argument vector, `argv[0]` included.
    pub args: &'a [OsString],
    /// Working directory of the child.
    pub cwd: &'a Path,
    /// Environment without any inheritance variable; they are added here.
    pub env: Vec<(OsString, OsString)>,
    /// Listening sockets, placed at fds 3.. in this order.
    pub listeners: &'a [(RawFd, String)],
    /// Listener fds (a subset of `listeners`) whose socket file the lineage created.
    pub owned: &'a [RawFd],
    /// The child's end of the readiness channel, placed right after the listeners and named
    /// in `HANDOVER_SYNC_FD`. `None` for a plain socket-activated child.
    pub readiness: Option<RawFd>,
    /// Keep `SIGUSR2`/`SIGHUP` blocked across exec (for a handover-library child, which
    /// unblocks them once its handlers exist). A foreign program gets an empty mask.
    pub block_upgrade_signals: bool,
    /// Generation number announced to a handover child in `HANDOVER_GENERATION`.
    pub generation: Option<u64>,
}

/// A forked child that has successfully exec'd.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
}

/// How the exec of the new binary failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnFailure {
    #[error("cannot start {path}: {source}")]
    Exec { path: PathBuf, source: io::Error },
    #[error("cannot prepare the new process: {0}")]
    Prepare(io::Error),
}

const PID_SLOT: &[u8] = b"LISTEN_PID=";
/// Room for any pid_t in decimal.
const PID_DIGITS: usize = 20;

/// Which step in the child failed; sent to the parent with the errno.
#[repr(u32)]
#[derive(Clone, Copy)]
enum ChildStep {
    Chdir = 1,
    Fds = 2,
    Exec = 3,
}

/// Forks and execs the next generation. Blocking (it waits for the exec to succeed or fail),
/// so call it from a blocking context.
pub(crate) fn spawn(req: SpawnRequest<'_>) -> Result<Spawned, SpawnFailure> {
    let cstr = |s: &OsStr| {
        CString::new(s.as_bytes()).map_err(|_| {
            SpawnFailure::Prepare(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{:?} contains a NUL byte", s),
            ))
        })
    };
    let exe = cstr(req.exe.as_os_str())?;
    let cwd = cstr(req.cwd.as_os_str())?;
    let args: Vec<CString> = req.args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;

    let names: Vec<String> = req.listeners.iter().map(|(_, n)| n.clone()).collect();
    let n = req.listeners.len() as RawFd;
    let readiness_target = req.readiness.map(|_| FIRST_FD + n);
    // The child sees each owned listener at its new position.
    let owned_targets: Vec<RawFd> = req
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, (fd, _))| req.owned.contains(fd))
        .map(|(i, _)| FIRST_FD + i as RawFd)
        .collect();

    let mut envs: Vec<Vec<u8>> = Vec::with_capacity(req.env.len() + 6);
    for (k, v) in &req.env {
        if env::PROTOCOL_VARS
            .iter()
            .any(|p| OsStr::new(p) == k.as_os_str())
        {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envs.push(kv);
    }
    // A child that inherits nothing (a proxy-mode worker binding its own port) must see no
    // inheritance variable at all: `LISTEN_FDS=0` reads as "set" to the usual
    // `if (process.env.LISTEN_FDS)` check and sends such a worker looking for fd 3.
    let inherits = !req.listeners.is_empty() || req.readiness.is_some();
    if inherits {
        for (k, v) in env::child_vars(&names, readiness_target, &owned_targets) {
            envs.push(format!("{k}={v}").into_bytes());
        }
        if let Some(g) = req.generation {
            envs.push(format!("{}={g}", env::HANDOVER_GENERATION).into_bytes());
        }
        // The LISTEN_PID slot, last: digits are written by the child after fork, then a NUL
        // ends it.
        let mut slot = PID_SLOT.to_vec();
        slot.extend(std::iter::repeat_n(b'0', PID_DIGITS));
        envs.push(slot);
    }
    // NUL-terminated buffers that `envp` points into; the slot is written in place.
    let mut env_bufs: Vec<Vec<u8>> = Vec::with_capacity(envs.len());
    for e in envs {
        if e.contains(&0) {
            return Err(SpawnFailure::Prepare(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an environment variable contains a NUL byte",
            )));
        }
        let mut b = e;
        b.push(0);
        env_bufs.push(b);
    }
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut envp: Vec<*mut libc::c_char> = env_bufs
        .iter_mut()
        .map(|e| e.as_mut_ptr().cast::<libc::c_char>())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    // Null when nothing is inherited (no LISTEN_PID to fill in).
    let pid_slot: *mut u8 = if inherits {
        // SAFETY: the slot buffer is PID_SLOT plus PID_DIGITS digits plus a NUL long.
        unsafe { envp[envp.len() - 2].cast::<u8>().add(PID_SLOT.len()) }
    } else {
        std::ptr::null_mut()
    };

    // Sources in target order: listeners, then the readiness channel.
    let sources: Vec<RawFd> = req
        .listeners
        .iter()
        .map(|(fd, _)| *fd)
        .chain(req.readiness)
        .collect();
    let total = sources.len() as RawFd;

    // Exec errors come back through this close-on-exec pipe: EOF means exec succeeded.
    let (err_read, err_write) = cloexec_pipe().map_err(SpawnFailure::Prepare)?;

    let blocked = if req.block_upgrade_signals {
        signal_set(&[libc::SIGUSR2, libc::SIGHUP])
    } else {
        signal_set(&[])
    };
    let plan = ChildPlan {
        exe: exe.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_mut_ptr(),
        cwd: cwd.as_ptr(),
        pid_slot,
        sources: &sources,
        total,
        err_fd: err_write.as_raw_fd(),
        mask: &blocked,
    };
    let pid = clone_and_exec(&plan).map_err(SpawnFailure::Prepare)?;
    drop(err_write);
    match read_child_error(&err_read) {
        Ok(None) => Ok(Spawned { pid }),
        Ok(Some((step, errno))) => {
            reap_blocking(pid);
            let source = io::Error::from_raw_os_error(errno);
            Err(match step {
                s if s == ChildStep::Exec as u32 => SpawnFailure::Exec {
                    path: req.exe.to_path_buf(),
                    source,
                },
                s if s == ChildStep::Chdir as u32 => SpawnFailure::Prepare(io::Error::new(
                    source.kind(),
                    format!("cannot enter {}: {source}", req.cwd.display()),
                )),
                _ => SpawnFailure::Prepare(io::Error::new(
                    source.kind(),
                    format!("cannot place the listening sockets: {source}"),
                )),
            })
        }
        Err(e) => {
            // Should not happen; do not leave a half-started child behind.
            kill_now(pid);
            reap_blocking(pid);
            Err(SpawnFailure::Prepare(e))
        }
    }
}

/// The child's stack while it shares this process's memory: the fd shuffle keeps a 4 KiB table
/// on it, and libc's calls need little; 64 KiB is ample.
const CHILD_STACK: usize = 64 * 1024;

/// Starts the child as `vfork` does (`clone(CLONE_VM | CLONE_VFORK)`, as glibc's
/// `posix_spawn` and Go's `os.StartProcess` do): it runs on a stack of its own in this
/// process's memory, and the calling thread waits until it has exec'd or exited. Unlike
/// `fork`, nothing of the parent is copied: a `fork` of a process serving hundreds of
/// connections copies its page tables and then takes a copy-on-write fault for every page
/// its busy threads write until the child execs, all of it on the upgrade's path (issue 16).
///
/// While the child shares the memory no signal handler of this process may run in it (it
/// would act on the parent's state): every signal is blocked in this thread across the clone,
/// and the child resets each caught signal to its default before it sets its own mask.
fn clone_and_exec(plan: &ChildPlan<'_>) -> io::Result<libc::pid_t> {
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down; its top must be 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    let all = full_signal_set();
    // SAFETY: valid sets; `saved` receives this thread's mask and is restored below.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved) };
    // SAFETY: `child_entry` only runs async-signal-safe code on `plan` (prepared above, not
    // touched by this thread until the clone returns) and on the stack given, and never
    // returns (it execs or `_exit`s); CLONE_VFORK keeps this thread, and so `plan` and
    // `stack`, suspended until then. No CLONE_FILES/CLONE_FS: its fd table and working
    // directory are its own copies.
    let pid = unsafe {
        libc::clone(
            child_entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            plan as *const ChildPlan<'_> as *mut libc::c_void,
        )
    };
    let cloned = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    };
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    drop(stack);
    cloned
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildPlan` that `clone_and_exec` passed, alive while the parent
    // thread is suspended.
    unsafe { child_after_fork(&*(arg as *const ChildPlan<'_>)) }
}

fn full_signal_set() -> libc::sigset_t {
    // SAFETY: sigfillset initialises the set before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

struct ChildPlan<'a> {
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *mut *mut libc::c_char,
    cwd: *const libc::c_char,
    /// Where `LISTEN_PID`'s digits go; null when the child inherits nothing.
    pid_slot: *mut u8,
    sources: &'a [RawFd],
    total: RawFd,
    err_fd: RawFd,
    mask: &'a libc::sigset_t,
}

/// Runs in the child between clone and exec, in the parent's memory (see `clone_and_exec`).
/// Async-signal-safe calls only; every signal is blocked on entry.
unsafe fn child_after_fork(plan: &ChildPlan<'_>) -> ! {
    // No handler of the parent's may run here: caught signals go back to their default
    // (exec would do it anyway) before any is unblocked. Ignored ones stay ignored, as
    // across exec, except SIGPIPE: Rust ignores it, a fresh process starts with the default,
    // as std's `Command` does.
    for sig in 1..=libc::SIGRTMAX() {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut current) != 0 {
            continue; // SIGKILL, SIGSTOP and the signals libc keeps for itself
        }
        let ignored = current.sa_sigaction == libc::SIG_IGN;
        if current.sa_sigaction != libc::SIG_DFL && (!ignored || sig == libc::SIGPIPE) {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &default, std::ptr::null_mut());
        }
    }
    // For a handover child, upgrade signals stay blocked until the new generation has
    // installed its handlers; every other signal is unblocked as for a fresh process.
    libc::pthread_sigmask(libc::SIG_SETMASK, plan.mask, std::ptr::null_mut());

    let fail = |step: ChildStep, err_fd: RawFd| -> ! {
        let errno = *libc::__errno_location();
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(err_fd, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    };

    // Move the error pipe and every source above the target range so that placing fd i at
    // 3+i can never overwrite a source that is still to be placed.
    let high = FIRST_FD + plan.total;
    let err_fd = libc::fcntl(plan.err_fd, libc::F_DUPFD_CLOEXEC, high);
    if err_fd < 0 {
        fail(ChildStep::Fds, plan.err_fd);
    }
    let mut temps = [0 as RawFd; 1024];
    if plan.sources.len() > temps.len() {
        *libc::__errno_location() = libc::EMFILE;
        fail(ChildStep::Fds, err_fd);
    }
    for (i, &src) in plan.sources.iter().enumerate() {
        let t = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, high);
        if t < 0 {
            fail(ChildStep::Fds, err_fd);
        }
        temps[i] = t;
    }
    for (i, &temp) in temps.iter().enumerate().take(plan.sources.len()) {
        // dup2 clears close-on-exec on the target: exactly these fds survive exec.
        if libc::dup2(temp, FIRST_FD + i as RawFd) < 0 {
            fail(ChildStep::Fds, err_fd);
        }
    }
    // Everything from `high` up (temps, the error pipe, any fd some library left inheritable)
    // is closed by exec.
    if libc::syscall(
        libc::SYS_close_range,
        high as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
    ) != 0
    {
        // Kernels before 5.11: mark them one by one.
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur.min(1 << 20) as RawFd
        } else {
            65536
        };
        for fd in high..max {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }

    if libc::chdir(plan.cwd) != 0 {
        fail(ChildStep::Chdir, err_fd);
    }

    if !plan.pid_slot.is_null() {
        write_pid_digits(plan.pid_slot, libc::getpid());
    }
    libc::execve(plan.exe, plan.argv, plan.envp as *const *const libc::c_char);
    fail(ChildStep::Exec, err_fd)
}

/// Writes `pid` in decimal at `slot` followed by a NUL (the slot has room for 20 digits).
unsafe fn write_pid_digits(slot: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; PID_DIGITS];
    let mut n = pid as u64;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        *slot.add(i) = digits[len - 1 - i];
    }
    *slot.add(len) = 0;
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: plain syscall with a valid out-array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

fn read_child_error(fd: &OwnedFd) -> io::Result<Option<(u32, i32)>> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into a valid buffer.
        let r = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        got += r as usize;
    }
    match got {
        0 => Ok(None),
        8 => Ok(Some((
            u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")),
            i32::from_ne_bytes(buf[4..].try_into().expect("4 bytes")),
        ))),
        _ => Err(io::Error::other("short error report from the new process")),
    }
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks or unblocks `SIGUSR2` and `SIGHUP` in the calling thread. Threads started later
/// inherit the mask.
pub(crate) fn set_upgrade_signals_blocked(blocked: bool) {
    let set = signal_set(&[libc::SIGUSR2, libc::SIGHUP]);
    let how = if blocked {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: valid set, null old-set pointer.
    unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
}

/// Whether `SIGHUP` is ignored (as under `nohup`).
pub(crate) fn sighup_ignored() -> bool {
    // SAFETY: querying the disposition with a null new action.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Code(i32),
    /// It was ended by this signal.
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited with status {c}"),
            ExitStatus::Signal(s) => match crate::os::signal_name(*s) {
                Some(name) => write!(f, "was killed by signal {name}"),
                None => write!(f, "was killed by signal {s}"),
            },
        }
    }
}

fn decode_status(status: libc::c_int) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    }
}

/// Reaps `pid` if it has ended; `None` while it runs.
pub(crate) fn try_reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: plain syscall.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match r {
        0 => Ok(None),
        r if r == pid => Ok(Some(decode_status(status))),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Reaps any ended child; `None` when none has ended or there is no child.
#[cfg(feature = "supervisor")]
pub(crate) fn reap_any() -> Option<(libc::pid_t, ExitStatus)> {
    let mut status = 0;
    loop {
        // SAFETY: plain syscall.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            return Some((r, decode_status(status)));
        }
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// Waits for `pid` to end (used after SIGKILL or a failed exec, so it is short).
pub(crate) fn reap_blocking(pid: libc::pid_t) -> Option<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: plain syscall.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(decode_status(status));
        }
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// Sends SIGKILL to `pid`.
pub(crate) fn kill_now(pid: libc::pid_t) {
    let _ = crate::os::kill(pid, libc::SIGKILL);
}

/// This process's PID.
pub(crate) fn own_pid() -> u32 {
    std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_digits_are_written_and_terminated() {
        let mut buf = [b'x'; PID_DIGITS + 1];
        unsafe { write_pid_digits(buf.as_mut_ptr(), 40213) };
        assert_eq!(&buf[..6], b"40213\0");
        unsafe { write_pid_digits(buf.as_mut_ptr(), 7) };
        assert_eq!(&buf[..2], b"7\0");
    }

    /// A signal set of `/proc/PID/status` (`SigBlk:` etc.) as a bit mask (bit n-1 = signal n).
    fn proc_signals(pid: libc::pid_t, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    }

    fn bit(sig: libc::c_int) -> u64 {
        1 << (sig - 1)
    }

    fn this_threads_mask() -> libc::sigset_t {
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set) };
        set
    }

    /// The child runs in this process's memory until it execs, with every signal blocked
    /// across the clone: what it starts with must still be a fresh process's state, and this
    /// thread's mask must be as before.
    #[test]
    fn a_child_starts_with_a_clean_signal_state_and_the_parent_keeps_its_mask() {
        let cwd = std::env::temp_dir();
        let args = [OsString::from("sleep"), OsString::from("30")];
        for block_upgrade_signals in [false, true] {
            let before = this_threads_mask();
            let spawned = spawn(SpawnRequest {
                exe: Path::new("/bin/sleep"),
                args: &args,
                cwd: &cwd,
                env: Vec::new(),
                listeners: &[],
                owned: &[],
                readiness: None,
                block_upgrade_signals,
                generation: None,
            })
            .unwrap_or_else(|e| panic!("spawn: {e}"));
            let after = this_threads_mask();
            for sig in 1..32 {
                // SAFETY: valid, initialised sets.
                let (b, a) = unsafe {
                    (
                        libc::sigismember(&before, sig),
                        libc::sigismember(&after, sig),
                    )
                };
                assert_eq!(b, a, "signal {sig} of the parent's mask changed");
            }
            // Exec has happened (spawn returns after it): the status is the program's own.
            let blocked = proc_signals(spawned.pid, "SigBlk:");
            let ignored = proc_signals(spawned.pid, "SigIgn:");
            kill_now(spawned.pid);
            reap_blocking(spawned.pid);
            let upgrade = bit(libc::SIGUSR2) | bit(libc::SIGHUP);
            let expected = if block_upgrade_signals { upgrade } else { 0 };
            assert_eq!(blocked, expected, "SigBlk {blocked:#x}");
            assert_eq!(
                ignored & bit(libc::SIGPIPE),
                0,
                "SIGPIPE still ignored: {ignored:#x}"
            );
        }
    }

    #[test]
    fn exit_status_reads_like_a_cause() {
        assert_eq!(ExitStatus::Code(3).to_string(), "exited with status 3");
        assert_eq!(
            ExitStatus::Signal(libc::SIGKILL).to_string(),
            "was killed by signal SIGKILL"
        );
    }
}
