//! A plain hyper service with zero-downtime upgrades.
//!
//! ```text
//! cargo run --example hyper -- 127.0.0.1:3001
//! kill -USR2 <pid>
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use handover::{Handover, ListenAddr};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};

async fn handle(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!("hello from pid {}\n", std::process::id());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let addr: ListenAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3001".into())
        .parse()?;
    let mut handover = Handover::from_env()?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = handover.listen(&addr)?;
        let running = handover.ready().await?;
        tracing::info!("serving {}", listener.local_addr());
        tokio::spawn(handover::http::serve_hyper(listener, service_fn(handle)));
        running.wait().await;
        Ok(())
    })
}
