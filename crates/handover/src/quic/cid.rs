//! Connection IDs that name the generation that issued them.
//!
//! Every connection ID (CID) a handover QUIC server issues is [`CID_LEN`] = 16 bytes:
//!
//! ```text
//! byte 0        bytes 1..16
//! tag ^ mask    15 random bytes (a fresh draw from the OS for every CID)
//! mask = HMAC-SHA256(cid_key, bytes 1..16)[0]
//! ```
//!
//! `tag` is the issuing generation's number modulo 256 ([`generation_tag`]); `cid_key` is
//! derived from the lineage secret that every generation of one server shares (`quic/keys`), so
//! any generation unmasks the tag of any CID ([`CidKey::tag_of`]) and routes the datagram to its
//! owner. Only live generations are routable, and at most a handful are alive at once (one
//! serving, a few draining), so the live generation with a given residue is unique; a tag that
//! names no live generation is served locally (quinn then answers with a stateless reset, valid
//! because the reset key is shared too).
//!
//! # What an observer learns
//!
//! RFC 9000 (section 5.1) requires that CIDs carry nothing an outsider can use to correlate
//! them. Without the lineage key:
//!
//! - bytes 1..16 are 120 bits of fresh randomness, unrelated between CIDs;
//! - byte 0 is the tag XOR one byte of a keyed PRF of those random bytes, so it is uniformly
//!   distributed and independent of the tag: CIDs of one generation share no constant prefix,
//!   and two CIDs of one connection (or of one generation) look like any two random strings;
//! - what is left is what every server shows: the length (16, the same for all connections of
//!   all generations) and the fact that the server uses CIDs.
//!
//! So an observer cannot tell which generation issued a CID, how many generations there were,
//! or whether two CIDs belong to one connection. What it could measure is timing: a datagram
//! for a draining generation takes one extra local hop (a Unix datagram), which tells at most
//! that an upgrade happened recently, something the server's behaviour reveals anyway. The
//! 8-bit tag is not authenticated: a forged CID with a valid length reaches some live
//! generation, which drops it as it drops any undecryptable packet.

use std::time::Duration;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The length of every connection ID this server issues: 1 masked tag byte and 15 random bytes
/// (120 bits, far beyond the point where two connections could collide by chance).
pub(crate) const CID_LEN: usize = 16;

/// The tag a generation puts in its connection IDs: its number modulo 256.
pub(crate) fn generation_tag(generation: u64) -> u8 {
    (generation % 256) as u8
}

/// The key that masks the tag byte, derived from the lineage secret (`Secrets::cid_key`).
#[derive(Clone)]
pub(crate) struct CidKey {
    key: hmac::Key,
}

impl CidKey {
    /// A key from raw key bytes (the lineage secret's CID subkey).
    pub(crate) fn new(bytes: &[u8; 32]) -> Self {
        CidKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// The mask for byte 0 of a CID whose other bytes are `rest`.
    fn mask(&self, rest: &[u8]) -> u8 {
        hmac::sign(&self.key, rest).as_ref()[0]
    }

    /// The generation tag of `dcid`, or `None` unless it is [`CID_LEN`] bytes long (then it
    /// is not a CID this server issued).
    pub(crate) fn tag_of(&self, dcid: &[u8]) -> Option<u8> {
        if dcid.len() != CID_LEN {
            return None;
        }
        Some(dcid[0] ^ self.mask(&dcid[1..]))
    }

    /// A CID carrying `tag`, with `random` as bytes 1..16.
    fn seal(&self, tag: u8, random: &[u8; CID_LEN - 1]) -> [u8; CID_LEN] {
        let mut cid = [0u8; CID_LEN];
        cid[1..].copy_from_slice(random);
        cid[0] = tag ^ self.mask(random);
        cid
    }
}

impl std::fmt::Debug for CidKey {
    // Never the key itself: a Debug print may end up in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CidKey(..)")
    }
}

/// A `quinn::ConnectionIdGenerator` that issues CIDs with one generation's tag.
pub(crate) struct TaggedCids {
    tag: u8,
    key: CidKey,
    rng: SystemRandom,
}

