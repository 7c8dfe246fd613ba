//! Messages between generations on the local channel (a Unix datagram socket per pair of
//! generations): one message per datagram, encoded and decoded here, strictly.
//!
//! Every message starts with the format version and a tag, then fixed fields in network
//! byte order:
//!
//! ```text
//! Keys      1 | 1 | secret (32)
//! InFlight  1 | 2 | count (u16, <= MAX_IN_FLIGHT) | count x (len (u8, <= 20) | dcid | generation (u64))
//! Forward   1 | 3 | src | dst_ip | ecn (u8, <= 3) | len (u16, 1..=MAX_PAYLOAD) | payload
//! src       4 | ip (4) | port (u16)   or   6 | ip (16) | port (u16) | scope id (u32)
//! dst_ip    0   or   4 | ip (4)   or   6 | ip (16)
//! ```
//!
//! The two ends may be different builds (an upgrade usually is one), so the version byte comes
//! first: a peer with another format is refused with an error that says so, instead of being
//! misread. Decoding takes nothing on trust: every length is checked against the bytes there,
//! counts against their bound, and a message must end exactly where its fields do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The format of these messages; bump it on any change.
pub(crate) const VERSION: u8 = 1;

const TAG_KEYS: u8 = 1;
const TAG_IN_FLIGHT: u8 = 2;
const TAG_FORWARD: u8 = 3;

/// The longest UDP payload there can be (65,535 less the 8-byte UDP header), so any datagram
/// read from the shared socket can be forwarded.
pub(crate) const MAX_PAYLOAD: usize = 65_527;

/// The longest DCID QUIC v1 allows (and `packet::parse` returns).
pub(crate) const MAX_CID_LEN: usize = 20;

/// The most handshakes one `InFlight` message carries; a longer table is sent as several
/// messages. 2,048 entries of at most 29 bytes keep the message under [`MAX_MESSAGE`].
pub(crate) const MAX_IN_FLIGHT: usize = 2048;

/// The longest message: a `Forward` of [`MAX_PAYLOAD`] bytes from an IPv6 source to an IPv6
/// address (65,572 bytes). Linux's default socket buffers (`net.core.wmem_default`, 208 KiB)
/// take it in one Unix datagram.
pub(crate) const MAX_MESSAGE: usize = 2 + (1 + 16 + 2 + 4) + (1 + 16) + 1 + 2 + MAX_PAYLOAD;

