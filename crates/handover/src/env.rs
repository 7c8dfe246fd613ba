//! The socket inheritance protocol carried in environment variables.
//!
//! Listening sockets are passed to a new process the way systemd socket
//! activation does it (see `sd_listen_fds(3)`): the fds are placed at
//! consecutive numbers starting at [`FIRST_FD`], `LISTEN_FDS` says how many
//! there are, `LISTEN_PID` says which process they are meant for (so that a
//! grandchild that inherits the environment by accident ignores them), and the
//! optional `LISTEN_FDNAMES` names them. Using the same protocol means a
//! handover server works unchanged under systemd socket activation, and a
//! systemd-activated server can hand its sockets to its own upgrades.
//!
//! handover adds three variables of its own, only looked at when `LISTEN_PID`
//! matches: [`HANDOVER_SYNC_FD`], [`HANDOVER_OWNED_FDS`] and
//! [`HANDOVER_GENERATION`].
//!
//! Everything here is pure: [`parse`] reads through a lookup closure and
//! [`child_vars`] returns pairs, so the real environment (which is
//! process-global and unsafe to mutate with threads around) is touched only by
//! the caller.

use std::ffi::OsString;
use std::os::fd::RawFd;

use crate::addr::is_valid_fd_name;

/// The first inherited listen fd (`SD_LISTEN_FDS_START`); 0-2 are stdio.
pub(crate) const FIRST_FD: RawFd = 3;

/// Number of inherited listen fds, starting at [`FIRST_FD`].
pub(crate) const LISTEN_FDS: &str = "LISTEN_FDS";
/// PID of the process the listen fds are meant for.
pub(crate) const LISTEN_PID: &str = "LISTEN_PID";
/// Colon-separated names of the listen fds, one per fd.
pub(crate) const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// handover: fd number of the readiness channel back to the parent generation.
pub(crate) const HANDOVER_SYNC_FD: &str = "HANDOVER_SYNC_FD";
/// handover: comma-separated listen fds that are Unix sockets whose socket
/// file was created by this handover lineage, so the final generation must
/// unlink it when it stops for good (and no intermediate generation may).
pub(crate) const HANDOVER_OWNED_FDS: &str = "HANDOVER_OWNED_FDS";

/// Every variable of the protocol: remove these from our own environment after
/// [`parse`] (whatever it returned, like `sd_listen_fds(1)` does, so that they
/// cannot leak into unrelated children), and strip them before adding fresh
/// [`child_vars`] for a child. `NOTIFY_SOCKET` is deliberately not here.
pub(crate) const PROTOCOL_VARS: &[&str] = &[
    LISTEN_PID,
    LISTEN_FDS,
    LISTEN_FDNAMES,
    HANDOVER_SYNC_FD,
    HANDOVER_OWNED_FDS,
    HANDOVER_GENERATION,
];

/// The generation number of a handover child (1 for the first process), shown by
/// `handover status`. Read strictly, like the others: at most [`MAX_GENERATION`].
pub(crate) const HANDOVER_GENERATION: &str = "HANDOVER_GENERATION";

/// The largest generation number: 2^53 - 1, the largest integer every JSON reader (a
/// JavaScript one included) keeps exactly, so `status --json` never shows a rounded number.
pub(crate) const MAX_GENERATION: u64 = (1 << 53) - 1;

/// The generation after `g`, or `None` past [`MAX_GENERATION`] (the increment never wraps).
pub(crate) fn next_generation(g: u64) -> Option<u64> {
    g.checked_add(1).filter(|n| *n <= MAX_GENERATION)
}

/// More inherited fds than this is treated as corruption rather than a plan:
/// it keeps `FIRST_FD + n` far from overflow and bounds allocations.
const MAX_FDS: usize = 65536;

