//! The idle-connection clients: each opens a keep-alive connection, makes one request, then
//! sends nothing and watches how the connection ends (FIN, RST, unexpected data, or still
//! open when told to give up); after a close it reconnects once and asks which version
//! answers a fresh connection now.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use crate::http1::{self, Parse};
use crate::version::{parse_pid, Greetings, Version};

/// What every client shares.
pub struct Shared {
    /// Server address.
    pub addr: SocketAddr,
    /// Timeout of one connect + request.
    pub timeout: Duration,
    /// Body prefixes of v1 and v2.
    pub greetings: Greetings,
    /// Clients that have finished their first request (successfully or not).
    pub opened: Arc<AtomicUsize>,
    /// Clients whose connection has ended (or that failed to open).
    pub ended: Arc<AtomicUsize>,
    /// Becomes `true` when clients still waiting should give up.
    pub give_up: watch::Receiver<bool>,
}

/// A response on a connection: status, version, PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Build named by the greeting.
    pub version: Option<Version>,
    /// `pid=` in the body.
    pub pid: Option<u32>,
    /// The response said `Connection: close`.
    pub close: bool,
}

/// How an idle connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Orderly close (read returned 0).
    Fin,
    /// Connection reset.
    Reset,
    /// The server sent bytes although nothing was asked.
    Data,
    /// Another read error.
    Error,
    /// Still open when the clients were told to give up.
    StillOpen,
}

/// One client's story.
#[derive(Debug, Clone)]
pub struct ConnResult {
    /// The first request: an answer, or the kind of failure.
    pub open: Result<Answer, &'static str>,
    /// How and when the connection ended (`None` if it never opened).
    pub end: Option<(End, Instant)>,
    /// The request on a fresh connection after the end: an answer or a failure kind.
    pub reconnect: Option<Result<Answer, &'static str>>,
}

fn kind_of(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "reset"
        }
        ErrorKind::UnexpectedEof => "eof",
        ErrorKind::TimedOut => "timeout",
        _ => "other",
    }
}

/// Connects and makes one request (`close` adds `Connection: close`).
async fn request(sh: &Shared, close: bool) -> Result<(TcpStream, Answer), &'static str> {
    let work = async {
        let mut s = TcpStream::connect(sh.addr).await.map_err(|e| kind_of(&e))?;
        s.set_nodelay(true).map_err(|e| kind_of(&e))?;
        s.write_all(&http1::request(sh.addr.port(), close))
            .await
            .map_err(|e| kind_of(&e))?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 2048];
        // Bounded: the whole exchange is under a timeout, and the response is small.
        loop {
            let n = s.read(&mut chunk).await.map_err(|e| kind_of(&e))?;
            buf.extend_from_slice(&chunk[..n]);
            match http1::parse(&buf, n == 0) {
                Parse::Done(r) if r.body_end <= buf.len() => {
                    let body = &buf[r.body_start..r.body_end];
                    let a = Answer {
                        status: r.status,
                        version: sh.greetings.classify(body),
                        pid: parse_pid(body),
                        close: r.close,
                    };
                    return Ok((s, a));
                }
                Parse::Invalid(_) => return Err("protocol"),
                _ if n == 0 => return Err("eof"),
                _ if buf.len() > 64 * 1024 => return Err("protocol"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(sh.timeout, work)
        .await
        .unwrap_or(Err("timeout"))
}

/// Waits for the connection to end, or for the signal to give up.
async fn watch_end(s: &mut TcpStream, give_up: &mut watch::Receiver<bool>) -> End {
    let mut buf = [0u8; 256];
    let wait = async {
        // Bounded by the sender: it sets `true` at the deadline (or drops, which ends this).
        while !*give_up.borrow_and_update() {
            if give_up.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        r = s.read(&mut buf) => match r {
            Ok(0) => End::Fin,
            Ok(_) => End::Data,
            Err(e) if kind_of(&e) == "reset" => End::Reset,
            Err(_) => End::Error,
        },
        _ = wait => End::StillOpen,
    }
}

/// One client: open (at most `limit` opening at once), idle until the end, reconnect once.
pub async fn client(sh: Rc<Shared>, limit: Rc<Semaphore>) -> ConnResult {
    let permit = limit.acquire().await.ok();
    let opened = request(&sh, false).await;
    drop(permit);
    sh.opened.fetch_add(1, Ordering::SeqCst);
    let (mut stream, answer) = match opened {
        Ok(x) => x,
        Err(kind) => {
            sh.ended.fetch_add(1, Ordering::SeqCst);
            return ConnResult {
                open: Err(kind),
                end: None,
                reconnect: None,
            };
        }
    };
    let mut give_up = sh.give_up.clone();
    let end = watch_end(&mut stream, &mut give_up).await;
    let at = Instant::now();
    drop(stream);
    let reconnect = if end == End::StillOpen {
        None
    } else {
        let permit = limit.acquire().await.ok();
        let r = request(&sh, true).await.map(|(_, a)| a);
        drop(permit);
        Some(r)
    };
    sh.ended.fetch_add(1, Ordering::SeqCst);
    ConnResult {
        open: Ok(answer),
        end: Some((end, at)),
        reconnect,
    }
}

/// Runs `n` clients on a current-thread runtime until all have finished.
pub fn run(sh: Shared, n: usize, concurrency: usize) -> std::io::Result<Vec<ConnResult>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sh = Rc::new(sh);
    let limit = Rc::new(Semaphore::new(concurrency.max(1)));
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, async move {
        let handles: Vec<_> = (0..n)
            .map(|_| tokio::task::spawn_local(client(Rc::clone(&sh), Rc::clone(&limit))))
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            if let Ok(r) = h.await {
                out.push(r);
            }
        }
        out
    }))
}
