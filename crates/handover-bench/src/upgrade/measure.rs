//! One timed upgrade: action, probe until the new build answers, linger counting stale
//! answers, optionally wait for the old PID to exit.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Current, ProbeFloor, UpgradeRecord};
use crate::generations::Generations;
use crate::probe::{Probe, ProbeCounts};
use crate::process::Server;
use crate::reaper;
use crate::version::Version;

/// Upper bound on probes per phase of one upgrade (besides the time limits).
const MAX_PROBES: u32 = 200_000;

/// How probing is done.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOpts {
    /// Give up waiting for the new build after this long.
    pub switch_timeout: Duration,
    /// Keep probing this long after the switch (stale answers).
    pub linger: Duration,
    /// Pause between probes.
    pub interval: Duration,
    /// Timeout of one probe.
    pub probe_timeout: Duration,
}

/// What an upgrade needs.
pub struct Ctx<'a> {
    /// The server being upgraded.
    pub server: &'a Server,
    /// Generations seen so far (updated at the switch).
    pub generations: &'a Generations,
    /// Time origin of the run.
    pub run_start: Instant,
    /// Probe settings.
    pub opts: ProbeOpts,
}

/// Untimed preparation of the next upgrade.
pub fn prepare(ctx: &Ctx, cur: Current) -> std::io::Result<()> {
    ctx.server
        .kind
        .prepare_upgrade(&ctx.server.dir, cur.version.other())
}

/// Fires upgrade `index` from `cur` (prepared already) and times it. Waits for the old PID
/// to exit until `exit_wait_until` at most. Updates `cur` to whoever serves afterwards.
///
/// The probing starts with the action, not after it: handover time is the action's start to
/// the first answer from the new version, and an action that is a command (`handover
/// upgrade`, `pm2 reload`, `nginx -s reload`) may return well after the new version answers;
/// its own run time is `action_ms`.
pub fn perform(
    ctx: &Ctx,
    index: usize,
    cur: &mut Current,
    exit_wait_until: Option<Instant>,
) -> UpgradeRecord {
    let (from, to, old_pid) = (cur.version, cur.version.other(), cur.pid);
    let mut before = ProbeCounts::default();
    let mut after = ProbeCounts::default();
    let t0 = Instant::now();
    let (action, switch, exit) = std::thread::scope(|s| {
        let (failed_tx, failed) = mpsc::channel();
        let action = s.spawn(move || {
            let result = ctx.server.kind.upgrade(&ctx.server.dir, to, old_pid);
            let took = t0.elapsed();
            if result.is_err() {
                let _ = failed_tx.send(());
            }
            (result, took)
        });
        let switch = probe_until_switch(ctx, to, old_pid, t0, &mut before, &failed);
        if let Some((Some(pid), _)) = switch {
            // Before the linger, which tells stale answers by the current generation.
            ctx.generations.switched_to(pid);
        }
        let exit = switch.map(|(_, at)| linger(ctx, to, at, old_pid, &mut after));
        let action = action.join().unwrap_or_else(|_| {
            (
                Err(std::io::Error::other("the upgrade action panicked")),
                t0.elapsed(),
            )
        });
        (action, switch, exit.flatten())
    });
    let (result, took) = action;
    let mut rec = UpgradeRecord {
        index,
        from,
        to,
        old_pid,
        new_pid: None,
        at_ms: ms(t0 - ctx.run_start),
        handover_ms: None,
        action_ms: ms(took),
        before,
        after,
        old_exit_ms: exit.map(|e| ms(e - t0)),
        error: result.err().map(|e| e.to_string()),
        probe_floor: None,
    };
    match switch {
        Some((pid, at)) => {
            rec.new_pid = pid;
            rec.handover_ms = Some(ms(at - t0));
            *cur = Current {
                version: to,
                pid: pid.unwrap_or(old_pid),
            };
        }
        None if rec.error.is_some() => return rec,
        None => match who_serves(ctx) {
            Some(now) => *cur = now,
            None => rec.error = Some("no new version answered and nothing serves now".into()),
        },
    }
    if let (None, Some(until)) = (rec.old_exit_ms, exit_wait_until) {
        rec.old_exit_ms = wait_exit(old_pid, until).map(|at| ms(at - t0));
    }
    rec
}

