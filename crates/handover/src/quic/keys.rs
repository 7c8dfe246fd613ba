//! The lineage secret and the keys derived from it.

use std::sync::Arc;

use crate::quic::cid::CidKey;
use crate::tls::rustls;

/// The lineage secret: 32 bytes every generation of one server shares.
pub(crate) struct Secrets {
    bytes: [u8; 32],
}

impl Secrets {
    /// A fresh random secret (the first generation).
    pub(crate) fn random() -> std::io::Result<Self> {
        todo!()
    }

    /// The secret received from the previous generation.
    pub(crate) fn from_bytes(b: [u8; 32]) -> Self {
        Secrets { bytes: b }
    }

    /// The raw secret, to pass on to the next generation.
    pub(crate) fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// The stateless-reset key.
    pub(crate) fn reset_key(&self) -> Arc<dyn quinn::crypto::HmacKey> {
        todo!()
    }

    /// The Retry / NEW_TOKEN key.
    pub(crate) fn token_key(&self) -> Arc<dyn quinn::crypto::HandshakeTokenKey> {
        todo!()
    }

    /// The TLS session-ticket encrypter.
    pub(crate) fn ticketer(&self) -> Arc<dyn rustls::server::ProducesTickets> {
        todo!()
    }

    /// The key that masks the generation tag in connection IDs.
    pub(crate) fn cid_key(&self) -> CidKey {
        todo!()
    }
}
