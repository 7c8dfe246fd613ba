//! HTTP/3 clients for the QUIC tests (feature `h3`): quinn + h3 over loopback, trusting the
//! test CA of [`crate::tls::Pki`]. Like the other clients, none of them retries: every
//! failure is counted, by kind ([`Kind`]).
//!
//! What an HTTP/3 client does at a server's graceful shutdown is not a failure: once a
//! connection has received GOAWAY, h3 refuses to open a request on it (`RemoteClosing`, the
//! request was never sent), and the client opens a new connection. The old one must then end
//! the way RFC 9114 §5.2 says a graceful shutdown ends: the server closes it with
//! `H3_NO_ERROR`. A connection that times out, is reset, or is closed with any other code is a
//! failure ([`Kind::Closed`]), even after its last answer.
//!
//! - [`get`]: one request on a fresh connection.
//! - [`Pinger`]: ONE connection kept for the whole test, a request every N ms; it never
//!   reconnects, so its answers tell whether that connection survived.
//! - [`H3Load`]: many connections, requests back to back (the counting of [`Load`]).
//! - [`install_h3`], [`start_h3`], [`upgrade_h3`]: the library's `h3` example under test.
//! - [`Relay`]: holds back a client's datagrams, to split a first flight around an upgrade.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

use crate::binaries::example_binary_with;
use crate::hello::{Ctx, Server};
use crate::load::{Load, LoadStats, Tally};
use crate::reap::wait_line_while_alive;
use crate::sys::signal;
use crate::tls::Pki;
use crate::wait::{poll_until, LONG, SHORT};

mod load;
mod pinger;
mod relay;
mod server;

pub use load::{H3Load, H3Report};
pub use pinger::{PingStats, Pinger};
pub use relay::Relay;
pub use server::{h3_command, install_h3, setup_h3, start_h3, upgrade_h3};

/// How long one request may take before it counts as [`Kind::Timeout`] (long: the tests run
/// on a loaded 2-core machine, where a process can be starved for seconds).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The client's QUIC idle timeout: a connection that hears nothing from the server for this
/// long is dead (its keep-alive PINGs went unanswered).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The client's keep-alive PING interval.
pub const KEEP_ALIVE: Duration = Duration::from_millis(500);
/// `H3_NO_ERROR`: the code of a graceful close (RFC 9114 §8.1).
pub const H3_NO_ERROR: u64 = 0x100;
/// What a load's connections may take to be closed by the server after GOAWAY.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// A bound on any load, should a test hang.
const MAX_LOAD: Duration = Duration::from_secs(180);

/// The kinds of failed requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The connection could not be made (handshake failed or timed out).
    Connect,
    /// The server reset the request stream (or stopped reading it).
    Reset,
    /// An answer that is not `200 <greeting> pid=<pid>`.
    Status,
    /// The connection failed under a request, or ended other than by the server's
    /// `H3_NO_ERROR` close (timed out, reset, another code).
    Closed,
    /// No answer within [`REQUEST_TIMEOUT`].
    Timeout,
}

impl Kind {
    /// The prefix a failure of this kind carries in [`LoadStats::failures`].
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Connect => "connect: ",
            Kind::Reset => "reset: ",
            Kind::Status => "status: ",
            Kind::Closed => "closed: ",
            Kind::Timeout => "timeout: ",
        }
    }

    fn of(failure: &str) -> Option<Kind> {
        [
            Kind::Connect,
            Kind::Reset,
            Kind::Status,
            Kind::Closed,
            Kind::Timeout,
        ]
        .into_iter()
        .find(|k| failure.starts_with(k.prefix()))
    }
}

/// The failures of `stats` counted by [`Kind`] (`Status` for those of the shared counting,
/// which have no prefix).
pub fn failures_by_kind(stats: &LoadStats) -> BTreeMap<Kind, usize> {
    let mut by = BTreeMap::new();
    for f in &stats.failures {
        *by.entry(Kind::of(f).unwrap_or(Kind::Status)).or_default() += 1;
    }
    by
}

/// The `by_greeting` key counting requests not sent because the connection had said GOAWAY.
pub const NOT_SENT_AFTER_GOAWAY: &str = "(not sent: GOAWAY, new connection)";

/// A client configuration trusting only the test CA, offering `h3`, with the kit's keep-alive
/// and idle timeout.
pub fn client_config(pki: &Pki) -> quinn::ClientConfig {
    client_config_alpn(pki, &[b"h3"])
}

/// [`client_config`] offering these ALPN protocols (a long list makes the ClientHello span
/// more than one datagram).
pub fn client_config_alpn(pki: &Pki, alpn: &[&[u8]]) -> quinn::ClientConfig {
    let tls = pki.client(alpn);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .expect("the test CA's rustls config supports TLS 1.3");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("a small timeout")));
    config.transport_config(Arc::new(transport));
    config
}

