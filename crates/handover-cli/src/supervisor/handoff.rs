//! The order of a socket-mode upgrade to a worker that uses the library: the old workers stop
//! accepting first, the new one accepts after. The new one said READY on its handshake channel
//! and waits; the old ones are told on theirs that they are replaced (a library worker stops
//! accepting then, even in a lame duck), get the stop signal at once, and each says on its
//! channel that it has stopped accepting (or `STOPPING=1`, a worker without the handshake) or
//! exits; then the new one is let go. So no fresh
//! connection is answered by an old version once the new one has answered anyone. An old
//! worker that says nothing (one that does not use the library) is waited for at most
//! [`HANDOFF_WAIT`]; connections meanwhile wait in the shared backlog.

use std::collections::BTreeSet;
use std::time::Duration;

use handover::control_socket::WorkerState;
use tokio::task::AbortHandle;

use super::Supervisor;
use crate::events::{Event, WorkerId};

/// The longest a new worker waits for the old ones to say they stopped accepting.
pub const HANDOFF_WAIT: Duration = Duration::from_secs(1);

/// A new worker waiting for older ones to stop accepting.
#[derive(Debug)]
pub struct Handoff {
    /// The new worker, ready and held back.
    pub new: WorkerId,
    /// Older workers that have not yet said they stopped accepting (nor exited).
    waiting: BTreeSet<WorkerId>,
    /// Their PIDs, for the upgrade's answer.
    previous_pids: Vec<u32>,
    /// Ends the wait at [`HANDOFF_WAIT`].
    timer: AbortHandle,
}

impl Handoff {
    /// The older workers that may still accept new connections until they say otherwise.
    pub fn still_accepting(&self) -> impl Iterator<Item = &WorkerId> {
        self.waiting.iter()
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// How the supervisor learnt that an old worker stopped accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopSign {
    /// `STOPPING=1` on its notification socket.
    Notify,
    /// [`handover::sys::STOPPED_ACCEPTING`] on its handshake channel.
    Channel,
    /// It exited: nothing accepts there any more, whatever it said.
    Exited,
}

impl Supervisor {
    /// The upgrade's new worker `new` is ready. A worker waiting in its handshake is let go
    /// once `older` (sent their stop signal here) have stopped accepting; any other takes over
    /// at once, as before.
    pub(super) fn hand_off(&mut self, new: WorkerId, older: Vec<WorkerId>) {
        let generation = self.workers[&new].generation;
        let previous_pids = older.iter().map(|id| self.workers[id].pid).collect();
        let gated = self.workers[&new].awaiting_go;
        if !gated {
            // It accepts already: route to it before the old ones stop.
            self.route(new);
        }
        for id in &older {
            if let Some(w) = self.workers.get_mut(id) {
                // Said before the stop signal: it stops accepting at once, lame duck or not.
                w.tell_replaced();
            }
            self.begin_drain(*id, &format!("replaced by generation {generation}"));
        }
        if gated && !older.is_empty() {
            tracing::debug!(
                "generation {generation} accepts once {} older worker(s) said STOPPING=1 or \
                 exited (at most {HANDOFF_WAIT:?})",
                older.len()
            );
            let timer = self.after(HANDOFF_WAIT, Event::HandoffDue { id: new });
            self.handoff = Some(Handoff {
                new,
                waiting: older.into_iter().collect(),
                previous_pids,
                timer,
            });
            return;
        }
        self.upgrade_complete(new, previous_pids);
    }

    /// Worker `id` stopped accepting, as `sign` tells: the new one may go once none is left.
    pub(super) fn stopped_accepting(&mut self, id: WorkerId, sign: StopSign) {
        let Some(h) = &mut self.handoff else {
            return;
        };
        if h.new == id {
            return;
        }
        let speaks_handshake = self.workers.get(&id).is_some_and(|w| w.speaks_handshake);
        if speaks_handshake && sign == StopSign::Notify {
            // Its channel says when accepting has stopped; `STOPPING=1` may come from the
            // start of a lame duck.
            return;
        }
        if h.waiting.remove(&id) {
            if let Some(w) = self.workers.get(&id) {
                tracing::debug!("{} has stopped accepting", w.describe());
            }
        }
        if h.waiting.is_empty() {
            self.finish_handoff();
        }
    }

    /// [`HANDOFF_WAIT`] is over for new worker `id`: it goes now.
    pub(super) fn on_handoff_due(&mut self, id: WorkerId) {
        let Some(h) = &self.handoff else {
            return;
        };
        if h.new != id {
            return;
        }
        let silent: Vec<String> = h
            .waiting
            .iter()
            .filter_map(|w| self.workers.get(w).map(|w| w.describe()))
            .collect();
        tracing::warn!(
            "{} did not say STOPPING=1 within {HANDOFF_WAIT:?} of its stop signal; the new \
             worker accepts now, alongside it until it stops",
            silent.join(", ")
        );
        self.finish_handoff();
    }

    fn finish_handoff(&mut self) {
        let Some(mut h) = self.handoff.take() else {
            return;
        };
        let previous = std::mem::take(&mut h.previous_pids);
        let new = h.new;
        if self
            .workers
            .get(&new)
            .is_some_and(|w| w.state == WorkerState::Ready)
        {
            self.upgrade_complete(new, previous);
        }
    }

    /// The new worker of a hand-off ended before it was let go: the hand-off is void.
    pub(super) fn handoff_lost(&mut self, id: WorkerId) -> bool {
        if self.handoff.as_ref().is_some_and(|h| h.new == id) {
            self.handoff = None;
            return true;
        }
        false
    }
}
