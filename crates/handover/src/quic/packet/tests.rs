//! packet.rs against hand-made headers, against quinn-proto's decoder (crafted, truncated,
//! mutated and random datagrams), and on real quinn traffic captured through a loopback relay.

use super::*;
use crate::quic::cid::CID_LEN;
use bytes::BytesMut;
use quinn_proto::{
    FixedLengthConnectionIdParser, LongType, PacketDecodeError, PartialDecode, ProtectedHeader,
};

const V1: u32 = 1;

/// RFC 9000's variable-length integer, in its shortest form or forced to `width` bytes.
fn varint(v: u64, width: Option<usize>) -> Vec<u8> {
    let width = width.unwrap_or(match v {
        0..=63 => 1,
        64..=16383 => 2,
        16384..=1_073_741_823 => 4,
        _ => 8,
    });
    let prefix = match width {
        1 => 0u8,
        2 => 1,
        4 => 2,
        _ => 3,
    };
    let bytes = v.to_be_bytes();
    let mut out = bytes[8 - width..].to_vec();
    out[0] |= prefix << 6;
    out
}

/// A long header: first byte, version, DCID, SCID, then `rest` as is.
fn long(first: u8, version: u32, dcid: &[u8], scid: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut d = vec![first];
    d.extend_from_slice(&version.to_be_bytes());
    d.push(dcid.len() as u8);
    d.extend_from_slice(dcid);
    d.push(scid.len() as u8);
    d.extend_from_slice(scid);
    d.extend_from_slice(rest);
    d
}

/// An Initial packet with `token` and a payload of `payload` bytes.
fn initial(dcid: &[u8], token: &[u8], payload: usize) -> Vec<u8> {
    let mut rest = varint(token.len() as u64, None);
    rest.extend_from_slice(token);
    rest.extend(varint(payload as u64, None));
    rest.extend(std::iter::repeat_n(0xaa, payload));
    long(0xc0, V1, dcid, &[7; 8], &rest)
}

/// A Handshake (`ty` 2) or 0-RTT (`ty` 1) packet with a payload of `payload` bytes.
fn standard(ty: u8, dcid: &[u8], payload: usize) -> Vec<u8> {
    let mut rest = varint(payload as u64, None);
    rest.extend(std::iter::repeat_n(0xbb, payload));
    long(0xc0 | (ty << 4), V1, dcid, &[9; 4], &rest)
}

fn short(dcid: &[u8], payload: usize) -> Vec<u8> {
    let mut d = vec![0x40];
    d.extend_from_slice(dcid);
    d.extend(std::iter::repeat_n(0xcc, payload));
    d
}

fn kind_of(d: &[u8], cid_len: usize) -> Option<Kind> {
    parse(d, cid_len).map(|h| h.kind)
}

#[test]
fn long_header_kinds_and_dcids() {
    let dcid = [1u8; 20];
    let cases = [
        (initial(&dcid, b"tok", 30), Kind::Initial),
        (standard(1, &dcid, 30), Kind::ZeroRtt),
        (standard(2, &dcid, 30), Kind::Handshake),
        (long(0xf0, V1, &dcid, &[2; 3], &[0; 24]), Kind::Retry),
        (
            long(0x80, 0, &dcid, &[2; 3], &1u32.to_be_bytes()),
            Kind::VersionNegotiation,
        ),
        (
            long(0xc0, 0x1234_5678, &dcid, &[2; 3], &[]),
            Kind::UnknownVersion,
        ),
        // A draft version quinn still speaks is parsed like v1.
        (long(0xe0, 0xff00_001d, &dcid, &[], &[0]), Kind::Handshake),
    ];
    for (d, kind) in cases {
        assert_eq!(
            parse(&d, CID_LEN),
            Some(Header { kind, dcid: &dcid }),
            "{d:02x?}"
        );
    }
}

#[test]
fn short_header_dcid_has_the_local_length() {
    let d = short(&[5; 16], 20);
    assert_eq!(
        parse(&d, 16),
        Some(Header {
            kind: Kind::Short,
            dcid: &[5; 16]
        })
    );
    assert_eq!(parse(&d, 8).unwrap().dcid, &[5; 8]);
    assert_eq!(parse(&d, 0).unwrap().dcid, &[] as &[u8]);
    // Shorter than the CID: nothing to route on.
    assert_eq!(parse(&d[..16], 16), None);
    assert_eq!(parse(&d[..17], 16).unwrap().dcid, &[5; 16]);
}

#[test]
fn empty_and_one_byte_datagrams_are_dropped() {
    assert_eq!(parse(&[], 16), None);
    assert_eq!(parse(&[0xc0], 16), None);
    // A short header with a zero-length local CID is one byte long and still valid.
    assert_eq!(kind_of(&[0x40], 0), Some(Kind::Short));
}

