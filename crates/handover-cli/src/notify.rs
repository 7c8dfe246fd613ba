//! A worker's own `NOTIFY_SOCKET`: a datagram socket in the supervisor's private runtime
//! directory, so a `READY=1` is attributed to the worker that sent it. (The supervisor's own
//! `NOTIFY_SOCKET`, from systemd, is never passed to workers.)

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;

/// The socket; its file is removed on drop.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds a fresh socket at `path` (in a directory only this process uses).
    pub fn bind(path: &Path) -> io::Result<NotifySocket> {
        let socket = UnixDatagram::bind(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(NotifySocket {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// The path to put in the worker's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads notifications until dropped, calling `ready` at the first `READY=1` and
    /// `stopping` at the first `STOPPING=1`. Reading goes on afterwards so that a worker
    /// sending more (`STATUS=...`) never blocks.
    pub async fn run(self, ready: impl FnOnce(), stopping: impl FnOnce()) {
        let mut stopping = Some(stopping);
        let mut ready = Some(ready);
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match self.socket.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("notification socket {}: {e}", self.path.display());
                    return;
                }
            };
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if line == "READY=1" {
                    if let Some(f) = ready.take() {
                        f();
                    }
                } else if line == "STOPPING=1" {
                    if let Some(f) = stopping.take() {
                        f();
                    }
                } else if let Some(status) = line.strip_prefix("STATUS=") {
                    tracing::debug!("worker status: {status}");
                }
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
