//! The one place that reaps. On every `SIGCHLD` it calls `waitpid(-1)` until no ended child
//! is left and hands each status to the supervisor, which matches it to a worker by PID. As
//! PID 1 this also reaps orphans re-parented to us. Nothing else in the supervisor waits for a
//! child (no `tokio::process`, no `std::process::Child::wait`), so nothing races it.

use handover::sys;
use tokio::signal::unix::{signal, SignalKind};

use crate::events::{Event, Events};

/// Installs the `SIGCHLD` handler (call before starting any worker) and starts reaping.
pub fn start(events: Events) -> std::io::Result<()> {
    let mut chld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            // Reap first: children that ended before the handler existed are not missed.
            while let Some((pid, status)) = sys::reap_any() {
                if events.send(Event::Exited { pid, status }).is_err() {
                    return;
                }
            }
            if chld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}
