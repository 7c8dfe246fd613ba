//! The strict worker proper: hyper's HTTP/1.1 server (keep-alive, the defaults otherwise), each
//! request recorded before it is answered; `GET /slow/<ms>` answers after `ms` milliseconds.
//! [`hyper_config`] is shared with the fuzz test's in-process reference parser, so that "what
//! hyper accepts" means the same thing on both sides.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::{answer_text, latin1, raw_file, record, Record};

/// hyper's HTTP/1 server as the worker (and the fuzz test's reference) runs it. Half-close
/// on: a request followed by the client's EOF is still served (the fuzz test closes its
/// write side after a request; the proxy never does towards the worker).
pub fn hyper_config() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.keep_alive(true).half_close(true);
    b
}

/// `(name, value)` pairs, values as Latin-1.
pub fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), latin1(v.as_bytes())))
        .collect()
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
            let io = TokioIo::new(Recorded {
                inner: stream,
                file: raw_file(conn),
            });
            let service = hyper::service::service_fn(move |req| handle(req, conn));
            if let Err(e) = hyper_config().serve_connection(io, service).await {
                // A head hyper cannot parse is the proxy's fault; a connection the proxy cut
                // mid-body is not (it may refuse a body it has started to pass on).
                if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
                    record(&Record {
                        kind: "parse-error".into(),
                        conn,
                        error: e.to_string(),
                        ..Default::default()
                    });
                }
            }
        });
    }
}

async fn handle(req: Request<Incoming>, conn: u64) -> Result<Response<Full<Bytes>>, Infallible> {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let (parts, body) = req.into_parts();
    let mut r = Record {
        conn,
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        version: format!("{:?}", parts.version),
        headers: header_pairs(&parts.headers),
        ..Default::default()
    };
    match body.collect().await {
        Ok(collected) => {
            r.trailers = collected.trailers().map(header_pairs).unwrap_or_default();
            r.body = latin1(&collected.to_bytes());
            r.kind = "request".into();
        }
        Err(e) => {
            r.kind = "body-error".into();
            r.error = e.to_string();
            record(&r);
            return Ok(reply(500, "body error\n".into()));
        }
    }
    r.id = IDS.fetch_add(1, Ordering::SeqCst) + 1;
    // Recorded before the answer: a client that has its answer can read the record.
    record(&r);
    if let Some(ms) = parts.uri.path().strip_prefix("/slow/") {
        let ms = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let text = answer_text(r.id, conn, &r.method, &r.target);
    let mut resp = reply(200, text);
    resp.headers_mut()
        .insert("x-request-id", r.id.to_string().parse().unwrap());
    Ok(resp)
}

fn reply(status: u16, text: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    resp
}

/// A connection whose every byte read is also appended to a file.
struct Recorded {
    inner: TcpStream,
    file: std::fs::File,
}

impl AsyncRead for Recorded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        use std::io::Write as _;
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            this.file
                .write_all(&buf.filled()[before..])
                .expect("write a raw file");
        }
        r
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
