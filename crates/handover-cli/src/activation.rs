//! Socket activation: which `--listen` takes which socket systemd (or
//! `systemd-socket-activate`, or any parent speaking the protocol) handed us.
//!
//! The rules, in order:
//!
//! 1. a `--listen NAME=ADDR` takes the socket named `NAME` in `LISTEN_FDNAMES`; its address
//!    must agree with `ADDR` (same family, IP and port, or any port when `ADDR` has port 0;
//!    the same Unix path), or start-up fails naming both;
//! 2. a `--listen` still without a socket takes an unclaimed one bound to exactly its
//!    address (never for port 0, which means "any");
//! 3. a `--listen` still without a socket binds one itself, as without activation;
//! 4. a socket left over, that no `--listen` asked for, fails start-up, naming it: systemd's
//!    socket unit and the command line disagree, and serving on only part of what the unit
//!    opened would be a silent surprise.
//!
//! The worker sees only what the supervisor passes: each socket under its `--listen` name
//! (`NAME=`, or `tcp_IP_PORT` / `unix_PATH`), whatever systemd called it.

use handover::ListenAddr;

use crate::listen_socket::ListenSpec;

/// What the matching needs to know of one inherited socket.
#[derive(Debug, Clone, Copy)]
pub struct Offered<'a> {
    /// The fd it arrived at (3, 4, ...), for messages.
    pub fd: std::os::fd::RawFd,
    /// Its `LISTEN_FDNAMES` entry, if the variable was set.
    pub name: Option<&'a str>,
    /// The address it is bound to.
    pub local: &'a ListenAddr,
}

impl Offered<'_> {
    fn describe(&self) -> String {
        match self.name {
            Some(n) => format!("fd {} (LISTEN_FDNAMES {n:?}, {})", self.fd, self.local),
            None => format!("fd {} ({})", self.fd, self.local),
        }
    }
}

/// For each spec, the index in `offered` of the socket it takes, or `None` to bind its own.
/// Errors name the fd, its name and address, and the `--listen` concerned.
pub fn assign(specs: &[ListenSpec], offered: &[Offered<'_>]) -> Result<Vec<Option<usize>>, String> {
    let mut taken = vec![false; offered.len()];
    let mut plan: Vec<Option<usize>> = vec![None; specs.len()];
    // 1. By name.
    for (i, spec) in specs.iter().enumerate() {
        let Some(name) = spec.name.as_deref() else {
            continue;
        };
        let Some(j) = offered.iter().position(|o| o.name == Some(name)) else {
            continue;
        };
        if taken[j] {
            return Err(format!(
                "{} is asked for by two --listen options named {name:?}",
                offered[j].describe()
            ));
        }
        if !compatible(&spec.addr, offered[j].local) {
            return Err(format!(
                "{} does not fit --listen {name}={}: it is bound to {}; make the socket unit \
                 and --listen agree",
                offered[j].describe(),
                spec.addr,
                offered[j].local
            ));
        }
        taken[j] = true;
        plan[i] = Some(j);
    }
    // 2. By exact address.
    for (i, spec) in specs.iter().enumerate() {
        if plan[i].is_some() || is_any_port(&spec.addr) {
            continue;
        }
        if let Some(j) = (0..offered.len()).find(|&j| !taken[j] && offered[j].local == &spec.addr) {
            taken[j] = true;
            plan[i] = Some(j);
        }
    }
    // 4. Nothing may be left over.
    if let Some(j) = taken.iter().position(|t| !t) {
        let o = &offered[j];
        let hint = match o.name {
            Some(n) => format!("--listen {n}={}", o.local),
            None => format!("--listen {}", o.local),
        };
        return Err(format!(
            "socket activation: {} matches no --listen, by name or by address; add {hint}, \
             or remove the socket from the unit",
            o.describe()
        ));
    }
    Ok(plan)
}

/// Port 0 asks for any free port: it never matches by address.
fn is_any_port(addr: &ListenAddr) -> bool {
    matches!(addr, ListenAddr::Tcp(sa) if sa.port() == 0)
}

/// Whether a socket bound to `actual` can serve `--listen wanted`.
fn compatible(wanted: &ListenAddr, actual: &ListenAddr) -> bool {
    match (wanted, actual) {
        (ListenAddr::Tcp(w), ListenAddr::Tcp(a)) => {
            w.ip() == a.ip() && (w.port() == 0 || w.port() == a.port())
        }
        (ListenAddr::Unix(w), ListenAddr::Unix(a)) => w == a,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ListenSpec {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> ListenAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_first_then_addresses_then_binding() {
        let a = addr("127.0.0.1:8080");
        let b = addr("127.0.0.1:9090");
        let offered = [
            Offered {
                fd: 3,
                name: Some("web"),
                local: &a,
            },
            Offered {
                fd: 4,
                name: Some("app.socket"),
                local: &b,
            },
        ];
        let specs = [
            spec("127.0.0.1:7070"),
            spec("127.0.0.1:9090"),
            spec("web=127.0.0.1:0"),
        ];
        assert_eq!(
            assign(&specs, &offered).unwrap(),
            vec![None, Some(1), Some(0)]
        );
    }

    #[test]
    fn a_named_socket_must_fit_its_address() {
        let a = addr("[::]:8080");
        let offered = [Offered {
            fd: 3,
            name: Some("web"),
            local: &a,
        }];
        let e = assign(&[spec("web=0.0.0.0:8080")], &offered).unwrap_err();
        assert!(
            e.contains("fd 3 (LISTEN_FDNAMES \"web\", tcp://[::]:8080) does not fit --listen web=tcp://0.0.0.0:8080"),
            "{e}"
        );
        let u = addr("unix:/run/a.sock");
        let offered = [Offered {
            fd: 3,
            name: Some("web"),
            local: &u,
        }];
        assert!(assign(&[spec("web=127.0.0.1:0")], &offered).is_err());
        assert_eq!(
            assign(&[spec("web=unix:/run/a.sock")], &offered).unwrap(),
            vec![Some(0)]
        );
    }

    #[test]
    fn a_socket_no_listen_asks_for_is_an_error() {
        let a = addr("127.0.0.1:8080");
        let offered = [Offered {
            fd: 3,
            name: Some("other"),
            local: &a,
        }];
        let e = assign(&[spec("web=127.0.0.1:0")], &offered).unwrap_err();
        assert!(
            e.contains("fd 3 (LISTEN_FDNAMES \"other\", tcp://127.0.0.1:8080) matches no --listen"),
            "{e}"
        );
        assert!(e.contains("add --listen other=tcp://127.0.0.1:8080"), "{e}");
        // Port 0 never matches by address.
        let offered = [Offered {
            fd: 3,
            name: None,
            local: &a,
        }];
        let e = assign(&[spec("127.0.0.1:0")], &offered).unwrap_err();
        assert!(e.contains("fd 3 (tcp://127.0.0.1:8080) matches no"), "{e}");
    }

    #[test]
    fn two_sockets_with_one_address_go_to_two_listens_in_order() {
        let a = addr("127.0.0.1:8080");
        let offered = [
            Offered {
                fd: 3,
                name: None,
                local: &a,
            },
            Offered {
                fd: 4,
                name: None,
                local: &a,
            },
        ];
        let specs = [spec("127.0.0.1:8080"), spec("127.0.0.1:8080")];
        assert_eq!(assign(&specs, &offered).unwrap(), vec![Some(0), Some(1)]);
    }
}
