//! The idle-connection counting against a fake server that ends connections on purpose with
//! FIN, RST, unrequested bytes, or not at all.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use super::client::{self, End, Shared};
use crate::version::{Greetings, Version};

fn read_request(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut b = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
}

fn answer(s: &mut TcpStream, body: &str) {
    let r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(r.as_bytes());
}

fn reset(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a valid option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Connection `i` (0-based, in accept order): answers v1, then ends it by `i % 4`: 0 FIN,
/// 1 RST, 2 unrequested bytes, 3 never. Later connections (reconnects) get v2 and a FIN.
fn fake_server(n: usize) -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut first = Vec::new();
        for i in 0..n + n / 4 * 3 {
            let Ok((mut s, _)) = l.accept() else { return };
            read_request(&mut s);
            if i < n {
                answer(&mut s, "v1 Welcome Server pid=1");
                first.push(s);
            } else {
                answer(&mut s, "v2 Welcome New Server pid=2");
            }
            if first.len() == n {
                std::thread::sleep(Duration::from_millis(100));
                for (j, mut s) in first.drain(..).enumerate() {
                    match j % 4 {
                        0 => drop(s),
                        1 => {
                            reset(&s);
                            drop(s);
                        }
                        2 => {
                            let _ = s.write_all(b"junk");
                        }
                        _ => kept.push(s),
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    addr
}

#[test]
fn ends_are_told_apart() {
    let n = 8;
    let addr = fake_server(n);
    let (tx, give_up) = tokio::sync::watch::channel(false);
    let ended = Arc::new(AtomicUsize::new(0));
    let sh = Shared {
        addr,
        timeout: Duration::from_secs(2),
        greetings: Greetings::new("v1 Welcome Server", "v2 Welcome New Server"),
        opened: Arc::new(AtomicUsize::new(0)),
        ended: Arc::clone(&ended),
        give_up,
    };
    let t = std::thread::spawn(move || client::run(sh, n, 4).unwrap());
    super::wait_for(
        &ended,
        n / 4 * 3,
        std::time::Instant::now() + Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_millis(100));
    tx.send(true).unwrap();
    let res = t.join().unwrap();
    assert_eq!(res.len(), n);
    let count = |e: End| res.iter().filter(|r| r.end.map(|x| x.0) == Some(e)).count();
    assert!(res
        .iter()
        .all(|r| r.open.map(|a| a.version) == Ok(Some(Version::V1))));
    assert_eq!(count(End::Fin), 2);
    assert_eq!(count(End::Reset), 2);
    assert_eq!(count(End::Data), 2);
    assert_eq!(count(End::StillOpen), 2);
    let v2 = res
        .iter()
        .filter(|r| matches!(r.reconnect, Some(Ok(a)) if a.version == Some(Version::V2)))
        .count();
    assert_eq!(v2, 6, "every ended connection reconnects once");
}
