//! TLS for the end-to-end tests: a test CA and server certificates made with rcgen (ECDSA
//! P-256), hello started over TLS, and clients that verify the certificate against that CA:
//! a blocking rustls HTTP/1.1 client (one request, or continuous load) and an HTTP/2 load over
//! tokio-rustls + hyper. Like the plain client, none of them retries: every failure counts.
//! A close is clean only with `close_notify` before the FIN; a bare FIN counts as a failure.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::hello::{parse_serving, Ctx, Server};
use crate::http::{read_response, request_bytes, Addr, Response};
use crate::load::{Load, LoadMode, LoadStats, Tally};
use crate::reap::wait_line_while_alive;
use crate::sys::signal;
use crate::wait::{poll_until, LONG, SHORT};

/// A test CA and the server certificate and key files hello is started with.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    /// The server certificate's PEM file.
    pub cert: PathBuf,
    /// The server key's PEM file.
    pub key: PathBuf,
    /// DER of the leaf now in `cert`.
    pub leaf: Vec<u8>,
}

impl Pki {
    /// A new CA, and a first server certificate for `localhost` written to `dir`.
    pub fn new(dir: &Path) -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "handover test CA");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let mut pki = Pki {
            ca,
            ca_key,
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            leaf: Vec::new(),
        };
        pki.issue();
        pki
    }

    /// A new key and certificate for `localhost`, put in place of the files (each written
    /// beside and renamed over, as a deployment would). Returns the new leaf's DER.
    pub fn issue(&mut self) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("server key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("server certificate");
        for (path, pem) in [(&self.cert, cert.pem()), (&self.key, key.serialize_pem())] {
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, pem).unwrap();
            fs::rename(&tmp, path).unwrap();
        }
        self.leaf = cert.der().to_vec();
        self.leaf.clone()
    }

    /// The CA certificate in PEM (for `curl --cacert`).
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A client configuration that trusts only the test CA and offers `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// The name the test certificates are issued for.
pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// The TCP address of `addr` (the TLS tests listen on TCP only).
pub fn tcp(addr: &Addr) -> SocketAddr {
    match addr {
        Addr::Tcp(a) => *a,
        Addr::Unix(_) => panic!("TLS tests use TCP"),
    }
}

/// A blocking TLS client connection.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake.
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Tls> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    let conn = ClientConnection::new(Arc::clone(config), localhost())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// The server's leaf certificate on this connection.
pub fn peer_leaf(tls: &Tls) -> Vec<u8> {
    tls.conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c: &CertificateDer<'_>| c.to_vec())
        .expect("a server certificate")
}

/// After the server said it closes: the next read must be the end of the stream, announced by
/// `close_notify` (rustls reports a FIN without it as `UnexpectedEof`).
pub fn expect_clean_close(r: &mut impl Read) -> Result<(), String> {
    let mut byte = [0u8; 1];
    match r.read(&mut byte) {
        Ok(0) => Ok(()),
        Ok(_) => Err("data after a closing response".into()),
        Err(e) => Err(format!("unclean close: {e} ({:?})", e.kind())),
    }
}

/// One HTTPS request on a fresh connection; the response and the server's leaf certificate.
pub fn https_get(
    addr: &Addr,
    config: &Arc<ClientConfig>,
    path: &str,
) -> Result<(Response, Vec<u8>), String> {
    let mut tls = connect(tcp(addr), config).map_err(|e| format!("connect: {e}"))?;
    let leaf = peer_leaf(&tls);
    tls.write_all(&request_bytes(path, true))
        .map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(tls);
    let resp = read_response(&mut r).map_err(|e| format!("read: {e}"))?;
    expect_clean_close(&mut r)?;
    Ok((resp, leaf))
}

/// `GET /` over TLS must answer 200 `<greeting> pid=<pid>`.
pub fn https_hello(addr: &Addr, config: &Arc<ClientConfig>) -> Result<(String, i32), String> {
    let (resp, _) = https_get(addr, config, "/")?;
    match (resp.status, resp.greeting_pid()) {
        (200, Some(gp)) => Ok(gp),
        _ => Err(format!("status {} body {:?}", resp.status, resp.body)),
    }
}

/// Starts `<dir>/hello` over TLS with the PKI's files and waits until it answers HTTPS.
pub fn start_tls(ctx: &Ctx, pki: &Pki, extra: &[&str]) -> Server {
    let mut cmd = ctx.hello_command();
    cmd.args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .args(extra);
    let sp = ctx.spawn("hello", cmd);
    let pid = sp.pid;
    let (_, line) = wait_line_while_alive(&sp.log, pid, 0, LONG, |l| parse_serving(l).is_some())
        .unwrap_or_else(|why| panic!("hello over TLS did not log `serving ADDR` {why}"));
    assert!(line.contains("over TLS"), "{line}");
    let server = Server {
        pid,
        log: sp.log,
        addrs: vec![parse_serving(&line).unwrap()],
    };
    let (_, p) = https_hello(server.addr(), &pki.client(&[b"http/1.1"]))
        .unwrap_or_else(|e| panic!("GET / over TLS failed: {e}; log:\n{}", server.log.text()));
    assert_eq!(p, pid);
    server
}

/// [`Server::upgrade`] over TLS: SIGUSR2, the handover, the old generation's clean exit, and
/// `GET /` answered by the new one.
pub fn upgrade_tls(server: &mut Server, config: &Arc<ClientConfig>) -> (i32, i32) {
    let old = server.pid;
    let from = server.log.len();
    signal(old, libc::SIGUSR2);
    let new = server.wait_upgrade_complete(from, old);
    server.pid = new;
    server.wait_exited_ok(old);
    let mut last = None;
    let ok = poll_until(SHORT, || {
        let r = https_hello(server.addr(), config);
        let p = r
            .as_ref()
            .map(|(_, p)| *p)
            .unwrap_or_else(|e| panic!("GET /: {e}"));
        last = Some(p);
        p == new
    });
    assert!(ok, "GET / still answered by {last:?}, expected {new}");
    (old, new)
}

/// Continuous HTTPS load: HTTP/1.1 over rustls (`LoadMode`) or HTTP/2. The counting is
/// [`Load`]'s (it derefs to it).
pub struct TlsLoad(Load);

/// The protocol of a [`TlsLoad`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// HTTP/1.1 over rustls, connections used as the [`LoadMode`] says.
    Http1(LoadMode),
    /// One HTTP/2 connection per worker, requests back to back, a new connection once the
    /// server has said GOAWAY.
    Http2,
}

impl TlsLoad {
    /// `threads` clients verifying the server against `config`, requesting `GET /` back to back.
    pub fn start(addr: &Addr, config: Arc<ClientConfig>, threads: usize, mode: TlsMode) -> TlsLoad {
        let addr = tcp(addr);
        TlsLoad(Load::spawn(threads, move |tally| match mode {
            TlsMode::Http1(m) => h1_worker(addr, &config, m, tally),
            TlsMode::Http2 => h2_worker(addr, Arc::clone(&config), tally),
        }))
    }

    /// Stops the clients; everything they saw ([`Load::finish`]).
    pub fn finish(self) -> LoadStats {
        self.0.finish()
    }
}

impl Deref for TlsLoad {
    type Target = Load;
    fn deref(&self) -> &Load {
        &self.0
    }
}

fn h1_worker(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    mode: LoadMode,
    tally: &Tally,
) -> LoadStats {
    let mut st = LoadStats::default();
    let close = mode == LoadMode::Close;
    let req = request_bytes("/", close);
    let mut conn: Option<BufReader<Tls>> = None;
    while !tally.stopped() {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match connect(addr, config) {
                Ok(t) => {
                    st.connections += 1;
                    BufReader::new(t)
                }
                Err(e) => {
                    st.failures
                        .push(format!("connect/handshake: {e} ({:?})", e.kind()));
                    continue;
                }
            },
        };
        if let Err(e) = c.get_mut().write_all(&req) {
            st.failures.push(format!("write: {e} ({:?})", e.kind()));
            continue;
        }
        match read_response(&mut c) {
            Ok(resp) => {
                tally.record(&mut st, resp.status, &resp.body);
                if close || resp.closes() {
                    if let Err(e) = expect_clean_close(&mut c) {
                        st.failures.push(e);
                    }
                } else {
                    conn = Some(c);
                }
            }
            Err(e) => st.failures.push(format!("read: {e}")),
        }
    }
    st
}

fn h2_worker(addr: SocketAddr, config: Arc<ClientConfig>, tally: &Tally) -> LoadStats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut st = LoadStats::default();
        let connector = tokio_rustls::TlsConnector::from(config);
        while !tally.stopped() {
            let tls = match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => connector.connect(localhost(), s).await,
                Err(e) => Err(e),
            };
            let tls = match tls {
                Ok(t) => t,
                Err(e) => {
                    st.failures.push(format!("connect/handshake: {e}"));
                    continue;
                }
            };
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                st.failures.push("ALPN did not pick h2".into());
                continue;
            }
            st.connections += 1;
            let io = hyper_util::rt::TokioIo::new(tls);
            let (mut send, conn) = match hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                io,
            )
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    st.failures.push(format!("h2 handshake: {e}"));
                    continue;
                }
            };
            let driver = tokio::spawn(conn);
            while !tally.stopped() {
                // Closed after GOAWAY: nothing was sent on it, so a new connection is right.
                if send.ready().await.is_err() {
                    break;
                }
                let req = hyper::Request::get("https://localhost/")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                match send.try_send_request(req).await {
                    Ok(resp) => {
                        use http_body_util::BodyExt;
                        let status = resp.status().as_u16();
                        match resp.into_body().collect().await {
                            Ok(b) => tally.record(
                                &mut st,
                                status,
                                &String::from_utf8_lossy(&b.to_bytes()),
                            ),
                            Err(e) => st.failures.push(format!("h2 body: {e}")),
                        }
                    }
                    // Never handed to the connection: not sent.
                    Err(e) if e.message().is_some() => break,
                    Err(e) if refused_by_goaway(e.error()) => {
                        *st.by_greeting
                            .entry("(refused by GOAWAY, unprocessed)".into())
                            .or_default() += 1;
                        break;
                    }
                    Err(e) => {
                        st.failures.push(format!("h2 request: {e:?}"));
                        break;
                    }
                }
            }
            drop(send);
            // The server ends the connection (GOAWAY, then close_notify and FIN); a cut is an error.
            match tokio::time::timeout(Duration::from_secs(10), driver).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => st.failures.push(format!("h2 connection ended badly: {e}")),
                Ok(Err(e)) => st.failures.push(format!("h2 driver: {e}")),
                Err(_) => st.failures.push("h2 connection did not end".into()),
            }
        }
        st
    })
}

/// RFC 9113 §6.8: a stream above the GOAWAY's last stream id was not processed and may be
/// retried. h2 reports that as a remote GOAWAY with NO_ERROR.
fn refused_by_goaway(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .is_some_and(|h| {
            h.is_go_away() && h.is_remote() && h.reason() == Some(h2::Reason::NO_ERROR)
        })
}
