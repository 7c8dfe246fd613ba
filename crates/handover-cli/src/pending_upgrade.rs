//! The bookkeeping of one upgrade attempt: who is waiting for its outcome, how long it took,
//! and the record `handover status` shows afterwards.

use std::time::SystemTime;

use tokio::time::Instant;

use handover::control_socket::{
    unix_ms, CanaryOutcome, CanaryRequest, UpgradeRecord, UpgradeReport,
};

use crate::events::{UpgradeReply, WorkerId};

/// An upgrade in progress.
#[derive(Debug)]
pub struct PendingUpgrade {
    /// The new worker, once started.
    pub worker: Option<WorkerId>,
    /// A canary upgrade: what was asked for (the new worker gets a share first).
    pub canary: Option<CanaryRequest>,
    /// A canary's decision, once made: part of the reply and the record.
    pub outcome: Option<Box<CanaryOutcome>>,
    trigger: String,
    started: Instant,
    started_at: SystemTime,
    waiters: Vec<UpgradeReply>,
}

impl PendingUpgrade {
    /// An upgrade asked for by `trigger`; `reply` (if any) gets the outcome.
    pub fn new(trigger: String, reply: Option<UpgradeReply>) -> PendingUpgrade {
        PendingUpgrade {
            worker: None,
            canary: None,
            outcome: None,
            trigger,
            started: Instant::now(),
            started_at: SystemTime::now(),
            waiters: reply.into_iter().collect(),
        }
    }

    /// Another request for the same upgrade: it gets the same outcome.
    pub fn join(&mut self, reply: Option<UpgradeReply>) {
        self.waiters.extend(reply);
    }

    /// The new generation took over: answers everyone waiting.
    pub fn succeed(self, generation: u64, pid: u32, previous_pids: Vec<u32>) -> UpgradeRecord {
        let report = UpgradeReport {
            pid,
            generation: Some(generation),
            previous_pids,
            duration_ms: self.started.elapsed().as_millis() as u64,
            canary: self.outcome.clone(),
        };
        let record = self.record(true, Some((generation, pid)), None, report.duration_ms);
        for w in self.waiters {
            let _ = w.send(Ok(report.clone()));
        }
        record
    }

    /// It failed with `message` (the whole reason, including what keeps serving); `new` is
    /// the generation and pid of the worker that was started, if any.
    pub fn fail(self, message: &str, new: Option<(u64, u32)>) -> UpgradeRecord {
        let took = self.started.elapsed().as_millis() as u64;
        let record = self.record(false, new, Some(message.to_string()), took);
        for w in self.waiters {
            let _ = w.send(Err(message.to_string()));
        }
        record
    }

    fn record(
        &self,
        ok: bool,
        new: Option<(u64, u32)>,
        error: Option<String>,
        duration_ms: u64,
    ) -> UpgradeRecord {
        UpgradeRecord {
            ok,
            trigger: self.trigger.clone(),
            generation: new.map(|(g, _)| g),
            pid: new.map(|(_, p)| p),
            error,
            started_unix_ms: unix_ms(self.started_at),
            duration_ms,
            canary: self.outcome.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn every_waiter_gets_the_outcome() {
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let mut up = PendingUpgrade::new("SIGHUP".into(), Some(tx1));
        up.join(None);
        up.join(Some(tx2));
        let rec = up.fail("it broke; generation 1 (pid 5) keeps serving", Some((2, 9)));
        assert!(!rec.ok);
        assert_eq!(rec.trigger, "SIGHUP");
        assert_eq!((rec.generation, rec.pid), (Some(2), Some(9)));
        assert!(rx1.try_recv().unwrap().unwrap_err().contains("it broke"));
        assert!(rx2.try_recv().unwrap().is_err());

        let (tx, mut rx) = oneshot::channel();
        let rec = PendingUpgrade::new("watch: /x".into(), Some(tx)).succeed(3, 10, vec![9]);
        assert!(rec.ok && rec.error.is_none());
        let report = rx.try_recv().unwrap().unwrap();
        assert_eq!((report.pid, report.generation), (10, Some(3)));
        assert_eq!(report.previous_pids, vec![9]);
    }
}
