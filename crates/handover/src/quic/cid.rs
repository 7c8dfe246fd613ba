//! Connection IDs that name the generation that issued them.
//!
//! Every connection ID (CID) a handover QUIC server issues is [`CID_LEN`] = 16 bytes:
//!
//! ```text
//! byte 0       bytes 1..12                       bytes 12..16
//! tag ^ h[0]   11 random bytes (fresh per CID)   h[1..5]
//! h = the first 5 bytes of AES-256(cid_key, bytes 1..12 || 5 zero bytes)
//! ```
//!
//! The PRF is one AES block, ring's QUIC header-protection primitive (the computation every
//! QUIC packet already pays for). The router runs it on every datagram: parse and tag take
//! about 40 ns together (optimised build, loaded 2-core machine), where HMAC-SHA256 took
//! about 350 ns.
//!
//! `tag` is the issuing generation's number modulo 256 ([`generation_tag`]); `cid_key` is
//! derived from the lineage secret that every generation of one server shares (`quic/keys`), so
//! any generation reads the tag of any CID ([`CidKey::tag_of`]) and routes the datagram to its
//! owner. Only live generations are routable, and at most a handful are alive at once (one
//! serving, a few draining), so the live generation with a given residue is unique; a tag that
//! names no live generation is served locally (quinn then answers with a stateless reset, valid
//! because the reset key is shared too).
//!
//! The 4 check bytes tell our CIDs from anyone else's: a 16-byte string not made with the
//! lineage key passes with probability 2^-32. The router needs that for Initial packets: the
//! first Initials carry the client's own DCID (any length, 16 included), but once the client
//! has the server's first Initial it sends the rest of its Initials (typically an ACK coalesced
//! with its Handshake Finished) to the server's CID. An Initial whose DCID checks as ours
//! belongs to the handshake of the generation its tag names; one whose DCID does not is the
//! client's choice (a new connection, or one in the in-flight table). quinn's
//! `ConnectionIdGenerator::validate` uses the same check, so quinn sends stateless resets only
//! for CIDs of this lineage, not for random garbage.
//!
//! # What an observer learns
//!
//! RFC 9000 (section 5.1) requires that CIDs carry nothing an outsider can use to correlate
//! them. Without the lineage key:
//!
//! - bytes 1..12 are 88 bits of fresh randomness, unrelated between CIDs (two of a billion CIDs
//!   collide with a probability below 10^-8);
//! - bytes 0 and 12..16 are a keyed PRF of those random bytes, byte 0 XOR the tag: uniformly
//!   distributed and independent of the tag, so CIDs of one generation share no constant
//!   prefix, and two CIDs of one connection (or of one generation) look like any two random
//!   strings;
//! - what is left is what every server shows: the length (16, the same for all connections of
//!   all generations) and the fact that the server uses CIDs.
//!
//! So an observer cannot tell which generation issued a CID, how many generations there were,
//! or whether two CIDs belong to one connection. What it could measure is timing: a datagram
//! for a draining generation takes one extra local hop (a Unix datagram), which tells at most
//! that an upgrade happened recently, something the server's behaviour reveals anyway. Nor can
//! it forge a CID of this server without having seen one. The check does not cover byte 0, so
//! an attacker who has seen a CID can change its tag: the packet then goes to another
//! generation, which cannot decrypt it and drops it (or, for a dead tag, answers with a
//! stateless reset whose token is bound to the altered CID, which the client ignores). That
//! is no more than an on-path attacker can do by dropping the packet.

use std::sync::Arc;
use std::time::Duration;

use ring::aead::quic::{HeaderProtectionKey, AES_256};
use ring::rand::{SecureRandom, SystemRandom};

/// The length of every connection ID this server issues: 1 masked tag byte, 11 random bytes
/// and 4 check bytes.
pub(crate) const CID_LEN: usize = 16;

/// Where the random bytes are: after the tag, before the check bytes.
const RANDOM: std::ops::Range<usize> = 1..12;

/// How many random bytes a CID has.
const RANDOM_LEN: usize = 11;

/// The tag a generation puts in its connection IDs: its number modulo 256.
pub(crate) fn generation_tag(generation: u64) -> u8 {
    (generation % 256) as u8
}

/// The key that masks the tag byte, derived from the lineage secret (`Secrets::cid_key`).
#[derive(Clone)]
pub(crate) struct CidKey {
    // Shared: every generator quinn makes (one per connection) holds a copy.
    key: Arc<HeaderProtectionKey>,
}

impl CidKey {
    /// A key from raw key bytes (the lineage secret's CID subkey).
    pub(crate) fn new(bytes: &[u8; 32]) -> Self {
        CidKey {
            key: Arc::new(
                HeaderProtectionKey::new(&AES_256, bytes).expect("a 32-byte AES-256 key"),
            ),
        }
    }

