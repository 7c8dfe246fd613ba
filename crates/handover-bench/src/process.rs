//! Lifecycle of a server under test: a private directory, start, wait until it answers, stop
//! (graceful signal, then SIGKILL after a deadline) and reap everything it left.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probe::{self, Probe};
use crate::reaper;
use crate::server::ServerKind;
use crate::version::{Greetings, Version};

/// A started server.
pub struct Server {
    /// Its kind.
    pub kind: Arc<dyn ServerKind>,
    /// Private directory (binaries, pid file); removed at stop.
    pub dir: PathBuf,
    /// Where it serves.
    pub addr: SocketAddr,
    /// Body prefixes of its builds.
    pub greetings: Greetings,
    /// PID of the first generation.
    pub first_pid: u32,
    /// TLS client configuration when it serves HTTPS ([`ServerKind::client_tls`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// How a stop went.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StopReport {
    /// From the stop signal until no process was left below the benchmark.
    pub stop_ms: f64,
    /// Processes that had to be killed with SIGKILL after the grace.
    pub killed: usize,
    /// Processes still there after SIGKILL (must be 0).
    pub left_behind: usize,
    /// Exited processes reaped by the benchmark (generations reparented to it included).
    pub reaped: usize,
    /// Reaped processes that did not exit with status 0 (`PID: exit N` / `PID: signal N`).
    pub abnormal_exits: Vec<String>,
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A new empty directory `<tmp>/<prefix>.<pid>.<n>` for one run's files.
pub fn private_dir_named(prefix: &str) -> io::Result<PathBuf> {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}.{}.{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn private_dir() -> io::Result<PathBuf> {
    private_dir_named("handover-bench")
}

/// A port that was free a moment ago.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), where no outgoing
/// connection is given a local port: a port from inside it, free when chosen, may be taken by
/// one of the load's (or nginx's upstream) connections before the server binds it (most
/// likely why nginx's standby `hello` once did not answer under 512 connections).
pub fn free_port() -> io::Result<u16> {
    let low = ephemeral_low().unwrap_or(32768);
    // Spread over the range below, starting somewhere different each call and process.
    let span = low.saturating_sub(PORTS_FROM).max(1);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    let start = (seed % u32::from(span)) as u16;
    for i in 0..span {
        let port = PORTS_FROM + (start + i) % span;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    // Nothing free below the range: any port the kernel picks.
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The lowest port [`free_port`] picks.
const PORTS_FROM: u16 = 20000;

/// The first port of the ephemeral range, from `/proc/sys/net/ipv4/ip_local_port_range`.
fn ephemeral_low() -> Option<u16> {
    first_port(&std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?)
}

/// The first port of a `ip_local_port_range` text (`LOW<tab>HIGH`); `None` if it is not a
/// port.
fn first_port(range: &str) -> Option<u16> {
    range.split_whitespace().next()?.parse().ok()
}

impl Server {
    /// Starts `kind` (stdout and stderr appended to `log`) and waits up to `ready` for a 200
    /// answer; returns the server, the version and the PID that answered.
    pub fn start(
        kind: Arc<dyn ServerKind>,
        log: &Path,
        ready: Duration,
    ) -> io::Result<(Server, Version, u32)> {
        let dir = private_dir()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = kind.start(&dir, addr.port())?;
        cmd.stdin(kind.stdin(&dir)?)
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn()?;
        let server = Server {
            greetings: kind.greetings(),
            tls: kind.client_tls(),
            kind,
            dir,
            addr,
            first_pid: child.id(),
        };
        // The child is reaped by `stop` (reaper::reap_exited), not through `child`.
        drop(child);
        match server.wait_ready(ready) {
            Ok((v, pid)) => Ok((server, v, pid)),
            Err(e) => {
                server.stop(server.first_pid, Duration::from_secs(2));
                Err(e)
            }
        }
    }

    fn wait_ready(&self, within: Duration) -> io::Result<(Version, u32)> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && !crate::abort::requested() {
            if let Probe::Answer {
                status: 200,
                version: Some(v),
                pid,
            } = self.probe(Duration::from_millis(500))
            {
                return Ok((v, pid.unwrap_or(self.first_pid)));
            }
            if !self.kind.daemonizes() && reaper::exited(self.first_pid) {
                return Err(io::Error::other(format!(
                    "{} exited before answering (see its log)",
                    self.kind.name()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "{} did not answer within {within:?}",
            self.kind.name()
        )))
    }

    /// One fresh-connection `GET /` (over TLS when it serves HTTPS).
    pub fn probe(&self, timeout: Duration) -> Probe {
        probe::once_over(self.addr, &self.greetings, timeout, self.tls.as_ref())
    }

    /// Asks `current_pid` to stop, waits up to `grace` for every process below the benchmark
    /// to exit, kills what is left, reaps, and removes the private directory.
    pub fn stop(&self, current_pid: u32, grace: Duration) -> StopReport {
        let target = self.kind.stop_target(&self.dir, current_pid);
        let mut signals = vec![(target, self.kind.stop_signal())];
        signals.extend(self.kind.also_stop(&self.dir, current_pid));
        stop_everything(&signals, grace, &self.dir)
    }
}

/// Sends each `(pid, signal)`, waits up to `grace` for every process below the benchmark to
/// exit, SIGKILLs what is left, reaps everything, and removes `dir`.
pub fn stop_everything(signals: &[(u32, i32)], grace: Duration, dir: &Path) -> StopReport {
    let t0 = Instant::now();
    let mut report = StopReport::default();
    for &(pid, sig) in signals {
        let _ = reaper::signal(pid, sig);
    }
    wait_gone(t0 + grace, &mut report);
    let left = alive_descendants();
    if !left.is_empty() {
        report.killed = left.len();
        for pid in left {
            let _ = reaper::signal(pid, libc::SIGKILL);
        }
        wait_gone(Instant::now() + Duration::from_secs(3), &mut report);
    }
    report.left_behind = alive_descendants().len();
    report.stop_ms = t0.elapsed().as_secs_f64() * 1e3;
    let _ = std::fs::remove_dir_all(dir);
    report
}

fn alive_descendants() -> Vec<u32> {
    reaper::descendants()
        .into_iter()
        .filter(|d| d.state != 'Z' && d.state != 'X')
        .map(|d| d.pid)
        .collect()
}

/// Reaps until nothing is left below this process or `deadline` passes.
fn wait_gone(deadline: Instant, report: &mut StopReport) {
    loop {
        for (pid, how) in reaper::reap_exited() {
            report.reaped += 1;
            if how != "exit 0" {
                report.abnormal_exits.push(format!("{pid}: {how}"));
            }
        }
        if reaper::descendants().is_empty() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::first_port;

    #[test]
    fn the_ephemeral_range_is_read_strictly() {
        assert_eq!(first_port("32768\t60999\n"), Some(32768));
        for bad in ["", "\n", "x 60999", "-1 2", "70000 80000", "32768.5 60999"] {
            assert_eq!(first_port(bad), None, "{bad:?}");
        }
    }
}
