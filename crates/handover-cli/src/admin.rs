//! `--admin ADDR`: a small HTTP/1.1 listener for load balancers and orchestrators. `GET
//! /healthz` answers for whichever worker serves: `200 ok` while a worker is ready and the
//! supervisor is not stopping, `503` while none is ready (starting, restarting) and from the
//! first stop request on (the lame duck, `--lame-duck`, and the drain). An upgrade keeps it
//! 200: the old worker serves until the new one is ready. `GET /metrics` answers the
//! supervisor's Prometheus metrics (`metrics.rs`, OpenMetrics text). Other paths answer 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// The path the health answer is served on.
pub const HEALTH_PATH: &str = "/healthz";
/// The path the metrics are served on.
pub const METRICS_PATH: &str = "/metrics";

/// What `/healthz` says, as the supervisor last set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// A worker is ready and the supervisor is not stopping.
    Ready,
    /// No worker is ready (yet, or again after a crash).
    NoWorker,
    /// A stop began: in lame duck, or draining.
    Stopping,
}

/// The supervisor writes it after every event; the admin listener reads it per request.
#[derive(Debug)]
pub struct HealthCell(AtomicU8);

impl Default for HealthCell {
    fn default() -> Self {
        HealthCell(AtomicU8::new(Health::NoWorker as u8))
    }
}

impl HealthCell {
    pub fn set(&self, h: Health) {
        self.0.store(h as u8, Ordering::SeqCst);
    }

    pub fn get(&self) -> Health {
        match self.0.load(Ordering::SeqCst) {
            x if x == Health::Ready as u8 => Health::Ready,
            x if x == Health::Stopping as u8 => Health::Stopping,
            _ => Health::NoWorker,
        }
    }
}

/// Binds `addr` now, so that a bad address fails the start-up with its reason.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on --admin {addr}: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("--admin {addr}: {e}"))?;
    Ok(l)
}

/// Serves `listener` until the returned task is aborted.
pub fn serve(
    listener: std::net::TcpListener,
    health: Arc<HealthCell>,
    metrics: Arc<Metrics>,
) -> Result<JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| format!("cannot serve --admin: {e}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of fds and the like: say so, back off briefly, go on.
                    tracing::warn!("--admin: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let health = Arc::clone(&health);
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = answer(&req, health.get(), &metrics);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

/// The answer to one request (pure, for the unit tests).
fn answer<B>(req: &Request<B>, health: Health, metrics: &Metrics) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != HEALTH_PATH && path != METRICS_PATH {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == METRICS_PATH {
        let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        return r;
    }
    match health {
        Health::Ready => text(StatusCode::OK, "ok\n"),
        Health::NoWorker => text(StatusCode::SERVICE_UNAVAILABLE, "no worker is ready\n"),
        Health::Stopping => text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // A cached "ok" would keep a stopping server in rotation.
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    fn answer<B>(req: &Request<B>, health: Health) -> Response<Full<Bytes>> {
        super::answer(req, health, &Metrics::new())
    }

    #[test]
    fn metrics_are_served_in_the_openmetrics_text_format() {
        let m = Metrics::new();
        m.upgrade_started();
        let r = super::answer(&req(Method::GET, "/metrics"), Health::NoWorker, &m);
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        let r = super::answer(&req(Method::POST, "/metrics"), Health::Ready, &m);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn healthz_follows_the_supervisor_and_other_paths_are_404() {
        let get = req(Method::GET, "/healthz");
        assert_eq!(answer(&get, Health::Ready).status(), StatusCode::OK);
        assert_eq!(
            answer(&get, Health::NoWorker).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            answer(&get, Health::Stopping).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            answer(&req(Method::HEAD, "/healthz"), Health::Ready).status(),
            StatusCode::OK
        );
        for path in ["/", "/healthz/", "/metricsx", "/healthzz"] {
            assert_eq!(
                answer(&req(Method::GET, path), Health::Ready).status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        assert_eq!(
            answer(&req(Method::POST, "/healthz"), Health::Ready).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn the_cell_keeps_what_was_set() {
        let c = HealthCell::default();
        assert_eq!(c.get(), Health::NoWorker);
        for h in [Health::Ready, Health::Stopping, Health::NoWorker] {
            c.set(h);
            assert_eq!(c.get(), h);
        }
    }
}
