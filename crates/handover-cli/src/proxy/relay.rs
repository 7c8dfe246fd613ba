//! The HTTP/1.1 relay: one task per client connection reads each request head, writes it
//! (rewritten, see `message`) to a pooled keep-alive connection to the current worker, streams
//! the body, and passes the response back the same way: bytes are copied between the two
//! connections' buffers with no per-request allocation, no task or channel between them, and
//! usually one read and one write per direction. Pipelined requests are served in order.
//!
//! - The request stays in flight on its worker (holding a `Guard`) until the response body
//!   has been passed on; a new worker gets only the requests that start after the switch.
//! - Retries, on the current worker only: a request whose head could not be written at all
//!   (nothing was sent), and an idempotent request without a body whose pooled connection
//!   turned out to be closed before any response byte. Nothing else is sent twice.
//! - A worker that cannot be reached gives 502, one that does not answer within
//!   `--upstream-timeout` after the request body was sent 504; a malformed request 400 (431
//!   for an oversized head), and the client connection is closed after it.
//! - A worker that answers before it has read the whole request body gets its answer passed
//!   on, and both connections are closed afterwards (the rest of the body is unread).
//! - Upgrades (`101 Switching Protocols`) become a tunnel that stays on its worker until
//!   either side closes or the worker's drain deadline.

use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant, Sleep};

use super::body::{pass_body, send_body, BodyError};
use super::conns::{Dropped, Held, UpConn};
use super::inbuf::Inbuf;
use super::lazy_timer;
use super::message::{self, Framing};
use super::request::{self, Origin};
use super::response::{self, Asked};
use super::spin::Waiting;
use super::stream::ClientStream;
use super::upstream::Guard;
use super::Proxy;

/// Tries per request (each on a fresh connection after the first).
const ATTEMPTS: usize = 4;

/// What a client connection does after a request.
enum Next {
    /// Read the next request.
    Continue,
    /// Close it.
    Close,
    /// Close it after reading away what the client still sends (a request body the worker
    /// did not want), for a while.
    Linger,
}

/// How long and how much a closing connection's unwanted request body is read away.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 20;

