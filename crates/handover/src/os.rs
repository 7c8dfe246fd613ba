//! The operating system, in one place: every system call the library (and, through
//! [`crate::sys`], the supervisor) makes outside the fork/exec of `spawn.rs`. Along with
//! `spawn.rs`, the only module with `unsafe` code. Small and free of policy (save the one
//! accept-error policy), so that the modules above it read as logic and a port to another
//! Unix touches this file and `spawn.rs` only.

// Some of these serve only `sys`, which the `supervisor` feature builds.
#![cfg_attr(not(feature = "supervisor"), allow(dead_code))]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// This process's effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: plain syscall without arguments.
    unsafe { libc::geteuid() }
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd's `MONOTONIC_USEC=` wants it.
pub(crate) fn monotonic_usec() -> u64 {
    // SAFETY: clock_gettime with a valid out-pointer.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Sends `signal` to `pid`.
pub(crate) fn kill(pid: libc::pid_t, signal: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `fd` is an open socket: `Err` with the reason when it is not open at all.
pub(crate) fn is_socket(fd: RawFd) -> io::Result<bool> {
    // SAFETY: fstat on an fd number with a valid out-pointer; an unused number gives EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

/// Takes ownership of an fd number named by the inheritance variables (a listener or the
/// readiness channel), once [`is_socket`] has said it is an open socket. Callers claim each
/// such number once, at start-up (`listener::adopt_inherited`, `handover.rs`).
pub(crate) fn claim_inherited<T: std::os::fd::FromRawFd>(fd: RawFd) -> T {
    // SAFETY: the previous generation (or systemd) handed this fd to this process alone; the
    // variables were cleared when they were read, and each number is claimed once, so nothing
    // else in the process owns or closes it.
    unsafe { T::from_raw_fd(fd) }
}

/// Sets the permission bits of the file behind `fd` (a socket before `bind(2)`, whose file
/// then starts with them).
pub(crate) fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on a valid fd.
    if unsafe { libc::fchmod(fd, mode as libc::mode_t) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates a directory from a `mkdtemp(3)` template ending in `XXXXXX`, mode 0700.
pub(crate) fn mkdtemp(template: &Path) -> io::Result<PathBuf> {
    use std::ffi::{CString, OsStr};
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(template.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf = c.into_bytes_with_nul();
    // SAFETY: mkdtemp writes into the NUL-terminated template buffer it is given.
    let r = unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) };
    if r.is_null() {
        return Err(io::Error::last_os_error());
    }
    buf.pop();
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

/// `p` made absolute against `cwd`. Only `.` components are dropped (lexically): no symlink
/// is resolved, so a re-pointed `current` link is followed at exec time.
pub(crate) fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    joined.components().collect()
}

/// Finds a program the way a shell does: a name with a `/` is a path (made absolute against
/// `cwd`), any other is the first executable file of that name in `PATH`.
pub(crate) fn find_program(name: &Path, cwd: &Path) -> Option<PathBuf> {
    if name.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Some(absolute(cwd, name));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| absolute(cwd, &dir.join(name)))
        .find(|cand| {
            std::fs::metadata(cand)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Removes a Unix socket file that nobody listens on any more, so that a new socket can be
/// bound at `path`; nothing there is fine. Refused, with the reason: anything that is not a
/// socket, a socket of another user, a socket someone still listens on, and a file replaced
/// while this looked at it. `live` is the message for a socket in use.
pub(crate) fn remove_stale_socket(path: &Path, live: &str) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket; refusing to replace it",
        ));
    }
    if meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "is a socket owned by uid {}, not by this user (uid {}); refusing to replace it",
                meta.uid(),
                euid()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(io::ErrorKind::AddrInUse, live.to_string())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Still the same file? Then nobody listens on it: remove it.
            let again = std::fs::symlink_metadata(path)?;
            if (again.dev(), again.ino()) != (meta.dev(), meta.ino()) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "was replaced while checking whether it is stale",
                ));
            }
            tracing::debug!("removing stale socket {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// A new UDP socket bound to `addr`: close-on-exec, non-blocking, `SO_REUSEADDR` (as the TCP
/// listeners; it does not let a second socket share the port, `SO_REUSEPORT` would), and on
/// IPv6 the system's `IPV6_V6ONLY` default left alone, as for TCP.
pub(crate) fn bind_udp(addr: std::net::SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

/// Removes a file this process created (a socket file, at the final stop): one already gone
/// is fine, any other failure is logged, not returned, since the stop goes on.
pub fn remove_created_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!("removed {}", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}

/// What a failed `accept(2)` says about the listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// The peer gave up before it was accepted, or a signal interrupted the call: accept
    /// again at once.
    PeerGone,
    /// Out of file descriptors, buffers or memory: the socket is fine, the process is not,
    /// for a moment.
    Exhausted,
    /// Anything else: the socket itself may be broken.
    Other,
}

/// How long a server waits after an accept that failed for want of resources (or for an
/// unknown reason) before it tries again, so that it never spins.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// The one accept-error policy: classifies `e`, logs it (as `what`), and waits
/// [`ACCEPT_PAUSE`] unless the peer merely went away. The caller then accepts again, or, for
/// [`AcceptError::Other`], may give up.
pub async fn after_accept_error(what: &str, e: &io::Error) -> AcceptError {
    let kind = classify_accept_error(what, e);
    if kind != AcceptError::PeerGone {
        tokio::time::sleep(ACCEPT_PAUSE).await;
    }
    kind
}

/// [`after_accept_error`] for a thread that may block (the blocking listener's accept).
pub(crate) fn after_accept_error_blocking(what: &str, e: &io::Error) -> AcceptError {
    let kind = classify_accept_error(what, e);
    if kind != AcceptError::PeerGone {
        std::thread::sleep(ACCEPT_PAUSE);
    }
    kind
}

/// Classifies and logs a failed accept: the policy's first half, shared by both forms.
fn classify_accept_error(what: &str, e: &io::Error) -> AcceptError {
    let kind = match e.raw_os_error() {
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EINTR) => {
            AcceptError::PeerGone
        }
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => AcceptError::Exhausted,
        _ => AcceptError::Other,
    };
    if kind == AcceptError::PeerGone {
        tracing::debug!("{what}: accept: {e}");
    } else {
        tracing::warn!("{what}: accept failed: {e}; retrying shortly");
    }
    kind
}

