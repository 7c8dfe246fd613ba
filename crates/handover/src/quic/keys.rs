//! The lineage secret and the keys derived from it.
//!
//! A QUIC server keeps keys that outlive a connection's packets: the stateless-reset key (a
//! reset token must match the one sent with the CID), the Retry / NEW_TOKEN key (a client
//! returns its token later), the TLS session-ticket key (a client resumes later) and the key
//! that masks the generation tag in CIDs. quinn and rustls make these at random per endpoint,
//! so a new process would not understand what the old one handed out. Here every generation
//! of one server derives them from one 32-byte lineage secret ([`Secrets`]): the first
//! generation draws it, each upgrade passes it to the child over the local channel (`wire`'s
//! `Keys`, before the fork), and every key is HKDF-SHA256 of it with its own label.
//!
//! Session tickets are sealed with a key of the current 6-hour period (derived from the
//! secret and the period's number, so every generation computes the same one) and open for
//! that period and the one before: a ticket is good for 6 to 12 hours, like rustls's own
//! rotating ticketer. Each ticket has its own AEAD key, HKDF of the period key and 16 random
//! bytes sent with it, so no nonce is ever reused however many tickets are made. What this
//! cannot give is forward secrecy across the lineage: whoever reads the secret out of a
//! process's memory can open every ticket and token made since the lineage began (rustls's
//! ticketer erases old keys; a lineage cannot, since the secret must reach the next
//! generation). Restarting the server (not upgrading it) draws a new secret.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, hkdf, hmac};

use crate::quic::cid::CidKey;
use crate::tls::rustls;

/// The salt of the extract step: fixes the use of the secret to this protocol and version.
const SALT: &[u8] = b"handover quic lineage v1";

/// The HKDF labels, one per key: distinct, so no two keys are related.
const RESET_LABEL: &[u8] = b"handover quic stateless reset";
const TOKEN_LABEL: &[u8] = b"handover quic token";
const TICKET_LABEL: &[u8] = b"handover quic session ticket";
const CID_LABEL: &[u8] = b"handover quic cid";

/// How long one ticket key seals tickets (it opens them for one period more).
const TICKET_PERIOD_SECS: u64 = 6 * 3600;

/// The random bytes at the front of each ticket, from which its AEAD key is derived.
const TICKET_NONCE_LEN: usize = 16;

/// The lineage secret: 32 bytes every generation of one server shares.
pub(crate) struct Secrets {
    bytes: [u8; 32],
}

/// An HKDF output length for `ring`'s `expand` (32 bytes for every key here).
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl Secrets {
    /// A fresh random secret (the first generation, or a plain restart).
    pub(crate) fn random() -> std::io::Result<Self> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| std::io::Error::other("the OS random source failed"))?;
        Ok(Secrets { bytes })
    }

    /// The secret received from the previous generation.
    pub(crate) fn from_bytes(b: [u8; 32]) -> Self {
        Secrets { bytes: b }
    }

    /// The raw secret, to pass on to the next generation.
    pub(crate) fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// HKDF-SHA256 of the secret with `info`: 32 bytes.
    fn derive(&self, info: &[&[u8]]) -> [u8; 32] {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&self.bytes);
        let mut out = [0u8; 32];
        // Both cannot fail: 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
        prk.expand(info, Len32)
            .and_then(|okm| okm.fill(&mut out))
            .expect("HKDF-SHA256 of 32 bytes");
        out
    }

    /// The stateless-reset key (quinn's `EndpointConfig::new`): a reset token for a CID is
    /// the same whichever generation computes it.
    pub(crate) fn reset_key(&self) -> Arc<dyn quinn::crypto::HmacKey> {
        Arc::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            &self.derive(&[RESET_LABEL]),
        ))
    }

    /// The Retry / NEW_TOKEN key (quinn's `ServerConfig::new`): a token sealed by one
    /// generation opens at the next.
    pub(crate) fn token_key(&self) -> Arc<dyn quinn::crypto::HandshakeTokenKey> {
        Arc::new(hkdf::Prk::new_less_safe(
            hkdf::HKDF_SHA256,
            &self.derive(&[TOKEN_LABEL]),
        ))
    }

    /// The TLS session-ticket sealer (rustls's `ServerConfig::ticketer`): a ticket issued by
    /// one generation resumes at the next.
    pub(crate) fn ticketer(&self) -> Arc<dyn rustls::server::ProducesTickets> {
        Arc::new(Ticketer {
            key: self.derive(&[TICKET_LABEL]),
            rng: SystemRandom::new(),
        })
    }

    /// The key that masks the generation tag in connection IDs.
    pub(crate) fn cid_key(&self) -> CidKey {
        CidKey::new(&self.derive(&[CID_LABEL]))
    }
}

