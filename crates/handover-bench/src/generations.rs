//! The serving generations of one run, in order, as the probe saw them take over. Lets the
//! load client tell a *stale* answer: a connection opened after generation N had answered a
//! probe, but served by an older generation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a connection remembers from the moment it started connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    epoch: u32,
    pid: u32,
}

/// The PIDs of the generations that have answered, oldest first.
#[derive(Debug)]
pub struct Generations {
    /// `epoch << 32 | pid` of the newest generation that has answered.
    current: AtomicU64,
    pids: Mutex<Vec<u32>>,
}

impl Generations {
    /// Starts with the first generation, `pid`.
    pub fn new(pid: u32) -> Self {
        Generations {
            current: AtomicU64::new(u64::from(pid)),
            pids: Mutex::new(vec![pid]),
        }
    }

    /// Records that `pid` answered as the new generation (idempotent for the current one).
    pub fn switched_to(&self, pid: u32) {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        if pids.last() == Some(&pid) {
            return;
        }
        pids.push(pid);
        let epoch = (pids.len() - 1) as u64;
        self.current
            .store(epoch << 32 | u64::from(pid), Ordering::SeqCst);
    }

    /// Taken just before connecting.
    pub fn snapshot(&self) -> Snapshot {
        let c = self.current.load(Ordering::SeqCst);
        Snapshot {
            epoch: (c >> 32) as u32,
            pid: c as u32,
        }
    }

    /// Whether an answer from `pid` on a connection started at `snap` came from a generation
    /// older than the one that was already serving then.
    pub fn is_stale(&self, snap: Snapshot, pid: u32) -> bool {
        if pid == snap.pid {
            return false;
        }
        let pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        pids.iter()
            .position(|&p| p == pid)
            .is_some_and(|i| (i as u32) < snap.epoch)
    }

    /// The PID of the newest generation that has answered.
    pub fn current_pid(&self) -> u32 {
        self.current.load(Ordering::SeqCst) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_only_for_older_generations() {
        let g = Generations::new(10);
        let s0 = g.snapshot();
        g.switched_to(11);
        let s1 = g.snapshot();
        assert!(!g.is_stale(s0, 10));
        assert!(!g.is_stale(s0, 11), "newer generation is fine");
        assert!(g.is_stale(s1, 10));
        assert!(!g.is_stale(s1, 11));
        assert!(!g.is_stale(s1, 99), "unknown = not yet seen = newer");
        g.switched_to(11);
        assert_eq!(g.snapshot(), s1);
        assert_eq!(g.current_pid(), 11);
    }
}
