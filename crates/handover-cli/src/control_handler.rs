//! The supervisor's side of the control socket: each request becomes an event for the
//! supervisor loop, and its reply goes back to the client.

use handover::control_socket::{ControlServer, Request, Response};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::events::{Event, Events};

const GONE: &str = "the supervisor is shutting down";

/// Serves `server` until the returned task is aborted (which removes the socket file).
pub fn serve(server: ControlServer, events: Events) -> JoinHandle<()> {
    let path = server.path().to_path_buf();
    tokio::spawn(async move {
        let handler = move |request: Request| {
            let events = events.clone();
            async move { answer(request, &events).await }
        };
        if let Err(e) = server.serve(handler).await {
            tracing::error!("control socket {} failed: {e}", path.display());
        }
    })
}

async fn answer(request: Request, events: &Events) -> Result<Response, String> {
    match request {
        Request::Upgrade => {
            let (tx, rx) = oneshot::channel();
            let trigger = "control socket".to_string();
            send(
                events,
                Event::Upgrade {
                    trigger,
                    reply: Some(tx),
                },
            )?;
            rx.await
                .map_err(|_| GONE.to_string())?
                .map(Response::Upgraded)
        }
        Request::Status => {
            let (tx, rx) = oneshot::channel();
            send(events, Event::Status { reply: tx })?;
            rx.await.map(Response::Status).map_err(|_| GONE.to_string())
        }
        Request::Canary(plan) => {
            let (tx, rx) = oneshot::channel();
            let trigger = "control socket".to_string();
            send(
                events,
                Event::Canary {
                    trigger,
                    plan,
                    reply: Some(tx),
                },
            )?;
            // A client that goes away does not cancel the canary: the supervisor owns it.
            rx.await
                .map_err(|_| GONE.to_string())?
                .map(Response::Upgraded)
        }
        Request::Promote | Request::Abort => {
            let (tx, rx) = oneshot::channel();
            let event = match request {
                Request::Promote => Event::Promote { reply: tx },
                _ => Event::Abort { reply: tx },
            };
            send(events, event)?;
            rx.await
                .map_err(|_| GONE.to_string())?
                .map(Response::Decided)
        }
        Request::Stop => {
            let (tx, rx) = oneshot::channel();
            let trigger = "control socket".to_string();
            send(
                events,
                Event::Stop {
                    trigger,
                    from_signal: false,
                    reply: Some(tx),
                },
            )?;
            rx.await
                .map(Response::Stopping)
                .map_err(|_| GONE.to_string())
        }
    }
}

fn send(events: &Events, event: Event) -> Result<(), String> {
    events.send(event).map_err(|_| GONE.to_string())
}
