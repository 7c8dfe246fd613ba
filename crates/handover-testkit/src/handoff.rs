//! Socket-mode upgrades under a connection-per-request load, checked for what the supervisor's
//! hand-off promises: no failed request, and no fresh connection answered by an older worker
//! once a newer one has answered anyone (see [`crate::http10::Stats::stale`]).

use std::time::Duration;

use crate::http10::{Load, Stats};
use crate::proc::proc_stat;
use crate::supervisor::{Ctx, Supervisor};
use crate::wait::poll_until;

/// Clients of the load, each opening a connection per request without pause.
const CLIENTS: usize = 8;
/// Answers each worker must give before the next upgrade.
const ANSWERS: usize = 50;

/// `upgrades` times: `before(i)` (put the next version in place), `handover upgrade`, wait
/// for the new worker's answers, and for the old one's exit within `exit_within`. Then no
/// request may have failed and no answer be stale; returns the load's tally and every
/// worker's PID in order.
pub fn upgrade_without_a_stale_answer(
    ctx: &Ctx,
    sup: &Supervisor,
    upgrades: usize,
    exit_within: Duration,
    mut before: impl FnMut(usize),
) -> (Stats, Vec<i32>) {
    let control = ctx.control().to_str().unwrap().to_string();
    let mut pids = sup.worker_pids();
    assert_eq!(
        pids.len(),
        1,
        "one worker before the first upgrade: {pids:?}"
    );
    let load = Load::start(sup.addr(), CLIENTS);
    load.wait_pid(pids[0], ANSWERS);
    for i in 0..upgrades {
        before(i);
        let out = ctx.handover(&["upgrade", "--control", &control]);
        assert!(
            out.status.success(),
            "upgrade {} failed: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        let old = *pids.last().unwrap();
        let new = *sup
            .worker_pids()
            .iter()
            .find(|p| !pids.contains(p))
            .unwrap_or_else(|| panic!("upgrade {} started no new worker", i + 1));
        pids.push(new);
        load.wait_pid(new, ANSWERS);
        assert!(
            poll_until(exit_within, || proc_stat(old).is_none()),
            "pid {old} did not exit within {exit_within:?} once the new one answered"
        );
    }
    let stats = load.finish();
    assert!(
        stats.failures.is_empty(),
        "requests failed: {:?}",
        stats.failures
    );
    let stale = stats.stale(&pids);
    eprintln!(
        "{} answers over {upgrades} upgrades, {} stale",
        stats.ok,
        stale.len()
    );
    assert!(
        stale.is_empty(),
        "{} stale answers of {} over {upgrades} upgrades; first: {:?}",
        stale.len(),
        stats.ok,
        &stale[..stale.len().min(5)]
    );
    (stats, pids)
}
