//! The supervisor's own footprint over many upgrades (issue 16: RSS growth ≤ 1 MiB and a
//! constant fd count over 1,000 upgrades): `handover run --listen` with `hello`, upgraded N
//! times back to back with `handover upgrade` (each returns once the new worker is ready; the
//! next waits until the old one has exited, as the supervisor refuses a fourth drain);
//! the supervisor's `VmRSS` and open fds (`/proc/PID/status`, `/proc/PID/fd`) are sampled
//! after the start, every `every` upgrades and at the end, each time once only one worker is
//! left (the old ones have drained), so draining workers' pipes are not counted.

use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::read_pid;
use crate::process::Server;
use crate::reaper;
use crate::server::ServerKind;

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Upgrades done before it.
    pub upgrades: usize,
    /// Supervisor resident set, KiB.
    pub rss_kib: u64,
    /// Supervisor open fds.
    pub fds: usize,
}

/// The footprint report (`supervisor_footprint` in report.json).
#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    /// The row measured.
    pub server: String,
    /// Upgrades asked for.
    pub requested: usize,
    /// Upgrades that succeeded.
    pub done: usize,
    /// The first failure, if any.
    pub error: Option<String>,
    /// Samples, in order.
    pub samples: Vec<Sample>,
    /// Last sample's RSS − the first's, KiB (target ≤ 1024).
    pub rss_growth_kib: Option<i64>,
    /// Last sample's fds − the first's (target 0).
    pub fd_growth: Option<i64>,
    /// Seconds for all the upgrades.
    pub took_s: f64,
}

/// `VmRSS` of `pid` in KiB, from the text of `/proc/PID/status`.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut it = line["VmRSS:".len()..].split_whitespace();
    let n = it.next()?.parse().ok()?;
    (it.next()? == "kB").then_some(n)
}

fn sample(pid: u32, upgrades: usize) -> io::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = parse_rss_kib(&status)
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Sample {
        upgrades,
        rss_kib,
        fds,
    })
}

/// Waits (bounded) until the supervisor has one worker left.
fn settle(sup: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while reaper::children(sup).len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `n` upgrades of `kind` (the `handover run` row with `hello`), sampling every `every`.
pub fn measure(
    kind: &Arc<dyn ServerKind>,
    handover: &Path,
    n: usize,
    every: usize,
    log: &Path,
    ready: Duration,
    stop_grace: Duration,
) -> io::Result<Footprint> {
    let (server, _, worker) = Server::start(Arc::clone(kind), log, ready)?;
    let sup = read_pid(&server.dir.join("supervisor.pid")).unwrap_or(server.first_pid);
    let mut out = Footprint {
        server: kind.name(),
        requested: n,
        done: 0,
        error: None,
        samples: Vec::new(),
        rss_growth_kib: None,
        fd_growth: None,
        took_s: 0.0,
    };
    let t0 = Instant::now();
    let result = (|| -> io::Result<()> {
        out.samples.push(sample(sup, 0)?);
        for i in 1..=n {
            if crate::abort::requested() {
                break;
            }
            // Back to back, but never past `--max-draining`: the last old worker drains first.
            settle(sup, stop_grace);
            let o = Command::new(handover)
                .arg("upgrade")
                .arg("--control")
                .arg(server.dir.join("control.sock"))
                .args(["--timeout", "10s"])
                .output()?;
            if !o.status.success() {
                return Err(io::Error::other(format!(
                    "upgrade {i}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            out.done = i;
            if i % every == 0 || i == n {
                settle(sup, stop_grace);
                out.samples.push(sample(sup, i)?);
            }
        }
        Ok(())
    })();
    out.took_s = t0.elapsed().as_secs_f64();
    out.error = result.err().map(|e| e.to_string());
    server.stop(worker, stop_grace);
    if let (Some(a), Some(b)) = (out.samples.first(), out.samples.last()) {
        if out.samples.len() > 1 {
            out.rss_growth_kib = Some(b.rss_kib as i64 - a.rss_kib as i64);
            out.fd_growth = Some(b.fds as i64 - a.fds as i64);
        }
    }
    Ok(out)
}

/// The table's lines.
pub fn lines(f: &Footprint) -> Vec<String> {
    let mut v = vec![format!(
        "{}: {}/{} upgrades in {:.1}s; RSS growth {} KiB (target ≤ 1024), fd growth {} (target 0)",
        f.server,
        f.done,
        f.requested,
        f.took_s,
        f.rss_growth_kib.map_or("-".into(), |g| g.to_string()),
        f.fd_growth.map_or("-".into(), |g| g.to_string()),
    )];
    let samples: Vec<String> = f
        .samples
        .iter()
        .map(|s| format!("{}: {} KiB {} fds", s.upgrades, s.rss_kib, s.fds))
        .collect();
    v.push(format!(
        "  samples (upgrades: RSS fds): {}",
        samples.join(", ")
    ));
    if let Some(e) = &f.error {
        v.push(format!("! {e}"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmrss_strictly() {
        let status = "Name:\thandover\nVmPeak:\t  20000 kB\nVmRSS:\t    8123 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(8123));
        assert_eq!(parse_rss_kib("VmRSS:\t 12 MB\n"), None);
        assert_eq!(parse_rss_kib("VmRSS:\n"), None);
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
        // The running test's own status has one.
        let me = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_rss_kib(&me).unwrap() > 0);
    }
}