/// One message on a channel between two generations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// Parent -> child, first message on a new channel: the lineage secret.
    Keys {
        /// The lineage secret (`keys::Secrets::to_bytes`).
        secret: [u8; 32],
    },
    /// Parent -> child, after the parent stopped reading and before GO: the client-chosen
    /// DCIDs of handshakes in progress, each with the generation that owns it.
    InFlight {
        /// (client-chosen DCID, owning generation), at most [`MAX_IN_FLIGHT`] entries, each
        /// DCID at most [`MAX_CID_LEN`] bytes.
        handshakes: Vec<(Vec<u8>, u64)>,
    },
    /// Child -> an older generation: one datagram read from the shared socket.
    Forward {
        /// The datagram's source (where the answer goes).
        src: SocketAddr,
        /// The local address it was sent to, when the socket reported it.
        dst_ip: Option<IpAddr>,
        /// The ECN codepoint it arrived with (0..=3; 0 is "not ECN-capable").
        ecn: u8,
        /// The datagram, 1 to [`MAX_PAYLOAD`] bytes.
        payload: &'a [u8],
    },
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// Nothing at all.
    #[error("empty message")]
    Empty,
    /// Another format version (a build of handover that speaks another format).
    #[error("message format version {0}, this build speaks version {VERSION}")]
    Version(u8),
    /// A tag that names no message.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// The message ended inside a field.
    #[error("message truncated in {0}")]
    Truncated(&'static str),
    /// Bytes after the last field.
    #[error("{extra} bytes after the end of a {message} message")]
    Trailing {
        /// The message's name.
        message: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// An address family other than 4 or 6 (or 0 for an absent address).
    #[error("unknown address family {family} in {field}")]
    Family {
        /// The field.
        field: &'static str,
        /// The byte found.
        family: u8,
    },
    /// A connection ID longer than QUIC allows.
    #[error("connection ID of {0} bytes (at most {MAX_CID_LEN})")]
    CidTooLong(usize),
    /// More handshakes than one message may carry.
    #[error("{0} handshakes in one message (at most {MAX_IN_FLIGHT})")]
    TooMany(usize),
    /// An ECN value outside the 2-bit field.
    #[error("ECN codepoint {0} (at most 3)")]
    Ecn(u8),
    /// A forwarded datagram that is empty or longer than UDP allows.
    #[error("forwarded datagram of {0} bytes (1 to {MAX_PAYLOAD})")]
    PayloadSize(usize),
}

/// Appends the encoding of `msg` to `out`.
///
/// # Panics
///
/// If `msg` breaks a bound that [`decode`] checks (more than [`MAX_IN_FLIGHT`] handshakes, a
/// DCID over [`MAX_CID_LEN`] bytes, an ECN over 3, an empty payload or one over
/// [`MAX_PAYLOAD`]): the router never builds such a message, and one that did would be
/// refused by its peer, so it is a bug here, not bad input.
pub(crate) fn encode(msg: &Message<'_>, out: &mut Vec<u8>) {
    out.push(VERSION);
    match msg {
        Message::Keys { secret } => {
            out.push(TAG_KEYS);
            out.extend_from_slice(secret);
        }
        Message::InFlight { handshakes } => {
            assert!(
                handshakes.len() <= MAX_IN_FLIGHT,
                "{} handshakes in one InFlight message",
                handshakes.len()
            );
            out.push(TAG_IN_FLIGHT);
            out.extend_from_slice(&(handshakes.len() as u16).to_be_bytes());
            for (dcid, generation) in handshakes {
                assert!(dcid.len() <= MAX_CID_LEN, "a {}-byte DCID", dcid.len());
                out.push(dcid.len() as u8);
                out.extend_from_slice(dcid);
                out.extend_from_slice(&generation.to_be_bytes());
            }
        }
        Message::Forward {
            src,
            dst_ip,
            ecn,
            payload,
        } => {
            assert!(*ecn <= 3, "ECN codepoint {ecn}");
            assert!(
                (1..=MAX_PAYLOAD).contains(&payload.len()),
                "a {}-byte datagram",
                payload.len()
            );
            out.push(TAG_FORWARD);
            match src {
                SocketAddr::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.ip().octets());
                    out.extend_from_slice(&a.port().to_be_bytes());
                }
                SocketAddr::V6(a) => {
                    out.push(6);
                    out.extend_from_slice(&a.ip().octets());
                    out.extend_from_slice(&a.port().to_be_bytes());
                    out.extend_from_slice(&a.scope_id().to_be_bytes());
                }
            }
            match dst_ip {
                None => out.push(0),
                Some(IpAddr::V4(ip)) => {
                    out.push(4);
                    out.extend_from_slice(&ip.octets());
                }
                Some(IpAddr::V6(ip)) => {
                    out.push(6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.push(*ecn);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.extend_from_slice(payload);
        }
    }
}

/// Decodes one message, strictly: the version, a known tag, every field whole and in bounds,
/// nothing after the last one.
pub(crate) fn decode(buf: &[u8]) -> Result<Message<'_>, WireError> {
    let mut r = Reader(buf);
    let version = r.u8("the version").map_err(|_| WireError::Empty)?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let (message, name) = match r.u8("the tag")? {
        TAG_KEYS => {
            let secret = r.array::<32>("the secret")?;
            (Message::Keys { secret }, "Keys")
        }
        TAG_IN_FLIGHT => {
            let count = usize::from(r.u16("the handshake count")?);
            if count > MAX_IN_FLIGHT {
                return Err(WireError::TooMany(count));
            }
            let mut handshakes = Vec::with_capacity(count);
            for _ in 0..count {
                let len = usize::from(r.u8("a DCID length")?);
                if len > MAX_CID_LEN {
                    return Err(WireError::CidTooLong(len));
                }
                let dcid = r.take(len, "a DCID")?.to_vec();
                let generation = u64::from_be_bytes(r.array::<8>("a generation")?);
                handshakes.push((dcid, generation));
            }
            (Message::InFlight { handshakes }, "InFlight")
        }
        TAG_FORWARD => {
            let src = match r.u8("the source family")? {
                4 => {
                    let ip = Ipv4Addr::from(r.array::<4>("the source address")?);
                    let port = r.u16("the source port")?;
                    SocketAddr::V4(SocketAddrV4::new(ip, port))
                }
                6 => {
                    let ip = Ipv6Addr::from(r.array::<16>("the source address")?);
                    let port = r.u16("the source port")?;
                    let scope = u32::from_be_bytes(r.array::<4>("the source scope id")?);
                    SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope))
                }
                family => {
                    return Err(WireError::Family {
                        field: "the source",
                        family,
                    })
                }
            };
            let dst_ip = match r.u8("the destination family")? {
                0 => None,
                4 => Some(IpAddr::V4(r.array::<4>("the destination address")?.into())),
                6 => Some(IpAddr::V6(r.array::<16>("the destination address")?.into())),
                family => {
                    return Err(WireError::Family {
                        field: "the destination",
                        family,
                    })
                }
            };
            let ecn = r.u8("the ECN codepoint")?;
            if ecn > 3 {
                return Err(WireError::Ecn(ecn));
            }
            let len = usize::from(r.u16("the datagram length")?);
            if !(1..=MAX_PAYLOAD).contains(&len) {
                return Err(WireError::PayloadSize(len));
            }
            let payload = r.take(len, "the datagram")?;
            let msg = Message::Forward {
                src,
                dst_ip,
                ecn,
                payload,
            };
            (msg, "Forward")
        }
        tag => return Err(WireError::UnknownTag(tag)),
    };
    if !r.0.is_empty() {
        return Err(WireError::Trailing {
            message: name,
            extra: r.0.len(),
        });
    }
    Ok(message)
}

/// A cursor over a message; a read past the end names the field it was reading.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.0.len() {
            return Err(WireError::Truncated(field));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array::<2>(field)?))
    }
}

#[cfg(test)]
mod tests;
