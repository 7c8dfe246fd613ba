//! Minimal `sd_notify(3)` client: readiness and status messages to the
//! service manager over the `NOTIFY_SOCKET` datagram socket.
//!
//! Why not the `sd-notify` crate: it reads `NOTIFY_SOCKET` from the process environment at
//! every call and sends without a timeout. Here the variable is read once, through an
//! injected lookup (so the tests below need not mutate the environment of a multi-threaded
//! test process), and a send gives up after [`SEND_TIMEOUT`], so that a stuck service manager
//! cannot hold up an upgrade or a stop. What remains is one datagram per message, which std
//! does in the few lines below.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// Environment variable naming the service manager's notification socket.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A notification is a single small datagram that the manager normally reads
/// immediately; if its queue is full (manager stuck), give up rather than
/// block an upgrade or shutdown indefinitely.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to send `sd_notify` messages, taken from `NOTIFY_SOCKET`.
///
/// The variable is intentionally left in the environment: every later
/// generation of the server needs it too, and with `NotifyAccess=all` (needed
/// for handover upgrades under systemd) the new generation reports `MAINPID=`
/// itself.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    addr: SocketAddr,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` through `lookup` (normally `std::env::var_os`).
    ///
    /// Accepts an absolute path or `@name` for the Linux abstract namespace.
    /// Returns `None` when the variable is unset or empty (not running under a
    /// notify-aware manager), and also, with a warning, when it holds
    /// something unusable (e.g. a relative path, or a `vsock:` address, which
    /// is not supported here).
    pub(crate) fn from_env(lookup: impl Fn(&str) -> Option<OsString>) -> Option<Notifier> {
        let value = lookup(NOTIFY_SOCKET)?;
        let bytes = value.as_bytes();
        if bytes.is_empty() {
            return None;
        }
        let addr = if let Some(name) = bytes.strip_prefix(b"@") {
            SocketAddr::from_abstract_name(name)
        } else if bytes.starts_with(b"/") {
            SocketAddr::from_pathname(Path::new(&value))
        } else {
            tracing::warn!(
                value = ?value,
                "ignoring {NOTIFY_SOCKET}: expected an absolute path or @abstract-name"
            );
            return None;
        };
        match addr {
            Ok(addr) => Some(Notifier { addr }),
            Err(e) => {
                // Too long for sun_path, or contains a NUL byte.
                tracing::warn!(value = ?value, error = %e, "ignoring {NOTIFY_SOCKET}");
                None
            }
        }
    }

    /// Sends `state` (e.g. `"READY=1"`, `"RELOADING=1\nMONOTONIC_USEC=…"`,
    /// `"STOPPING=1"`, `"STATUS=…"`, `"MAINPID=…"`) as one datagram.
    ///
    /// A fresh unbound socket is used per message: notifications are rare,
    /// and nothing long-lived is kept open across an exec (std sockets are
    /// close-on-exec anyway).
    pub(crate) fn notify(&self, state: &str) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        let sent = socket.send_to_addr(state.as_bytes(), &self.addr)?;
        if sent != state.len() {
            // Datagrams are all-or-nothing, so this should be unreachable.
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to {NOTIFY_SOCKET}: {sent} of {} bytes",
                    state.len()
                ),
            ));
        }
        Ok(())
    }

    /// Like [`notify`](Self::notify), but failures are logged as warnings:
    /// the server keeps working when the manager cannot be told, and the
    /// manager's own timeouts will surface the problem.
    pub(crate) fn notify_or_warn(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!(state, error = %e, "sd_notify failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(value: impl Into<OsString>) -> Option<Notifier> {
        let value = value.into();
        Notifier::from_env(move |k| (k == NOTIFY_SOCKET).then(|| value.clone()))
    }

    fn recv(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn unset_or_unusable_is_none() {
        assert!(Notifier::from_env(|_| None).is_none());
        assert!(notifier("").is_none());
        assert!(notifier("relative/path").is_none());
        assert!(notifier("vsock:2:1234").is_none());
        assert!(notifier(format!("/{}", "x".repeat(200))).is_none());
    }

    #[test]
    fn sends_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = notifier(path.as_os_str()).expect("absolute path accepted");
        n.notify("READY=1").unwrap();
        assert_eq!(recv(&server), "READY=1");
        n.notify_or_warn("STATUS=hello\nMAINPID=1");
        assert_eq!(recv(&server), "STATUS=hello\nMAINPID=1");
    }

    #[test]
    fn sends_to_an_abstract_name() {
        let name = format!(
            "handover-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = notifier(format!("@{name}")).expect("abstract name accepted");
        n.notify("STOPPING=1").unwrap();
        assert_eq!(recv(&server), "STOPPING=1");
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = notifier(dir.path().join("gone").as_os_str()).unwrap();
        assert!(n.notify("READY=1").is_err());
        n.notify_or_warn("READY=1");
    }
}
