//! Listen addresses: parsing, display and default systemd fd names.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// The accepted forms, repeated in every parse error so that a user who typed
/// something wrong on a command line sees what would have worked.
const EXPECTED: &str = "expected IP:PORT, tcp://IP:PORT, udp://IP:PORT or unix:PATH";

/// Longest fd name systemd accepts in `LISTEN_FDNAMES` / `FileDescriptorName=`.
const FD_NAME_MAX: usize = 255;

/// An address a server listens on: a TCP socket address, a UDP socket address
/// or a Unix domain socket path.
///
/// Parsed from strings such as `127.0.0.1:8080`, `[::1]:8080`,
/// `tcp://0.0.0.0:80`, `localhost:8080` (which means `127.0.0.1`, never a DNS
/// lookup), `udp://127.0.0.1:5353`, `udp://[::1]:53`, `unix:/run/app.sock`,
/// `unix:app.sock` (relative) and `unix:///run/app.sock`. Port 0 is allowed.
/// A bare `IP:PORT` is TCP; UDP is always written `udp://`.
///
/// [`Display`](fmt::Display) produces a canonical form (`tcp://IP:PORT`,
/// `udp://IP:PORT` or `unix:PATH`) that parses back to the same value, so it
/// can be used in configuration files and logs interchangeably.
///
/// ```
/// use handover::ListenAddr;
///
/// let a: ListenAddr = "localhost:8080".parse().unwrap();
/// assert_eq!(a.to_string(), "tcp://127.0.0.1:8080");
///
/// let u: ListenAddr = "unix:///run/app.sock".parse().unwrap();
/// assert_eq!(u, ListenAddr::Unix("/run/app.sock".into()));
/// assert_eq!(u.to_string(), "unix:/run/app.sock");
///
/// let d: ListenAddr = "udp://[::1]:5353".parse().unwrap();
/// assert_eq!(d, ListenAddr::Udp("[::1]:5353".parse().unwrap()));
/// assert_eq!(d.to_string(), "udp://[::1]:5353");
///
/// assert!("example.com:80".parse::<ListenAddr>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP address (IPv4 or IPv6) and port.
    Tcp(SocketAddr),
    /// A Unix domain stream socket bound to this filesystem path.
    Unix(PathBuf),
    /// A UDP address (IPv4 or IPv6) and port: a datagram socket, served by
    /// [`crate::Handover::datagram`] (systemd's `ListenDatagram=`).
    Udp(SocketAddr),
}

/// Error returned when a string is not a valid [`ListenAddr`].
///
/// Its message names the input, the specific problem and the accepted forms:
///
/// ```
/// use handover::ListenAddr;
///
/// let err = "foo".parse::<ListenAddr>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"invalid listen address "foo": missing port; expected IP:PORT, tcp://IP:PORT, udp://IP:PORT or unix:PATH"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen address {input:?}: {reason}; {EXPECTED}")]
pub struct AddrParseError {
    input: String,
    reason: Reason,
}

/// Why parsing failed. Private so the wording can change without an API break.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reason {
    Empty,
    EmptyUnixPath,
    NulInUnixPath,
    UnsupportedScheme(String),
    /// `udp:1.2.3.4:53` or `tcp:...`: the scheme without its `//`.
    SchemeWithoutSlashes(&'static str),
    MissingPort,
    InvalidPort(String),
    HostName(String),
    InvalidIp(String),
    UnbracketedIpv6,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Empty => f.write_str("empty address"),
            Reason::EmptyUnixPath => f.write_str("empty Unix socket path"),
            Reason::NulInUnixPath => f.write_str("Unix socket path contains a NUL byte"),
            Reason::UnsupportedScheme(s) => write!(f, "unsupported scheme {s:?}"),
            Reason::SchemeWithoutSlashes(s) => write!(f, "write {s}://IP:PORT, with the slashes"),
            Reason::MissingPort => f.write_str("missing port"),
            Reason::InvalidPort(p) => write!(f, "invalid port {p:?} (expected 0-65535)"),
            Reason::HostName(h) => write!(
                f,
                "host name {h:?} is not supported (only IP addresses and localhost are)"
            ),
            Reason::InvalidIp(h) => write!(f, "invalid IP address {h:?}"),
            Reason::UnbracketedIpv6 => {
                f.write_str("IPv6 addresses must be enclosed in brackets, e.g. [::1]:8080")
            }
        }
    }
}

impl FromStr for ListenAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map_err(|reason| AddrParseError {
            input: s.to_owned(),
            reason,
        })
    }
}

