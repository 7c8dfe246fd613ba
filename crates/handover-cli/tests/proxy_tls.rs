//! `handover run --proxy https://...`: TLS terminated by the supervisor in front of the Python
//! test worker, with certificates made here (rcgen, ECDSA P-256) and clients that verify them
//! (rustls with the test CA; `curl --cacert` for HTTP/2 by ALPN). Upgrades under keep-alive
//! and close load lose nothing; the certificate files are read again at every upgrade, so
//! replacing them and upgrading rotates the certificate, and a bad file fails the upgrade with
//! its reason while the certificate in use stays; a bad key at start is a clear exit 1; clients
//! that send garbage or stall in the handshake affect nobody else.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use handover_testkit::cli_kit::*;
use rustls::pki_types::{CertificateDer, ServerName};

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A test CA and a server certificate it signed, for 127.0.0.1.
struct Pki {
    ca: CertificateDer<'static>,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "handover test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        Pki {
            ca: ca_cert.der().clone(),
            ca_cert,
            ca_key,
        }
    }

    /// Writes a new server certificate (common name `name`) and its key as PEM files; returns
    /// the certificate's DER, to tell which one a client was shown.
    fn issue(&self, name: &str, cert: &Path, key: &Path) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = params
            .signed_by(&leaf_key, &self.ca_cert, &self.ca_key)
            .unwrap();
        write_atomically(cert, leaf.pem().as_bytes());
        write_atomically(key, leaf_key.serialize_pem().as_bytes());
        leaf.der().to_vec()
    }

    fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A verifying HTTPS/1.1 client (never retries, so every failure is seen)
// ---------------------------------------------------------------------------------------------

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

struct Client {
    r: BufReader<Tls>,
}

