//! The upgrades of a proxy upgrade run: each one timed two ways, until `handover upgrade`
//! returns and until the new build first answers through the proxy.

use std::io;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::setup::{self, Running};
use super::{ProxyOpts, ProxyUpgrade};
use crate::probe::{self, Probe};
use crate::version::Version;

/// Pause between two probes while waiting for the new build (the supervisor matrix's default
/// `--probe-interval`).
const PROBE_PAUSE: Duration = Duration::from_micros(200);
/// One probe's own deadline.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Give up waiting for the new build's first answer after this long (`handover upgrade` is
/// given the same `--timeout`).
const SWITCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The i-th upgrade at `start + i × interval`: copy the other build next to the running binary
/// (untimed), then time the rename over it + `handover upgrade --control SOCK`, while probing
/// the proxy on fresh connections for the new build's first answer.
pub(super) fn fire(
    o: &ProxyOpts,
    running: &Running,
    start: Instant,
    end: Instant,
) -> Vec<ProxyUpgrade> {
    let mut cur = Version::V1;
    let mut out = Vec::new();
    for i in 1..=o.upgrades {
        let at = start + o.interval * i as u32;
        let now = Instant::now();
        if at > now {
            crate::abort::sleep(at - now);
        }
        if crate::abort::requested() || Instant::now() + Duration::from_millis(200) >= end {
            break;
        }
        let to = cur.other();
        let at_s = start.elapsed().as_secs_f64();
        let prepared = running.prepare_upgrade(&o.tools, to);
        let t0 = Instant::now();
        let (result, took, answered) = std::thread::scope(|s| {
            let (failed_tx, failed) = mpsc::channel();
            let action = s.spawn(move || {
                let result = prepared
                    .and_then(|()| running.swap_binary())
                    .and_then(|()| upgrade_command(o, running));
                let took = t0.elapsed();
                if !matches!(&result, Ok(out) if out.status.success()) {
                    let _ = failed_tx.send(());
                }
                (result, took)
            });
            let answered = first_answer_from(running, to, t0, &failed);
            let (result, took) = action.join().unwrap_or_else(|_| {
                (
                    Err(io::Error::other("the upgrade thread panicked")),
                    t0.elapsed(),
                )
            });
            (result, took, answered)
        });
        let (ok, output) = match result {
            Ok(o) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                (o.status.success(), text.trim().to_string())
            }
            Err(e) => (false, e.to_string()),
        };
        if ok {
            cur = to;
        }
        out.push(ProxyUpgrade {
            index: i,
            to,
            at_s,
            took_ms: ms(took),
            handover_ms: answered.map(|at| ms(at - t0)),
            ok,
            output,
        });
    }
    out
}

fn upgrade_command(o: &ProxyOpts, running: &Running) -> io::Result<Output> {
    Command::new(&o.tools.handover)
        .arg("upgrade")
        .arg("--control")
        .arg(running.dir.join(setup::CONTROL))
        .arg("--timeout")
        .arg(format!("{}s", SWITCH_TIMEOUT.as_secs()))
        .output()
}

/// Probes through the proxy until build `to` answers; none at the switch timeout or as soon as
/// the upgrade has `failed`.
fn first_answer_from(
    running: &Running,
    to: Version,
    t0: Instant,
    failed: &mpsc::Receiver<()>,
) -> Option<Instant> {
    let greetings = setup::greetings();
    while t0.elapsed() < SWITCH_TIMEOUT && !crate::abort::requested() {
        if failed.try_recv().is_ok() {
            return None;
        }
        let answer = probe::once_over(
            running.addr,
            &greetings,
            PROBE_TIMEOUT,
            running.tls.as_ref(),
        );
        if let Probe::Answer {
            status: 200,
            version: Some(v),
            ..
        } = answer
        {
            if v == to {
                return Some(Instant::now());
            }
        }
        std::thread::sleep(PROBE_PAUSE);
    }
    None
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
