//! The listening sockets: `--listen [NAME=]ADDR`, bound once, open for the supervisor's
//! whole life (connections queue in the backlog whenever no worker accepts; for a `udp://`
//! socket, datagrams queue in its receive buffer whenever no worker reads).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::str::FromStr;

use handover::{sys, ListenAddr};

use crate::activation::{self, Offered};

/// One `--listen` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The `LISTEN_FDNAMES` entry asked for, if any.
    pub name: Option<String>,
    /// The address.
    pub addr: ListenAddr,
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `NAME=ADDR` only when the part before `=` is a plain name: `unix:/a=b` is an address.
        let (name, addr) = match s.split_once('=') {
            Some((name, addr))
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) =>
            {
                (Some(name.to_string()), addr)
            }
            _ => (None, s),
        };
        let addr = addr.parse::<ListenAddr>().map_err(|e| e.to_string())?;
        Ok(ListenSpec { name, addr })
    }
}

/// A bound listening socket.
#[derive(Debug)]
pub struct ListenSocket {
    /// Its `LISTEN_FDNAMES` entry.
    pub name: String,
    /// The address it is bound to (with the real port when 0 was asked for).
    pub local: ListenAddr,
    /// Passed by socket activation (its owner keeps it open across our restarts).
    pub inherited: bool,
    fd: OwnedFd,
    created_file: Option<PathBuf>,
}

impl ListenSocket {
    /// The fd and name, as [`sys::spawn_with_listeners`] takes them.
    pub fn as_pass(&self) -> (RawFd, String) {
        (self.fd.as_raw_fd(), self.name.clone())
    }

    /// Removes the Unix socket file this supervisor created (at the final stop).
    pub fn remove_created_file(&self) {
        if let Some(path) = &self.created_file {
            sys::remove_created_file(path);
        }
    }
}

/// Opens every socket: takes the one socket activation passed for it (see
/// [`crate::activation`]), or binds it; fails naming the address that could not be bound or
/// the inherited socket that fits no `--listen`.
pub fn bind_all(
    specs: &[ListenSpec],
    backlog: i32,
    activated: Vec<sys::Activated>,
) -> Result<Vec<ListenSocket>, String> {
    let offered: Vec<Offered<'_>> = activated
        .iter()
        .map(|a| Offered {
            fd: a.inherited_fd,
            name: a.name.as_deref(),
            local: &a.local,
        })
        .collect();
    let plan = activation::assign(specs, &offered)?;
    let mut activated: Vec<Option<sys::Activated>> = activated.into_iter().map(Some).collect();
    let mut out: Vec<ListenSocket> = Vec::with_capacity(specs.len());
    for (spec, from) in specs.iter().zip(plan) {
        let (fd, local, created_file, inherited) = match from.and_then(|j| activated[j].take()) {
            Some(a) => (a.fd, a.local, None, true),
            None => {
                let bound = sys::bind(&spec.addr, backlog).map_err(|e| {
                    for l in &out {
                        l.remove_created_file();
                    }
                    format!("cannot listen on {}: {e}", spec.addr)
                })?;
                (bound.fd, bound.local, bound.created_file, false)
            }
        };
        let name = spec.name.clone().unwrap_or_else(|| local.fd_name());
        let duplicate = out.iter().any(|l| l.name == name);
        out.push(ListenSocket {
            name: name.clone(),
            local,
            fd,
            created_file,
            inherited,
        });
        if duplicate {
            for l in &out {
                l.remove_created_file();
            }
            return Err(format!(
                "two listeners are named {name:?}; give them distinct names with NAME=ADDR"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_addresses() {
        let s: ListenSpec = "web=127.0.0.1:80".parse().unwrap();
        assert_eq!(s.name.as_deref(), Some("web"));
        let s: ListenSpec = "unix:/tmp/a=b.sock".parse().unwrap();
        assert_eq!(s.name, None);
        assert_eq!(s.addr, ListenAddr::Unix("/tmp/a=b.sock".into()));
        let s: ListenSpec = "dns=udp://[::1]:53".parse().unwrap();
        assert_eq!(s.name.as_deref(), Some("dns"));
        assert_eq!(s.addr, ListenAddr::Udp("[::1]:53".parse().unwrap()));
        let e = "web=nowhere".parse::<ListenSpec>().unwrap_err();
        assert!(e.contains("invalid listen address \"nowhere\""), "{e}");
    }

    #[test]
    fn default_names_match_the_library() {
        assert_eq!(
            ListenAddr::fd_name(&"127.0.0.1:8080".parse().unwrap()),
            "tcp_127.0.0.1_8080"
        );
        assert_eq!(
            ListenAddr::fd_name(&"[::1]:80".parse().unwrap()),
            "tcp_[__1]_80"
        );
        assert_eq!(
            ListenAddr::fd_name(&"unix:/run/x.sock".parse().unwrap()),
            "unix_/run/x.sock"
        );
    }

    #[test]
    fn port_zero_is_named_after_the_real_port() {
        let l = bind_all(&["127.0.0.1:0".parse().unwrap()], 16, Vec::new()).unwrap();
        let ListenAddr::Tcp(sa) = l[0].local else {
            panic!()
        };
        assert_ne!(sa.port(), 0);
        assert_eq!(l[0].name, format!("tcp_127.0.0.1_{}", sa.port()));
    }

    #[test]
    fn a_udp_socket_is_bound_as_a_datagram_socket() {
        let l = bind_all(&["udp://127.0.0.1:0".parse().unwrap()], 16, Vec::new()).unwrap();
        let ListenAddr::Udp(sa) = l[0].local else {
            panic!("{:?}", l[0].local)
        };
        assert_ne!(sa.port(), 0);
        assert_eq!(l[0].name, format!("udp_127.0.0.1_{}", sa.port()));
        // A datagram sent to it waits in its buffer for whichever worker reads.
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"x", sa).unwrap();
        let sock = std::net::UdpSocket::from(l[0].fd.try_clone().unwrap());
        sock.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(sock.recv_from(&mut buf).unwrap().0, 1);
    }
}
