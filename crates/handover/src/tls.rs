//! TLS with rustls (the `ring` provider), behind the `tls` feature: loading a certificate and
//! key from PEM files.

mod pem;

pub use pem::{load_pem, server_config, TlsError};
/// The rustls this crate is built with, so applications and the CLI name the same types.
pub use tokio_rustls::rustls;
