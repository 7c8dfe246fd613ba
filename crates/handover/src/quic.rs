//! QUIC and HTTP/3 whose connections survive an upgrade (feature `quic`).
//!
//! [`Handover::quic`](crate::Handover::quic) builds a quinn endpoint ([`Endpoint`]) on a UDP
//! socket that every generation shares (bound or inherited like
//! [`Handover::datagram`](crate::Handover::datagram), `udp_IP_PORT` by default). Serve it as
//! any quinn endpoint: `endpoint().accept()`, and for HTTP/3 `h3` with `h3-quinn` on the
//! connections. At an upgrade the old process's connections go on, in the old process, until
//! they end or the drain deadline passes; new connections go to the new process.
//!
//! ```no_run
//! # async fn run(mut handover: handover::Handover, tls: handover::tls::rustls::ServerConfig)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! let addr = "udp://127.0.0.1:4433".parse()?;
//! let quic = handover.quic(&addr, tls, handover::quic::Options::default())?;
//! let running = handover.ready().await?;
//! let drain = quic.drain_signal();
//! loop {
//!     tokio::select! {
//!         Some(incoming) = quic.endpoint().accept() => {
//!             tokio::spawn(async move { let _conn = incoming.await; /* serve it */ });
//!         }
//!         _ = drain.draining() => break,
//!     }
//! }
//! // Draining: tell the connections (HTTP/3 GOAWAY), let them finish, then let go.
//! quic.endpoint().wait_idle().await;
//! drop(quic);
//! running.wait().await;
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! With one UDP port there is one socket, and one receive queue: after an upgrade a datagram
//! for a connection the old process holds may be read by the new one. So only one process
//! reads the socket, the one serving, and it routes each datagram by its destination
//! connection ID (DCID), in user space, without privileges:
//!
//! - **Connection IDs name their generation.** Every CID this server issues is 16 bytes: a
//!   generation tag, masked, check bytes and randomness (`quic/cid`). The mask and the check
//!   bytes come from a key every generation shares, so any generation can read the tag and
//!   tell a CID of this server from a client's random choice, while an observer learns
//!   nothing from the bytes (they differ per CID and look random). The tag is the generation
//!   number modulo 256. Only generations still alive are routable, and only a handful are
//!   alive at once, so the live generation with that residue is unique; if two share it
//!   (more than 255 upgrades within one drain), the newer gets the datagrams, the older's
//!   connections then end by stateless reset.
//! - **Routing** (`quic/route`, `quic/socket`). The serving generation reads the socket
//!   (GRO batches split into datagrams first) and looks at each datagram's DCID (`quic/packet`,
//!   no decryption): a CID of its own goes to its quinn endpoint; one of an older generation
//!   still alive goes to that process over a local channel, with the source address,
//!   destination IP and ECN bits (`quic/wire`); that process feeds it to its endpoint and
//!   answers straight on the shared socket. Anything else is served here: a new connection,
//!   or a dead generation's packet, which quinn answers with a stateless reset.
//! - **Handshakes in flight.** An Initial's DCID is the client's own choice until it hears
//!   from the server, and a retransmitted Initial, or the second datagram of a large first
//!   flight, must reach the process that began the handshake. Each generation remembers the
//!   client-chosen DCIDs of the last 10 s (at most 65,536); when it pauses for an upgrade it
//!   sends the newest 4,096 to the new generation, which forwards Initials and 0-RTT packets
//!   with those DCIDs to their owner for 10 s. Every other Initial starts a connection with
//!   the new generation.
//! - **Channels** (`quic/channel`). Each upgrade attempt makes a Unix datagram socketpair:
//!   the old process keeps one end, the new one inherits the other as `quicfwd_g<N>_<socket>`
//!   (`N` the generation at the other end), with the ends the old process holds to the
//!   generations older than it. So generation 3 forwards to 2 and to 1 while both drain. A
//!   send that finds the other end closed marks that generation dead. The channels are passed
//!   like the listeners, after them; the application sees none of it.
//! - **The switch.** When the new generation is ready, the old one pauses accepting, stops
//!   reading the socket (a read in progress finishes first: both take one lock), sends the
//!   handshakes in flight, then the go-ahead; only then does the new one read. No datagram is
//!   read twice. If the go-ahead fails, or the new generation crashes later and this one
//!   takes the listeners back, it reads the socket again.
//! - **Keys that must not change** travel with the lineage: one 32-byte secret, written by
//!   the old process into the new channel before the fork (never in the environment or on a
//!   command line), from which each generation derives the same stateless-reset key, Retry /
//!   NEW_TOKEN key, TLS session-ticket key and CID mask (`quic/keys`). A stateless reset, a
//!   token or a session ticket from before an upgrade is understood after it. The first
//!   generation (or a plain restart) makes a random secret.
//!
//! [`Options::forwarding`] `false` turns all of this off: the endpoint is gated like a
//! [`crate::Datagram`] and the old generation's connections starve at an upgrade, the
//! baseline the tests compare against.
//!
//! # Limits
//!
//! - **Connection migration, NAT rebinding**: packets from a new address are routed by their
//!   CID like any other, so they reach the process that owns the connection, which validates
//!   the new path as quinn does (not covered by the tests yet).
//! - **Stateless resets** for a generation that has exited: its connections end with a reset
//!   from the serving generation (valid, the key is shared) rather than by idle timeout. A
//!   generation killed by SIGKILL too: the first datagram for it finds its channel closed,
//!   and the client has the reset at once (in `tests/quic_hostile.rs` within 3 s of the kill,
//!   with a 60 s idle timeout; about 2 ms measured).
//! - **Hostile datagrams**: what is no QUIC header (too short, a CID length over 20, a long
//!   header cut short of its length) is dropped by the router and counted in
//!   [`RoutingStats::dropped`]; packets that parse but name no live generation (random or
//!   forged CIDs, Initials to random DCIDs) go to the serving generation's quinn, which drops
//!   them or answers with a stateless reset. None of them is forwarded: the check bytes of a
//!   CID cannot be forged without the key (`quic/cid` says what changing the tag of a CID seen
//!   on the wire can do). Tested with 20,000 such datagrams through 3 upgrades.
//! - **A flood of Initials** (anyone can send Initials to DCIDs of their choosing): the table
//!   of handshakes in flight keeps at most 65,536 DCIDs of at most 20 bytes, whatever
//!   arrives. It hands the newest 4,096 of the last 10 s to the next generation, so more than
//!   4,096 Initials in the 10 s before an upgrade (about 5 MB of 1,200-byte datagrams) push a
//!   genuine handshake out of what is handed on, and 65,536 out of the table: its client's
//!   next Initial to its own DCID (a retransmission, the second datagram of a large first
//!   flight) then reaches the new generation, as without the table. A retransmission before
//!   the upgrade makes it the newest again, and a flood after the upgrade cannot evict what was
//!   handed on (unit tests in `quic/route/flood.rs`). Once the client has the server's first
//!   Initial (its ACK of the first datagram), it sends its retransmissions to the server's CID,
//!   which routes by tag: in `tests/quic_hostile.rs` a first flight of two datagrams split by
//!   the switch, with 5,000 Initials flooded between its halves, still completes with the old
//!   generation. Only a client that has heard nothing from the server by the switch starts
//!   over with the new generation.
//! - **Version negotiation and Retry** are answered by the serving generation, statelessly;
//!   a Retry token from before the upgrade is accepted after it (shared token key).
//! - **0-RTT** is accepted only if the application's TLS configuration enables early data;
//!   0-RTT packets of a handshake in flight go to its owner like its Initials.
//! - **A crash takeover** (the new generation crashed and the old one serves again): the
//!   crashed generation's connections are lost, and the old one's keep working. Handshakes
//!   the crashed one had begun restart.
//! - **Load on the channel**: a forwarded datagram that does not fit in the channel's buffer
//!   (the old process is too slow to read) is dropped, counted in [`RoutingStats::dropped`];
//!   QUIC retransmits it. Forwarding costs the serving process one `sendmsg` per datagram for
//!   an old connection, and none for its own.
//! - Only CIDs of this server's length (16 bytes) route; a server and its successor must both
//!   have this feature (a successor without it closes the channels and its predecessor's
//!   connections starve, as without forwarding).

mod channel;
pub(crate) mod cid;
mod endpoint;
pub(crate) mod keys;
pub(crate) mod packet;
mod route;
mod socket;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

pub use endpoint::{Endpoint, Options};
pub use socket::RoutingStats;
