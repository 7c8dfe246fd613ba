//! The HTTP reverse proxy's front door: HTTP/1.x clients go through the relay (`relay`); h2c
//! clients (HTTP/2 prior knowledge) are served by hyper here, their requests sent over pooled
//! HTTP/1.1 connections (`pool`) to the current worker. Bodies stream both ways; a request
//! stays in flight on its worker until its response body has been sent.
//!
//! Retries (on the current worker only): a request that was never sent (the connection failed
//! or was found closed first), and an idempotent request without a body whose pooled
//! connection turned out to be closed. A worker that cannot be reached gives 502, one that
//! does not answer within `--upstream-timeout` 504.

use std::convert::Infallible;
use std::fmt::Display;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::{timeout_at, Instant};

use super::headers;
use super::inbuf::Inbuf;
use super::pool::{Conn, Pool, ReqBody};
use super::relay::{self, Link};
use super::rewind::Rewind;
use super::sent::Tracked;
use super::stream::ClientStream;
use super::tls::TlsFront;
use super::upstream::Guard;
use super::Proxy;

/// The body of a response sent to a client.
type RespBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Tries per request (each on a fresh connection after the first).
const ATTEMPTS: usize = 4;

/// The HTTP/2 connection preface (RFC 9113 §3.4): an h2c client with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Accepts clients until the runtime ends (over TLS with `tls`).
pub async fn serve(listener: TcpListener, proxy: Proxy, tls: Option<Arc<TlsFront>>) {
    loop {
        let (stream, peer) = super::accept_client(&listener).await;
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let p = proxy.clone();
        let link = Link {
            peer,
            local,
            tls: tls.is_some(),
        };
        match &tls {
            None => proxy.spawn_client(stream, move |stream| client(stream, link, p)),
            Some(tls) => {
                let tls = Arc::clone(tls);
                proxy.spawn_client(stream, move |stream| async move {
                    if let Some(stream) = tls.accept(stream).await {
                        client(stream, link, p).await;
                    }
                });
            }
        }
    }
}

/// Serves one client connection: HTTP/1.x through the relay, HTTP/2 (h2c, or `h2` by ALPN)
/// through hyper.
async fn client<S: ClientStream>(mut stream: S, link: Link, proxy: Proxy) {
    let peer = link.peer;
    let mut inb = Inbuf::new();
    // As many bytes as it takes to tell the HTTP/2 preface from an HTTP/1 request line.
    loop {
        let got = inb.unread();
        let n = got.len().min(H2_PREFACE.len());
        if got[..n] != H2_PREFACE[..n] {
            return relay::serve(stream, inb, link, proxy).await;
        }
        if n == H2_PREFACE.len() {
            break;
        }
        match inb.fill(&mut stream).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    let prefix = inb.unread().to_vec();
    // This client's worker connections: never anyone else's (see `conns`).
    let pools = Arc::new(ClientPools::default());
    let service = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        let pools = Arc::clone(&pools);
        async move { Ok::<_, Infallible>(forward(&proxy, &pools, req, link).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(Rewind::new(prefix, stream)), service);
    if let Err(e) = conn.await {
        tracing::debug!("proxy: client {peer}: {e}");
    }
}

/// The method, URI and headers of a request that may be sent again.
type Template = (Method, Uri, HeaderMap);

/// One h2c client connection's pool of connections to the worker its requests go to now.
#[derive(Default)]
struct ClientPools {
    current: std::sync::Mutex<Option<(crate::events::WorkerId, Arc<Pool>)>>,
}

impl ClientPools {
    /// The pool for worker `up` (a new one when the worker changed or was retired: the old
    /// pool's idle connections close as it is dropped).
    fn for_upstream(&self, up: &Arc<super::upstream::Upstream>) -> Arc<Pool> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some((id, pool)) if *id == up.id && !up.is_retired() => Arc::clone(pool),
            _ => {
                let pool = Arc::new(Pool::new(Arc::clone(up)));
                *current = Some((up.id, Arc::clone(&pool)));
                pool
            }
        }
    }
}

/// Forwards one h2c request, and counts its answer against the worker it went to (the
/// per-generation counters, the canary's rule).
async fn forward(
    proxy: &Proxy,
    pools: &ClientPools,
    req: Request<Incoming>,
    link: Link,
) -> Response<RespBody> {
    let since = Instant::now();
    let mut used = None;
    let resp = forward_to(proxy, pools, req, link, &mut used).await;
    if let Some(up) = used {
        let answer = super::Answer::Status(resp.status().as_u16());
        proxy.record(&up, answer, since.elapsed());
    }
    resp
}