/// Error in the socket inheritance environment variables (`LISTEN_PID`,
/// `LISTEN_FDS`, `LISTEN_FDNAMES`, `HANDOVER_SYNC_FD`, `HANDOVER_OWNED_FDS`,
/// `HANDOVER_GENERATION`).
///
/// Each message names the variable, its value and what was expected, e.g.
/// `LISTEN_FDS="abc" is not a number of file descriptors (expected a
/// non-negative decimal integer)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// A variable's value is not valid UTF-8.
    #[error("{var}={value:?} is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        var: &'static str,
        /// The raw value.
        value: OsString,
    },
    /// `LISTEN_PID` is not a positive decimal integer.
    #[error("LISTEN_PID={value:?} is not a process ID (expected a positive decimal integer)")]
    InvalidListenPid {
        /// The offending value.
        value: String,
    },
    /// `LISTEN_FDS` is not a non-negative decimal integer.
    #[error(
        "LISTEN_FDS={value:?} is not a number of file descriptors \
         (expected a non-negative decimal integer)"
    )]
    InvalidListenFds {
        /// The offending value.
        value: String,
    },
    /// `LISTEN_FDS` is a number, but an implausibly large one.
    #[error(
        "LISTEN_FDS={value:?} is too large (at most {MAX_FDS} file descriptors can be inherited)"
    )]
    TooManyFds {
        /// The offending value.
        value: String,
    },
    /// `LISTEN_FDNAMES` does not have exactly one name per fd.
    #[error(
        "LISTEN_FDNAMES={value:?} has {names} name(s) but LISTEN_FDS is {fds} \
         (expected one name per file descriptor)"
    )]
    NamesMismatch {
        /// The whole `LISTEN_FDNAMES` value.
        value: String,
        /// How many names it contains.
        names: usize,
        /// The value of `LISTEN_FDS`.
        fds: usize,
    },
    /// One of the names in `LISTEN_FDNAMES` is empty or contains characters
    /// systemd does not allow.
    #[error(
        "LISTEN_FDNAMES={value:?} contains the invalid name {name:?} \
         (expected 1-255 printable ASCII characters other than ':')"
    )]
    InvalidFdName {
        /// The whole `LISTEN_FDNAMES` value.
        value: String,
        /// The offending name.
        name: String,
    },
    /// `HANDOVER_SYNC_FD` is not a non-negative decimal integer.
    #[error(
        "HANDOVER_SYNC_FD={value:?} is not a file descriptor number \
         (expected a non-negative decimal integer)"
    )]
    InvalidSyncFd {
        /// The offending value.
        value: String,
    },
    /// `HANDOVER_SYNC_FD` points at stdio or into the listen fd range.
    #[error(
        "HANDOVER_SYNC_FD={value:?} overlaps stdio or the inherited listen fds \
         (expected a file descriptor of at least {min})"
    )]
    SyncFdOutOfRange {
        /// The offending value.
        value: String,
        /// The lowest acceptable fd: `3 + LISTEN_FDS`.
        min: RawFd,
    },
    /// `HANDOVER_GENERATION` is not a decimal integer from 1 to 2^53 - 1.
    #[error(
        "HANDOVER_GENERATION={value:?} is not a generation number \
         (expected a decimal integer from 1 to {MAX_GENERATION}, i.e. below 2^53)"
    )]
    InvalidGeneration {
        /// The offending value.
        value: String,
    },
    /// An entry of `HANDOVER_OWNED_FDS` is not a decimal integer.
    #[error(
        "HANDOVER_OWNED_FDS={value:?} contains {entry:?}, which is not a file descriptor \
         number (expected comma-separated decimal integers)"
    )]
    InvalidOwnedFds {
        /// The whole `HANDOVER_OWNED_FDS` value.
        value: String,
        /// The offending entry.
        entry: String,
    },
    /// An entry of `HANDOVER_OWNED_FDS` is not one of the listen fds.
    #[error(
        "HANDOVER_OWNED_FDS={value:?} contains {fd}, which is not an inherited listen fd ({})",
        describe_listen_range(*.listen_fds)
    )]
    OwnedFdOutOfRange {
        /// The whole `HANDOVER_OWNED_FDS` value.
        value: String,
        /// The offending fd.
        fd: RawFd,
        /// The value of `LISTEN_FDS`.
        listen_fds: usize,
    },
}