impl TaggedCids {
    /// A generator for the generation whose tag is `tag` ([`generation_tag`]).
    pub(crate) fn new(tag: u8, key: CidKey) -> Self {
        TaggedCids {
            tag,
            key,
            rng: SystemRandom::new(),
        }
    }
}

impl quinn::ConnectionIdGenerator for TaggedCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut random = [0u8; CID_LEN - 1];
        // The trait cannot return an error. The OS's random source fails only when the kernel
        // has none (no getrandom, no /dev/urandom), where no TLS handshake could work either.
        self.rng
            .fill(&mut random)
            .expect("the OS random source failed");
        quinn::ConnectionId::new(&self.key.seal(self.tag, &random))
    }

    // Any 16-byte CID carries some tag, so the length is all there is to check here; the
    // router decides whether the tag names a live generation.
    fn validate(&self, cid: &quinn::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        if cid.len() == CID_LEN {
            Ok(())
        } else {
            Err(quinn_proto::InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    // CIDs do not expire: routing depends on the tag only, and quinn retires them with their
    // connection.
    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::ConnectionIdGenerator;
    use std::collections::HashSet;

    fn key(seed: u8) -> CidKey {
        CidKey::new(&[seed; 32])
    }

    #[test]
    fn every_tag_round_trips() {
        let k = key(7);
        for tag in 0..=255u8 {
            let mut cids = TaggedCids::new(tag, k.clone());
            for _ in 0..4 {
                let cid = cids.generate_cid();
                assert_eq!(cid.len(), CID_LEN);
                assert_eq!(k.tag_of(&cid), Some(tag), "tag {tag}, cid {cid:?}");
            }
        }
    }

    #[test]
    fn tag_is_the_generation_modulo_256() {
        assert_eq!(generation_tag(0), 0);
        assert_eq!(generation_tag(1), 1);
        assert_eq!(generation_tag(255), 255);
        assert_eq!(generation_tag(256), 0);
        assert_eq!(generation_tag(257), 1);
        assert_eq!(generation_tag(u64::MAX), 255);
    }

    #[test]
    fn byte_0_is_not_a_constant_prefix() {
        // 512 CIDs of one generation: with a uniform byte 0 about 221 distinct values are
        // expected, and fewer than 150 has a probability far below 1e-20. A constant prefix
        // (the tag in clear) would give exactly one.
        let mut cids = TaggedCids::new(3, key(1));
        let firsts: HashSet<u8> = (0..512).map(|_| cids.generate_cid()[0]).collect();
        assert!(
            firsts.len() >= 150,
            "only {} distinct first bytes",
            firsts.len()
        );
    }

    #[test]
    fn cids_are_distinct() {
        let mut cids = TaggedCids::new(9, key(2));
        let all: HashSet<Vec<u8>> = (0..10_000).map(|_| cids.generate_cid().to_vec()).collect();
        assert_eq!(all.len(), 10_000);
    }

    #[test]
    fn another_key_reads_another_tag() {
        // A CID read with the wrong lineage key gives a tag unrelated to the real one: over
        // many CIDs it matches only about 1 in 256 times.
        let mut cids = TaggedCids::new(42, key(1));
        let other = key(2);
        let hits = (0..2048)
            .filter(|_| other.tag_of(&cids.generate_cid()) == Some(42))
            .count();
        assert!(hits < 40, "{hits} of 2048 matched under another key");
    }

    #[test]
    fn wrong_length_has_no_tag() {
        let k = key(5);
        for len in [0, 1, 8, 15, 17, 20] {
            assert_eq!(k.tag_of(&vec![0u8; len]), None, "len {len}");
        }
        assert!(k.tag_of(&[0u8; CID_LEN]).is_some());
    }

    #[test]
    fn validate_checks_the_length() {
        let mut cids = TaggedCids::new(1, key(3));
        let own = cids.generate_cid();
        assert!(cids.validate(&own).is_ok());
        for len in [0, 4, 8, 15, 17, 20] {
            let cid = quinn::ConnectionId::new(&vec![1u8; len]);
            assert!(cids.validate(&cid).is_err(), "len {len}");
        }
        assert_eq!(cids.cid_len(), CID_LEN);
        assert_eq!(cids.cid_lifetime(), None);
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", key(9)), "CidKey(..)");
    }
}
