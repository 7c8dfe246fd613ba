//! A UDP request/response server: each datagram is answered with its own bytes followed by
//! ` pid=<pid>`, after an optional processing delay (`--delay`), from a task of its own.
//!
//! ```text
//! cargo run --example udp_echo -- --listen udp://127.0.0.1:5353
//! echo -n hi | nc -u -w1 127.0.0.1 5353     # hi pid=4100
//! kill -USR2 <pid>     # the new process reads from the same socket; the old one answers
//!                      # what it has read, then exits
//! ```
//!
//! At a handover `recv_from` returns `None`: this generation reads nothing more (the datagrams
//! wait in the shared socket for the new one), finishes the answers in progress (each task
//! holds a clone of the socket, and `send_to` still works) and, once the last clone is
//! dropped, `Running::wait` returns and the process exits. The drain deadline bounds it.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use handover::{Datagram, Handover, ListenAddr};

/// A UDP echo server, upgradable with `kill -USR2 <pid>`.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// The UDP address: `udp://IP:PORT` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "udp://127.0.0.1:5353")]
    listen: ListenAddr,
    /// How long each answer takes, standing in for real work (e.g. 2ms).
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "0s")]
    delay: Duration,
    /// How long answers in progress get at a stop or handover.
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "10s")]
    drain_timeout: Duration,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // Before the runtime exists: this reads and clears the inheritance variables.
    let handover = match Handover::builder()
        .drain_timeout(args.drain_timeout)
        .build()
    {
        Ok(h) => h,
        Err(e) => return failed(e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(handover, &args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(e),
    }
}

async fn run(mut handover: Handover, args: &Args) -> Result<(), handover::Error> {
    let socket = handover.datagram(&args.listen)?;
    let running = handover.ready().await?;
    tracing::info!("serving {} pid={}", socket.local_addr(), std::process::id());
    tokio::spawn(serve(socket, args.delay));
    let exit = running.wait().await;
    tracing::info!(
        "exiting ({:?}, {} answers abandoned at the deadline)",
        exit.reason,
        exit.abandoned_connections
    );
    Ok(())
}

async fn serve(socket: Datagram, delay: Duration) {
    let suffix = format!(" pid={}", std::process::id());
    let mut buf = vec![0u8; 65_536];
    let mut read = 0u64;
    while let Some(r) = socket.recv_from(&mut buf).await {
        let (n, peer) = match r {
            Ok(got) => got,
            Err(e) => {
                // An ICMP error for an earlier answer, say: the socket is fine.
                tracing::debug!("recv_from: {e}");
                continue;
            }
        };
        read += 1;
        let mut answer = Vec::with_capacity(n + suffix.len());
        answer.extend_from_slice(&buf[..n]);
        answer.extend_from_slice(suffix.as_bytes());
        // Each answer holds a clone: the process exits only when the last one is sent.
        let socket = socket.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Err(e) = socket.send_to(&answer, peer).await {
                tracing::warn!("send_to {peer}: {e}");
            }
        });
    }
    tracing::info!("read {read} datagrams; reading no more (draining)");
}

fn failed(e: handover::Error) -> ExitCode {
    match e {
        handover::Error::Stopped { .. } => tracing::info!("{e}; exiting"),
        _ => tracing::error!("cannot start: {e}"),
    }
    ExitCode::from(e.exit_code())
}
