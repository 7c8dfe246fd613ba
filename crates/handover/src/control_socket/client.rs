//! The control socket's client: one blocking request, one reply.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::protocol::{decode_reply, DecodeError, Request, Response};

/// Longest reply a client accepts.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// Why a control request did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers at the path (no file, or the server is gone).
    #[error("cannot connect to the control socket {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// Sending the request or reading the reply failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// No reply within the timeout given to [`request_with_timeout`].
    #[error("no reply on the control socket {path} within {timeout:?}")]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout.
        timeout: Duration,
    },
    /// The reply is not what the protocol says.
    #[error("invalid reply on the control socket {path}: {reason}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered `{"ok":false,"error":...}`: for an upgrade, the reason it was
    /// rolled back.
    #[error("{0}")]
    Failed(String),
}

/// Sends `request` to the control socket at `path` and waits for the reply, however long it
/// takes (an upgrade replies once the new generation is ready or has failed). Blocking.
pub fn request(path: impl AsRef<Path>, request: Request) -> Result<Response, ClientError> {
    request_with_timeout(path, request, None)
}

/// [`request`] with an optional bound on the whole exchange.
pub fn request_with_timeout(
    path: impl AsRef<Path>,
    request: Request,
    timeout: Option<Duration>,
) -> Result<Response, ClientError> {
    let path = path.as_ref();
    let deadline = timeout.map(|t| (Instant::now() + t, t));
    let io_err = |source: io::Error| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let protocol = |reason: String| ClientError::Protocol {
        path: path.to_path_buf(),
        reason,
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let remaining =
        |deadline: Option<(Instant, Duration)>| -> Result<Option<Duration>, ClientError> {
            match deadline {
                None => Ok(None),
                Some((at, t)) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        Err(ClientError::Timeout {
                            path: path.to_path_buf(),
                            timeout: t,
                        })
                    } else {
                        Ok(Some(left))
                    }
                }
            }
        };
    stream
        .set_write_timeout(remaining(deadline)?)
        .map_err(io_err)?;
    let mut line = serde_json::to_vec(&request).map_err(|e| protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;

    let mut reply = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(remaining(deadline)?)
            .map_err(io_err)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                remaining(deadline)?;
                continue;
            }
            Err(e) => return Err(io_err(e)),
        };
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply.contains(&b'\n') {
            break;
        }
        if reply.len() > MAX_REPLY_BYTES {
            return Err(protocol(format!("longer than {MAX_REPLY_BYTES} bytes")));
        }
    }
    let end = reply
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(reply.len());
    if end == 0 {
        return Err(protocol(
            "the server closed the connection without replying".into(),
        ));
    }
    decode_reply(request, &reply[..end]).map_err(|e| match e {
        DecodeError::Failed(msg) => ClientError::Failed(msg),
        DecodeError::Protocol(reason) => protocol(reason),
    })
}
