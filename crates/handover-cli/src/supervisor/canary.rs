//! The supervisor's side of a grey release (`handover upgrade --canary`): a new worker that
//! is ready gets a share of the traffic (the proxy's split) for `--for`, then is promoted, or
//! rolled back as soon as the rule fails it, at `--for` with too little traffic, when it
//! crashes, or by hand. Each decision is logged with its figures, returned to the `handover
//! upgrade` that started it and kept in `last_upgrade`.

use std::time::Duration;

use handover::control_socket::{
    CanaryOutcome, CanaryRequest, CanaryStatus, DecisionReport, WorkerState,
};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::Supervisor;
use crate::events::{DecisionReply, UpgradeReply, WorkerId};
use crate::metrics::DecisionReason as Why;
use crate::pending_upgrade::PendingUpgrade;
use crate::proxy::{percent_bp, CanaryFigures, CanaryHandle};

/// A canary serving its share.
#[derive(Debug)]
pub struct CanaryRun {
    pending: PendingUpgrade,
    plan: CanaryRequest,
    worker: WorkerId,
    handle: CanaryHandle,
    started: Instant,
    timer: AbortHandle,
}

/// How a canary ends.
enum Decision {
    Promote,
    RollBack,
}

impl Supervisor {
    /// `handover upgrade --canary`: refused with the reason, or a new worker is started; it
    /// becomes a canary once ready (`start_canary`).
    pub(super) fn on_canary(
        &mut self,
        trigger: String,
        plan: CanaryRequest,
        reply: Option<UpgradeReply>,
    ) {
        let refusal = if self.stopping {
            Some("the server is stopping".to_string())
        } else if self.proxy.is_none() {
            Some(
                "--canary needs proxy mode (`handover run --proxy`): with --listen the workers \
                 share the listening socket and the kernel, not handover, picks which process \
                 accepts each connection, so traffic cannot be split by weight"
                    .to_string(),
            )
        } else if let Some(busy) = self.busy_with_canary() {
            Some(busy)
        } else if self.upgrade.is_some() {
            Some("an upgrade is in progress; try again once it has finished".to_string())
        } else if self.current.is_none() {
            Some("no worker is serving, so there is nothing to compare a canary with".to_string())
        } else {
            None
        };
        if let Some(why) = refusal {
            tracing::warn!("canary upgrade requested by {trigger} refused: {why}");
            if let Some(r) = reply {
                let _ = r.send(Err(format!("canary refused: {why}")));
            }
            return;
        }
        let mut pending = PendingUpgrade::new(trigger.clone(), reply);
        pending.canary = Some(plan);
        let draining = self.count(WorkerState::Draining);
        if draining >= self.cfg.max_draining {
            let message = format!(
                "canary refused: older generations still draining: {draining} (--max-draining \
                 {}); try again once one has exited",
                self.cfg.max_draining
            );
            tracing::warn!("{message}");
            self.last_upgrade = Some(pending.fail(&message, None));
            return;
        }
        if let Some(Err(e)) = self.proxy.as_ref().map(crate::proxy::Proxy::reload_tls) {
            let message = format!("{e}; the certificate in use stays");
            tracing::error!("canary refused: {message}");
            self.last_upgrade = Some(pending.fail(&message, None));
            return;
        }
        tracing::info!(
            "canary upgrade requested by {trigger}: starting a new worker for {} of the traffic",
            percent_bp(plan.share_bp)
        );
        self.restart_pending = None;
        self.launch_upgrade(pending);
    }

    /// Why another upgrade cannot start now, if a canary runs.
    pub(super) fn busy_with_canary(&self) -> Option<String> {
        let run = self.canary.as_ref()?;
        let what = self
            .workers
            .get(&run.worker)
            .map_or_else(|| "a worker".to_string(), |w| w.describe());
        Some(format!(
            "a canary is in progress ({what} gets {} of new traffic, for {:?}); end it with \
             `handover promote` or `handover abort` first",
            percent_bp(run.plan.share_bp),
            Duration::from_millis(run.plan.for_ms)
        ))
    }

