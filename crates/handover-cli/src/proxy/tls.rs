//! TLS in front of the HTTP proxy (`--proxy https://`): the certificate and key are loaded at
//! start and again at every upgrade trigger, before a new worker starts (so a bad file fails
//! the upgrade with its reason and the certificate in use stays); handshakes are bounded by a
//! timeout and a failed one closes only its own connection. ALPN offers `h2` and `http/1.1`;
//! what the client speaks is told from its first bytes, as on plain connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use handover::tls::rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake: the library's default, as for
/// `serve_tls`.
const HANDSHAKE_TIMEOUT: Duration = handover::DEFAULT_TLS_HANDSHAKE_TIMEOUT;

/// The protocols offered by ALPN, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The proxy's TLS settings: where the certificate and key come from, and the configuration
/// loaded from them last.
#[derive(Debug)]
pub struct TlsFront {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsFront {
    /// Loads `cert` (a PEM chain) and `key` (PEM, PKCS#8, PKCS#1 or SEC1); the error names
    /// the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFront, String> {
        let config = handover::tls::server_config(cert, key, &ALPN).map_err(|e| e.to_string())?;
        Ok(TlsFront {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            config: RwLock::new(config),
        })
    }

    /// Loads the files again; on success new handshakes use them, on error the configuration
    /// in use stays and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let config = handover::tls::server_config(&self.cert, &self.key, &ALPN)
            .map_err(|e| e.to_string())?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        tracing::info!("proxy: loaded the certificate {}", self.cert.display());
        Ok(())
    }

    /// The TLS handshake with a new client, bounded by [`HANDSHAKE_TIMEOUT`]; `None` (and the
    /// connection closed) if it fails.
    pub async fn accept(&self, tcp: TcpStream) -> Option<TlsStream<TcpStream>> {
        let config = Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()));
        let peer = tcp.peer_addr().ok();
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!("proxy: TLS handshake with {peer:?} failed: {e}");
                None
            }
            Err(_) => {
                tracing::debug!("proxy: TLS handshake with {peer:?} timed out");
                None
            }
        }
    }
}