fn describe_listen_range(n: usize) -> String {
    match n {
        0 => "there are none".to_owned(),
        1 => format!("expected {FIRST_FD}"),
        n => format!("expected {FIRST_FD} to {}", FIRST_FD as usize + n - 1),
    }
}

/// Outcome of [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// None of the protocol variables is set: a plain first start.
    Nothing,
    /// Some variables are set but, following `sd_listen_fds(3)`, they do not
    /// amount to inherited fds (`LISTEN_PID` unset, or `LISTEN_PID` is ours
    /// but `LISTEN_FDS` is unset). Treat as [`Parsed::Nothing`], but the
    /// reason is worth a log line because it usually means a misconfigured
    /// supervisor or wrapper script.
    Ignored {
        /// Human-readable explanation.
        reason: String,
    },
    /// `LISTEN_PID` names another process: the variables were inherited by
    /// accident (e.g. we were started by a socket-activated shell). Ignore
    /// them; the caller may log `listen_pid` at debug level.
    NotForUs {
        /// The PID the fds were meant for.
        listen_pid: u32,
    },
    /// The fds are meant for us.
    Inherited(Inheritance),
}

/// Sockets (and handover metadata) passed to this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inheritance {
    /// The listen fds, `FIRST_FD..FIRST_FD + LISTEN_FDS`, in order. Nothing
    /// here checks that they are open or are sockets; the caller must (and
    /// should set close-on-exec on them, as `sd_listen_fds` does).
    pub fds: Vec<InheritedFd>,
    /// `HANDOVER_SYNC_FD`: where to report readiness to the parent
    /// generation; `None` when started by systemd or by hand.
    pub readiness_fd: Option<RawFd>,
    /// `HANDOVER_OWNED_FDS`: listen fds whose socket file this lineage
    /// created (deduplicated, in the order given).
    pub owned: Vec<RawFd>,
    /// `HANDOVER_GENERATION`: this process's generation number, if given.
    pub generation: Option<u64>,
}

/// One inherited listen fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InheritedFd {
    /// The fd number.
    pub fd: RawFd,
    /// Its name from `LISTEN_FDNAMES`, verbatim (including systemd's
    /// placeholder `"unknown"`); `None` when `LISTEN_FDNAMES` is unset.
    pub name: Option<String>,
}