    /// The canary's worker `id` is ready: it gets its share from now on, for `--for`.
    pub(super) fn start_canary(&mut self, id: WorkerId) {
        let Some(mut pending) = self.upgrade.take() else {
            return;
        };
        let Some(plan) = pending.canary.take() else {
            return;
        };
        let (Some(proxy), Some(w)) = (&self.proxy, self.workers.get(&id)) else {
            return;
        };
        let Some(port) = w.port else {
            return;
        };
        let addr = (std::net::Ipv4Addr::LOCALHOST, port).into();
        let handle = proxy.split(id, w.generation, addr, plan, self.events.clone());
        let split = if plan.sticky_ip {
            "of client addresses (--sticky ip)"
        } else {
            "of new requests or connections"
        };
        tracing::info!(
            "canary: {} gets {} {split} for {:?}; rolled back once it has served {} requests \
             if its error rate exceeds the old generation's + {}",
            w.describe(),
            percent_bp(plan.share_bp),
            Duration::from_millis(plan.for_ms),
            plan.min_requests,
            percent_bp(plan.max_error_rate_bp)
        );
        self.notify(&format!(
            "READY=1\nSTATUS=canary: {} gets {}",
            w.describe(),
            percent_bp(plan.share_bp)
        ));
        let timer = self.after(
            Duration::from_millis(plan.for_ms),
            crate::events::Event::CanaryDue { id },
        );
        pending.canary = Some(plan);
        self.canary = Some(CanaryRun {
            pending,
            plan,
            worker: id,
            handle,
            started: Instant::now(),
            timer,
        });
    }

    /// `--for` has passed: promoted unless the rule fails it or it had too little traffic.
    pub(super) fn on_canary_due(&mut self, id: WorkerId) {
        let Some((proxy, run)) = self.proxy.as_ref().zip(self.canary.as_ref()) else {
            return;
        };
        if run.worker != id {
            return;
        }
        let f = proxy.figures(&run.handle);
        let took = Duration::from_millis(run.plan.for_ms);
        if let Some(verdict) = f.verdict {
            self.end_canary(Decision::RollBack, Why::ErrorRate, &verdict);
        } else if f.new.requests < run.plan.min_requests {
            let why = format!(
                "not enough traffic: the canary served {} requests in {took:?}, fewer than \
                 --min-requests {}",
                f.new.requests, run.plan.min_requests
            );
            self.end_canary(Decision::RollBack, Why::NotEnoughTraffic, &why);
        } else {
            let why = format!(
                "healthy for {took:?}: the canary's error rate {} is within the old \
                 generation's {} + {}",
                rate_of(&f, true),
                rate_of(&f, false),
                percent_bp(run.plan.max_error_rate_bp)
            );
            self.end_canary(Decision::Promote, Why::Healthy, &why);
        }
    }

    /// The proxy's rule failed the canary (it is out of the split already).
    pub(super) fn on_canary_tripped(&mut self, id: WorkerId, reason: &str) {
        if self.canary.as_ref().is_some_and(|r| r.worker == id) {
            self.end_canary(Decision::RollBack, Why::ErrorRate, reason);
        }
    }

    /// `handover promote` (true) or `handover abort`.
    pub(super) fn on_decide_by_hand(&mut self, promote: bool, reply: DecisionReply) {
        let Some(run) = &self.canary else {
            let what = if promote { "promote" } else { "abort" };
            let _ = reply.send(Err(format!(
                "no canary is in progress: nothing to {what} (start one with `handover upgrade \
                 --canary N%`)"
            )));
            return;
        };
        let (generation, pid) = self
            .workers
            .get(&run.worker)
            .map_or((0, 0), |w| (w.generation, w.pid));
        let (decision, reason) = if promote {
            (Decision::Promote, "promoted by hand (handover promote)")
        } else {
            (Decision::RollBack, "aborted by hand (handover abort)")
        };
        let name = decision_name(&decision).to_string();
        let reason = self.end_canary(decision, Why::ByHand, reason);
        let _ = reply.send(Ok(DecisionReport {
            decision: name,
            generation,
            pid,
            reason,
        }));
    }

    /// The canary's worker exited while it served its share.
    pub(super) fn canary_worker_exited(&mut self, id: WorkerId, what: &str, status: &str) {
        if self.canary.as_ref().is_some_and(|r| r.worker == id) {
            self.end_canary(
                Decision::RollBack,
                Why::Crashed,
                &format!("the canary worker ({what}) {status}"),
            );
        }
    }

    /// A stop during a canary: its waiter is told; every worker drains (the caller).
    pub(super) fn cancel_canary(&mut self) {
        if let Some(run) = self.canary.take() {
            run.timer.abort();
            let new = self.workers.get(&run.worker).map(|w| (w.generation, w.pid));
            let message = "the canary was cancelled: the server is stopping";
            self.metrics.upgrade_rolled_back();
            self.last_upgrade = Some(run.pending.fail(message, new));
        }
    }

