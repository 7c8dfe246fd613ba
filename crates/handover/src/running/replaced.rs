//! The supervisor's channel after the go-ahead, read on a thread of its own. [`REPLACED`]
//! wakes that thread straight from the kernel, and it stops accepting and says
//! [`STOPPED_ACCEPTING`] at once, as the old process's side of an upgrade does its handshake
//! on a blocking thread (see `attempt`). Read by a task of the runtime instead, the notice
//! waited behind the connection tasks of a loaded worker twice (the reading task, then the
//! control loop): 1.4-1.6 ms between the supervisor's `P` and the worker's `C` under 64
//! connection-per-request clients, all of it added to the hand-off. What follows the pause
//! (the lame duck's end, if one runs) is the control loop's, told by [`Trigger::Replaced`].

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Finish, Trigger};
use crate::drain::ServingState;
use crate::lineage::{REPLACED, STOPPED_ACCEPTING};
use crate::os;

/// Under a supervisor, starts the thread on a second handle on its channel; with a library
/// predecessor (or none), does nothing. If the supervisor's [`REPLACED`] came with the
/// go-ahead already, the thread acts at once.
pub(super) fn watch(
    shared: &Arc<ServingState>,
    finish: &Arc<Finish>,
    triggers: &mpsc::UnboundedSender<Trigger>,
) {
    let (channel, replaced_already) = {
        let guard = finish.predecessor.lock().expect("not poisoned");
        let Some(predecessor) = guard.as_ref() else {
            return;
        };
        match predecessor.supervisor_reader() {
            None => return,
            Some(Ok(channel)) => (channel, predecessor.was_replaced()),
            Some(Err(e)) => return cannot_watch(&e),
        }
    };
    let (shared, finish, triggers) = (Arc::clone(shared), Arc::clone(finish), triggers.clone());
    let started = std::thread::Builder::new()
        .name("handover-replaced".to_string())
        .spawn(move || {
            if replaced_already || heard(&channel) {
                act(&shared, &finish, &triggers);
            }
        });
    if let Err(e) = started {
        cannot_watch(&e);
    }
}

fn cannot_watch(e: &std::io::Error) {
    tracing::warn!(
        "cannot read the supervisor's channel ({e}): an upgrade will take its stop signal as a stop"
    );
}

/// Blocks until the supervisor says [`REPLACED`] (true) or the channel ends (false); other
/// bytes are ignored. The channel is non-blocking (the handshake made it so, and its other
/// handle writes notices), so the wait is in `poll(2)`.
fn heard(channel: &UnixStream) -> bool {
    let mut channel = channel;
    let mut buf = [0u8; 16];
    loop {
        if let Err(e) = os::poll_readable([channel.as_fd()], None) {
            tracing::debug!("supervisor's channel: {e}");
            return false;
        }
        match channel.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) if buf[..n].contains(&REPLACED) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::debug!("supervisor's channel: {e}");
                return false;
            }
        }
    }
}

/// Stops accepting, tells the control loop (before the supervisor: once the supervisor has
/// heard, the control loop has its trigger, whatever comes next), and says it.
fn act(shared: &ServingState, finish: &Finish, triggers: &mpsc::UnboundedSender<Trigger>) {
    shared.pause_accepting_blocking();
    let _ = triggers.send(Trigger::Replaced);
    finish.tell_predecessor(STOPPED_ACCEPTING);
}