/// Reads the protocol variables through `lookup` (normally
/// `|k| std::env::var_os(k)`) on behalf of the process `own_pid`.
///
/// Follows `sd_listen_fds(3)`: `LISTEN_PID` unset → nothing; `LISTEN_PID`
/// malformed → error; `LISTEN_PID` ≠ `own_pid` → [`Parsed::NotForUs`];
/// `LISTEN_FDS` unset → nothing; malformed → error. Two deliberate
/// differences: `LISTEN_FDS=0` is accepted (a handover child of a server with
/// no listeners still needs its readiness fd; libsystemd returns `-EINVAL`), and an
/// empty name in `LISTEN_FDNAMES` is rejected (systemd permits it, but it
/// cannot identify a listener). The handover variables are read only once
/// `LISTEN_PID` matched.
pub(crate) fn parse(
    lookup: impl Fn(&str) -> Option<OsString>,
    own_pid: u32,
) -> Result<Parsed, EnvError> {
    let get = |var: &'static str| -> Result<Option<String>, EnvError> {
        lookup(var)
            .map(|v| {
                v.into_string()
                    .map_err(|value| EnvError::NotUnicode { var, value })
            })
            .transpose()
    };

    let Some(pid_value) = get(LISTEN_PID)? else {
        let set: Vec<&str> = PROTOCOL_VARS
            .iter()
            .copied()
            .filter(|v| lookup(v).is_some())
            .collect();
        return Ok(if set.is_empty() {
            Parsed::Nothing
        } else {
            Parsed::Ignored {
                reason: format!(
                    "{} set without LISTEN_PID; not using inherited file descriptors",
                    set.join(", ")
                ),
            }
        });
    };
    let listen_pid = match parse_digits::<u32>(&pid_value) {
        Some(pid) if pid > 0 => pid,
        _ => return Err(EnvError::InvalidListenPid { value: pid_value }),
    };
    if listen_pid != own_pid {
        return Ok(Parsed::NotForUs { listen_pid });
    }

    let Some(fds_value) = get(LISTEN_FDS)? else {
        return Ok(Parsed::Ignored {
            reason: format!(
                "LISTEN_PID={listen_pid} matches this process but LISTEN_FDS is not set; \
                 not using inherited file descriptors"
            ),
        });
    };
    if !is_digits(&fds_value) {
        return Err(EnvError::InvalidListenFds { value: fds_value });
    }
    let n = match fds_value.parse::<usize>() {
        Ok(n) if n <= MAX_FDS => n,
        _ => return Err(EnvError::TooManyFds { value: fds_value }),
    };
    // Cannot overflow: n <= MAX_FDS.
    let end = FIRST_FD + n as RawFd;

    let names = match get(LISTEN_FDNAMES)? {
        None => None,
        Some(value) => Some(parse_names(value, n)?),
    };
    let fds = (FIRST_FD..end)
        .enumerate()
        .map(|(i, fd)| InheritedFd {
            fd,
            name: names.as_ref().map(|names| names[i].clone()),
        })
        .collect();

    let readiness_fd = match get(HANDOVER_SYNC_FD)? {
        None => None,
        Some(value) => match parse_digits::<RawFd>(&value) {
            None => return Err(EnvError::InvalidSyncFd { value }),
            Some(fd) if fd < end => return Err(EnvError::SyncFdOutOfRange { value, min: end }),
            Some(fd) => Some(fd),
        },
    };

    let mut owned = Vec::new();
    if let Some(value) = get(HANDOVER_OWNED_FDS)? {
        // Empty means "none"; child_vars omits the variable instead, but an
        // empty value is harmless and easy for a wrapper script to produce.
        for entry in value.split(',').filter(|_| !value.is_empty()) {
            let fd = match parse_digits::<RawFd>(entry) {
                Some(fd) => fd,
                None => {
                    return Err(EnvError::InvalidOwnedFds {
                        entry: entry.to_owned(),
                        value,
                    })
                }
            };
            if !(FIRST_FD..end).contains(&fd) {
                return Err(EnvError::OwnedFdOutOfRange {
                    value,
                    fd,
                    listen_fds: n,
                });
            }
            if !owned.contains(&fd) {
                owned.push(fd);
            }
        }
    }

    let generation = match get(HANDOVER_GENERATION)? {
        None => None,
        Some(value) => match parse_digits::<u64>(&value) {
            Some(g) if (1..=MAX_GENERATION).contains(&g) => Some(g),
            _ => return Err(EnvError::InvalidGeneration { value }),
        },
    };

    Ok(Parsed::Inherited(Inheritance {
        fds,
        readiness_fd,
        owned,
        generation,
    }))
}