    /// Ends the canary: logs the decision with its figures, answers the waiter, records it.
    /// Returns the whole reason line.
    fn end_canary(&mut self, decision: Decision, why: Why, reason: &str) -> String {
        let Some(mut run) = self.canary.take() else {
            return reason.to_string();
        };
        let promoted = matches!(decision, Decision::Promote);
        self.metrics.canary_decided(promoted, why);
        if promoted {
            self.metrics.upgrade_succeeded();
        } else {
            self.metrics.upgrade_rolled_back();
        }
        run.timer.abort();
        let Some(proxy) = self.proxy.clone() else {
            return reason.to_string();
        };
        let f = proxy.figures(&run.handle);
        let figures = format!(
            "canary generation {}: {}, p50 {}, p99 {}; old generation {}: {}",
            f.new.generation,
            rate_of(&f, true),
            ms(f.new.p50_ms),
            ms(f.new.p99_ms),
            f.old.generation,
            rate_of(&f, false)
        );
        let line = format!("{reason} [{figures}]");
        run.pending.outcome = Some(Box::new(CanaryOutcome {
            decision: decision_name(&decision).to_string(),
            reason: reason.to_string(),
            request: run.plan,
            old: f.old.clone(),
            new: f.new.clone(),
        }));
        let id = run.worker;
        let Some((generation, pid, what)) = self
            .workers
            .get(&id)
            .map(|w| (w.generation, w.pid, w.describe()))
        else {
            // It exited: rolled back, with nothing left to drain.
            let kept = self.kept_serving();
            let message = format!("canary rolled back: {line}; {kept}");
            tracing::error!("{message}");
            proxy.unsplit();
            self.last_upgrade = Some(run.pending.fail(&message, Some((f.new.generation, 0))));
            self.schedule_restart();
            return line;
        };
        match decision {
            Decision::Promote => {
                let older: Vec<WorkerId> = self
                    .workers
                    .iter()
                    .filter(|(wid, w)| {
                        **wid != id && matches!(w.state, WorkerState::Starting | WorkerState::Ready)
                    })
                    .map(|(wid, _)| *wid)
                    .collect();
                let previous_pids = older.iter().map(|o| self.workers[o].pid).collect();
                proxy.promote();
                for o in older {
                    self.begin_drain(
                        o,
                        &format!("replaced by the canary, generation {generation}"),
                    );
                }
                self.current = Some(id);
                tracing::info!("canary promoted: {what} serves all new traffic: {line}");
                self.notify(&format!("READY=1\nSTATUS={what} serving (canary promoted)"));
                self.last_upgrade = Some(run.pending.succeed(generation, pid, previous_pids));
            }
            Decision::RollBack => {
                proxy.unsplit();
                self.begin_drain(id, "canary rolled back");
                let kept = self.kept_serving();
                let message = format!("canary rolled back: {line}; {kept}");
                tracing::error!("{message}");
                self.notify(&format!("READY=1\nSTATUS=canary rolled back: {reason}"));
                self.last_upgrade = Some(run.pending.fail(&message, Some((generation, pid))));
                // The old worker may have crashed while the canary was starting: then no one
                // serves now (a no-op when someone does).
                self.schedule_restart();
            }
        }
        line
    }

    fn kept_serving(&self) -> String {
        match self.current.and_then(|c| self.workers.get(&c)) {
            Some(w) => format!("{} keeps serving", w.describe()),
            None => "no worker is serving; starting one".to_string(),
        }
    }

    /// The canary in progress, for `status`.
    pub(super) fn canary_status(&self) -> Option<Box<CanaryStatus>> {
        let run = self.canary.as_ref()?;
        let f = self.proxy.as_ref()?.figures(&run.handle);
        Some(Box::new(CanaryStatus {
            request: run.plan,
            elapsed_ms: run.started.elapsed().as_millis() as u64,
            old: f.old,
            new: f.new,
        }))
    }
}

fn decision_name(d: &Decision) -> &'static str {
    match d {
        Decision::Promote => "promoted",
        Decision::RollBack => "rolled_back",
    }
}

fn rate_of(f: &CanaryFigures, canary: bool) -> String {
    let c = if canary { &f.new } else { &f.old };
    format!(
        "{:.1}% ({} of {})",
        c.error_rate_percent, c.errors, c.requests
    )
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v}ms"))
}