/// The probe's own round trip under the same load with no upgrade in progress: fresh
/// connections, one at a time, as the switch is probed, until `until`. A handover time is at
/// least one such probe's round trip, so their median is about the least a handover time
/// can be under that load (behind a loaded proxy it is most of it). `None` if there was no time for a probe; a floor
/// without a median if none was answered with a 200 (timed out, most likely: a server that
/// leaves fresh connections waiting under that load).
pub fn probe_floor(ctx: &Ctx, until: Instant) -> Option<ProbeFloor> {
    let mut rtts = Vec::new();
    let mut n = 0;
    while Instant::now() < until && n < MAX_PROBES && !crate::abort::requested() {
        n += 1;
        let t = Instant::now();
        if let Probe::Answer { status: 200, .. } = ctx.server.probe(ctx.opts.probe_timeout) {
            rtts.push(ms(t.elapsed()));
        }
        std::thread::sleep(ctx.opts.interval);
    }
    if n == 0 {
        return None;
    }
    Some(ProbeFloor {
        probes: rtts.len(),
        unanswered: n as usize - rtts.len(),
        median_ms: super::median(&mut rtts),
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Probes until the new version answers; gives up at the switch timeout, or as soon as the
/// action has `failed`.
fn probe_until_switch(
    ctx: &Ctx,
    to: Version,
    old_pid: u32,
    t0: Instant,
    counts: &mut ProbeCounts,
    failed: &mpsc::Receiver<()>,
) -> Option<(Option<u32>, Instant)> {
    let s = ctx.server;
    let mut n = 0;
    while t0.elapsed() < ctx.opts.switch_timeout
        && n < MAX_PROBES
        && !crate::abort::requested()
        && failed.try_recv().is_err()
    {
        n += 1;
        let p = s.probe(ctx.opts.probe_timeout);
        let at = Instant::now();
        match p {
            Probe::Answer {
                status: 200,
                version: Some(v),
                pid,
            } if v == to && pid != Some(old_pid) => {
                counts.ok_new += 1;
                return Some((pid, at));
            }
            other => count(counts, other, to),
        }
        std::thread::sleep(ctx.opts.interval);
    }
    None
}

/// Probes for the linger period after the switch; returns when the old PID was first seen
/// gone, if it was.
fn linger(
    ctx: &Ctx,
    to: Version,
    switched_at: Instant,
    old_pid: u32,
    counts: &mut ProbeCounts,
) -> Option<Instant> {
    let s = ctx.server;
    let new_pid = ctx.generations.current_pid();
    let mut exited = None;
    let mut n = 0;
    while switched_at.elapsed() < ctx.opts.linger && n < MAX_PROBES && !crate::abort::requested() {
        n += 1;
        if exited.is_none() && reaper::exited(old_pid) {
            exited = Some(Instant::now());
        }
        match s.probe(ctx.opts.probe_timeout) {
            // The new build's greeting from another PID: an older generation of that build
            // (no newer one can start during the linger), so stale too.
            Probe::Answer {
                status: 200,
                version: Some(v),
                pid: Some(pid),
            } if v == to && pid != new_pid => counts.ok_old += 1,
            other => count(counts, other, to),
        }
        std::thread::sleep(ctx.opts.interval);
    }
    exited
}

fn count(counts: &mut ProbeCounts, p: Probe, to: Version) {
    match p {
        Probe::Answer {
            status: 200,
            version: Some(v),
            ..
        } => {
            if v == to {
                counts.ok_new += 1;
            } else {
                counts.ok_old += 1;
            }
        }
        Probe::Answer { .. } | Probe::Other => counts.other += 1,
        Probe::Refused => counts.refused += 1,
        Probe::Reset => counts.reset += 1,
        Probe::Timeout => counts.timeout += 1,
    }
}

/// Who answers a fresh connection now.
fn who_serves(ctx: &Ctx) -> Option<Current> {
    let s = ctx.server;
    match s.probe(ctx.opts.probe_timeout) {
        Probe::Answer {
            status: 200,
            version: Some(version),
            pid: Some(pid),
        } => Some(Current { version, pid }),
        _ => None,
    }
}

fn wait_exit(pid: u32, until: Instant) -> Option<Instant> {
    loop {
        if reaper::exited(pid) {
            return Some(Instant::now());
        }
        if Instant::now() >= until || crate::abort::requested() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
