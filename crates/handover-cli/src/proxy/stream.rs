//! The client connections the HTTP proxy serves: plain TCP, or TLS over TCP (`https://`). The
//! relay reads a request body from a client while it writes interim answers (`100 Continue`)
//! to it, so it needs the connection's two halves at once: a TCP stream splits for free, a
//! TLS stream (one state for both directions) through `tokio::io::split`.

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp;
use tokio::net::TcpStream;

/// A client connection of the HTTP proxy.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The reading half, borrowed.
    type Reader<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    /// The writing half, borrowed.
    type Writer<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;

    /// Both halves, for as long as the borrow lasts.
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);
}

impl ClientStream for TcpStream {
    type Reader<'a> = tcp::ReadHalf<'a>;
    type Writer<'a> = tcp::WriteHalf<'a>;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        self.split()
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    type Reader<'a> = ReadHalf<&'a mut Self>;
    type Writer<'a> = WriteHalf<&'a mut Self>;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        tokio::io::split(self)
    }
}
