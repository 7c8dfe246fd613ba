//! Serving HTTP/1.1 and HTTP/2 (hyper, axum, any tower service) with a drain that loses
//! nothing. Enabled by the `http` feature (on by default).
//!
//! Once this process starts draining (a successor took over, or a graceful stop began):
//!
//! - it accepts no new connection (the successor gets them from the shared backlog);
//! - a request in progress finishes; on HTTP/1 its response carries `Connection: close`, and
//!   so does every later response, so a busy keep-alive client reconnects between requests
//!   (to the new generation) and never sees its connection vanish;
//! - a connection with nothing in progress is closed only after it has been idle for the
//!   idle grace ([`crate::Builder::idle_grace`], default 1 s), with a clean FIN. A connection
//!   accepted but not read yet counts as idle, so it is served if its request comes within
//!   the grace. (HTTP/1.1 cannot do better: a client that sends a request at the very moment
//!   an idle connection is closed can lose it; the grace keeps that moment away from clients
//!   that are actually using the connection.)
//! - HTTP/2 connections get GOAWAY at once; open streams finish;
//! - at the drain deadline whatever is left is closed.
//!
//! Upgraded connections (WebSocket and the like) stay counted by the drain until the
//! application drops them; [`crate::Running::draining`] tells it when to close them politely.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::Notify;

use crate::drain::ServingState;
use crate::listener::Listener;

mod health;
#[cfg(feature = "tls")]
mod tls;
pub use health::{HealthCheck, DEFAULT_HEALTH_PATH};
#[cfg(feature = "tls")]
pub use tls::{serve_hyper_tls, serve_tls};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves a tower service, such as an axum `Router`, on `listener` with the lossless drain.
///
/// Give an axum `Router` its state first (`router.with_state(())` for a router without one),
/// as `axum::serve` does internally: a `Router` called as a plain service builds each
/// handler's route again for every request (measured with callgrind: one more allocation and
/// about 1 % more instructions per keep-alive request for `hello`).
///
/// Returns once a graceful stop's drain is over (every connection closed, or the drain
/// deadline passed). After a handover it does not return: the process may take over again if
/// its successor crashes, and ends when [`crate::Running::wait`] returns.
///
/// ```no_run
/// # async fn example(listener: handover::Listener) {
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
/// handover::http::serve(listener, app).await;
/// # }
/// ```
pub async fn serve<S, B>(listener: Listener, service: S)
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_hyper(
        listener,
        hyper_util::service::TowerToHyperService::new(service),
    )
    .await
}

/// Serves a hyper service (for example one made with `hyper::service::service_fn`) on
/// `listener` with the lossless drain. Returns like [`serve`].
pub async fn serve_hyper<S, B>(listener: Listener, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    accept_until_drained(listener, "http", |conn, _peer| {
        let service = service.clone();
        let builder = Arc::clone(&builder);
        let shared = Arc::clone(conn.shared());
        tokio::spawn(async move { serve_connection(&builder, shared, conn, service).await });
    })
    .await;
}

/// The accept loop both `serve_hyper` and the TLS variant run: `each` gets every accepted
/// connection (and spawns its task); accept errors get the one policy; returns once the drain
/// has ended (every connection closed, or the deadline).
pub(crate) async fn accept_until_drained(
    listener: Listener,
    what: &'static str,
    mut each: impl FnMut(crate::Connection, crate::listener::Peer),
) {
    let shared = Arc::clone(&listener.shared);
    while let Some(accepted) = listener.accept().await {
        match accepted {
            Ok((conn, peer)) => each(conn, peer),
            Err(e) => drop(crate::os::after_accept_error(what, &e).await),
        }
    }
    wait_drained(&shared).await;
}

async fn wait_drained(shared: &ServingState) {
    let (deadline, _) = shared.draining().await;
    shared.accepts_stopped().await;
    let _ = tokio::time::timeout_at(deadline, shared.conns.all_closed()).await;
}

/// Serves one connection (`io`: the plain [`crate::Connection`], or TLS over it) until it ends.
async fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    shared: Arc<ServingState>,
    io: I,
    service: S,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let notice = shared.drain_notice();
    let activity = Arc::new(Activity::new(Arc::clone(&shared)));
    let service = DrainAware {
        inner: service,
        activity: Arc::clone(&activity),
    };
    let http = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(http);

    let deadline = tokio::select! {
        biased;
        r = http.as_mut() => return log_conn_end(r),
        deadline = notice.wait() => deadline,
    };
    drop(notice);
    let mut shut = false;
    if activity.http2.load(Ordering::Relaxed) {
        // GOAWAY now; streams in progress finish.
        http.as_mut().graceful_shutdown();
        shut = true;
    }
    let grace = shared.idle_grace;
    loop {
        tokio::select! {
            r = http.as_mut() => return log_conn_end(r),
            _ = tokio::time::sleep_until(deadline) => return,
            _ = activity.idle_for(grace), if !shut => {
                http.as_mut().graceful_shutdown();
                shut = true;
            }
        }
    }
}

fn log_conn_end(r: Result<(), BoxError>) {
    if let Err(e) = r {
        tracing::debug!("connection ended with an error: {e}");
    }
}

/// What a connection is doing, kept with atomics so the request path stays cheap.
struct Activity {
    in_flight: AtomicUsize,
    /// Requests begun so far: an idle period is over when this moves.
    begun: AtomicU64,
    http2: AtomicBool,
    went_idle: Notify,
    shared: Arc<ServingState>,
}

impl Activity {
    fn new(shared: Arc<ServingState>) -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            went_idle: Notify::new(),
            shared,
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// Resolves once nothing has been in progress, and no request has begun, for `grace`.
    async fn idle_for(&self, grace: Duration) {
        loop {
            if self.in_flight.load(Ordering::Acquire) == 0 {
                let begun = self.begun.load(Ordering::Relaxed);
                tokio::time::sleep(grace).await;
                if self.in_flight.load(Ordering::Acquire) == 0
                    && self.begun.load(Ordering::Relaxed) == begun
                {
                    return;
                }
                continue;
            }
            self.went_idle.notified().await;
        }
    }
}

/// One request in progress; ends when its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.went_idle.notify_one();
        }
    }
}

/// Wraps the application's service: counts requests in progress and marks responses sent
/// while draining with `Connection: close`.
#[derive(Clone)]
struct DrainAware<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for DrainAware<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    B: Body,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = DrainAwareFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let h1 = req.version() < Version::HTTP_2;
        if !h1 {
            self.activity.http2.store(true, Ordering::Relaxed);
        }
        let in_flight = Some(self.activity.begin());
        DrainAwareFuture {
            inner: self.inner.call(req),
            in_flight,
            h1,
        }
    }
}

pin_project_lite::pin_project! {
    /// The application's response future, plus the request's place in the drain.
    struct DrainAwareFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        h1: bool,
    }
}

impl<F, B, E> Future for DrainAwareFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r?,
        };
        let in_flight = this.in_flight.take();
        let (mut parts, body) = resp.into_parts();
        let draining = in_flight.as_ref().is_some_and(|f| f.0.shared.is_draining());
        if *this.h1 && draining {
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(Response::from_parts(
            parts,
            TrackedBody {
                inner: body,
                _in_flight: in_flight,
            },
        )))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in progress until it is done.
    struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = r {
            this._in_flight.take();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