/// What came first while the request body went up.
enum Waited {
    /// The response head (or why there is none), and how sending the body went.
    Head(
        Result<response::Response, HeadError>,
        Option<Result<(), BodyError>>,
    ),
    /// The client went away mid-body.
    ClientGone,
    /// The client's body broke its framing (400) or stalled (408): answered with that.
    BadBody(u16, &'static str),
    /// No answer within the upstream timeout after the body was sent (whole, if true).
    TimedOut(bool),
}

/// Serves one client connection that speaks HTTP/1.x; `inb` holds what was read already.
pub async fn serve<S: ClientStream>(mut client: S, mut inb: Inbuf, link: Link, proxy: Proxy) {
    let Link { peer, local, tls } = link;
    let settings = proxy.settings();
    let peer_text = peer.ip().to_canonical().to_string();
    let local_text = local.to_string();
    let origin = Origin {
        peer: &peer_text,
        trusted: settings.trusted.iter().any(|c| c.contains(peer.ip())),
        local: &local_text,
        tls,
    };
    // Reused for every request on this connection.
    let mut head_out = Vec::with_capacity(1024);
    let mut resp_out = Vec::with_capacity(1024);
    let mut body_out = Vec::new();
    // This client's idle worker connection: never anyone else's.
    let mut held: Option<Held> = None;
    // The answer timeout of every request, and the client's time to send a request head.
    let timer = lazy_timer::idle();
    let head_timer = lazy_timer::idle();
    tokio::pin!(timer, head_timer);
    let client_timeout = settings.client_timeout;
    loop {
        let head_by = Instant::now() + client_timeout;
        lazy_timer::arm(head_timer.as_mut(), head_by, client_timeout / 4);
        // How much of the buffer is known to hold no end of head.
        let mut scanned = 0;
        let req = loop {
            let parsed = if message::head_may_end(inb.unread(), scanned) {
                scanned = 0; // parsed whole again next time if still incomplete
                request::parse(inb.unread(), origin, &mut head_out)
            } else {
                scanned = inb.unread().len();
                Ok(None)
            };
            match parsed {
                Ok(Some(r)) => break r,
                Ok(None) => tokio::select! {
                    biased;
                    r = inb.fill(&mut client) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    () = lazy_timer::until(head_timer.as_mut(), head_by) => {
                        if !inb.is_empty() {
                            let why = "the request head took too long";
                            response::error(&mut resp_out, 408, why, true, false);
                            let _ = client.write_all(&resp_out).await;
                        }
                        return; // idle keep-alive connections just close
                    }
                    (why, addr) = watch(&mut held) => {
                        if let Dropped::Unsolicited(n) = why {
                            tracing::warn!(
                                "proxy: the worker at {addr} sent {n} bytes with no request outstanding; closed that connection"
                            );
                        }
                        held = None;
                    }
                },
                Err(refusal) => {
                    response::error(&mut resp_out, refusal.status, refusal.why, true, false);
                    if client.write_all(&resp_out).await.is_ok() {
                        // The rest of what it sent is unread: a plain close could reset the
                        // connection before the client has read the answer.
                        linger(client).await;
                    }
                    return;
                }
            }
        };
        inb.consume(req.len);
        let ex = Exchange {
            proxy: &proxy,
            req: &req,
            head: &head_out,
            client: peer.ip(),
            since: Instant::now(),
        };
        let bufs = Bufs {
            out: &mut resp_out,
            body: &mut body_out,
        };
        match ex
            .run(&mut client, &mut inb, bufs, &mut held, timer.as_mut())
            .await
        {
            Next::Continue => {}
            Next::Close => return,
            Next::Linger => return linger(client).await,
        }
    }
}

/// Where a client connection comes from and goes to.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// It speaks TLS to the proxy (`https://`).
    pub tls: bool,
}

/// Resolves when `held` (if any) must be dropped.
async fn watch(held: &mut Option<Held>) -> (Dropped, SocketAddr) {
    match held {
        Some(h) => {
            let addr = h.upstream().addr;
            (h.watch().await, addr)
        }
        None => std::future::pending().await,
    }
}

/// A client connection's write buffers: response heads and error answers; re-framed request
/// body chunks.
struct Bufs<'a> {
    out: &'a mut Vec<u8>,
    body: &'a mut Vec<u8>,
}

/// Closes `client` gracefully: our side first, then whatever it still sends is read away
/// (bounded), so that it gets our last answer rather than a reset.
async fn linger<S: ClientStream>(mut client: S) {
    if client.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0u8; 16 * 1024];
    let mut total = 0;
    let until = Instant::now() + LINGER;
    while total < LINGER_BYTES {
        match timeout_at(until, tokio::io::AsyncReadExt::read(&mut client, &mut sink)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => return,
        }
    }
}

/// One request and its response.
struct Exchange<'a> {
    proxy: &'a Proxy,
    req: &'a request::Request,
    /// The request head as the worker gets it.
    head: &'a [u8],
    /// The client's address (the canary split may go by it).
    client: std::net::IpAddr,
    /// When the request head had been read (the latency counted per generation).
    since: Instant,
}

/// How sending a request to one worker connection went.
enum Sent {
    /// The response has been passed on (or the client went away); the worker connection, if
    /// it can serve this client's next request.
    Done(Next, Option<Held>),
    /// Nothing of the request reached the worker, or an idempotent request without a body
    /// found its pooled connection closed: may go again, on a fresh connection.
    Again,
}

