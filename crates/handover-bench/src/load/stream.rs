//! A load connection's byte stream: plain TCP, or TLS over it (the https targets). An enum
//! rather than a boxed trait object, so the plain path stays as it was (no dynamic dispatch,
//! no extra allocation per connection).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// One connection to the server under test.
pub enum Stream {
    /// HTTP/1.1 over TCP.
    Plain(TcpStream),
    /// HTTP/1.1 over TLS (boxed: the rustls state is a few KB, the plain variant a few words).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Opens a connection; with `tls`, completes the handshake (verifying the certificate for
/// `addr`'s IP) before returning, so that a handshake failure counts as a failed connect.
/// The caller bounds it in time.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some(config) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let tls = connector
                .connect(crate::tls::server_name(addr), tcp)
                .await?;
            Ok(Stream::Tls(Box::new(tls)))
        }
    }
}

impl Stream {
    /// Writes all of `buf` (and, over TLS, flushes the records it made to the socket).
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    /// Reads what is available into the spare capacity of `buf`; 0 at end of stream.
    pub async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
        }
    }
}
