//! The control socket's server: the socket file, peer credentials, one request per
//! connection, at most 64 at a time.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::os::{self, AcceptError};

use super::protocol::{parse_request, Reply, Request, Response};
use super::{DEFAULT_READ_TIMEOUT, MAX_REQUEST_BYTES};

/// How long the server waits for a client to take its reply.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handled at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

/// Answers control requests. Implemented for every
/// `Fn(Request) -> impl Future<Output = Result<Response, String>>` closure; an `Err` becomes
/// an `{"ok":false,"error":...}` reply.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. For [`Request::Upgrade`], resolve only once the outcome is known.
    fn handle(&self, request: Request) -> impl Future<Output = Result<Response, String>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, String>> + Send,
{
    fn handle(&self, request: Request) -> impl Future<Output = Result<Response, String>> + Send {
        self(request)
    }
}

/// A listening control socket.
///
/// Made by [`ControlServer::bind`] (which creates the socket file) or adopted from a previous
/// generation with [`ControlServer::from_listener`]. When a server made by `bind` is dropped
/// (or the future of [`ControlServer::serve`] is), the socket file is removed if it is still
/// the one this server created; see [`ControlServer::remove_on_drop`] to keep it, as a server
/// that hands its sockets to a successor must.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file.
    identity: Option<(u64, u64)>,
    remove_on_drop: bool,
    read_timeout: Duration,
    connection_guard: Option<ConnectionGuardFn>,
}

