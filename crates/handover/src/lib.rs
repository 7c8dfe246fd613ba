//! handover (crate docs are written in a later step)

mod addr;
mod duration;
mod env;
mod pidfile;
mod systemd;

pub use addr::{AddrParseError, ListenAddr};
pub use duration::{parse_duration, DurationParseError};
pub use env::EnvError;
