//! Loading a certificate chain and its private key from PEM files.
//!
//! The files are read whole and parsed by `rustls-pki-types` (rustls's own PEM reader), so
//! nothing here interprets untrusted bytes beyond telling one failure from another.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio_rustls::rustls;

/// Why a certificate or key could not be loaded. Its message names the file and what is wrong,
/// e.g. `cannot load /etc/app/key.pem: no private key found`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read (missing, not readable, a directory...).
    #[error("cannot load {}: {}", path.display(), io_reason(source))]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM section at all, or a malformed one.
    #[error("cannot load {}: not PEM{}", path.display(), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said, when it found a broken section.
        detail: Option<String>,
    },
    /// The certificate file is PEM but holds no `CERTIFICATE` section.
    #[error("cannot load {}: no certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file is PEM but holds no `PRIVATE KEY`, `RSA PRIVATE KEY` or
    /// `EC PRIVATE KEY` section.
    #[error("cannot load {}: no private key found", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is there but rustls cannot sign with it (an unsupported algorithm or curve, or
    /// a damaged key).
    #[error("cannot load {}: unusable private key ({reason})", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// The private key is not the one the first certificate of the chain was issued for.
    #[error("cannot load {}: the key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration (for example no protocol version in common with the
    /// provider).
    #[error("cannot make a TLS configuration: {0}")]
    Config(rustls::Error),
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// The crypto provider every TLS object of this crate uses: `ring`, which builds with a C
/// compiler alone (no cmake, no Go), unlike aws-lc-rs.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain (leaf first) and a private key (PKCS#8, PKCS#1 or SEC1) from PEM
/// files, and checks that the key matches the first certificate.
///
/// The files are read on every call; a server reads them once at start-up, so each new
/// generation started by an upgrade picks up whatever the files hold then: replacing the files
/// and upgrading rotates the certificate.
pub fn load_pem(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_chain(cert)?;
    let key_der = load_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|reason| TlsError::BadKey {
            path: key.to_owned(),
            reason,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half; nothing to compare, so accept it
        // (rustls's own `with_single_cert` does the same).
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(_) => Err(TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
    }
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, no client certificates)
/// for the chain and key in these PEM files (see [`load_pem`]), offering the ALPN protocols in
/// `alpn` in order of preference, e.g. `&[b"h2", b"http/1.1"]`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certified = Arc::new(load_pem(cert, key)?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every PEM section of a file, in order; `NotPem` if there is none or one is broken.
fn sections(path: &Path) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let not_pem = |detail| TlsError::NotPem {
        path: path.to_owned(),
        detail,
    };
    let mut found = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        match item {
            Ok(section) => found.push(section),
            Err(e) => return Err(not_pem(Some(pem_reason(&e)))),
        }
    }
    if found.is_empty() {
        return Err(not_pem(None));
    }
    Ok(found)
}

fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".to_owned(),
        pem::Error::Base64Decode(_) => "bad base64".to_owned(),
        pem::Error::SectionTooLarge => "a section is too large".to_owned(),
        other => format!("{other:?}"),
    }
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = sections(path)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The first private key of the file, whichever of the three encodings it is in.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    sections(path)?
        .into_iter()
        .find_map(|(kind, der)| match kind {
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                PrivateKeyDer::from_pem(kind, der)
            }
            _ => None,
        })
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: path.to_owned(),
        })
}

#[cfg(test)]
mod tests;
