//! QUIC whose connections survive an upgrade (feature `quic`, issue 15).
//!
//! The pure building blocks, each in its own file:
//!
//! | module | one reason to change |
//! |---|---|
//! | `cid` | connection IDs that name their generation |
//! | `packet` | reading the destination CID and packet kind off a datagram (no decryption) |
//! | `keys` | the lineage secret and the keys derived from it (reset, token, tickets, CID mask) |
//! | `wire` | messages between generations on the local channel (encode/decode, strict) |

// The routing socket and the public endpoint are built on these; until then nothing in the
// crate calls them but their tests.
#![allow(dead_code)]

mod channel;
pub(crate) mod cid;
mod endpoint;
pub(crate) mod keys;
pub(crate) mod packet;
mod route;
mod socket;
pub(crate) mod wire;

pub use endpoint::{Endpoint, Options};
pub use socket::RoutingStats;
