//! TLS on a handover [`Connection`]: the handshake, bounded and finished even while draining,
//! and a clean close when it fails.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use crate::drain::DrainSignal;
use crate::listener::Connection;

/// How long a connection whose handshake failed is read from (and the bytes dropped) before
/// it is closed, and at most how many bytes: closing a socket with unread input resets it, and
/// the client would lose the alert that says why.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Performs the server side of TLS handshakes on connections from [`crate::Listener::accept`],
/// for protocols other than HTTP ([`crate::http::serve_tls`] does this itself).
///
/// ```no_run
/// # async fn example(listener: handover::Listener, config: std::sync::Arc<handover::tls::rustls::ServerConfig>) {
/// use tokio::io::AsyncWriteExt;
/// let acceptor = handover::tls::TlsAcceptor::new(config);
/// while let Some(Ok((conn, _peer))) = listener.accept().await {
///     let acceptor = acceptor.clone();
///     tokio::spawn(async move {
///         let Ok(mut tls) = acceptor.accept(conn).await else { return };
///         let drain = tls.drain_signal();
///         // ... speak the protocol; once `drain.is_draining()`, finish up, then:
///         let _ = tls.shutdown().await; // close_notify, then FIN
///     });
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    handshake_timeout: Option<Duration>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor for this configuration (see [`crate::tls::server_config`]). Handshakes are
    /// bounded by [`crate::Builder::tls_handshake_timeout`] unless
    /// [`TlsAcceptor::handshake_timeout`] says otherwise.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(config),
            handshake_timeout: None,
        }
    }

    /// Bounds handshakes by `t` instead of the builder's setting.
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = Some(t);
        self
    }

    /// The configuration handshakes use.
    pub fn config(&self) -> &Arc<rustls::ServerConfig> {
        self.inner.config()
    }

    /// Completes the TLS handshake on `conn`.
    ///
    /// The connection stays counted by the drain throughout, and a handshake in progress when
    /// the drain starts is finished, not cut: the client gets its answer (from this process,
    /// which then tells it it is closing, as the protocol allows). A handshake that fails (a
    /// client speaking plain text, garbage, an unsupported version) gets rustls's alert, then
    /// the connection is closed cleanly (FIN, not reset); one that takes longer than the
    /// handshake timeout is closed. Either way the error is returned and the connection is gone.
    pub async fn accept(&self, conn: Connection) -> io::Result<TlsConnection> {
        let bound = self
            .handshake_timeout
            .unwrap_or(conn.shared().tls_handshake_timeout);
        let deadline = Instant::now() + bound;
        let mut handshake = self.inner.accept(conn).into_fallible();
        match tokio::time::timeout_at(deadline, &mut handshake).await {
            Ok(Ok(stream)) => Ok(TlsConnection { stream }),
            Ok(Err((e, conn))) => {
                linger_close(conn).await;
                Err(e)
            }
            Err(_) => {
                // Dropped: a stalled client has sent nothing rustls has not read already, so
                // the close is a plain FIN; lingering would only keep the drain waiting.
                drop(handshake);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake not done within {bound:?}"),
                ))
            }
        }
    }
}

/// Sends a FIN after whatever rustls wrote (its alert), then reads and drops the client's
/// remaining bytes until it closes too, for at most [`LINGER`].
async fn linger_close(mut conn: Connection) {
    let _ = conn.shutdown().await;
    let mut buf = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// A TLS connection accepted by [`TlsAcceptor::accept`]; counted by the drain until dropped.
///
/// Reads and writes are the plaintext. `shutdown()` (from `AsyncWriteExt`) sends
/// `close_notify` and then a FIN: call it before dropping, so the client can tell a complete
/// exchange from a cut one.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<Connection>,
}

impl TlsConnection {
    /// Tells when this process starts draining, as [`Connection::drain_signal`] does.
    pub fn drain_signal(&self) -> DrainSignal {
        self.stream.get_ref().0.drain_signal()
    }

    /// Whether this process has started draining.
    pub fn is_draining(&self) -> bool {
        self.stream.get_ref().0.is_draining()
    }

    /// The ALPN protocol agreed with the client, if any (e.g. `b"h2"`).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }

    /// The server name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.stream.get_ref().1.server_name()
    }

    /// The underlying connection and the rustls session.
    pub fn get_ref(&self) -> (&Connection, &rustls::ServerConnection) {
        self.stream.get_ref()
    }

    /// The rustls stream itself.
    pub fn into_inner(self) -> TlsStream<Connection> {
        self.stream
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
