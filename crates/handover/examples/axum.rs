//! An axum application with zero-downtime upgrades.
//!
//! ```text
//! cargo run --example axum -- 127.0.0.1:3000
//! curl 127.0.0.1:3000/            # hello from pid N
//! kill -USR2 N                     # a new process takes over; N drains and exits
//! ```

use axum::routing::get;
use axum::Router;
use handover::{Handover, ListenAddr};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let addr: ListenAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    // Before the runtime starts its threads: reads and clears the inheritance variables.
    let mut handover = Handover::from_env()?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = handover.listen(&addr)?;
        let running = handover.ready().await?;
        let app = Router::new()
            .route(
                "/",
                get(|| async { format!("hello from pid {}\n", std::process::id()) }),
            )
            // Routes built once, not per request (what `axum::serve` does too).
            .with_state(());
        tracing::info!("serving {}", listener.local_addr());
        tokio::spawn(handover::http::serve(listener, app));
        let exit = running.wait().await;
        tracing::info!("done: {:?}", exit.reason);
        Ok(())
    })
}