#[test]
fn cid_lengths_0_and_20_are_valid_21_is_not() {
    assert_eq!(
        parse(&initial(&[], b"", 10), 16).unwrap().dcid,
        &[] as &[u8]
    );
    assert_eq!(
        parse(&initial(&[3; 20], b"", 10), 16).unwrap().dcid,
        &[3; 20]
    );
    assert_eq!(parse(&initial(&[3; 21], b"", 10), 16), None);
    // Also for an unknown version (quinn refuses long CIDs in every version).
    assert_eq!(
        parse(&long(0xc0, 0x0a0a_0a0a, &[3; 21], &[], &[]), 16),
        None
    );
    assert_eq!(
        kind_of(&long(0xc0, 0x0a0a_0a0a, &[3; 20], &[], &[]), 16),
        Some(Kind::UnknownVersion)
    );
    // And for the source CID.
    assert_eq!(parse(&long(0xc0, V1, &[3; 8], &[4; 21], &[0, 0]), 16), None);
}

#[test]
fn every_truncation_of_a_valid_packet_is_dropped() {
    for d in [
        initial(&[1; 16], b"token", 40),
        standard(2, &[1; 16], 40),
        standard(1, &[1; 16], 40),
    ] {
        assert!(parse(&d, 16).is_some());
        for cut in 0..d.len() {
            assert_eq!(parse(&d[..cut], 16), None, "cut at {cut} of {}", d.len());
        }
    }
}

#[test]
fn the_length_field_is_checked_and_coalesced_packets_allowed() {
    let mut d = initial(&[1; 8], b"", 40);
    d.extend(standard(2, &[1; 8], 30));
    d.extend(short(&[1; 16], 10));
    assert_eq!(kind_of(&d, 16), Some(Kind::Initial));
    // A Length one past the datagram's end.
    let mut rest = varint(0, None);
    rest.extend(varint(41, None));
    rest.extend([0u8; 40]);
    assert_eq!(parse(&long(0xc0, V1, &[1; 8], &[], &rest), 16), None);
    // Lengths in every varint width, including the 8-byte one.
    for width in [1, 2, 4, 8] {
        let mut rest = varint(0, Some(width));
        rest.extend(varint(3, Some(width)));
        rest.extend([0u8; 3]);
        assert_eq!(
            kind_of(&long(0xc0, V1, &[1; 8], &[], &rest), 16),
            Some(Kind::Initial),
            "width {width}"
        );
    }
    // A token longer than the datagram.
    let mut rest = varint(100, None);
    rest.extend([0u8; 50]);
    assert_eq!(parse(&long(0xc0, V1, &[1; 8], &[], &rest), 16), None);
}

#[test]
fn a_greased_fixed_bit_is_accepted() {
    // RFC 9287: quinn greases the QUIC bit by default, so a packet with it cleared is valid.
    let mut d = short(&[2; 16], 10);
    d[0] &= !0x40;
    assert_eq!(kind_of(&d, 16), Some(Kind::Short));
    let mut d = initial(&[2; 16], b"", 10);
    d[0] &= !0x40;
    assert_eq!(kind_of(&d, 16), Some(Kind::Initial));
}

// ---- The differential test against quinn-proto ----

/// What quinn's endpoint makes of a datagram: `PartialDecode::new` decides (and gives the
/// DCID), `ProtectedHeader::decode` names the kind. `None`: quinn drops it.
fn reference(d: &[u8], cid_len: usize) -> Option<(Kind, Vec<u8>)> {
    let parser = FixedLengthConnectionIdParser::new(cid_len);
    let versions = quinn_proto::DEFAULT_SUPPORTED_VERSIONS;
    match PartialDecode::new(BytesMut::from(d), &parser, versions, true) {
        Ok((decoded, _rest)) => {
            let mut cursor = std::io::Cursor::new(BytesMut::from(d));
            let header = ProtectedHeader::decode(&mut cursor, &parser, versions, true)
                .expect("PartialDecode decoded it");
            let kind = match header {
                ProtectedHeader::Initial(_) => Kind::Initial,
                ProtectedHeader::Long {
                    ty: LongType::Handshake,
                    ..
                } => Kind::Handshake,
                ProtectedHeader::Long {
                    ty: LongType::ZeroRtt,
                    ..
                } => Kind::ZeroRtt,
                ProtectedHeader::Retry { .. } => Kind::Retry,
                ProtectedHeader::Short { .. } => Kind::Short,
                ProtectedHeader::VersionNegotiate { .. } => Kind::VersionNegotiation,
            };
            Some((kind, decoded.dst_cid().to_vec()))
        }
        Err(PacketDecodeError::UnsupportedVersion { dst_cid, .. }) => {
            Some((Kind::UnknownVersion, dst_cid.to_vec()))
        }
        Err(PacketDecodeError::InvalidHeader(_)) => None,
    }
}

