//! actix-web on a handover listener: zero-downtime upgrades for an actix application.
//!
//! ```text
//! cargo run -p handover-frameworks --example actix -- 127.0.0.1:8080
//! curl 127.0.0.1:8080/          # hello from actix pid=N
//! kill -USR2 N                  # a new process takes over; N drains and exits
//! ```
//!
//! actix accepts on its own (`HttpServer::listen` wants a `std::net::TcpListener`), so the
//! drain is actix's, steered by handover in four steps when this process starts draining:
//!
//! 1. `ServerHandle::pause`: actix stops accepting (the successor gets the backlog);
//! 2. every response from then on says `Connection: close` (the middleware below), so a busy
//!    keep-alive client reconnects, to the successor, between two requests;
//! 3. after the idle grace, `ServerHandle::stop(true)`: actix closes the connections that
//!    stayed idle and lets the requests in progress finish (up to `shutdown_timeout`);
//! 4. `Running::wait` then lets the process exit.
//!
//! What this loses against `handover::http::serve` is in the README ("Frameworks").

use std::os::fd::AsFd;
use std::time::Duration;

use actix_web::dev::Service;
use actix_web::http::ConnectionType;
use actix_web::{web, App, HttpServer};
use handover::{Handover, ListenAddr};

/// How long a busy keep-alive client has to see a `Connection: close` before actix closes
/// the connections that are left (the same 1 s as handover's own `idle_grace`).
const IDLE_GRACE: Duration = Duration::from_secs(1);
/// Requests in progress at the stop get this long (actix counts whole seconds).
const DRAIN_TIMEOUT_SECS: u64 = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let addr: ListenAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    // Before any runtime starts threads: reads and clears the inheritance variables.
    let mut handover = Handover::builder()
        // Our own deadline is actix's plus the grace: handover must not end the process
        // while actix still finishes requests.
        .drain_timeout(IDLE_GRACE + Duration::from_secs(DRAIN_TIMEOUT_SECS + 1))
        .build()?;
    // actix's System is a tokio runtime: handover's handshake, signals and control run on it;
    // actix's workers run on threads of their own.
    actix_web::rt::System::new().block_on(async move {
        let listener = handover.listen(&addr)?;
        let running = handover.ready().await?;
        // A duplicate of the listening socket for actix; handover keeps its own for the next
        // generation.
        let socket = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
        let drain = running.drain_signal();
        let server = HttpServer::new(move || {
            let drain = drain.clone();
            App::new()
                .wrap_fn(move |req, srv| {
                    let response = srv.call(req);
                    let drain = drain.clone();
                    async move {
                        let mut response = response.await?;
                        // Checked when the answer is ready: a request that began before the
                        // drain and ends after it closes its connection too.
                        if drain.is_draining() {
                            response
                                .response_mut()
                                .head_mut()
                                .set_connection_type(ConnectionType::Close);
                        }
                        Ok(response)
                    }
                })
                .route("/", web::get().to(hello))
                .route("/sleep/{ms}", web::get().to(sleep))
        })
        // handover owns SIGTERM, SIGINT, SIGUSR2 and SIGHUP.
        .disable_signals()
        .shutdown_timeout(DRAIN_TIMEOUT_SECS)
        .workers(2)
        .listen(socket)?
        .run();
        let actix = server.handle();
        actix_web::rt::spawn(server);
        tracing::info!("serving {}", listener.local_addr());

        let reason = running.draining().await;
        actix.pause().await;
        tracing::info!("draining ({reason:?}): actix stopped accepting");
        tokio::time::sleep(IDLE_GRACE).await;
        actix.stop(true).await;
        tracing::info!("actix finished its requests");
        let exit = running.wait().await;
        tracing::info!("done: {:?}", exit.reason);
        Ok(())
    })
}

async fn hello() -> String {
    format!("hello from actix pid={}", std::process::id())
}

async fn sleep(ms: web::Path<u64>) -> String {
    tokio::time::sleep(Duration::from_millis(ms.into_inner())).await;
    hello().await
}