fn parse_names(value: String, n: usize) -> Result<Vec<String>, EnvError> {
    // "" is zero names, not one empty name, so that LISTEN_FDS=0 with an
    // empty LISTEN_FDNAMES is consistent (libsystemd's split agrees).
    let names: Vec<String> = if value.is_empty() {
        Vec::new()
    } else {
        value.split(':').map(str::to_owned).collect()
    };
    if names.len() != n {
        return Err(EnvError::NamesMismatch {
            names: names.len(),
            fds: n,
            value,
        });
    }
    if let Some(bad) = names.iter().find(|name| !is_valid_fd_name(name)) {
        return Err(EnvError::InvalidFdName {
            name: bad.clone(),
            value,
        });
    }
    Ok(names)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Strict decimal: only ASCII digits (Rust's `from_str` would also take a
/// leading `+`), and the value must fit `T`.
fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if is_digits(s) {
        s.parse().ok()
    } else {
        None
    }
}

/// The protocol variables for a child whose listeners will sit at
/// `FIRST_FD..` in the order of `names` (one valid fd name per listener).
///
/// `LISTEN_PID` is not included: it is the child's PID, which only exists
/// after fork, so the spawner sets it in the child. `LISTEN_FDNAMES` is
/// omitted when there are no listeners and `HANDOVER_OWNED_FDS` when `owned`
/// is empty. `readiness_fd` must lie above the listen range and `owned` inside it.
pub(crate) fn child_vars(
    names: &[String],
    readiness_fd: Option<RawFd>,
    owned: &[RawFd],
) -> Vec<(String, String)> {
    // i64 so that neither a negative fd nor a huge count can wrap around.
    let end = i64::from(FIRST_FD) + names.len() as i64;
    debug_assert!(names.iter().all(|n| is_valid_fd_name(n)), "{names:?}");
    // Written without Option::is_none_or, which is newer than the MSRV (1.80).
    debug_assert!(
        !matches!(readiness_fd, Some(fd) if i64::from(fd) < end),
        "{readiness_fd:?}"
    );
    debug_assert!(
        owned
            .iter()
            .all(|&fd| fd >= FIRST_FD && i64::from(fd) < end),
        "{owned:?}"
    );

    let mut vars = vec![(LISTEN_FDS.to_owned(), names.len().to_string())];
    if !names.is_empty() {
        vars.push((LISTEN_FDNAMES.to_owned(), names.join(":")));
    }
    if let Some(fd) = readiness_fd {
        vars.push((HANDOVER_SYNC_FD.to_owned(), fd.to_string()));
    }
    if !owned.is_empty() {
        let list: Vec<String> = owned.iter().map(RawFd::to_string).collect();
        vars.push((HANDOVER_OWNED_FDS.to_owned(), list.join(",")));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStringExt;

    const PID: u32 = 4242;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, OsString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect()
    }

    fn run(pairs: &[(&str, &str)]) -> Result<Parsed, EnvError> {
        let map = env(pairs);
        parse(|k| map.get(k).cloned(), PID)
    }

    fn inherited(pairs: &[(&str, &str)]) -> Inheritance {
        match run(pairs) {
            Ok(Parsed::Inherited(i)) => i,
            other => panic!("{pairs:?}: expected Inherited, got {other:?}"),
        }
    }

    fn err(pairs: &[(&str, &str)]) -> EnvError {
        match run(pairs) {
            Err(e) => e,
            other => panic!("{pairs:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn empty_environment_is_nothing() {
        assert_eq!(run(&[]).unwrap(), Parsed::Nothing);
        assert_eq!(run(&[("PATH", "/bin")]).unwrap(), Parsed::Nothing);
    }

    #[test]
    fn without_listen_pid_everything_is_ignored() {
        // Even garbage is ignored: sd_listen_fds looks at nothing else when
        // LISTEN_PID is unset.
        for pairs in [
            &[("LISTEN_FDS", "2")][..],
            &[("LISTEN_FDS", "abc"), ("HANDOVER_SYNC_FD", "x")][..],
            &[("LISTEN_FDNAMES", "a")][..],
        ] {
            match run(pairs).unwrap() {
                Parsed::Ignored { reason } => {
                    assert!(reason.contains("without LISTEN_PID"), "{reason}");
                    assert!(reason.contains(pairs[0].0), "{reason}");
                }
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_listen_pid_is_an_error() {
        for bad in ["", "abc", "0", "-1", "+5", " 5", "5 ", "4294967296", "1.0"] {
            assert_eq!(
                err(&[("LISTEN_PID", bad), ("LISTEN_FDS", "1")]),
                EnvError::InvalidListenPid {
                    value: bad.to_owned()
                },
                "{bad:?}"
            );
        }
    }

    #[test]
    fn other_pid_is_not_for_us_and_nothing_else_is_read() {
        assert_eq!(
            run(&[
                ("LISTEN_PID", "1"),
                ("LISTEN_FDS", "garbage"),
                ("HANDOVER_SYNC_FD", "garbage"),
            ])
            .unwrap(),
            Parsed::NotForUs { listen_pid: 1 }
        );
    }

    #[test]
    fn matching_pid_without_listen_fds_is_ignored() {
        match run(&[("LISTEN_PID", "4242"), ("HANDOVER_SYNC_FD", "9")]).unwrap() {
            Parsed::Ignored { reason } => assert!(reason.contains("LISTEN_FDS"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fds_without_names() {
        let i = inherited(&[("LISTEN_PID", "4242"), ("LISTEN_FDS", "3")]);
        assert_eq!(
            i.fds,
            vec![
                InheritedFd { fd: 3, name: None },
                InheritedFd { fd: 4, name: None },
                InheritedFd { fd: 5, name: None },
            ]
        );
        assert_eq!(i.readiness_fd, None);
        assert!(i.owned.is_empty());
    }

    #[test]
    fn fds_with_names_kept_verbatim() {
        let i = inherited(&[
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "http:unknown"),
        ]);
        let names: Vec<_> = i.fds.iter().map(|f| f.name.as_deref()).collect();
        assert_eq!(names, [Some("http"), Some("unknown")]);
        assert_eq!(i.fds[1].fd, 4);
    }

    #[test]
    fn zero_fds_with_matching_pid() {
        let i = inherited(&[("LISTEN_PID", "4242"), ("LISTEN_FDS", "0")]);
        assert!(i.fds.is_empty());
        let i = inherited(&[
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "0"),
            ("LISTEN_FDNAMES", ""),
            ("HANDOVER_SYNC_FD", "3"),
        ]);
        assert!(i.fds.is_empty());
        assert_eq!(i.readiness_fd, Some(3));
    }

    #[test]
    fn invalid_listen_fds() {
        for bad in ["", "abc", "-1", "+1", " 1", "1.5", "0x2"] {
            assert_eq!(
                err(&[("LISTEN_PID", "4242"), ("LISTEN_FDS", bad)]),
                EnvError::InvalidListenFds {
                    value: bad.to_owned()
                }
            );
        }
        for big in [
            "65537",
            "2147483647",
            "4294967296",
            "99999999999999999999999",
        ] {
            assert_eq!(
                err(&[("LISTEN_PID", "4242"), ("LISTEN_FDS", big)]),
                EnvError::TooManyFds {
                    value: big.to_owned()
                }
            );
        }
        let i = inherited(&[("LISTEN_PID", "4242"), ("LISTEN_FDS", "65536")]);
        assert_eq!(i.fds.len(), 65536);
        assert_eq!(i.fds.last().unwrap().fd, 65538);
    }

    #[test]
    fn names_must_match_count() {
        let base = [("LISTEN_PID", "4242"), ("LISTEN_FDS", "2")];
        for (names, count) in [("a", 1), ("a:b:c", 3), ("", 0)] {
            let mut pairs = base.to_vec();
            pairs.push(("LISTEN_FDNAMES", names));
            assert_eq!(
                err(&pairs),
                EnvError::NamesMismatch {
                    value: names.to_owned(),
                    names: count,
                    fds: 2
                }
            );
        }
    }

    #[test]
    fn names_must_be_valid() {
        for (names, bad) in [
            ("a:", ""),
            (":a", ""),
            ("a\tb:c", "a\tb"),
            ("ok:caf\u{e9}", "caf\u{e9}"),
        ] {
            assert_eq!(
                err(&[
                    ("LISTEN_PID", "4242"),
                    ("LISTEN_FDS", "2"),
                    ("LISTEN_FDNAMES", names),
                ]),
                EnvError::InvalidFdName {
                    value: names.to_owned(),
                    name: bad.to_owned()
                }
            );
        }
        let long = "x".repeat(256);
        assert!(matches!(
            err(&[
                ("LISTEN_PID", "4242"),
                ("LISTEN_FDS", "1"),
                ("LISTEN_FDNAMES", &long),
            ]),
            EnvError::InvalidFdName { .. }
        ));
    }

    #[test]
    fn readiness_fd() {
        let base = [("LISTEN_PID", "4242"), ("LISTEN_FDS", "2")];
        let with = |v: &'static str| {
            let mut p = base.to_vec();
            p.push(("HANDOVER_SYNC_FD", v));
            p
        };
        assert_eq!(inherited(&with("5")).readiness_fd, Some(5));
        assert_eq!(inherited(&with("100")).readiness_fd, Some(100));
        for inside in ["0", "2", "3", "4"] {
            assert_eq!(
                err(&with(inside)),
                EnvError::SyncFdOutOfRange {
                    value: inside.to_owned(),
                    min: 5
                }
            );
        }
        for bad in ["", "x", "-5", "+5", "2147483648"] {
            assert_eq!(
                err(&with(bad)),
                EnvError::InvalidSyncFd {
                    value: bad.to_owned()
                }
            );
        }
    }

    #[test]
    fn owned_fds() {
        let base = [("LISTEN_PID", "4242"), ("LISTEN_FDS", "3")];
        let with = |v: &'static str| {
            let mut p = base.to_vec();
            p.push(("HANDOVER_OWNED_FDS", v));
            p
        };
        assert_eq!(inherited(&with("5,3")).owned, vec![5, 3]);
        assert_eq!(inherited(&with("4,4")).owned, vec![4]);
        assert!(inherited(&with("")).owned.is_empty());
        for bad in ["6", "2", "3,6"] {
            assert!(
                matches!(
                    err(&with(bad)),
                    EnvError::OwnedFdOutOfRange { listen_fds: 3, .. }
                ),
                "{bad}"
            );
        }
        for (bad, entry) in [
            ("x", "x"),
            ("3,", ""),
            ("3, 4", " 4"),
            (",3", ""),
            ("-3", "-3"),
        ] {
            assert_eq!(
                err(&with(bad)),
                EnvError::InvalidOwnedFds {
                    value: bad.to_owned(),
                    entry: entry.to_owned()
                }
            );
        }
        let msg = err(&[
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "0"),
            ("HANDOVER_OWNED_FDS", "3"),
        ])
        .to_string();
        assert!(msg.contains("there are none"), "{msg}");
    }

    #[test]
    fn generation_is_a_number_below_2_pow_53() {
        let base = [("LISTEN_PID", "4242"), ("LISTEN_FDS", "0")];
        let with = |g: &str| {
            let mut pairs = base.to_vec();
            pairs.push(("HANDOVER_GENERATION", g));
            run(&pairs)
        };
        match with("9007199254740991") {
            Ok(Parsed::Inherited(i)) => assert_eq!(i.generation, Some(MAX_GENERATION)),
            other => panic!("{other:?}"),
        }
        for bad in [
            "9007199254740992",
            "18446744073709551616",
            "0",
            "-1",
            "+2",
            "",
            "x",
        ] {
            assert_eq!(
                with(bad),
                Err(EnvError::InvalidGeneration {
                    value: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
        assert_eq!(inherited(&base).generation, None);
        assert_eq!(next_generation(1), Some(2));
        assert_eq!(next_generation(MAX_GENERATION), None);
        assert_eq!(next_generation(u64::MAX), None);
    }

    #[test]
    fn non_utf8_values_are_errors_naming_the_variable() {
        let bad = OsString::from_vec(b"4\xff".to_vec());
        for &var in PROTOCOL_VARS {
            let mut map = env(&[
                ("LISTEN_PID", "4242"),
                ("LISTEN_FDS", "1"),
                ("LISTEN_FDNAMES", "a"),
                ("HANDOVER_SYNC_FD", "9"),
                ("HANDOVER_OWNED_FDS", "3"),
            ]);
            map.insert(var.to_string(), bad.clone());
            let e = parse(|k| map.get(k).cloned(), PID).unwrap_err();
            assert_eq!(
                e,
                EnvError::NotUnicode {
                    var,
                    value: bad.clone()
                }
            );
            assert!(e.to_string().starts_with(&format!("{var}=")), "{e}");
        }
    }

    #[test]
    fn error_messages_name_variable_value_and_expectation() {
        let msg = err(&[("LISTEN_PID", "4242"), ("LISTEN_FDS", "abc")]).to_string();
        assert_eq!(
            msg,
            "LISTEN_FDS=\"abc\" is not a number of file descriptors \
             (expected a non-negative decimal integer)"
        );
        let msg = err(&[("LISTEN_PID", "x")]).to_string();
        assert!(msg.starts_with("LISTEN_PID=\"x\" "), "{msg}");
        let msg = err(&[
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "a"),
        ])
        .to_string();
        assert!(msg.contains("LISTEN_FDNAMES=\"a\" has 1 name(s)"), "{msg}");
        let msg = err(&[
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "2"),
            ("HANDOVER_OWNED_FDS", "9"),
        ])
        .to_string();
        assert!(msg.contains("expected 3 to 4"), "{msg}");
    }

    fn round_trip(names: &[&str], readiness_fd: Option<RawFd>, owned: &[RawFd]) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut map: HashMap<String, OsString> = child_vars(&names, readiness_fd, owned)
            .into_iter()
            .map(|(k, v)| (k, OsString::from(v)))
            .collect();
        for key in map.keys() {
            assert!(PROTOCOL_VARS.contains(&key.as_str()), "{key}");
        }
        assert!(!map.contains_key(LISTEN_PID));
        map.insert(LISTEN_PID.to_owned(), PID.to_string().into());
        let parsed = parse(|k| map.get(k).cloned(), PID).unwrap();
        let expected = Inheritance {
            fds: names
                .iter()
                .enumerate()
                .map(|(i, n)| InheritedFd {
                    fd: FIRST_FD + i as RawFd,
                    name: Some(n.clone()),
                })
                .collect(),
            readiness_fd,
            owned: owned.to_vec(),
            generation: None,
        };
        assert_eq!(parsed, Parsed::Inherited(expected));
    }

    #[test]
    fn child_vars_round_trip() {
        round_trip(
            &["http", "tcp_[__1]_8080", "unix_/run/x.sock"],
            Some(6),
            &[5],
        );
        round_trip(&["a", "b"], None, &[]);
        round_trip(&["a", "b"], Some(100), &[4, 3]);
        round_trip(&[], Some(3), &[]);
        round_trip(&[], None, &[]);
    }

    #[test]
    fn child_vars_shape() {
        let vars = child_vars(&["a".into(), "b".into()], Some(5), &[3, 4]);
        let expect = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            vars,
            vec![
                expect("LISTEN_FDS", "2"),
                expect("LISTEN_FDNAMES", "a:b"),
                expect("HANDOVER_SYNC_FD", "5"),
                expect("HANDOVER_OWNED_FDS", "3,4"),
            ]
        );
        assert_eq!(child_vars(&[], None, &[]), vec![expect("LISTEN_FDS", "0")]);
    }
}
