//! HTTP over TLS: the TLS handshake ([`crate::tls::TlsAcceptor`]), then the same connection
//! handling, and so the same drain, as plain HTTP.
//!
//! What TLS adds to the drain: a connection still in its handshake when draining starts is
//! counted like any other and its handshake is finished (within the handshake timeout), then
//! it is served like a connection accepted but not read yet. Every close this module makes is
//! `close_notify` then FIN (hyper shuts the stream down, and rustls's shutdown is exactly that),
//! so a client can tell "the server is done" from a cut connection.

use std::sync::Arc;

use http_body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio_rustls::rustls::ServerConfig;

use super::{accept_until_drained, serve_connection, BoxError};
use crate::listener::Listener;
use crate::tls::TlsAcceptor;

/// Serves a tower service, such as an axum `Router`, over TLS on `listener`, with the
/// lossless drain of [`super::serve`]. `config` usually comes from
/// [`crate::tls::server_config`]; give it ALPN `h2` and `http/1.1` to offer both.
///
/// ```no_run
/// # async fn example(listener: handover::Listener) -> Result<(), handover::tls::TlsError> {
/// use std::path::Path;
/// let config = handover::tls::server_config(
///     Path::new("cert.pem"),
///     Path::new("key.pem"),
///     &[b"h2", b"http/1.1"],
/// )?;
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
/// handover::http::serve_tls(listener, config, app).await;
/// # Ok(())
/// # }
/// ```
pub async fn serve_tls<S, B>(listener: Listener, config: Arc<ServerConfig>, service: S)
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_hyper_tls(
        listener,
        config,
        hyper_util::service::TowerToHyperService::new(service),
    )
    .await
}

/// Serves a hyper service over TLS on `listener`; see [`serve_tls`].
pub async fn serve_hyper_tls<S, B>(listener: Listener, config: Arc<ServerConfig>, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let acceptor = TlsAcceptor::new(config);
    accept_until_drained(listener, "https", |conn, peer| {
        let service = service.clone();
        let builder = Arc::clone(&builder);
        let acceptor = acceptor.clone();
        let shared = Arc::clone(conn.shared());
        // The handshake runs in the connection's task, so a slow one holds up nobody.
        tokio::spawn(async move {
            match acceptor.accept(conn).await {
                Ok(tls) => serve_connection(&builder, shared, tls, service).await,
                Err(e) => tracing::debug!("TLS handshake with {peer:?} failed: {e}"),
            }
        });
    })
    .await;
}
