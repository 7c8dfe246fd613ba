//! Keep-alive HTTP/1.1 connections from one h2c client connection to the worker its requests
//! go to: a connection never serves another client (see `conns` for why). A connection goes
//! back to the pool once its response has been read to the end (hyper's `ready()` resolves
//! then); a retired worker's pool keeps nothing.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::upstream::Upstream;

/// The body of a request sent upstream.
pub type ReqBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Most idle connections kept per client connection (as many as it has streams in flight).
const MAX_IDLE: usize = 256;

/// One client's idle connections to one worker.
#[derive(Debug)]
pub struct Pool {
    up: Arc<Upstream>,
    idle: Mutex<Vec<SendRequest<ReqBody>>>,
}

/// A connection taken from the pool (or new).
#[derive(Debug)]
pub struct Conn {
    /// Sends one request at a time.
    pub sender: SendRequest<ReqBody>,
    /// It had served a request before: the worker may have closed it meanwhile.
    pub reused: bool,
}

impl Pool {
    /// An empty pool of connections to `up`.
    pub fn new(up: Arc<Upstream>) -> Pool {
        Pool {
            up,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection that is still open, else a new one (`fresh`: always a new one).
    pub async fn get(&self, fresh: bool) -> std::io::Result<Conn> {
        while let Some(mut sender) = (!fresh).then(|| self.lock().pop()).flatten() {
            // A connection put back as its response ended may not have gone idle yet
            // (its task has yet to see the end): it will in a moment, or turn out closed.
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Ok(Conn {
                    sender,
                    reused: true,
                });
            }
        }
        let stream = TcpStream::connect(self.up.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection: {e}");
            }
        });
        Ok(Conn {
            sender,
            reused: false,
        })
    }

    /// Puts `sender` back now: its response has been read to the end and its request had
    /// no body left to send, so it is idle (or about to be, see [`Pool::get`]).
    pub fn put_back(&self, sender: SendRequest<ReqBody>) {
        if sender.is_closed() || self.up.is_retired() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// Puts `sender` back once its response has been read to the end.
    pub fn put_back_when_ready(self: &Arc<Self>, mut sender: SendRequest<ReqBody>) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put_back(sender);
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<ReqBody>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}