fn parse(s: &str) -> Result<ListenAddr, Reason> {
    if s.is_empty() {
        return Err(Reason::Empty);
    }
    // `unix://` must be checked before `unix:`: `unix:///run/x.sock` means the
    // path `/run/x.sock`, not `///run/x.sock`.
    if let Some(path) = s
        .strip_prefix("unix://")
        .or_else(|| s.strip_prefix("unix:"))
    {
        if path.is_empty() {
            return Err(Reason::EmptyUnixPath);
        }
        // The kernel takes sun_path as a C string; a NUL would silently
        // truncate the path at bind time.
        if path.contains('\0') {
            return Err(Reason::NulInUnixPath);
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    // Otherwise `udp:1.2.3.4:53` would be explained as an unbracketed IPv6 address.
    for scheme in ["udp", "tcp"] {
        if s.strip_prefix(scheme)
            .is_some_and(|r| r.starts_with(':') && !r.starts_with("://"))
        {
            return Err(Reason::SchemeWithoutSlashes(scheme));
        }
    }
    let (rest, make): (&str, fn(SocketAddr) -> ListenAddr) = match s.split_once("://") {
        Some(("tcp", rest)) => (rest, ListenAddr::Tcp),
        Some(("udp", rest)) => (rest, ListenAddr::Udp),
        Some((scheme, _)) => return Err(Reason::UnsupportedScheme(scheme.to_owned())),
        None => (s, ListenAddr::Tcp),
    };
    if let Ok(sa) = rest.parse::<SocketAddr>() {
        return Ok(make(sa));
    }
    // Not a plain socket address: work out the most useful explanation.
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(Reason::MissingPort);
    };
    if port.is_empty() {
        return Err(Reason::MissingPort);
    }
    // u16::from_str accepts a leading '+', which is not a port we want to
    // round-trip, so insist on digits.
    let port_num = match port.bytes().all(|b| b.is_ascii_digit()) {
        true => port.parse::<u16>().ok(),
        false => None,
    };
    if host.eq_ignore_ascii_case("localhost") {
        // Deliberately no resolver: "localhost" could resolve to ::1 or to
        // several addresses, and a listener must bind exactly one.
        let port = port_num.ok_or_else(|| Reason::InvalidPort(port.to_owned()))?;
        return Ok(make(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(Reason::InvalidIp(inner.to_owned()));
        }
    } else if host.contains(':') {
        // e.g. "::1:8080": rsplit found a colon inside the address itself.
        return Err(Reason::UnbracketedIpv6);
    } else if host.parse::<Ipv4Addr>().is_err() {
        // Stray whitespace is reported as a bad IP rather than a host name,
        // since that is what the user most likely meant to write.
        let looks_numeric = host
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b.is_ascii_whitespace());
        return Err(if looks_numeric || host.is_empty() {
            Reason::InvalidIp(host.to_owned())
        } else {
            Reason::HostName(host.to_owned())
        });
    }
    // The host is fine, so the port must be what SocketAddr rejected.
    Err(Reason::InvalidPort(port.to_owned()))
}

impl fmt::Display for ListenAddr {
    /// Formats as `tcp://IP:PORT`, `udp://IP:PORT` or `unix:PATH`.
    ///
    /// A Unix path that itself starts with `//` is written as `unix://` +
    /// path, because `unix://` is a prefix that parsing strips. Paths that are
    /// not valid UTF-8 are displayed lossily and will not round-trip.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(sa) => write!(f, "tcp://{sa}"),
            ListenAddr::Udp(sa) => write!(f, "udp://{sa}"),
            ListenAddr::Unix(path) => {
                let prefix = if path.as_os_str().as_encoded_bytes().starts_with(b"//") {
                    "unix://"
                } else {
                    "unix:"
                };
                write!(f, "{prefix}{}", path.display())
            }
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(sa: SocketAddr) -> Self {
        ListenAddr::Tcp(sa)
    }
}

impl ListenAddr {
    /// A default systemd fd name for this address, used in `LISTEN_FDNAMES`
    /// when the application did not name the listener.
    ///
    /// It is the `Display` form with `://`-less scheme (`tcp:`/`udp:`/`unix:`)
    /// and every `:` or non-printable/non-ASCII character replaced by `_`,
    /// truncated to 255 characters: `tcp_127.0.0.1_8080`, `tcp_[__1]_8080`,
    /// `udp_127.0.0.1_5353`, `unix_/run/x.sock`. Distinct addresses can map to the same name (the
    /// mapping is lossy); callers matching inherited fds should compare
    /// addresses, not just names, where that matters.
    pub fn fd_name(&self) -> String {
        let raw = match self {
            ListenAddr::Tcp(sa) => format!("tcp:{sa}"),
            ListenAddr::Udp(sa) => format!("udp:{sa}"),
            ListenAddr::Unix(path) => format!("unix:{}", path.to_string_lossy()),
        };
        raw.chars()
            .map(|c| {
                if c == ':' || !(' '..='~').contains(&c) {
                    '_'
                } else {
                    c
                }
            })
            // Every char is ASCII after the mapping, so chars == bytes.
            .take(FD_NAME_MAX)
            .collect()
    }
}

/// Whether `name` is acceptable as one entry of `LISTEN_FDNAMES`: 1 to 255
/// printable ASCII characters (0x20..=0x7E) other than `:`, which is the
/// separator.
///
/// systemd's own `fdname_is_valid()` also accepts the empty string; we reject
/// it because an empty name cannot identify a listener and usually means a
/// stray `::` in a hand-written variable.
pub(crate) fn is_valid_fd_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= FD_NAME_MAX
        && name
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    fn p(s: &str) -> ListenAddr {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn tcp(s: &str) -> ListenAddr {
        ListenAddr::Tcp(s.parse().unwrap())
    }

    #[test]
    fn parses_tcp_forms() {
        assert_eq!(p("127.0.0.1:8080"), tcp("127.0.0.1:8080"));
        assert_eq!(p("[::1]:8080"), tcp("[::1]:8080"));
        assert_eq!(p("tcp://0.0.0.0:80"), tcp("0.0.0.0:80"));
        assert_eq!(p("tcp://[::]:443"), tcp("[::]:443"));
        assert_eq!(p("localhost:9000"), tcp("127.0.0.1:9000"));
        assert_eq!(p("tcp://localhost:9000"), tcp("127.0.0.1:9000"));
        assert_eq!(p("LocalHost:1"), tcp("127.0.0.1:1"));
        assert_eq!(p("127.0.0.1:0"), tcp("127.0.0.1:0"));
        assert_eq!(p("localhost:0"), tcp("127.0.0.1:0"));
    }

    #[test]
    fn parses_udp_forms() {
        let udp = |s: &str| ListenAddr::Udp(s.parse().unwrap());
        assert_eq!(p("udp://127.0.0.1:5353"), udp("127.0.0.1:5353"));
        assert_eq!(p("udp://[::1]:53"), udp("[::1]:53"));
        assert_eq!(p("udp://[::]:0"), udp("[::]:0"));
        assert_eq!(p("udp://localhost:9000"), udp("127.0.0.1:9000"));
        assert_ne!(p("udp://127.0.0.1:53"), p("tcp://127.0.0.1:53"));
        for (input, needle) in [
            ("udp://", "missing port"),
            ("udp://127.0.0.1", "missing port"),
            ("udp://example.com:53", "host name \"example.com\""),
            ("udp://::1:53", "brackets"),
            ("udp://127.0.0.1:70000", "invalid port \"70000\""),
            ("udp:127.0.0.1:53", "write udp://IP:PORT, with the slashes"),
            ("tcp:[::1]:80", "write tcp://IP:PORT, with the slashes"),
        ] {
            let msg = input.parse::<ListenAddr>().unwrap_err().to_string();
            assert!(msg.contains(needle), "{input:?}: {msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn parses_unix_forms() {
        assert_eq!(
            p("unix:/run/x.sock"),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert_eq!(p("unix:x.sock"), ListenAddr::Unix("x.sock".into()));
        assert_eq!(p("unix:./a/b"), ListenAddr::Unix("./a/b".into()));
        assert_eq!(
            p("unix:///run/x.sock"),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert_eq!(p("unix://rel.sock"), ListenAddr::Unix("rel.sock".into()));
        assert_eq!(p("unix:with space"), ListenAddr::Unix("with space".into()));
    }

    #[test]
    fn rejects_bad_input_with_specific_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty address"),
            ("unix:", "empty Unix socket path"),
            ("unix://", "empty Unix socket path"),
            ("unix:a\0b", "NUL"),
            ("http://1.2.3.4:80", "unsupported scheme \"http\""),
            ("foo", "missing port"),
            ("127.0.0.1", "missing port"),
            ("127.0.0.1:", "missing port"),
            ("127.0.0.1:65536", "invalid port \"65536\""),
            ("127.0.0.1:+80", "invalid port \"+80\""),
            ("127.0.0.1:http", "invalid port \"http\""),
            ("localhost:x", "invalid port \"x\""),
            ("localhost:", "missing port"),
            ("example.com:80", "host name \"example.com\""),
            ("tcp://example.com:80", "host name \"example.com\""),
            ("1.2.3:80", "invalid IP address \"1.2.3\""),
            ("256.0.0.1:80", "invalid IP address \"256.0.0.1\""),
            (":80", "invalid IP address \"\""),
            ("[zz]:80", "invalid IP address \"zz\""),
            ("::1:8080", "brackets"),
            ("[::1]:x", "invalid port \"x\""),
            ("tcp://", "missing port"),
            (" 127.0.0.1:80", "invalid IP address"),
        ];
        for (input, needle) in cases {
            let err = input
                .parse::<ListenAddr>()
                .expect_err(&format!("{input:?} should be rejected"));
            let msg = err.to_string();
            assert!(msg.contains(needle), "{input:?}: {msg:?} lacks {needle:?}");
            assert!(
                msg.starts_with(&format!("invalid listen address {input:?}: ")),
                "{msg}"
            );
            assert!(msg.ends_with(EXPECTED), "{msg}");
        }
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(p("127.0.0.1:8080").to_string(), "tcp://127.0.0.1:8080");
        assert_eq!(p("[::1]:8080").to_string(), "tcp://[::1]:8080");
        assert_eq!(p("unix:///run/x.sock").to_string(), "unix:/run/x.sock");
        assert_eq!(p("unix:rel").to_string(), "unix:rel");
        assert_eq!(p("udp://[::1]:53").to_string(), "udp://[::1]:53");
    }

    #[test]
    fn display_round_trips() {
        let values = [
            tcp("127.0.0.1:8080"),
            tcp("0.0.0.0:0"),
            tcp("[::1]:8080"),
            tcp("[::ffff:1.2.3.4]:80"),
            tcp("[fe80::1]:65535"),
            ListenAddr::Udp("127.0.0.1:5353".parse().unwrap()),
            ListenAddr::Udp("[::1]:0".parse().unwrap()),
            ListenAddr::Tcp(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
                80,
                0,
                3,
            ))),
            ListenAddr::Unix("/run/x.sock".into()),
            ListenAddr::Unix("rel.sock".into()),
            ListenAddr::Unix("//double/slash".into()),
            ListenAddr::Unix("/".into()),
            ListenAddr::Unix("unix:weird".into()),
            ListenAddr::Unix("a:b c".into()),
        ];
        for v in values {
            let shown = v.to_string();
            assert_eq!(p(&shown), v, "round trip of {shown:?}");
        }
    }

    #[test]
    fn from_socket_addr() {
        let sa: SocketAddr = "10.0.0.1:1234".parse().unwrap();
        assert_eq!(ListenAddr::from(sa), ListenAddr::Tcp(sa));
    }

    #[test]
    fn fd_names() {
        assert_eq!(p("127.0.0.1:8080").fd_name(), "tcp_127.0.0.1_8080");
        assert_eq!(p("[::1]:8080").fd_name(), "tcp_[__1]_8080");
        assert_eq!(p("unix:/run/x.sock").fd_name(), "unix_/run/x.sock");
        assert_eq!(p("udp://127.0.0.1:53").fd_name(), "udp_127.0.0.1_53");
        assert_eq!(p("udp://[::1]:53").fd_name(), "udp_[__1]_53");
        assert_eq!(p("unix:a:b\tc\u{e9}").fd_name(), "unix_a_b_c_");
        let long = ListenAddr::Unix(PathBuf::from(format!("/{}", "x".repeat(400))));
        assert_eq!(long.fd_name().len(), 255);
        for v in [
            p("127.0.0.1:8080"),
            p("[::1]:0"),
            p("unix:a:b\u{7f}\n"),
            long,
        ] {
            assert!(is_valid_fd_name(&v.fd_name()), "{:?}", v.fd_name());
        }
    }

    #[test]
    fn non_utf8_path_fd_name_is_valid() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let v = ListenAddr::Unix(PathBuf::from(OsStr::from_bytes(b"/run/\xff.sock")));
        let name = v.fd_name();
        assert!(is_valid_fd_name(&name), "{name:?}");
        assert!(name.starts_with("unix_/run/"), "{name:?}");
    }

    #[test]
    fn fd_name_validation() {
        assert!(is_valid_fd_name("http"));
        assert!(is_valid_fd_name("unknown"));
        assert!(is_valid_fd_name(" ~!@#$%^&*()"));
        assert!(is_valid_fd_name(&"a".repeat(255)));
        assert!(!is_valid_fd_name(""));
        assert!(!is_valid_fd_name(&"a".repeat(256)));
        assert!(!is_valid_fd_name("a:b"));
        assert!(!is_valid_fd_name("a\nb"));
        assert!(!is_valid_fd_name("a\u{7f}"));
        assert!(!is_valid_fd_name("caf\u{e9}"));
    }
}
