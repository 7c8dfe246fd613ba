//! The kit's direct OS calls: signals, the subreaper flag, non-blocking `waitpid`, `flock`, fds
//! passed to a child, a free port. The only module of the kit with `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Once;

/// Sends `sig` to `pid`, panicking (with the errno) when it cannot be delivered.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; the pid is one the test started (or that was
    // reparented to it).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// Sends `sig` to `pid`; whether it was delivered (the process may be gone already).
pub fn try_signal(pid: i32, sig: i32) -> bool {
    // SAFETY: as in `signal`.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Makes the test process a child subreaper (once per process): orphans of the processes it
/// starts are reparented to it rather than to init, so they can be seen, reaped and killed.
pub(crate) fn become_subreaper() {
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

/// One exited child of the test process (pid, raw wait status), without blocking.
pub(crate) fn reap_one() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: waitpid with a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// Blocks until this process holds an exclusive `flock` on `file` (released when it closes).
pub(crate) fn lock_exclusive(file: &std::fs::File) {
    // SAFETY: flock on a valid fd, borrowed for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", io::Error::last_os_error());
}

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

/// The raw fd of `t` (a socket or file the test passes to a child).
pub fn raw_fd<T: AsRawFd>(t: &T) -> RawFd {
    t.as_raw_fd()
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().unwrap().port()
}
