//! The TCP and HTTP readiness probes (a small HTTP/1.1 client: one `GET`, status line only).
//! Blocking: they run on a thread of their own ([`crate::readiness`] polls them there, at a
//! finer grain than the runtime's 1 ms timer).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Succeeds when a TCP connection to `addr` is accepted.
pub fn tcp(addr: SocketAddr) -> Result<(), String> {
    connect(addr).map(drop)
}

/// Succeeds with the status code when `GET path` on `addr` answers 2xx.
pub fn http(addr: SocketAddr, host: &str, path: &str) -> Result<u16, String> {
    let stream = connect(addr)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: handover\r\nConnection: close\r\n\r\n"
    );
    let status_line = exchange(stream, request.as_bytes(), Instant::now() + ANSWER_TIMEOUT)
        .map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                format!("GET http://{host}{path}: no answer within {ANSWER_TIMEOUT:?}")
            }
            _ => format!("GET http://{host}{path}: {e}"),
        })?;
    let line = String::from_utf8_lossy(&status_line);
    let line = line.lines().next().unwrap_or("");
    let code = parse_status(line)
        .ok_or_else(|| format!("GET http://{host}{path}: not an HTTP answer ({line:?})"))?;
    if (200..300).contains(&code) {
        Ok(code)
    } else {
        Err(format!("GET http://{host}{path} answered {code}"))
    }
}

/// Sends `request` and reads until the first line ends (at most 4 KiB), all before `deadline`.
fn exchange(mut stream: TcpStream, request: &[u8], deadline: Instant) -> std::io::Result<Vec<u8>> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ErrorKind::TimedOut)
    };
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(request)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        stream.set_read_timeout(Some(left()?))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("connect to {addr}: timed out"),
        _ => format!("connect to {addr}: {e}"),
    })
}

fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn probes_a_real_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.1 503 No\r\n\r\n", "HTTP/1.1 204 Yes\r\n\r\n"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        let e = http(addr, "h", "/x").unwrap_err();
        assert!(e.contains("answered 503"), "{e}");
        assert_eq!(http(addr, "h", "/x").unwrap(), 204);
        server.join().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        tcp(closed_addr).unwrap();
        drop(closed);
        tcp(closed_addr).unwrap_err();
    }

    #[test]
    fn a_silent_server_ends_the_exchange_at_its_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect(addr).unwrap();
        // Accepted by the kernel, never answered: the deadline ends the wait.
        let e = exchange(
            stream,
            b"GET / HTTP/1.1\r\n\r\n",
            Instant::now() + Duration::from_millis(50),
        )
        .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        );
    }
}
