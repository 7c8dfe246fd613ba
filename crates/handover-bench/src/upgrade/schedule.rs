//! Series of upgrades: N at fixed times during a load run, or K back to back without load
//! (each waiting for the old PID to exit before the next).

use std::time::{Duration, Instant};

use super::measure::{self, Ctx};
use super::{Current, UpgradeRecord};

/// Fires upgrade `i` (1-based) at `run_start + i * interval`, for `i` in `1..=n`, stopping
/// early at `end`. Each waits for its old PID until shortly before the next one.
pub fn under_load(
    ctx: &Ctx,
    n: usize,
    interval: Duration,
    end: Instant,
    cur: &mut Current,
) -> Vec<UpgradeRecord> {
    let mut records = Vec::with_capacity(n);
    for i in 1..=n {
        let at = ctx.run_start + interval * i as u32;
        if at >= end || crate::abort::requested() {
            break;
        }
        if let Err(e) = measure::prepare(ctx, *cur) {
            eprintln!("upgrade {i}: cannot prepare: {e}");
            break;
        }
        crate::abort::sleep(at.saturating_duration_since(Instant::now()));
        let next = (ctx.run_start + interval * (i as u32 + 1)).min(end);
        let wait_until = next.checked_sub(Duration::from_millis(50)).unwrap_or(next);
        let rec = measure::perform(ctx, i, cur, Some(wait_until));
        let give_up = rec.error.is_some();
        records.push(rec);
        if give_up {
            break;
        }
    }
    records
}

/// `k` upgrades without load, each waiting up to `exit_timeout` for the old PID to exit,
/// then `pause` before the next.
pub fn idle(
    ctx: &Ctx,
    k: usize,
    exit_timeout: Duration,
    pause: Duration,
    cur: &mut Current,
) -> Vec<UpgradeRecord> {
    let mut records = Vec::with_capacity(k);
    for i in 1..=k {
        if crate::abort::requested() {
            break;
        }
        if let Err(e) = measure::prepare(ctx, *cur) {
            eprintln!("idle upgrade {i}: cannot prepare: {e}");
            break;
        }
        let until = Instant::now() + exit_timeout;
        let rec = measure::perform(ctx, i, cur, Some(until));
        let give_up = rec.error.is_some();
        records.push(rec);
        if give_up {
            break;
        }
        crate::abort::sleep(pause);
    }
    records
}