impl Exchange<'_> {
    async fn run<S: ClientStream>(
        &self,
        client: &mut S,
        inb: &mut Inbuf,
        bufs: Bufs<'_>,
        held: &mut Option<Held>,
        mut timer: Pin<&mut Sleep>,
    ) -> Next {
        let Bufs { out, body } = bufs;
        let settings = self.proxy.settings();
        let deadline = Instant::now() + settings.upstream_timeout;
        let mut fresh = false;
        for _ in 0..ATTEMPTS {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Some(guard) = self.proxy.acquire(wait, self.client).await else {
                return self
                    .fail(client, out, 502, "no worker is serving", false)
                    .await;
            };
            let up = std::sync::Arc::clone(guard.upstream());
            // This client's own idle connection, if it is still good for this worker.
            let pooled = held.take().and_then(|h| h.take_for(&up)).filter(|_| !fresh);
            let conn = match pooled {
                Some(c) => c,
                None => match timeout_at(deadline, UpConn::connect(up.addr)).await {
                    Ok(Ok(c)) => c,
                    Err(_) => {
                        self.count(&up, 504);
                        return self
                            .fail(client, out, 504, "the worker did not accept in time", false)
                            .await;
                    }
                    Ok(Err(e)) => {
                        // Nothing was sent: if another worker has taken over, it gets it.
                        if self.proxy.moved_on_from(up.id) {
                            fresh = true;
                            continue;
                        }
                        tracing::warn!("proxy: cannot reach the worker at {}: {e}", up.addr);
                        self.count(&up, 502);
                        let why = format!("cannot reach the worker: {e}");
                        return self.fail(client, out, 502, &why, false).await;
                    }
                },
            };
            let bufs = Bufs {
                out: &mut *out,
                body: &mut *body,
            };
            match self
                .send(client, inb, bufs, conn, guard, timer.as_mut())
                .await
            {
                Sent::Done(next, kept) => {
                    *held = kept;
                    return next;
                }
                Sent::Again => fresh = true,
            }
        }
        self.fail(
            client,
            out,
            502,
            "the worker kept closing connections",
            false,
        )
        .await
    }

    /// Counts the answer `status` against worker `up` (per-generation counters, the canary's
    /// rule).
    fn count(&self, up: &super::upstream::Upstream, status: u16) {
        let answer = super::Answer::Status(status);
        self.proxy.record(up, answer, self.since.elapsed());
    }

    /// Answers the client with an error of the proxy's own. `whole`: the request body (if
    /// any) has been read; if not, the connection cannot go on (and lingers to close).
    async fn fail<S: ClientStream>(
        &self,
        client: &mut S,
        out: &mut Vec<u8>,
        status: u16,
        why: &str,
        whole: bool,
    ) -> Next {
        let whole = whole || self.req.framing == Framing::None;
        let close = !self.req.keep_alive || !whole;
        response::error(out, status, why, close, self.req.head);
        match client.write_all(out).await {
            Ok(()) if !close => Next::Continue,
            Ok(()) if !whole => Next::Linger,
            _ => Next::Close,
        }
    }

    async fn send<S: ClientStream>(
        &self,
        client: &mut S,
        inb: &mut Inbuf,
        bufs: Bufs<'_>,
        mut conn: UpConn,
        guard: Guard,
        mut timer: Pin<&mut Sleep>,
    ) -> Sent {
        let Bufs {
            out,
            body: body_out,
        } = bufs;
        let settings = self.proxy.settings();
        let up = std::sync::Arc::clone(guard.upstream());
        let waiting = Waiting::start();
        // The head goes in one write: if it fails, nothing was sent.
        match conn.stream.write(self.head).await {
            Ok(n) if n == self.head.len() => {}
            Ok(n) if n > 0 => {
                if conn.stream.write_all(&self.head[n..]).await.is_err() {
                    tracing::warn!("proxy: the worker at {} closed the connection", up.addr);
                    self.count(&up, 502);
                    let why = "the worker closed the connection";
                    return Sent::Done(self.fail(client, out, 502, why, false).await, None);
                }
            }
            _ => return Sent::Again,
        }
        let reused = conn.reused;
        let waited = {
            let UpConn { stream, buf, .. } = &mut conn;
            let (mut ur, mut uw) = stream.split();
            let (mut cr, mut cw) = client.halves();
            let asked = Asked {
                head: self.req.head,
                http10: self.req.http10,
                keep_alive: self.req.keep_alive,
                upgrade: self.req.upgrade,
            };
            // The body goes up while the response head is awaited: a worker may answer
            // early (413), and `100 Continue` must reach the client before it sends its body.
            let stall = settings.client_timeout;
            let body = send_body(self.req.framing, &mut cr, inb, &mut uw, body_out, stall);
            let head = read_head(&mut ur, buf, &mut cw, asked, out);
            tokio::pin!(body, head);
            let mut body_sent: Option<Result<(), BodyError>> =
                (self.req.framing == Framing::None).then_some(Ok(()));
            let mut answer_by = Instant::now() + settings.upstream_timeout;
            lazy_timer::arm(timer.as_mut(), answer_by, settings.upstream_timeout / 4);
            loop {
                tokio::select! {
                    biased;
                    r = &mut head => break Waited::Head(r, body_sent),
                    r = &mut body, if body_sent.is_none() => {
                        match r {
                            // The client is gone: nothing to answer.
                            Err(BodyError::Client) => break Waited::ClientGone,
                            Err(BodyError::Malformed(why)) => break Waited::BadBody(400, why),
                            Err(BodyError::Stalled) => {
                                break Waited::BadBody(408, "the request body stalled")
                            }
                            r => body_sent = Some(r),
                        }
                        answer_by = Instant::now() + settings.upstream_timeout;
                    }
                    () = lazy_timer::until(timer.as_mut(), answer_by), if body_sent.is_some() => {
                        break Waited::TimedOut(matches!(body_sent, Some(Ok(()))));
                    }
                }
            }
        };
        drop(waiting);
        let (resp, body_sent) = match waited {
            Waited::ClientGone => return Sent::Done(Next::Close, None),
            Waited::BadBody(status, why) => {
                // The worker has part of a body and no end to it: its connection goes.
                tracing::info!("proxy: refused a request body ({status}): {why}");
                return Sent::Done(self.fail(client, out, status, why, false).await, None);
            }
            Waited::TimedOut(whole) => {
                self.count(&up, 504);
                let why = "the worker did not answer in time";
                let next = self.fail(client, out, 504, why, whole).await;
                return Sent::Done(next, None);
            }
            Waited::Head(r, body_sent) => (r, body_sent),
        };
        let whole = matches!(body_sent, Some(Ok(())));
        let resp = match resp {
            Ok(r) if r.framing == Framing::None && !r.switching && !conn.buf.is_empty() => {
                // Bytes after a response that has no body: a body where none can be, or a
                // response to a request the proxy never sent. Neither may reach the client.
                tracing::warn!(
                    "proxy: the worker at {} sent {} bytes after a {} response that has no body",
                    up.addr,
                    conn.buf.unread().len(),
                    r.status
                );
                self.count(&up, 502);
                let why = "the worker sent a body where there can be none";
                return Sent::Done(self.fail(client, out, 502, why, whole).await, None);
            }
            Ok(r) => {
                self.count(&up, r.status);
                r
            }
            Err(HeadError::Closed)
                if reused && self.req.idempotent && self.req.framing == Framing::None =>
            {
                return Sent::Again; // a stale keep-alive connection; safe to send again
            }
            Err(HeadError::Client) => return Sent::Done(Next::Close, None),
            Err(e) => {
                tracing::warn!("proxy: the worker at {} failed: {e}", up.addr);
                self.count(&up, 502);
                let why = format!("the worker failed: {e}");
                return Sent::Done(self.fail(client, out, 502, &why, whole).await, None);
            }
        };
        if resp.switching {
            // `out` holds the 101 for the client; what follows it is the worker's first bytes.
            let reply = out.clone();
            return Sent::Done(tunnel(client, inb, conn, guard, &reply).await, None);
        }
        // The head (already in `out`) goes with the first of the body in one write.
        let passed = pass_body(resp, client, &mut conn, out).await;
        drop(guard);
        let kept = match passed {
            // Only a connection whose request went whole and whose response was read whole
            // (and nothing after it) serves this client again.
            Ok(()) if resp.reusable && whole => Held::keep(conn, up),
            Ok(()) => None,
            Err(BodyError::Upstream(e)) => {
                tracing::debug!("proxy: the worker at {} broke off a response: {e}", up.addr);
                return Sent::Done(Next::Close, None);
            }
            Err(_) => return Sent::Done(Next::Close, None),
        };
        let next = match (resp.keep_alive, whole) {
            (true, true) => Next::Continue,
            // The rest of the request body is still coming: read it away before closing, so
            // that the client sees the answer rather than a reset.
            (_, false) => Next::Linger,
            (false, true) => Next::Close,
        };
        Sent::Done(next, kept)
    }
}