impl Client {
    fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> io::Result<Client> {
        let tcp = TcpStream::connect_timeout(&addr, SHORT)?;
        tcp.set_read_timeout(Some(SHORT))?;
        tcp.set_write_timeout(Some(SHORT))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let conn =
            rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // The handshake now, so that a certificate problem shows here.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Client {
            r: BufReader::new(tls),
        })
    }

    /// The certificate the server showed (DER).
    fn peer_certificate(&self) -> Vec<u8> {
        self.r.get_ref().conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// `GET path`; the status and the body.
    fn get(&mut self, path: &str, close: bool) -> io::Result<(u16, String)> {
        let conn = if close { "Connection: close\r\n" } else { "" };
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{conn}\r\n");
        self.r.get_mut().write_all(req.as_bytes())?;
        self.r.get_mut().flush()?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0;
        loop {
            let mut h = String::new();
            if self.r.read_line(&mut h)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in head"));
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().map_err(io::Error::other)?;
                }
            }
        }
        let mut body = vec![0; length];
        self.r.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Clients sending `GET /` back to back (`close`: a connection per request) until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<(u64, Vec<String>)>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(
        addr: SocketAddr,
        config: &Arc<rustls::ClientConfig>,
        clients: usize,
        close: bool,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new((0, Vec::new())));
        let threads = (0..clients)
            .map(|_| {
                let (stop, stats, config) =
                    (Arc::clone(&stop), Arc::clone(&stats), Arc::clone(config));
                thread::spawn(move || {
                    let mut client: Option<Client> = None;
                    // Bounded: at most this many requests per client, whatever happens.
                    for _ in 0..200_000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let r = match client.take() {
                            Some(c) => Ok(c),
                            None => Client::connect(addr, &config),
                        }
                        .and_then(|mut c| {
                            let r = c.get("/", close)?;
                            if !close {
                                client = Some(c);
                            }
                            Ok(r)
                        });
                        let mut s = stats.lock().unwrap();
                        match r {
                            Ok((200, body)) if body.contains("proto=https") => s.0 += 1,
                            Ok((status, body)) => s.1.push(format!("{status}: {body}")),
                            Err(e) => s.1.push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            stats,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.stats.lock().unwrap().0
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let s = self.stats.lock().unwrap();
        (s.0, s.1.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// The supervisor
// ---------------------------------------------------------------------------------------------

struct Https {
    sup: Supervisor,
    pki: Pki,
    cert: PathBuf,
    key: PathBuf,
}

fn ctl(ctx: &Ctx) -> String {
    ctx.control().to_str().unwrap().to_string()
}

/// `handover run --proxy https://127.0.0.1:0 --tls-cert .. --tls-key .. -- app.py --port {port}`.
fn start(ctx: &Ctx) -> Https {
    let pki = Pki::new();
    let (cert, key) = (ctx.path("cert.pem"), ctx.path("key.pem"));
    pki.issue("first", &cert, &key);
    let app = write_app(ctx, "v1", "http");
    let sup = ctx.start(&[
        "--proxy",
        "https://127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--",
        app.to_str().unwrap(),
        "--port",
        "{port}",
    ]);
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);
    Https {
        sup,
        pki,
        cert,
        key,
    }
}

/// Waits until `load` has `n` more answers than it had.
fn wait_answers(load: &Load, n: u64) {
    let from = load.ok();
    assert!(
        poll_until(LONG, || load.ok() >= from + n),
        "the load stalled at {} answers",
        load.ok()
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Ten upgrades under keep-alive and close load over TLS: every request answered, by a worker
/// that was told `X-Forwarded-Proto: https`.
#[test]
fn https_proxy_upgrades_under_load_without_a_failure() {
    let ctx = Ctx::new();
    let h = start(&ctx);
    let config = h.pki.client_config();
    let keep = Load::start(h.sup.addr(), &config, 2, false);
    let close = Load::start(h.sup.addr(), &config, 2, true);
    wait_answers(&keep, 20);
    wait_answers(&close, 5);
    for generation in 2..=11 {
        write_app(&ctx, &format!("v{generation}"), "http");
        let out = ctx.handover(&["upgrade", "--control", &ctl(&ctx)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_answers(&keep, 10);
        wait_answers(&close, 3);
    }
    let (ok_keep, failed_keep) = keep.finish();
    let (ok_close, failed_close) = close.finish();
    assert!(
        failed_keep.is_empty(),
        "keep-alive failures: {failed_keep:?}"
    );
    assert!(failed_close.is_empty(), "close failures: {failed_close:?}");
    assert!(ok_keep > 100 && ok_close > 30, "{ok_keep} {ok_close}");
}

/// Replacing the files and upgrading rotates the certificate: new connections see the new one,
/// a keep-alive connection made before goes on; a bad key file fails the next upgrade with the
/// file's name and the certificate in use stays.
#[test]
fn certificates_rotate_at_an_upgrade_and_a_bad_file_is_refused() {
    let ctx = Ctx::new();
    let h = start(&ctx);
    let config = h.pki.client_config();
    let addr = h.sup.addr();
    let mut old = Client::connect(addr, &config).unwrap();
    let first = old.peer_certificate();
    assert_eq!(old.get("/", false).unwrap().0, 200);

    let second = h.pki.issue("second", &h.cert, &h.key);
    assert_ne!(first, second);
    write_app(&ctx, "v2", "http");
    let out = ctx.handover(&["upgrade", "--control", &ctl(&ctx)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut new = Client::connect(addr, &config).unwrap();
    assert_eq!(
        new.peer_certificate(),
        second,
        "a new connection sees the new certificate"
    );
    assert_eq!(new.get("/", false).unwrap().0, 200);
    let (status, body) = old.get("/", false).unwrap();
    assert_eq!(
        (status, version_of(&body)),
        (200, "v2".to_string()),
        "{body}"
    );

    // A key that is not PEM: the upgrade fails before any worker starts, saying why.
    std::fs::write(&h.key, "not a key\n").unwrap();
    write_app(&ctx, "v3", "http");
    let out = ctx.handover(&["upgrade", "--control", &ctl(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot load {}", h.key.display())),
        "the error names the file: {err}"
    );
    let mut after = Client::connect(addr, &config).unwrap();
    assert_eq!(
        after.peer_certificate(),
        second,
        "the certificate in use stays"
    );
    let (status, body) = after.get("/", false).unwrap();
    assert_eq!(
        (status, version_of(&body)),
        (200, "v2".to_string()),
        "{body}"
    );
}

/// A key that cannot be read at start: exit 1, naming the file.
#[test]
fn an_unreadable_key_at_start_is_a_clear_exit_1() {
    let ctx = Ctx::new();
    let pki = Pki::new();
    let (cert, key) = (ctx.path("cert.pem"), ctx.path("key.pem"));
    pki.issue("first", &cert, &key);
    let missing = ctx.path("missing-key.pem");
    let app = write_app(&ctx, "v1", "http");
    let out = run_bounded(
        std::process::Command::new(handover_exe())
            .args(["run", "--control"])
            .arg(ctx.control())
            .args(["--proxy", "https://127.0.0.1:0", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&missing)
            .arg("--")
            .arg(&app)
            .args(["--port", "{port}"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot load {}", missing.display())),
        "{err}"
    );
    // And without a key at all.
    let out = run_bounded(
        std::process::Command::new(handover_exe())
            .args(["run", "--proxy", "https://127.0.0.1:0", "--tls-cert"])
            .arg(&cert)
            .arg("--")
            .arg(&app),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tls-key"), "{err}");
}

/// Plain HTTP to the TLS port, a garbage ClientHello and a client that stalls in its
/// handshake are closed; a good client is served meanwhile.
#[test]
fn bad_tls_clients_are_closed_and_affect_nobody() {
    let ctx = Ctx::new();
    let h = start(&ctx);
    let config = h.pki.client_config();
    let addr = h.sup.addr();
    // A stalled handshake: a ClientHello that never completes (the record header promises
    // more than is sent).
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00][..],
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(SHORT)).unwrap();
        s.write_all(garbage).unwrap();
        let mut rest = Vec::new();
        // Closed (perhaps after a TLS alert), not left hanging.
        let r = s.read_to_end(&mut rest);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset),
            "{r:?}"
        );
        assert!(
            !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
            "{rest:?}"
        );
    }
    let mut good = Client::connect(addr, &config).unwrap();
    assert_eq!(good.get("/", false).unwrap().0, 200);
    // HTTP/2 by ALPN, with a client that verifies the certificate.
    let ca = ctx.path("ca.pem");
    std::fs::write(&ca, h.pki.ca_pem()).unwrap();
    let out = run_bounded(
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg("--cacert")
            .arg(&ca)
            .arg(format!("https://{addr}/")),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said, "2 200", "{}", String::from_utf8_lossy(&out.stderr));
    drop(stalled);
}