/// Makes a value held for as long as one control connection is handled.
type ConnectionGuardFn = Arc<dyn Fn() -> Box<dyn Send> + Send + Sync>;

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .field("remove_on_drop", &self.remove_on_drop)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl ControlServer {
    /// Creates the control socket at `path` with mode `0600` and listens on it. Must be called
    /// within a Tokio runtime.
    ///
    /// Never follows or replaces someone else's file: a socket file left by a process that
    /// has gone (connecting is refused) and owned by this uid is removed first; anything else
    /// at `path` (a live socket, a regular file, a symbolic link, another user's socket) is an
    /// error. The parent directory must exist; put it somewhere only this user can write
    /// (such as `$XDG_RUNTIME_DIR`).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<ControlServer> {
        let path = path.as_ref().to_path_buf();
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        os::remove_stale_socket(
            &path,
            "another process is serving this control socket (is the server already running?)",
        )
        .map_err(with_path)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
        // On Linux, bind(2) creates the file with the mode of the socket's inode (minus the
        // umask): setting it first means the file never exists with looser permissions.
        let _ = os::fchmod(socket.as_raw_fd(), 0o600);
        // bind(2) fails with EADDRINUSE if anything exists at `path`: nothing is replaced.
        socket.bind(&SockAddr::unix(&path)?).map_err(with_path)?;
        let meta = std::fs::symlink_metadata(&path).map_err(with_path)?;
        let cleanup = |e: io::Error| {
            let _ = std::fs::remove_file(&path);
            with_path(e)
        };
        if !meta.file_type().is_socket() || meta.uid() != os::euid() {
            return Err(with_path(io::Error::other(
                "the socket file was replaced while it was being created",
            )));
        }
        if meta.mode() & 0o777 != 0o600 {
            // Other systems, or a umask that removed the owner's bits.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(cleanup)?;
        }
        socket.listen(128).map_err(cleanup)?;
        socket.set_nonblocking(true).map_err(cleanup)?;
        let std_listener: std::os::unix::net::UnixListener = socket.into();
        let listener = UnixListener::from_std(std_listener).map_err(cleanup)?;
        Ok(ControlServer {
            listener,
            path,
            identity: Some((meta.dev(), meta.ino())),
            remove_on_drop: true,
            read_timeout: DEFAULT_READ_TIMEOUT,
            connection_guard: None,
        })
    }

    /// Adopts an already listening control socket, such as one inherited from the previous
    /// generation at an upgrade (pass it on with [`ControlServer::try_clone_fd`]). Its file
    /// is not removed on drop unless [`ControlServer::remove_on_drop`] says so. Must be
    /// called within a Tokio runtime.
    pub fn from_listener(listener: std::os::unix::net::UnixListener) -> io::Result<ControlServer> {
        let path = listener
            .local_addr()?
            .as_pathname()
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the control socket is not bound to a path",
                )
            })?;
        listener.set_nonblocking(true)?;
        let identity = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(ControlServer {
            listener: UnixListener::from_std(listener)?,
            path,
            identity,
            remove_on_drop: false,
            read_timeout: DEFAULT_READ_TIMEOUT,
            connection_guard: None,
        })
    }

    /// Whether dropping the server removes its socket file (if it is still the same file).
    /// Default: `true` after [`ControlServer::bind`], `false` after
    /// [`ControlServer::from_listener`]. A server that may hand the socket to a successor
    /// should say `false` and remove the file itself at its final stop.
    pub fn remove_on_drop(mut self, remove: bool) -> ControlServer {
        self.remove_on_drop = remove;
        self
    }

    /// A duplicate of the listening socket (close-on-exec), to hand to the next generation;
    /// take it before [`ControlServer::serve`] consumes the server.
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Changes how long a client has to send its request (default [`DEFAULT_READ_TIMEOUT`]).
    pub fn with_read_timeout(mut self, timeout: Duration) -> ControlServer {
        self.read_timeout = timeout;
        self
    }

    /// Calls `make` for each accepted connection and keeps its result until the reply has
    /// been written: a server that drains before exiting can count control connections like
    /// any other, so a reply to `upgrade` or `stop` is not cut off by the exit.
    pub fn with_connection_guard<G: Send + 'static>(
        mut self,
        make: impl Fn() -> G + Send + Sync + 'static,
    ) -> ControlServer {
        self.connection_guard = Some(Arc::new(move || Box::new(make()) as Box<dyn Send>));
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections forever, each in its own task (so a pending upgrade does not hold
    /// up a status request), at most 64 at a time. Returns only if the socket itself fails
    /// for good.
    pub async fn serve<H: Handler>(self, handler: H) -> io::Result<()> {
        let handler = Arc::new(handler);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let me = os::euid();
        loop {
            let permit = Arc::clone(&slots)
                .acquire_owned()
                .await
                .map_err(|_| io::Error::other("connection limit closed"))?;
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    let what = format!("control socket {}", self.path.display());
                    match os::after_accept_error(&what, &e).await {
                        AcceptError::Other => return Err(e),
                        AcceptError::PeerGone | AcceptError::Exhausted => continue,
                    }
                }
            };
            let handler = Arc::clone(&handler);
            let read_timeout = self.read_timeout;
            let guard = self.connection_guard.as_ref().map(|make| make());
            tokio::spawn(async move {
                handle_connection(stream, &*handler, me, read_timeout).await;
                drop(guard);
                drop(permit);
            });
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        // Remove the file only if it is still ours (nobody replaced it meanwhile).
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if Some((m.dev(), m.ino())) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Why a request line could not be read.
#[derive(Debug)]
enum ReadError {
    TooLong,
    Empty,
    Io(io::Error),
}

async fn handle_connection<H: Handler>(
    mut stream: UnixStream,
    handler: &H,
    me: u32,
    read_timeout: Duration,
) {
    let reply = match stream.peer_cred() {
        Ok(cred) if cred.uid() == me || cred.uid() == 0 => {
            match tokio::time::timeout(read_timeout, read_line(&mut stream)).await {
                Err(_) => Reply::error(format!(
                    "no complete request within {read_timeout:?}; send one JSON line such as {{\"request\":\"status\"}}"
                )),
                Ok(Err(ReadError::TooLong)) => Reply::error(format!(
                    "request too long (more than {MAX_REQUEST_BYTES} bytes)"
                )),
                Ok(Err(ReadError::Empty)) => Reply::error(
                    "empty request; send one JSON line such as {\"request\":\"status\"}",
                ),
                Ok(Err(ReadError::Io(e))) => {
                    tracing::debug!("control socket: reading a request: {e}");
                    return;
                }
                Ok(Ok(line)) => match parse_request(&line) {
                    Ok(request) => Reply::from_outcome(handler.handle(request).await),
                    Err(message) => Reply::error(message),
                },
            }
        }
        Ok(cred) => {
            tracing::warn!(
                "control socket: refused a client with uid {} (only uid {me} and root may control this server)",
                cred.uid()
            );
            Reply::error(format!(
                "permission denied: uid {} may not control this server (only uid {me} and root may)",
                cred.uid()
            ))
        }
        Err(e) => Reply::error(format!("cannot check the peer's credentials: {e}")),
    };
    let line = reply.to_line();
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&line).await?;
        stream.shutdown().await?;
        // Take what the client may still be sending (bounded), so that closing does not
        // turn into a reset before it has read the reply.
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// Reads up to the first `\n` (or the end of the stream), at most [`MAX_REQUEST_BYTES`].
async fn read_line(stream: &mut UnixStream) -> Result<Vec<u8>, ReadError> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES + 1];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await.map_err(ReadError::Io)?;
        let end = if n == 0 {
            Some(len)
        } else {
            buf[len..len + n]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| len + i)
        };
        if let Some(end) = end {
            buf.truncate(end);
            return if buf.iter().all(u8::is_ascii_whitespace) {
                Err(ReadError::Empty)
            } else {
                Ok(buf)
            };
        }
        len += n;
        if len > MAX_REQUEST_BYTES {
            return Err(ReadError::TooLong);
        }
    }
}
