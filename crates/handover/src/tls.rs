//! TLS with rustls (the `ring` provider), behind the `tls` feature.
//!
//! - [`load_pem`] and [`server_config`] read a certificate chain and key from PEM files;
//! - [`TlsAcceptor`] does the handshake on connections from [`crate::Listener::accept`], for
//!   any protocol, with the drain's rules: a handshake in progress when draining starts is
//!   counted and finished, bounded by [`crate::Builder::tls_handshake_timeout`] (default
//!   10 s), and a failed one is closed cleanly;
//! - [`crate::http::serve_tls`] serves HTTP/1.1 and HTTP/2 over TLS with the same lossless
//!   drain as plain HTTP.
//!
//! # Certificate rotation
//!
//! Every upgrade starts a new process, which reads the certificate and key files again when it
//! builds its configuration. So rotating a certificate is: replace the files, then upgrade
//! (`kill -USR2`, `handover upgrade`). New connections get the new certificate from the new
//! generation; connections already open finish on the old one, through the usual drain.
//! Nothing fails. An application that builds its configuration before
//! [`crate::Handover::ready`] (as `examples/hello.rs` does) also gets a safe failure: with a bad
//! new file the new process cannot start, the upgrade is rolled back, the old one serves on.
//!
//! Not yet: client certificates (mTLS), choosing among several certificates by SNI.

mod accept;
mod pem;

pub use accept::{TlsAcceptor, TlsConnection};
pub use pem::{load_pem, server_config, TlsError};
/// The rustls this crate is built with, so applications and the CLI name the same types.
pub use tokio_rustls::rustls;
