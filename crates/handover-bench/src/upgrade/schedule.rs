//! Series of upgrades: N at fixed times during a load run, or K back to back without load
//! (each waiting for the old PID to exit before the next).

use std::time::{Duration, Instant};

use super::measure::{self, Ctx};
use super::{Current, UpgradeRecord};

/// How long before each upgrade under load the probe's own round trip is measured.
const FLOOR_WINDOW: Duration = Duration::from_millis(200);
/// Probing for the floor ends this long before the action (a probe in flight then would be
/// counted as the floor's, and delay the action's first probe).
const FLOOR_GAP: Duration = Duration::from_millis(20);
/// The same before each idle upgrade (shorter: probes are quick there).
const IDLE_FLOOR_WINDOW: Duration = Duration::from_millis(50);

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
        // The probe's round trip under this load, in the quiet stretch before the action
        // (the previous upgrade's old generation is gone or given up on by now).
        let from = at
            .checked_sub(FLOOR_WINDOW)
            .unwrap_or(at)
            .max(Instant::now());
        crate::abort::sleep(from.saturating_duration_since(Instant::now()));
        let floor = measure::probe_floor(ctx, at.checked_sub(FLOOR_GAP).unwrap_or(at));
        crate::abort::sleep(at.saturating_duration_since(Instant::now()));
        let next = (ctx.run_start + interval * (i as u32 + 1)).min(end);
        let wait_until = next.checked_sub(Duration::from_millis(50)).unwrap_or(next);
        let mut rec = measure::perform(ctx, i, cur, Some(wait_until));
        rec.probe_floor = floor;
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
        let floor = measure::probe_floor(ctx, Instant::now() + IDLE_FLOOR_WINDOW);
        let until = Instant::now() + exit_timeout;
        let mut rec = measure::perform(ctx, i, cur, Some(until));
        rec.probe_floor = floor;
        let give_up = rec.error.is_some();
        records.push(rec);
        if give_up {
            break;
        }
        crate::abort::sleep(pause);
    }
    records
}
