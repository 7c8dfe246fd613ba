//! Request and response bodies through the HTTP/1.1 relay: a request body goes up in the
//! proxy's own framing (a chunked one parsed and re-framed, so only what parsed reaches the
//! worker), a response body comes back from the worker connection's read buffer.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::chunked::{Chunked, Reframer};
use super::conns::UpConn;
use super::inbuf::Inbuf;
use super::message::Framing;
use super::response;
use super::stream::ClientStream;

/// Why passing a body on stopped.
#[derive(Debug)]
pub(super) enum BodyError {
    /// The client went away.
    Client,
    /// The client's body broke its framing.
    Malformed(&'static str),
    /// The client sent nothing of its body for `--client-timeout`.
    Stalled,
    /// The worker's side failed.
    Upstream(String),
}

/// Sends the rest of the request body (its first bytes may be in `inb` already) upstream, in
/// the proxy's own framing: a `Content-Length` body as it is (its length is the one the head
/// says), a chunked body re-framed through `out` (only data that parsed goes up). The client
/// may pause up to `stall` between reads.
pub(super) async fn send_body<R, W>(
    framing: Framing,
    client: &mut R,
    inb: &mut Inbuf,
    up: &mut W,
    out: &mut Vec<u8>,
    stall: std::time::Duration,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let upstream = |e: std::io::Error| BodyError::Upstream(e.to_string());
    match framing {
        Framing::None | Framing::UntilClose => Ok(()),
        Framing::Length(mut left) => loop {
            if inb.is_empty() {
                client_fill(client, inb, stall).await?;
            }
            let n = inb
                .unread()
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            up.write_all(&inb.unread()[..n]).await.map_err(upstream)?;
            inb.consume(n);
            left -= n as u64;
            if left == 0 {
                return Ok(());
            }
        },
        Framing::Chunked => {
            let mut chunked = Chunked::new();
            loop {
                if inb.is_empty() {
                    client_fill(client, inb, stall).await?;
                }
                out.clear();
                let n = chunked
                    .feed(inb.unread(), |d| Reframer::data(out, d))
                    .map_err(BodyError::Malformed)?;
                inb.consume(n);
                let done = chunked.is_done();
                if done {
                    Reframer::end(out, chunked.trailers());
                }
                if !out.is_empty() {
                    up.write_all(out).await.map_err(upstream)?;
                }
                if done {
                    return Ok(());
                }
            }
        }
    }
}

/// Reads more of a request body; the client closing before its end, or pausing for `stall`,
/// is an error.
async fn client_fill<R: AsyncRead + Unpin>(
    client: &mut R,
    inb: &mut Inbuf,
    stall: std::time::Duration,
) -> Result<(), BodyError> {
    match tokio::time::timeout(stall, inb.fill(client)).await {
        Err(_) => Err(BodyError::Stalled),
        Ok(Ok(0) | Err(_)) => Err(BodyError::Client),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Passes the response body on, after the head in `out`: the head and the body bytes read
/// with it go in one write; later reads are written straight from the read buffer (chunk data
/// decoded for an HTTP/1.0 client goes through `out`).
pub(super) async fn pass_body<S: ClientStream>(
    resp: response::Response,
    client: &mut S,
    conn: &mut UpConn,
    out: &mut Vec<u8>,
) -> Result<(), BodyError> {
    let upstream = |e: &dyn std::fmt::Display| BodyError::Upstream(e.to_string());
    let mut left = match resp.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunked = Chunked::new();
    loop {
        let unread = conn.buf.unread();
        // How much of what was read is body, and whether the body ends with it.
        let (n, done) = match resp.framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let n = unread
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                left -= n as u64;
                (n, left == 0)
            }
            Framing::Chunked if resp.dechunk => {
                let n = chunked.feed(unread, |d| out.extend_from_slice(d));
                (n.map_err(|e| upstream(&e))?, chunked.is_done())
            }
            Framing::Chunked => {
                let n = chunked.feed(unread, |_| {});
                (n.map_err(|e| upstream(&e))?, chunked.is_done())
            }
            Framing::UntilClose => (unread.len(), false),
        };
        let body = if resp.dechunk { &[][..] } else { &unread[..n] };
        let sent = if out.is_empty() {
            client.write_all(body).await
        } else {
            out.extend_from_slice(body);
            let r = client.write_all(out).await;
            out.clear();
            r
        };
        sent.map_err(|_| BodyError::Client)?;
        conn.buf.consume(n);
        if done {
            return Ok(());
        }
        match conn.buf.fill(&mut conn.stream).await {
            Ok(0) if resp.framing == Framing::UntilClose => return Ok(()),
            Ok(0) => return Err(upstream(&"connection closed in a response body")),
            Ok(_) => {}
            Err(e) => return Err(upstream(&e)),
        }
    }
}
