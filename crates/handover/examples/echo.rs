//! A line-echo TCP server without HTTP: the lower-level API. Each connection is counted by
//! the drain until dropped; `Connection::draining` tells it when to say goodbye.
//!
//! ```text
//! cargo run --example echo -- 127.0.0.1:7000
//! nc 127.0.0.1 7000
//! kill -USR2 <pid>     # open sessions finish on the old process, new ones go to the new one
//! ```

use handover::{Handover, ListenAddr};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let addr: ListenAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into())
        .parse()?;
    let mut handover = Handover::builder()
        .drain_timeout(std::time::Duration::from_secs(10))
        .build()?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = handover.listen(&addr)?;
        let running = handover.ready().await?;
        tracing::info!("serving {}", listener.local_addr());
        tokio::spawn(async move {
            while let Some(accepted) = listener.accept().await {
                let (conn, _peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and friends persist until a connection closes: pause rather
                        // than spin on an accept that fails again at once.
                        tracing::warn!("accept failed: {e}; pausing 100 ms");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                tokio::spawn(echo(conn));
            }
        });
        running.wait().await;
        Ok(())
    })
}

async fn echo(conn: handover::Connection) -> std::io::Result<()> {
    let drain = conn.drain_signal();
    let (read, mut write) = tokio::io::split(conn);
    let mut lines = BufReader::new(read).lines();
    let pid = std::process::id();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { return Ok(()) };
                write.write_all(format!("{pid}: {line}\n").as_bytes()).await?;
            }
            _ = drain.draining() => {
                write.write_all(b"server is restarting, please reconnect\n").await?;
                return Ok(());
            }
        }
    }
}