/// An eventfd used as a flag that `poll(2)` can wait on next to a socket: readable while
/// rung, until silenced. Threads blocked in [`poll_readable`] on it wake when it is rung;
/// none of them reads it (that would take the wake-up from the others), only the owner
/// silences it. Non-blocking and close-on-exec, so no generation after this one gets it.
#[derive(Debug)]
pub(crate) struct Bell(OwnedFd);

impl Bell {
    pub(crate) fn new() -> io::Result<Bell> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        Ok(Bell(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable. A counter already at its maximum stays readable: nothing lost.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an fd we own.
        let n = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n != 8 {
            tracing::debug!("eventfd write: {}", io::Error::last_os_error());
        }
    }

    /// Makes the fd unreadable again (reads the counter back to zero).
    pub(crate) fn silence(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from an fd we own; EAGAIN means already 0.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Blocks until one of `fds` is readable (or at end of file, or in error: a read then tells
/// which), or `timeout` has passed (`None`: no limit). Returns which of them were ready; all
/// false on a timeout. A signal arriving meanwhile does not end the wait early.
pub(crate) fn poll_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let end = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let ms = match end {
            None => -1,
            Some(end) => {
                let left = end.saturating_duration_since(std::time::Instant::now());
                // Rounded up, so a wait never ends a little early and spins.
                left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
            }
        };
        // SAFETY: `pfds` is a live array of N pollfd structs for fds the caller keeps open.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(pfds.map(|p| p.revents != 0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Accepts one connection from the (non-blocking) listening socket `fd`, close-on-exec; a
/// `WouldBlock` error when none is waiting (another process or thread took it). The new
/// socket is blocking, for a thread that serves it.
pub(crate) fn accept_blocking_socket(
    fd: BorrowedFd<'_>,
) -> io::Result<(socket2::Socket, socket2::SockAddr)> {
    let (socket, peer) = socket2::SockRef::from(&fd).accept()?;
    socket.set_nonblocking(false)?;
    Ok((socket, peer))
}

/// Signal names for messages and the command line, by number.
const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGILL", libc::SIGILL),
    ("SIGABRT", libc::SIGABRT),
    ("SIGBUS", libc::SIGBUS),
    ("SIGFPE", libc::SIGFPE),
    ("SIGKILL", libc::SIGKILL),
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGPIPE", libc::SIGPIPE),
    ("SIGALRM", libc::SIGALRM),
    ("SIGTERM", libc::SIGTERM),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGCONT", libc::SIGCONT),
    ("SIGWINCH", libc::SIGWINCH),
];

/// The name of signal `number`, such as `SIGTERM`.
pub fn signal_name(number: i32) -> Option<&'static str> {
    SIGNALS
        .iter()
        .find(|(_, n)| *n == number)
        .map(|(name, _)| *name)
}

/// The number of the signal called `name` (`SIGTERM`, exactly).
pub fn signal_number(name: &str) -> Option<i32> {
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers_are_one_table() {
        assert_eq!(signal_name(libc::SIGSEGV), Some("SIGSEGV"));
        assert_eq!(signal_number("SIGWINCH"), Some(libc::SIGWINCH));
        assert_eq!(signal_name(1000), None);
        for (name, number) in SIGNALS {
            assert_eq!(signal_number(name), Some(*number));
            assert_eq!(signal_name(*number), Some(*name));
        }
    }

    #[test]
    fn programs_are_found_like_a_shell_finds_them() {
        let cwd = Path::new("/srv/app");
        assert_eq!(
            find_program(Path::new("./bin/./server"), cwd),
            Some(PathBuf::from("/srv/app/bin/server"))
        );
        assert_eq!(
            find_program(Path::new("/usr/bin/env"), cwd),
            Some(PathBuf::from("/usr/bin/env"))
        );
        assert!(find_program(Path::new("sh"), cwd).is_some_and(|p| p.is_absolute()));
        assert_eq!(find_program(Path::new("no-such-program-here"), cwd), None);
    }

    #[test]
    fn only_our_own_dead_sockets_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert!(remove_stale_socket(&path, "live").is_ok(), "nothing there");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let e = remove_stale_socket(&path, "in use").unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            (io::ErrorKind::AddrInUse, "in use")
        );
        drop(live);
        remove_stale_socket(&path, "in use").unwrap();
        assert!(!path.exists());
        std::fs::write(&path, "x").unwrap();
        let e = remove_stale_socket(&path, "in use").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    }
}