/// Why no response head came.
#[derive(Debug)]
enum HeadError {
    /// The worker closed the connection before any response byte.
    Closed,
    /// The worker failed otherwise (reset after bytes, malformed head).
    Failed(String),
    /// The client went away while an interim response was passed on.
    Client,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Closed => f.write_str("connection closed before a response"),
            HeadError::Failed(e) => f.write_str(e),
            HeadError::Client => f.write_str("client gone"),
        }
    }
}

/// Reads the worker's final response head into `out` (rewritten for the client), passing
/// interim responses (`100 Continue`) on as they come. The head's bytes are consumed from
/// `buf`; what follows is the body.
async fn read_head<R, W>(
    up: &mut R,
    buf: &mut Inbuf,
    client: &mut W,
    asked: Asked,
    out: &mut Vec<u8>,
) -> Result<response::Response, HeadError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut got_any = !buf.is_empty();
    // As for requests: parse once an empty line has arrived.
    let mut scanned = 0;
    loop {
        if !message::head_may_end(buf.unread(), scanned) {
            scanned = buf.unread().len();
        } else {
            scanned = 0;
            match response::parse(buf.unread(), asked, out) {
                Ok(Some(r)) => {
                    buf.consume(r.len);
                    if !r.interim {
                        return Ok(r);
                    }
                    if !out.is_empty() {
                        client.write_all(out).await.map_err(|_| HeadError::Client)?;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(HeadError::Failed(e.to_string())),
            }
        }
        match buf.fill(up).await {
            Ok(0) if !got_any => return Err(HeadError::Closed),
            Ok(0) => {
                return Err(HeadError::Failed(
                    "connection closed in a response head".into(),
                ))
            }
            Ok(_) => got_any = true,
            Err(e) if !got_any => {
                tracing::debug!("proxy: worker connection: {e}");
                return Err(HeadError::Closed);
            }
            Err(e) => return Err(HeadError::Failed(e.to_string())),
        }
    }
}

/// After a `101`: passes `reply` and the bytes both sides sent early on, then copies both
/// ways until either side closes or the worker's drain deadline.
async fn tunnel<S: ClientStream>(
    client: &mut S,
    inb: &mut Inbuf,
    mut conn: UpConn,
    guard: Guard,
    reply: &[u8],
) -> Next {
    let closed = guard.upstream().closed();
    let copy = async {
        client.write_all(reply).await?;
        client.write_all(conn.buf.unread()).await?;
        conn.stream.write_all(inb.unread()).await?;
        tokio::io::copy_bidirectional(client, &mut conn.stream).await
    };
    tokio::select! {
        r = copy => if let Err(e) = r {
            tracing::debug!("proxy: upgraded connection: {e}");
        },
        () = closed => tracing::info!(
            "proxy: closed an upgraded connection to {} (drain deadline)",
            guard.upstream().addr
        ),
    }
    drop(guard);
    Next::Close
}
