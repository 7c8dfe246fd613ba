//! Keep-alive HTTP/1.1 connections to one worker. A connection goes back to the pool once its
//! response has been read to the end (hyper's `ready()` resolves then); a retired pool (the
//! worker is draining) keeps nothing, so the old worker sees its idle connections close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The body of a request sent upstream.
pub type ReqBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Most idle connections kept per worker.
const MAX_IDLE: usize = 256;

/// The idle connections to one worker.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<SendRequest<ReqBody>>>,
    retired: AtomicBool,
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
    /// An empty pool of connections to `addr`.
    pub fn new(addr: SocketAddr) -> Pool {
        Pool {
            addr,
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
        }
    }

    /// An idle connection that is still open, else a new one (`fresh`: always a new one).
    pub async fn get(&self, fresh: bool) -> std::io::Result<Conn> {
        if !fresh {
            loop {
                let Some(sender) = self.lock().pop() else {
                    break;
                };
                if sender.is_ready() {
                    return Ok(Conn {
                        sender,
                        reused: true,
                    });
                }
            }
        }
        let stream = TcpStream::connect(self.addr).await?;
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

    /// Puts `sender` back once its response has been read to the end.
    pub fn put_back_when_ready(self: &Arc<Self>, mut sender: SendRequest<ReqBody>) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() && !pool.retired.load(Ordering::SeqCst) {
                let mut idle = pool.lock();
                if idle.len() < MAX_IDLE {
                    idle.push(sender);
                }
            }
        });
    }

    /// Closes the idle connections and keeps no more.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<ReqBody>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}
