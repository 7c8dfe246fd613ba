//! The TCP proxy: each new connection goes to the current worker and stays with it until
//! either side closes or the worker's drain deadline. Copying is bidirectional with
//! half-close passed on (EOF from one side becomes `shutdown(SHUT_WR)` towards the other),
//! and bounded: one buffer per direction, reads wait while the other side does not take
//! the data (backpressure).

use std::net::IpAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

use super::{Answer, Proxy};

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
            if let Err(e) = relay(stream, &p, peer.ip()).await {
                tracing::debug!("proxy: client {peer}: {e}");
            }
        });
    }
}

async fn relay(mut client: TcpStream, proxy: &Proxy, ip: IpAddr) -> Result<(), String> {
    let wait = proxy.settings().upstream_timeout;
    for _ in 0..ATTEMPTS {
        let guard = proxy
            .acquire(wait, ip)
            .await
            .ok_or("no worker is serving; connection closed")?;
        let up = guard.upstream();
        let t0 = Instant::now();
        let worker = match timeout(wait, TcpStream::connect(up.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) if proxy.moved_on_from(up.id) => continue,
            Ok(Err(e)) => {
                proxy.record(up, Answer::Failed, t0.elapsed());
                tracing::warn!("proxy: cannot reach the worker at {}: {e}", up.addr);
                return Err(format!("cannot reach the worker: {e}"));
            }
            Err(_) => {
                proxy.record(up, Answer::Failed, t0.elapsed());
                return Err("the worker did not accept in time".into());
            }
        };
        let took = t0.elapsed();
        let _ = worker.set_nodelay(true);
        let mut worker = super::spin::ToWorker::new(worker);
        let closed = up.closed();
        let copied = tokio::select! {
            biased;
            r = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut worker, BUFFER, BUFFER) => r,
            () = closed => {
                tracing::info!("proxy: closed a connection to {} (drain deadline)", up.addr);
                Ok((0, 0))
            }
        };
        // A reset before the worker's first byte counts against the worker.
        let failed = copied.is_err() && !worker.has_answered();
        let answer = if failed {
            Answer::Failed
        } else {
            Answer::Connected
        };
        proxy.record(up, answer, took);
        copied.map_err(|e| e.to_string())?;
        return Ok(());
    }
    Err("the worker kept refusing connections".into())
}
