//! Reading the destination connection ID and the packet kind off a datagram, without
//! decrypting anything.
//!
//! The router looks at one thing: the first packet's destination connection ID (DCID), and
//! whether that packet is an Initial or 0-RTT. Handshake and short-header packets carry a CID
//! the server issued, with its generation tag. Initial and 0-RTT packets carry the client's own
//! choice until the client has the server's first Initial, and the server's CID after it (the
//! client's ACK coalesced with its Handshake Finished is such an Initial): `CidKey::tag_of`
//! tells the two apart. Packets coalesced behind the first one carry the same DCID (RFC 9000,
//! section 12.2), so the first is enough.
//!
//! The parse is quinn-proto's own header decode (`PartialDecode::new`, as quinn's endpoint calls
//! it) done again on a borrowed slice, so that routing costs no copy and no allocation: the same
//! fields are read with the same bounds, and a datagram quinn would drop is not routed either.
//! A differential test holds the two together on crafted, random and real datagrams. The
//! settings are quinn's defaults: the versions of `quinn_proto::DEFAULT_SUPPORTED_VERSIONS` and
//! a greased QUIC bit (the fixed bit is not checked, RFC 9287).

/// The versions quinn speaks by default (QUIC v1 and the late drafts); any other version in a
/// long header is [`Kind::UnknownVersion`].
const SUPPORTED_VERSIONS: &[u32] = quinn_proto::DEFAULT_SUPPORTED_VERSIONS;

/// The header form bit: set for long headers.
const LONG_FORM: u8 = 0x80;

/// The longest connection ID QUIC v1 allows (quinn refuses longer ones in any version).
const MAX_CID_LEN: usize = 20;

/// What kind of QUIC packet a datagram starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A long-header Initial packet: its DCID was chosen by the client.
    Initial,
    /// A long-header 0-RTT packet: its DCID is the client's, like the Initial's.
    ZeroRtt,
    /// A long-header Handshake packet: its DCID is one the server issued.
    Handshake,
    /// A long-header Retry packet (only servers send these; a server drops them).
    Retry,
    /// A short-header (1-RTT) packet: its DCID is one the server issued.
    Short,
    /// A Version Negotiation packet (version 0; only servers send these).
    VersionNegotiation,
    /// A long header with a version quinn does not speak (quinn answers with Version
    /// Negotiation when the datagram is large enough).
    UnknownVersion,
}

/// The routing-relevant part of a datagram's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    /// The packet's kind.
    pub kind: Kind,
    /// The destination connection ID (borrowed from the datagram).
    pub dcid: &'a [u8],
}

/// The header of `datagram`'s first packet, or `None` when it is not a QUIC packet that can be
/// routed (quinn would drop it too: drop it). `local_cid_len` is the length of the CIDs this
/// server issues, which is the DCID length of every short-header packet sent to it.
pub(crate) fn parse(datagram: &[u8], local_cid_len: usize) -> Option<Header<'_>> {
    let mut r = Reader(datagram);
    let first = r.u8()?;
    if first & LONG_FORM == 0 {
        let dcid = r.take(local_cid_len)?;
        return Some(Header {
            kind: Kind::Short,
            dcid,
        });
    }
    let version = r.u32()?;
    let dcid = r.cid()?;
    let _scid = r.cid()?;
    if version == 0 {
        return Some(Header {
            kind: Kind::VersionNegotiation,
            dcid,
        });
    }
    if !SUPPORTED_VERSIONS.contains(&version) {
        // The rest of the header is version-specific: nothing more can be checked.
        return Some(Header {
            kind: Kind::UnknownVersion,
            dcid,
        });
    }
    // v1 and the drafts share the long packet types (QUIC v2 would rotate them, RFC 9369).
    let kind = match (first >> 4) & 0x3 {
        0 => Kind::Initial,
        1 => Kind::ZeroRtt,
        2 => Kind::Handshake,
        _ => Kind::Retry,
    };
    match kind {
        Kind::Initial => {
            let token_len = r.varint()?;
            r.take(usize::try_from(token_len).ok()?)?;
            let len = r.varint()?;
            r.payload(len)?;
        }
        Kind::ZeroRtt | Kind::Handshake => {
            let len = r.varint()?;
            r.payload(len)?;
        }
        _ => {}
    }
    Some(Header { kind, dcid })
}

/// A cursor over the datagram; every read is bounds-checked and `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A long header's length-prefixed connection ID.
    fn cid(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.u8()?);
        if len > MAX_CID_LEN {
            return None;
        }
        self.take(len)
    }

    /// A variable-length integer (RFC 9000, section 16): the top two bits give its length.
    fn varint(&mut self) -> Option<u64> {
        let first = self.u8()?;
        let len = 1usize << (first >> 6);
        let mut value = u64::from(first & 0x3f);
        for &b in self.take(len - 1)? {
            value = (value << 8) | u64::from(b);
        }
        Some(value)
    }

    /// The Length field's promise: the packet's payload is in the datagram (more may follow:
    /// coalesced packets).
    fn payload(&self, len: u64) -> Option<()> {
        (len <= self.0.len() as u64).then_some(())
    }
}

#[cfg(test)]
mod tests;