    /// The tag mask (byte 0 of the result) and the check bytes (1..5) for these random bytes.
    fn prf(&self, random: &[u8]) -> [u8; 5] {
        let mut block = [0u8; 16];
        block[..RANDOM_LEN].copy_from_slice(random);
        // Cannot fail: the sample is the 16 bytes AES takes.
        self.key.new_mask(&block).expect("a 16-byte sample")
    }

    /// The generation tag of `dcid`, or `None` unless it is a CID of this lineage: [`CID_LEN`]
    /// bytes long with valid check bytes (anything else is not a CID this server issued).
    pub(crate) fn tag_of(&self, dcid: &[u8]) -> Option<u8> {
        if dcid.len() != CID_LEN {
            return None;
        }
        let h = self.prf(&dcid[RANDOM]);
        // Every byte compared, whatever the first difference, so that the time taken does not
        // tell a prober how many check bytes it got right.
        let diff = dcid[RANDOM.end..]
            .iter()
            .zip(&h[1..5])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then(|| dcid[0] ^ h[0])
    }

    /// A CID carrying `tag`, with `random` as bytes 1..12.
    fn seal(&self, tag: u8, random: &[u8; RANDOM_LEN]) -> [u8; CID_LEN] {
        let h = self.prf(random);
        let mut cid = [0u8; CID_LEN];
        cid[0] = tag ^ h[0];
        cid[RANDOM].copy_from_slice(random);
        cid[RANDOM.end..].copy_from_slice(&h[1..5]);
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
        let mut random = [0u8; RANDOM_LEN];
        // The trait cannot return an error. The OS's random source fails only when the kernel
        // has none (no getrandom, no /dev/urandom), where no TLS handshake could work either.
        self.rng
            .fill(&mut random)
            .expect("the OS random source failed");
        quinn::ConnectionId::new(&self.key.seal(self.tag, &random))
    }

    // quinn asks this of a short-header packet for no connection it knows, before it answers
    // with a stateless reset: a CID of this lineage (any generation's) gets one, garbage does
    // not. Whether the tag names a live generation is the router's business.
    fn validate(&self, cid: &quinn::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        match self.key.tag_of(cid) {
            Some(_) => Ok(()),
            None => Err(quinn_proto::InvalidCid),
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
    fn another_key_reads_no_tag() {
        let mut cids = TaggedCids::new(42, key(1));
        let other = key(2);
        for _ in 0..2048 {
            assert_eq!(other.tag_of(&cids.generate_cid()), None);
        }
    }

    #[test]
    fn check_bytes_are_not_constant_either() {
        let mut cids = TaggedCids::new(3, key(1));
        let tails: HashSet<[u8; 4]> = (0..512)
            .map(|_| cids.generate_cid()[12..].try_into().unwrap())
            .collect();
        assert_eq!(tails.len(), 512);
    }

    #[test]
    fn wrong_length_has_no_tag() {
        let k = key(5);
        let own = TaggedCids::new(8, k.clone()).generate_cid();
        for len in [0, 1, 8, 15, 17, 20] {
            let mut cid = own.to_vec();
            cid.resize(len, 0);
            assert_eq!(k.tag_of(&cid), None, "len {len}");
        }
    }

    #[test]
    fn only_cids_of_the_lineage_have_a_tag() {
        // Random 16-byte strings (a client's own Initial DCID may be one) pass the 32-bit
        // check with probability 2^-32: none of 100,000 should.
        let k = key(6);
        let rng = SystemRandom::new();
        let mut bytes = [0u8; CID_LEN];
        for _ in 0..100_000 {
            rng.fill(&mut bytes).unwrap();
            assert_eq!(k.tag_of(&bytes), None, "{bytes:02x?}");
        }
        // A CID of ours with any single bit flipped outside byte 0 is not ours any more.
        let own = TaggedCids::new(8, k.clone()).generate_cid();
        for bit in 8..CID_LEN * 8 {
            let mut cid = own.to_vec();
            cid[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(k.tag_of(&cid), None, "bit {bit}");
        }
    }

    #[test]
    fn validate_accepts_every_generation_of_the_lineage_only() {
        let mut cids = TaggedCids::new(1, key(3));
        let own = cids.generate_cid();
        assert!(cids.validate(&own).is_ok());
        // Another generation of the same lineage: valid (quinn may answer with a reset).
        let older = TaggedCids::new(200, key(3)).generate_cid();
        assert!(cids.validate(&older).is_ok());
        // Another lineage, or the wrong length: not ours.
        let foreign = TaggedCids::new(1, key(4)).generate_cid();
        assert!(cids.validate(&foreign).is_err());
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