/// A client endpoint on a fresh loopback UDP socket of `server`'s family.
pub fn client_endpoint(server: SocketAddr) -> quinn::Endpoint {
    let local: SocketAddr = if server.is_ipv6() {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    };
    quinn::Endpoint::client(local).expect("a client UDP socket")
}

/// An HTTP/3 connection: the quinn connection under it and h3's request sender.
pub struct H3Conn {
    /// The QUIC connection.
    pub quic: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<h3::error::ConnectionError>,
}

/// Why a request on an [`H3Conn`] was not answered.
#[derive(Debug)]
pub enum RequestError {
    /// The connection had received GOAWAY: the request was not sent (not a failure).
    Goaway,
    /// A failure of this kind, described.
    Failed(Kind, String),
}

impl H3Conn {
    /// Connects to `server` (as `localhost`) and sets up HTTP/3, within [`REQUEST_TIMEOUT`].
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        server: SocketAddr,
        config: &quinn::ClientConfig,
    ) -> Result<H3Conn, String> {
        let setup = async {
            let connecting = endpoint
                .connect_with(config.clone(), server, "localhost")
                .map_err(|e| format!("connect: {e}"))?;
            let quic = connecting.await.map_err(|e| format!("handshake: {e}"))?;
            let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
                .await
                .map_err(|e| format!("h3 setup: {e}"))?;
            let driver = tokio::spawn(async move { driver.wait_idle().await });
            Ok(H3Conn { quic, send, driver })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, setup)
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {REQUEST_TIMEOUT:?}")))
    }

    /// `GET path`: the status and the body, within [`REQUEST_TIMEOUT`].
    pub async fn get(&mut self, path: &str) -> Result<(u16, String), RequestError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.request(path)).await {
            Ok(r) => r,
            Err(_) => Err(RequestError::Failed(
                Kind::Timeout,
                format!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"),
            )),
        }
    }

    async fn request(&mut self, path: &str) -> Result<(u16, String), RequestError> {
        let req = http::Request::get(format!("https://localhost{path}"))
            .body(())
            .expect("a valid request");
        let mut stream = self.send.send_request(req).await.map_err(classify)?;
        stream.finish().await.map_err(classify)?;
        let resp = stream.recv_response().await.map_err(classify)?;
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(classify)? {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                body.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok((
            resp.status().as_u16(),
            String::from_utf8_lossy(&body).into(),
        ))
    }

    /// Waits (at most `timeout`) for the server to close the connection and says how it
    /// ended: `Ok` for the server's `H3_NO_ERROR`, `Err` with what happened otherwise.
    /// Keeps the request sender until then: dropping it would close the connection from this
    /// side.
    pub async fn wait_server_close(self, timeout: Duration) -> Result<(), String> {
        let H3Conn { quic, send, driver } = self;
        let closed = tokio::time::timeout(timeout, quic.closed()).await;
        drop(send);
        driver.abort();
        match closed {
            Err(_) => Err(format!("not closed by the server within {timeout:?}")),
            Ok(quinn::ConnectionError::ApplicationClosed(c))
                if c.error_code.into_inner() == H3_NO_ERROR =>
            {
                Ok(())
            }
            Ok(e) => Err(format!("ended by {e}")),
        }
    }
}

/// Sorts h3's request errors into the kit's kinds.
fn classify(e: h3::error::StreamError) -> RequestError {
    use h3::error::StreamError as S;
    match e {
        S::RemoteClosing { .. } => RequestError::Goaway,
        S::RemoteTerminate { code, .. } => {
            RequestError::Failed(Kind::Reset, format!("stream terminated with {code}"))
        }
        S::ConnectionError { 0: c, .. } => RequestError::Failed(Kind::Closed, format!("{c}")),
        other => RequestError::Failed(Kind::Closed, format!("{other}")),
    }
}

/// Runs `f` on a fresh current-thread runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// One `GET path` over HTTP/3 on a fresh connection, closed by the client afterwards.
pub fn get(
    server: SocketAddr,
    config: &quinn::ClientConfig,
    path: &str,
) -> Result<(u16, String), String> {
    block_on(async {
        let endpoint = client_endpoint(server);
        let mut conn = H3Conn::connect(&endpoint, server, config).await?;
        let r = conn.get(path).await.map_err(|e| format!("{e:?}"));
        conn.quic.close(H3_NO_ERROR.try_into().unwrap(), b"");
        endpoint.wait_idle().await;
        r
    })
}

/// `GET /` over HTTP/3 answered `200 <greeting> pid=<pid>`: the greeting and the pid.
pub fn hello(server: SocketAddr, config: &quinn::ClientConfig) -> Result<(String, i32), String> {
    let (status, body) = get(server, config, "/")?;
    parse_hello(status, &body).ok_or_else(|| format!("status {status} body {body:?}"))
}

fn parse_hello(status: u16, body: &str) -> Option<(String, i32)> {
    let (g, p) = body.trim().rsplit_once(" pid=")?;
    (status == 200).then_some(())?;
    Some((g.to_owned(), p.parse().ok()?))
}

// ---------------------------------------------------------------------------------------------
// One connection, a request every N ms
