//! The local channels between generations: one Unix datagram socketpair per upgrade attempt,
//! its ends passed as fds named `quicfwd_g<N>_<socket>` (the generation `N` that reads the
//! other end, and the UDP socket it serves), and found again at start-up.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;

use crate::error::Error;
use crate::listener::CHANNEL_FD_PREFIX;
use crate::quic::keys::Secrets;
use crate::quic::wire::{self, Message};

/// What a channel's send buffer is asked to hold: forwarded datagrams queue here while the
/// older generation is busy (the kernel caps it at `net.core.wmem_max`).
const SEND_BUFFER: usize = 4 * 1024 * 1024;

/// A new channel: two connected Unix datagram sockets, close-on-exec (std creates them with
/// `SOCK_CLOEXEC`) and non-blocking.
pub(crate) fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
    let (a, b) = UnixDatagram::pair()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create a channel: {e}")))?;
    for s in [&a, &b] {
        s.set_nonblocking(true)?;
        // Best effort: the default (about 200 KiB) is enough for a light load.
        let _ = socket2::SockRef::from(s).set_send_buffer_size(SEND_BUFFER);
    }
    Ok((a, b))
}

/// The fd name of the channel to generation `generation` for the UDP socket `socket`.
pub(crate) fn fd_name(generation: u64, socket: &str) -> String {
    format!("{CHANNEL_FD_PREFIX}{generation}_{socket}")
}

/// The generation a channel fd name names, if it is one for `socket`: strictly
/// `quicfwd_g<decimal>_<socket>`.
pub(crate) fn parse_fd_name(name: &str, socket: &str) -> Option<u64> {
    let rest = name.strip_prefix(CHANNEL_FD_PREFIX)?;
    let (digits, tail) = rest.split_once('_')?;
    if tail != socket
        || digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// The channels a new generation inherited for one UDP socket.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    /// The generation that started this one, whose channel carries the keys.
    pub parent: Option<u64>,
    /// Every older generation's channel, the parent's included.
    pub peers: HashMap<u64, UnixDatagram>,
}

/// Takes the channels for `socket` out of `fds` (what the process inherited). Each must be a
/// Unix datagram socket naming a generation older than `own`.
pub(crate) fn claim(
    fds: &mut Vec<(OwnedFd, String)>,
    socket: &str,
    own: u64,
) -> Result<Inherited, Error> {
    let mut out = Inherited::default();
    let mut i = 0;
    while i < fds.len() {
        let Some(g) = parse_fd_name(&fds[i].1, socket) else {
            i += 1;
            continue;
        };
        let (fd, name) = fds.remove(i);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let bad = |reason: String| Error::Inherited {
            fd: raw,
            name: Some(name.clone()),
            reason,
        };
        if g >= own {
            return Err(bad(format!(
                "names generation {g}, not older than this one ({own})"
            )));
        }
        match socket2::SockRef::from(&fd).r#type() {
            Ok(t) if t == socket2::Type::DGRAM => {}
            Ok(_) => return Err(bad("is not a datagram socket".into())),
            Err(e) => return Err(bad(format!("cannot be inspected: {e}"))),
        }
        let chan = UnixDatagram::from(fd);
        chan.set_nonblocking(true)
            .map_err(|e| bad(format!("cannot be made non-blocking: {e}")))?;
        if out.peers.insert(g, chan).is_some() {
            return Err(bad(format!("is a second channel to generation {g}")));
        }
        out.parent = out.parent.max(Some(g));
    }
    Ok(out)
}

/// Reads the lineage secret the parent wrote into its channel before it started this process.
pub(crate) fn read_keys(parent: &UnixDatagram, socket: &str, from: u64) -> io::Result<Secrets> {
    let mut buf = [0u8; 256];
    let what = |m: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{socket}: the keys from generation {from}: {m}"),
        )
    };
    let n = parent.recv(&mut buf).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => what("none were sent".into()),
        _ => what(e.to_string()),
    })?;
    match wire::decode(&buf[..n]) {
        Ok(Message::Keys { secret }) => Ok(Secrets::from_bytes(secret)),
        Ok(_) => Err(what("another message came first".into())),
        Err(e) => Err(what(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// std's pair is close-on-exec (so no channel leaks into an unrelated child) and ours is
    /// non-blocking: read from the kernel's own account of the fds.
    #[test]
    fn channels_are_close_on_exec_and_non_blocking() {
        use std::os::fd::AsRawFd;
        let (a, b) = pair().unwrap();
        for s in [&a, &b] {
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", s.as_raw_fd())).unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap();
            assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "{info}");
            assert_ne!(flags & libc::O_NONBLOCK as u32, 0, "{info}");
        }
    }

    #[test]
    fn fd_names_round_trip_and_parse_strictly() {
        let n = fd_name(42, "udp_127.0.0.1_4433");
        assert_eq!(n, "quicfwd_g42_udp_127.0.0.1_4433");
        assert!(crate::addr::is_valid_fd_name(&n));
        assert_eq!(parse_fd_name(&n, "udp_127.0.0.1_4433"), Some(42));
        assert_eq!(parse_fd_name(&fd_name(u64::MAX, "s"), "s"), Some(u64::MAX));
        for bad in [
            "quicfwd_g42_other",
            "quicfwd_g_udp",
            "quicfwd_g042_udp",
            "quicfwd_g+4_udp",
            "quicfwd_g4x_udp",
            "quicfwd_g99999999999999999999_udp",
            "quicfwd_42_udp",
            "udp",
        ] {
            assert_eq!(parse_fd_name(bad, "udp"), None, "{bad}");
        }
    }

    #[test]
    fn the_newest_channel_is_the_parent_and_only_older_ones_are_accepted() {
        let (a, _ka) = pair().unwrap();
        let (b, _kb) = pair().unwrap();
        let (c, _kc) = pair().unwrap();
        let mut fds: Vec<(OwnedFd, String)> = vec![
            (a.into(), fd_name(3, "s")),
            (c.into(), fd_name(9, "other")),
            (b.into(), fd_name(5, "s")),
        ];
        let got = claim(&mut fds, "s", 6).unwrap();
        assert_eq!(got.parent, Some(5));
        assert_eq!(got.peers.len(), 2);
        assert_eq!(fds.len(), 1, "the other socket's channel is left");

        let (d, _kd) = pair().unwrap();
        let mut fds: Vec<(OwnedFd, String)> = vec![(d.into(), fd_name(6, "s"))];
        let e = claim(&mut fds, "s", 6).unwrap_err().to_string();
        assert!(e.contains("not older"), "{e}");
    }

    #[test]
    fn keys_written_before_the_start_are_read_and_a_missing_one_is_named() {
        let (ours, theirs) = pair().unwrap();
        let e = read_keys(&theirs, "udp_x", 1).err().unwrap().to_string();
        assert!(e.contains("udp_x") && e.contains("none were sent"), "{e}");
        let secret = [7u8; 32];
        let mut msg = Vec::new();
        wire::encode(&Message::Keys { secret }, &mut msg);
        ours.send(&msg).unwrap();
        assert_eq!(read_keys(&theirs, "udp_x", 1).unwrap().to_bytes(), secret);
    }
}
