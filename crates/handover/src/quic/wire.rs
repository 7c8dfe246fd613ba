//! Messages between generations on the local channel.

use std::net::{IpAddr, SocketAddr};

/// One message on a channel between two generations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// Parent -> child, first message on a new channel: the lineage secret.
    Keys {
        /// The lineage secret.
        secret: [u8; 32],
    },
    /// Parent -> child, after the parent stopped reading and before GO: the client-chosen
    /// DCIDs of handshakes in progress, each with the generation that owns it.
    InFlight {
        /// (client-chosen DCID, owning generation).
        handshakes: Vec<(Vec<u8>, u64)>,
    },
    /// Child -> an older generation: one datagram read from the shared socket.
    Forward {
        /// The datagram's source.
        src: SocketAddr,
        /// The local address it was sent to, when known.
        dst_ip: Option<IpAddr>,
        /// The ECN bits it arrived with.
        ecn: u8,
        /// The datagram.
        payload: &'a [u8],
    },
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// The message ended early.
    #[error("truncated {0}")]
    Truncated(&'static str),
}

/// Appends the encoding of `msg` to `out`.
pub(crate) fn encode(msg: &Message<'_>, out: &mut Vec<u8>) {
    let _ = (msg, out);
    todo!()
}

/// Decodes one message, strictly: exact lengths, known tags.
pub(crate) fn decode(buf: &[u8]) -> Result<Message<'_>, WireError> {
    let _ = buf;
    todo!()
}