impl Drop for Secrets {
    // Best effort without `unsafe`: `black_box` keeps the compiler from dropping the store as
    // dead. Copies made by moves or `to_bytes` are not reached.
    fn drop(&mut self) {
        self.bytes = [0; 32];
        std::hint::black_box(&self.bytes);
    }
}

impl fmt::Debug for Secrets {
    // Never the secret: a Debug print may end up in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(..)")
    }
}

/// Session tickets sealed with the lineage's ticket key of the current period.
struct Ticketer {
    /// The ticket subkey of the lineage secret.
    key: [u8; 32],
    rng: SystemRandom,
}

impl Ticketer {
    /// The period `now` is in.
    fn period(now: SystemTime) -> u64 {
        now.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / TICKET_PERIOD_SECS)
    }

    /// The AEAD key of one ticket: HKDF of the period's key and the ticket's random bytes.
    fn ticket_key(&self, period: u64, nonce: &[u8]) -> aead::LessSafeKey {
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &self.key);
        let period = period.to_be_bytes();
        let mut key = [0u8; 32];
        prk.expand(&[&period, nonce], Len32)
            .and_then(|okm| okm.fill(&mut key))
            .expect("HKDF-SHA256 of 32 bytes");
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &key)
            .expect("a 32-byte ChaCha20-Poly1305 key");
        aead::LessSafeKey::new(unbound)
    }

    /// `plain` sealed in `period`: 16 random bytes, then the ciphertext and its tag.
    fn seal(&self, plain: &[u8], period: u64) -> Option<Vec<u8>> {
        let mut nonce = [0u8; TICKET_NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut data = plain.to_vec();
        // The nonce can be all zeros: every ticket key seals exactly one ticket.
        self.ticket_key(period, &nonce)
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key([0; 12]),
                aead::Aad::empty(),
                &mut data,
            )
            .ok()?;
        let mut ticket = nonce.to_vec();
        ticket.append(&mut data);
        Some(ticket)
    }

    /// The plaintext of a ticket sealed in `period` or the one before it.
    fn open(&self, ticket: &[u8], period: u64) -> Option<Vec<u8>> {
        if ticket.len() < TICKET_NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let (nonce, sealed) = ticket.split_at(TICKET_NONCE_LEN);
        [Some(period), period.checked_sub(1)]
            .into_iter()
            .flatten()
            .find_map(|p| {
                let mut data = sealed.to_vec();
                let plain = self
                    .ticket_key(p, nonce)
                    .open_in_place(
                        aead::Nonce::assume_unique_for_key([0; 12]),
                        aead::Aad::empty(),
                        &mut data,
                    )
                    .ok()?;
                Some(plain.to_vec())
            })
    }
}

impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    // The shortest time a ticket is accepted (it may be up to twice this).
    fn lifetime(&self) -> u32 {
        TICKET_PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(plain, Self::period(SystemTime::now()))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(cipher, Self::period(SystemTime::now()))
    }
}

impl fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticketer(..)")
    }
}

#[cfg(test)]
mod tests;
