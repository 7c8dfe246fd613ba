//! The https targets' certificates and client side: a CA and a server certificate for
//! 127.0.0.1 made at start (rcgen, ECDSA P-256, so handover and nginx sign with the same key
//! type), written as PEM files both servers load, and a rustls client (ring) that verifies
//! against that CA with session resumption off, so every new connection is a full handshake.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

/// The certificate files and the client configuration that trusts them.
#[derive(Debug)]
pub struct Pki {
    /// Private directory holding the files (removed on drop).
    dir: PathBuf,
    /// Server certificate (PEM), for `--tls-cert` and nginx `ssl_certificate`.
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8), for `--tls-key` and nginx `ssl_certificate_key`.
    pub key: PathBuf,
    /// Verifying client configuration.
    pub client: Arc<rustls::ClientConfig>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("tls setup: {e}"))
}

impl Pki {
    /// Makes a CA and a 127.0.0.1 certificate it signs, in a private directory.
    pub fn new() -> io::Result<Pki> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "handover-bench CA");
        // `generate` is ECDSA P-256 with SHA-256.
        let ca_key = rcgen::KeyPair::generate().map_err(other)?;
        let ca = ca_params.self_signed(&ca_key).map_err(other)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).map_err(other)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "handover-bench 127.0.0.1");
        let key = rcgen::KeyPair::generate().map_err(other)?;
        let leaf = params.signed_by(&key, &ca, &ca_key).map_err(other)?;

        let dir = crate::process::private_dir_named("handover-bench-tls")?;
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, leaf.pem())?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        Ok(Pki {
            client: client_config(ca.der().clone())?,
            dir,
            cert: cert_path,
            key: key_path,
        })
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The key is readable by this user only (nginx's master reads it before dropping privileges).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

/// A client trusting `ca` only, TLS 1.2 and 1.3, no ALPN (HTTP/1.1 by default on both servers),
/// and no resumption: close-mode runs measure full handshakes, not ticket lookups.
pub fn client_config(ca: CertificateDer<'static>) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The name the certificate is checked against: the address itself.
pub fn server_name(addr: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// A rustls server with the bench's certificate and rustls's defaults (which offer resumption),
/// standing in for the proxies in unit tests.
#[cfg(test)]
pub fn test_server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two connections to a server that offers resumption: both verify the generated
    /// certificate, and the second is a full handshake too.
    #[test]
    fn verifies_and_never_resumes() {
        let pki = Pki::new().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(test_server_config(&pki));
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&pki.client));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name = server_name(SocketAddr::from(([127, 0, 0, 1], 1)));
        rt.block_on(async {
            for _ in 0..2 {
                let (c, s) = tokio::io::duplex(64 * 1024);
                let server = tokio::spawn({
                    let acceptor = acceptor.clone();
                    async move {
                        let mut s = acceptor.accept(s).await.unwrap();
                        let mut b = [0u8; 4];
                        s.read_exact(&mut b).await.unwrap();
                        s.write_all(&b).await.unwrap();
                        s.flush().await.unwrap();
                        s.get_ref().1.handshake_kind()
                    }
                });
                let mut c = connector.connect(name.clone(), c).await.unwrap();
                c.write_all(b"ping").await.unwrap();
                let mut b = [0u8; 4];
                c.read_exact(&mut b).await.unwrap();
                assert_eq!(&b, b"ping");
                assert_eq!(
                    server.await.unwrap(),
                    Some(rustls::HandshakeKind::Full),
                    "no resumption"
                );
            }
        });
        let dir = pki.dir.clone();
        drop(pki);
        assert!(!dir.exists());
    }

    #[test]
    fn rejects_a_certificate_from_another_ca() {
        let ours = Pki::new().unwrap();
        let theirs = Pki::new().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(test_server_config(&theirs));
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&ours.client));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (c, s) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let _ = acceptor.accept(s).await;
            });
            let name = server_name(SocketAddr::from(([127, 0, 0, 1], 1)));
            assert!(connector.connect(name, c).await.is_err());
        });
    }
}
