//! The TCP and HTTP readiness probes (a small HTTP/1.1 client: one `GET`, status line only).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Succeeds when a TCP connection to `addr` is accepted.
pub async fn tcp(addr: SocketAddr) -> Result<(), String> {
    connect(addr).await.map(drop)
}

/// Succeeds with the status code when `GET path` on `addr` answers 2xx.
pub async fn http(addr: SocketAddr, host: &str, path: &str) -> Result<u16, String> {
    let mut stream = connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: handover\r\nConnection: close\r\n\r\n"
    );
    let status_line = timeout(ANSWER_TIMEOUT, async {
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        std::io::Result::Ok(buf)
    })
    .await
    .map_err(|_| format!("GET http://{host}{path}: no answer within {ANSWER_TIMEOUT:?}"))?
    .map_err(|e| format!("GET http://{host}{path}: {e}"))?;
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

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
        Err(_) => Err(format!("connect to {addr}: timed out")),
    }
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

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(""), None);
    }

    #[tokio::test]
    async fn probes_a_real_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in ["HTTP/1.1 503 No\r\n\r\n", "HTTP/1.1 204 Yes\r\n\r\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let e = http(addr, "h", "/x").await.unwrap_err();
        assert!(e.contains("answered 503"), "{e}");
        assert_eq!(http(addr, "h", "/x").await.unwrap(), 204);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        tcp(closed_addr).await.unwrap();
        drop(closed);
        tcp(closed_addr).await.unwrap_err();
    }
}
