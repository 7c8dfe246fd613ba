//! One fresh-connection `GET /` with blocking sockets, as the handover probe and the
//! readiness check use it; over TLS too for the https targets and `--tls`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::http1::{self, Parse};
use crate::version::{parse_pid, Greetings, Version};

/// What one probe got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A whole response: status, the version its body names (if any), the PID it names.
    Answer {
        /// Status code.
        status: u16,
        /// Build that answered, from the greeting.
        version: Option<Version>,
        /// `pid=` in the body.
        pid: Option<u32>,
    },
    /// Connection refused.
    Refused,
    /// Reset, or closed before a whole response.
    Reset,
    /// No whole response within the timeout.
    Timeout,
    /// Anything else (unparsable response, other socket errors).
    Other,
}

/// Probes `addr` once on a new connection (sending `Connection: close`), over TLS with `tls`
/// when given (a full handshake, verified; a handshake or certificate failure is
/// [`Probe::Other`] unless the socket itself failed).
pub fn once_over(
    addr: SocketAddr,
    greetings: &Greetings,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Probe {
    match exchange(addr, timeout, tls) {
        Ok(buf) => match http1::parse(&buf, true) {
            Parse::Done(r) => {
                let body = &buf[r.body_start..r.body_end];
                Probe::Answer {
                    status: r.status,
                    version: greetings.classify(body),
                    pid: parse_pid(body),
                }
            }
            Parse::Incomplete | Parse::UntilEof => Probe::Reset,
            Parse::Invalid(_) => Probe::Other,
        },
        Err(e) => match e.kind() {
            ErrorKind::ConnectionRefused => Probe::Refused,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                Probe::Reset
            }
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Probe::Timeout,
            _ => Probe::Other,
        },
    }
}

fn exchange(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<Vec<u8>> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    match tls {
        None => request(s, addr),
        Some(config) => {
            let conn =
                rustls::ClientConnection::new(Arc::clone(config), crate::tls::server_name(addr))
                    .map_err(std::io::Error::other)?;
            // The socket timeouts bound the handshake, which runs inside the first write.
            request(rustls::StreamOwned::new(conn, s), addr)
        }
    }
}

/// Sends the request on `s` and reads until a whole response or end of stream.
fn request(mut s: impl Read + Write, addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    s.write_all(&http1::request(addr.port(), true))?;
    s.flush()?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Parse::Done(r) = http1::parse(&buf, false) {
            if r.body_end == buf.len() {
                return Ok(buf);
            }
        }
    }
}

/// Probe outcomes counted by kind.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct ProbeCounts {
    /// 200 from the build being switched to.
    pub ok_new: u32,
    /// 200 from the build being replaced (after the switch: a stale answer).
    pub ok_old: u32,
    /// Refused connections.
    pub refused: u32,
    /// Resets / early closes.
    pub reset: u32,
    /// Timeouts.
    pub timeout: u32,
    /// Non-200 answers, unknown bodies and other errors.
    pub other: u32,
}

impl ProbeCounts {
    /// Failed probes (everything but a 200 from either build).
    pub fn errors(&self) -> u32 {
        self.refused + self.reset + self.timeout + self.other
    }
}