/// Ours and quinn-proto's verdicts on `d`; panics with the datagram when they differ.
fn agree(d: &[u8], cid_len: usize) -> Option<Kind> {
    let ours = parse(d, cid_len).map(|h| (h.kind, h.dcid.to_vec()));
    let theirs = reference(d, cid_len);
    assert_eq!(ours, theirs, "cid_len {cid_len}, datagram {d:02x?}");
    ours.map(|(k, _)| k)
}

/// xorshift64*: reproducible "random" datagrams without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Valid datagrams of every kind, with the CID lengths and fields that matter.
fn crafted() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for dcid_len in [0usize, 1, 8, 16, 20] {
        let dcid = vec![0x5a; dcid_len];
        all.push(initial(&dcid, b"", 0));
        all.push(initial(&dcid, b"a-retry-token", 1200));
        all.push(standard(1, &dcid, 100));
        all.push(standard(2, &dcid, 100));
        all.push(long(0xf5, V1, &dcid, &[1; 8], &[0; 30]));
        all.push(long(0x80 | 0x2a, 0, &dcid, &[1; 8], &[0, 0, 0, 1]));
        all.push(long(0xc0, 0x0a1a_2a3a, &dcid, &[1; 8], &[0; 40]));
        all.push(long(0xc0, 0xff00_0022, &dcid, &[1; 8], &[0, 1, 0]));
        let mut coalesced = initial(&dcid, b"", 50);
        coalesced.extend(standard(2, &dcid, 50));
        all.push(coalesced);
    }
    all.push(initial(&[1; 21], b"", 10));
    for len in [0usize, 8, 16, 20, 40] {
        all.push(short(&vec![0x33; len.min(20)], len));
    }
    all
}

#[test]
fn agrees_with_quinn_proto() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen = std::collections::HashMap::<Option<Kind>, usize>::new();
    let mut count = 0usize;
    let mut check = |d: &[u8], seen: &mut std::collections::HashMap<_, _>| {
        for cid_len in [0, 8, CID_LEN, 20] {
            *seen.entry(agree(d, cid_len)).or_insert(0) += 1;
            count += 1;
        }
    };
    for d in crafted() {
        // The datagram, every truncation of it, and mutations of it.
        check(&d, &mut seen);
        for cut in 0..d.len().min(64) {
            check(&d[..cut], &mut seen);
        }
        for _ in 0..200 {
            let mut m = d.clone();
            for _ in 0..=rng.below(3) {
                match rng.below(4) {
                    // Flip bits in one of the header bytes, where the decisions are made.
                    0 if !m.is_empty() => {
                        let i = rng.below(m.len().min(48));
                        m[i] ^= 1 << rng.below(8);
                    }
                    // A random byte anywhere in the header.
                    1 if !m.is_empty() => {
                        let i = rng.below(m.len().min(48));
                        m[i] = rng.next() as u8;
                    }
                    // Cut the tail.
                    2 => m.truncate(rng.below(m.len() + 1)),
                    // Append bytes (coalesced garbage).
                    _ => {
                        let n = rng.below(40);
                        m.extend(rng.bytes(n));
                    }
                }
            }
            check(&m, &mut seen);
        }
    }
    // Random datagrams, the first byte and version drawn so that every branch is reached.
    let versions = [
        0u32,
        1,
        0xff00_001d,
        0xff00_0022,
        0x0a1a_2a3a,
        2,
        0x6b33_43cf,
    ];
    for _ in 0..5000 {
        let len = rng.below(80);
        let mut d = rng.bytes(len);
        if d.len() >= 6 && rng.below(2) == 0 {
            d[0] |= 0x80;
            let v = versions[rng.below(versions.len())];
            d[1..5].copy_from_slice(&v.to_be_bytes());
            // A plausible DCID length most of the time.
            d[5] = rng.below(23) as u8;
        }
        check(&d, &mut seen);
    }
    assert!(count > 50_000, "{count} comparisons");
    // Both verdicts and every kind were exercised.
    for kind in [
        None,
        Some(Kind::Initial),
        Some(Kind::ZeroRtt),
        Some(Kind::Handshake),
        Some(Kind::Retry),
        Some(Kind::Short),
        Some(Kind::VersionNegotiation),
        Some(Kind::UnknownVersion),
    ] {
        assert!(
            seen.get(&kind).copied().unwrap_or(0) >= 50,
            "{kind:?}: {seen:?}"
        );
    }
}

mod real;
