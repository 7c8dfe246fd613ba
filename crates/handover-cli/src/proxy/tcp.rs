//! The TCP proxy: each new connection goes to the current worker and stays with it until
//! either side closes or the worker's drain deadline. Copying is bidirectional with
//! half-close passed on (EOF from one side becomes `shutdown(SHUT_WR)` towards the other),
//! and bounded: one buffer per direction, reads wait while the other side does not take
//! the data (backpressure).

use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::Proxy;

/// Buffer per direction and connection.
const BUFFER: usize = 64 * 1024;
/// Tries to connect per client connection.
const ATTEMPTS: usize = 4;

/// Accepts clients until the runtime ends.
pub async fn serve(listener: TcpListener, proxy: Proxy) {
    loop {
        let (stream, peer) = super::accept_client(&listener).await;
        let p = proxy.clone();
        proxy.spawn_client(stream, move |stream| async move {
            if let Err(e) = relay(stream, &p).await {
                tracing::debug!("proxy: client {peer}: {e}");
            }
        });
    }
}

async fn relay(mut client: TcpStream, proxy: &Proxy) -> Result<(), String> {
    let wait = proxy.settings().upstream_timeout;
    for _ in 0..ATTEMPTS {
        let guard = proxy
            .acquire(wait)
            .await
            .ok_or("no worker is serving; connection closed")?;
        let up = guard.upstream();
        let worker = match timeout(wait, TcpStream::connect(up.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) if proxy.moved_on_from(up.id) => continue,
            Ok(Err(e)) => {
                tracing::warn!("proxy: cannot reach the worker at {}: {e}", up.addr);
                return Err(format!("cannot reach the worker: {e}"));
            }
            Err(_) => return Err("the worker did not accept in time".into()),
        };
        let _ = worker.set_nodelay(true);
        let mut worker = super::spin::ToWorker::new(worker);
        let closed = up.closed();
        tokio::select! {
            biased;
            r = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut worker, BUFFER, BUFFER) => {
                r.map_err(|e| e.to_string())?;
            }
            () = closed => tracing::info!(
                "proxy: closed a connection to {} (drain deadline)", up.addr
            ),
        }
        return Ok(());
    }
    Err("the worker kept refusing connections".into())
}
