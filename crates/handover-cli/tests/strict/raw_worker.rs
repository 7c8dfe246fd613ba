//! The raw worker: reads request heads itself (httparse; bodies by Content-Length only) and
//! records them like the hyper worker; `/raw/<script>` answers with the bytes of [`script`],
//! written straight to the socket, for the tests of bad worker answers. Any other path gets a
//! normal keep-alive answer naming its target. The connection stays open after a script, so
//! the proxy may (wrongly) reuse it. `/raw/upgrade-101` says how many bytes came after the
//! request head before it answered `101`, then echoes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{answer_text, latin1, record, Record};

/// A response nobody asked for, shaped like a normal answer to `/injected`: a client that gets
/// it got another exchange's bytes.
pub fn injected() -> Vec<u8> {
    let body = answer_text(666, 0, "GET", "/injected");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One step of a scripted answer.
pub enum Step {
    /// Write these bytes.
    Write(Vec<u8>),
    /// Write the normal answer to the request.
    Answer,
    /// Wait (to let the proxy act on what was written so far).
    Pause(Duration),
    /// Print a line to stdout (the supervisor's log): the test's readiness signal.
    Say(&'static str),
}

/// The answer scripted for `/raw/<name>`.
pub fn script(name: &str) -> Option<Vec<Step>> {
    use Step::*;
    let w = |b: &[u8]| Write(b.to_vec());
    let inj = injected();
    let len = inj.len();
    Some(match name {
        "cl-te" => vec![w(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )],
        "bad-chunk-size" => vec![w(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )],
        "bad-chunk-lf" => vec![w(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        )],
        // The head and a good chunk go first: the proxy may have passed them on already.
        "bad-chunk-later" => vec![
            w(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
            Pause(Duration::from_millis(100)),
            w(b"5 x\r\nworld\r\n0\r\n\r\n"),
        ],
        "204-body" => vec![Write(
            [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], &inj].concat(),
        )],
        "204-chunked" => vec![w(
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )],
        "304-body" => vec![Write(
            [
                format!("HTTP/1.1 304 Not Modified\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
                &inj,
            ]
            .concat(),
        )],
        // Asked with HEAD: the length is the GET's, the bytes after the head are not a body.
        "head-body" => vec![Write(
            [
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
                &inj,
            ]
            .concat(),
        )],
        "extra-bytes" => vec![Answer, w(b"garbage after a complete response\r\n\r\n")],
        "second-response" => vec![Answer, Write(inj)],
        // While the connection sits in the proxy's pool.
        "late-second-response" => vec![
            Answer,
            Pause(Duration::from_millis(200)),
            Write(inj),
            Say("raw worker: sent the late response"),
        ],
        // Still to come when other clients' requests arrive: a proxy that shared this
        // connection with them would hand one of them this answer.
        "slow-second-response" => vec![
            Answer,
            Pause(Duration::from_millis(1500)),
            Write(inj),
            Say("raw worker: sent the slow response"),
        ],
        _ => return None,
    })
}

/// Accepts connections until the process is stopped.
pub async fn serve(listener: TcpListener) {
    static CONNS: AtomicU64 = AtomicU64::new(0);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let conn = CONNS.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(async move {
            connection(stream, conn).await;
            // The tests' sign that the proxy let go of a connection it must not reuse.
            println!("raw worker: connection {conn} closed");
        });
    }
}

async fn connection(mut s: TcpStream, conn: u64) {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let mut buf = Vec::new();
    loop {
        // A head.
        let (len, method, target, headers) = loop {
            let mut storage = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut storage);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), latin1(h.value)))
                        .collect();
                    let m = req.method.unwrap_or("").to_string();
                    break (n, m, req.path.unwrap_or("").to_string(), headers);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    record(&Record {
                        kind: "parse-error".into(),
                        conn,
                        error: e.to_string(),
                        ..Default::default()
                    });
                    return;
                }
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..len);
        // Its body, by Content-Length (the tests send no other).
        let cl: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < cl {
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..cl).collect();
        let id = IDS.fetch_add(1, Ordering::SeqCst) + 1;
        record(&Record {
            kind: "request".into(),
            conn,
            id,
            method: method.clone(),
            target: target.clone(),
            version: "HTTP/1.1".into(),
            headers,
            body: latin1(&body),
            ..Default::default()
        });
        if target == "/raw/upgrade-101" {
            return upgrade(s, buf).await;
        }
        let text = answer_text(id, conn, &method, &target);
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
            text.len(),
            if method == "HEAD" { "" } else { &text }
        );
        let steps = target
            .strip_prefix("/raw/")
            .and_then(script)
            .unwrap_or_else(|| vec![Step::Answer]);
        // A failed write skips the other writes, not the `Say` lines the test waits for.
        let mut broken = false;
        for step in steps {
            let written = match step {
                Step::Write(_) | Step::Answer if broken => Ok(()),
                Step::Write(b) => s.write_all(&b).await,
                Step::Answer => s.write_all(answer.as_bytes()).await,
                Step::Pause(d) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
                Step::Say(line) => {
                    println!("{line}");
                    Ok(())
                }
            };
            broken |= written.is_err();
        }
        if broken {
            return;
        }
    }
}

/// Waits a moment for bytes after the upgrade request's head (`early`: those read with it),
/// says how many came, answers `101` and echoes everything until the peer closes.
async fn upgrade(mut s: TcpStream, mut early: Vec<u8>) {
    let mut chunk = [0u8; 8192];
    if early.is_empty() {
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), s.peek(&mut chunk)).await
        {
            early.resize(n, 0);
            let _ = s.read_exact(&mut early).await;
        }
    }
    println!("raw worker: {} early bytes before the 101", early.len());
    let switch =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";
    if s.write_all(switch).await.is_err() || s.write_all(&early).await.is_err() {
        return;
    }
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
