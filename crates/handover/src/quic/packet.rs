//! Reading the destination connection ID and the packet kind off a datagram.

/// What kind of QUIC packet a datagram starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A long-header Initial packet.
    Initial,
    /// A long-header 0-RTT packet.
    ZeroRtt,
    /// A long-header Handshake packet.
    Handshake,
    /// A long-header Retry packet.
    Retry,
    /// A short-header (1-RTT) packet.
    Short,
    /// A Version Negotiation packet (version 0).
    VersionNegotiation,
    /// A long header with a version this server does not speak.
    UnknownVersion,
}

/// The routing-relevant part of a datagram's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    /// The packet's kind.
    pub kind: Kind,
    /// The destination connection ID.
    pub dcid: &'a [u8],
}

/// The header of `datagram`'s first packet, or `None` when it is not a QUIC packet that can be
/// routed (drop it). `local_cid_len` is the length of the CIDs this server issues.
pub(crate) fn parse(datagram: &[u8], local_cid_len: usize) -> Option<Header<'_>> {
    let _ = (datagram, local_cid_len);
    todo!()
}