async fn forward_to(
    proxy: &Proxy,
    pools: &ClientPools,
    req: Request<Incoming>,
    link: Link,
    used: &mut Option<Arc<super::upstream::Upstream>>,
) -> Response<RespBody> {
    let peer = link.peer;
    let settings = proxy.settings();
    let deadline = Instant::now() + settings.upstream_timeout;
    let trusted = settings.trusted.iter().any(|c| c.contains(peer.ip()));
    let (mut parts, body) = req.into_parts();
    // HTTP/2 has no `Upgrade` (RFC 9113 §8.6); extended CONNECT is not supported.
    if let Err(why) = headers::prepare_request(&mut parts, peer.ip(), trusted, link.tls) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let bodiless = body.is_end_stream();
    let template: Option<Template> = (bodiless && idempotent(&parts.method)).then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    // Without a body, nothing to track (and no channel to make): the answer time starts now.
    let (body, mut body_sent) = if bodiless {
        (empty_req(), None)
    } else {
        let (body, sent) = Tracked::new(body.boxed_unsync());
        (body.boxed_unsync(), Some(sent))
    };
    let mut req = Some(Request::from_parts(parts, body));
    let mut fresh = false;
    for _ in 0..ATTEMPTS {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Some(guard) = proxy.acquire(wait, peer.ip()).await else {
            return error(StatusCode::BAD_GATEWAY, "no worker is serving");
        };
        let up = Arc::clone(guard.upstream());
        *used = Some(Arc::clone(&up));
        let pool = pools.for_upstream(&up);
        let Conn { mut sender, reused } = match timeout_at(deadline, pool.get(fresh)).await {
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the worker did not accept in time",
                )
            }
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                // Nothing was sent: if another worker has taken over, it gets the request.
                if proxy.moved_on_from(up.id) {
                    fresh = true;
                    continue;
                }
                tracing::warn!("proxy: cannot reach the worker at {}: {e}", up.addr);
                return error(
                    StatusCode::BAD_GATEWAY,
                    format!("cannot reach the worker: {e}"),
                );
            }
        };
        let Some(request) = req.take().or_else(|| template.as_ref().map(rebuild)) else {
            return error(StatusCode::BAD_GATEWAY, "the request cannot be sent again");
        };
        let send = sender.try_send_request(request);
        let answer = async {
            tokio::pin!(send);
            // The worker's time to answer starts once the request body has been sent (only
            // the first attempt has one).
            if let Some(sent) = body_sent.take() {
                tokio::select! {
                    r = &mut send => return Ok(r),
                    _ = sent => {}
                }
            }
            tokio::time::timeout(settings.upstream_timeout, send).await
        };
        match answer.await {
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the worker did not answer in time",
                )
            }
            Ok(Ok(resp)) => return respond(resp, sender, pool, guard, bodiless),
            Ok(Err(mut e)) => {
                fresh = true;
                if let Some(r) = e.take_message() {
                    req = Some(r); // never sent
                    continue;
                }
                if reused && template.is_some() {
                    continue; // a stale keep-alive connection; safe to send again
                }
                tracing::warn!("proxy: the worker at {} failed: {}", up.addr, e.error());
                return error(
                    StatusCode::BAD_GATEWAY,
                    format!("the worker failed: {}", e.error()),
                );
            }
        }
    }
    error(
        StatusCode::BAD_GATEWAY,
        "the worker kept closing connections",
    )
}

fn respond(
    mut resp: Response<Incoming>,
    sender: hyper::client::conn::http1::SendRequest<ReqBody>,
    pool: Arc<Pool>,
    guard: Guard,
    bodiless: bool,
) -> Response<RespBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return error(
            StatusCode::BAD_GATEWAY,
            "the worker switched protocols unasked",
        );
    }
    let sender = if bodiless {
        // Goes back to the pool as soon as the response has been read to the end (no task
        // to wait for that: the next request should find it there).
        Some(sender)
    } else {
        // Its request body may still be on its way: back once the connection is idle.
        pool.put_back_when_ready(sender);
        None
    };
    headers::prepare_response(resp.headers_mut());
    // The worker's HTTP version is not the client's (hyper answers in the client's).
    *resp.version_mut() = hyper::Version::HTTP_11;
    // The request stays in flight (the worker is not told to stop) until its body is sent.
    resp.map(|body| {
        let done = body.is_end_stream();
        let mut body = Relayed {
            body,
            sender,
            pool,
            guard,
        };
        if done {
            body.finish();
        }
        body.boxed_unsync()
    })
}

/// A worker's response body on its way to the client: holds its request in flight, and
/// returns its connection to the pool once read to the end.
struct Relayed {
    body: Incoming,
    sender: Option<hyper::client::conn::http1::SendRequest<ReqBody>>,
    pool: Arc<Pool>,
    /// Held until the body has been passed on: the request is in flight until then.
    #[allow(dead_code)]
    guard: Guard,
}

impl Relayed {
    fn finish(&mut self) {
        if let Some(s) = self.sender.take() {
            self.pool.put_back(s);
        }
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.finish(),
            Poll::Ready(Some(Err(_))) => self.sender = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn idempotent(m: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(m)
}

fn empty_req() -> ReqBody {
    Empty::new().map_err(|n| match n {}).boxed_unsync()
}

fn rebuild((method, uri, headers): &Template) -> Request<ReqBody> {
    let mut r = Request::new(empty_req());
    *r.method_mut() = method.clone();
    *r.uri_mut() = uri.clone();
    *r.headers_mut() = headers.clone();
    r
}

fn error(status: StatusCode, why: impl Display) -> Response<RespBody> {
    let text = format!("{status}: {why}\n");
    let mut r = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
