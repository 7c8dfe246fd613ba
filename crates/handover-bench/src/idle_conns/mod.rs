//! Issue 3's "10,000 idle keep-alive connections drained with 0 errors within the deadline":
//! open N keep-alive connections to the subject server (each makes one successful request,
//! then stays idle), fire one upgrade, and check that every connection is then closed cleanly
//! (FIN, not RST) by the old generation within the drain deadline, that the old process exits
//! within it, and that fresh connections (the probe's, and one per reconnected client) are
//! answered by the new version.

mod client;
pub mod summary;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::generations::Generations;
use crate::plan::progress;
use crate::process::Server;
use crate::rlimit::NoFile;
use crate::run::Settings;
use crate::server::ServerKind;
use crate::upgrade::measure::{self, Ctx};
use crate::upgrade::Current;
use summary::IdleConnsReport;

/// Connects + first requests in flight at once (keeps the listen backlog from overflowing).
const OPEN_CONCURRENCY: usize = 256;
/// Upper bound on opening all connections.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one connect + request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed after the drain deadline for the reconnects to finish.
const RECONNECT_SLACK: Duration = Duration::from_secs(5);
/// File descriptors the benchmark needs besides the connections.
const FD_SLACK: u64 = 512;

/// What the scenario needs.
pub struct IdleConnsSpec<'a> {
    /// The server (the subject: hello with handover's drain).
    pub kind: &'a Arc<dyn ServerKind>,
    /// Connections to open.
    pub n: usize,
    /// The server's drain deadline.
    pub drain_timeout: Duration,
    /// The open-files limit.
    pub nofile: NoFile,
}

/// Runs the scenario once.
pub fn run(spec: &IdleConnsSpec, set: &Settings) -> io::Result<IdleConnsReport> {
    let need = spec.n as u64 + OPEN_CONCURRENCY as u64 + FD_SLACK;
    if spec.nofile.soft < need {
        return Err(io::Error::other(format!(
            "RLIMIT_NOFILE is {} (hard {}), {need} needed for {} connections: raise the hard \
             limit (ulimit -Hn / LimitNOFILE=, see README)",
            spec.nofile.soft, spec.nofile.hard, spec.n
        )));
    }
    let log = set.log_dir.join(format!(
        "idle-conns-{}.log",
        spec.kind.name().replace('/', "_")
    ));
    let (server, version, pid) = Server::start(Arc::clone(spec.kind), &log, set.ready_timeout)?;
    crate::abort::sleep(set.settle);
    let result = with_server(spec, set, &server, Current { version, pid });
    let (mut report, cur_pid) = match result {
        Ok(x) => x,
        Err(e) => {
            server.stop(pid, set.stop_grace);
            return Err(e);
        }
    };
    report.stop = server.stop(cur_pid, set.stop_grace);
    report.server_log = log.display().to_string();
    Ok(report)
}

fn with_server(
    spec: &IdleConnsSpec,
    set: &Settings,
    server: &Server,
    mut cur: Current,
) -> io::Result<(IdleConnsReport, u32)> {
    let opened = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let (give_up_tx, give_up) = tokio::sync::watch::channel(false);
    let shared = client::Shared {
        addr: server.addr,
        timeout: REQUEST_TIMEOUT,
        greetings: server.greetings.clone(),
        opened: Arc::clone(&opened),
        ended: Arc::clone(&ended),
        give_up,
    };
    let n = spec.n;
    let t_open = Instant::now();
    let clients = std::thread::Builder::new()
        .name("idle-conns".into())
        .spawn(move || client::run(shared, n, OPEN_CONCURRENCY))?;
    let all_opened = wait_for(&opened, n, t_open + OPEN_TIMEOUT);
    let open_ms = t_open.elapsed().as_secs_f64() * 1e3;
    progress(&format!(
        "idle-conns: {} of {n} clients past their first request in {open_ms:.0} ms{}",
        opened.load(Ordering::SeqCst),
        if all_opened { "" } else { " (gave up waiting)" }
    ));
    crate::abort::sleep(Duration::from_millis(500));
    let ended_before = ended.load(Ordering::SeqCst);
    let generations = Generations::new(cur.pid);
    let ctx = Ctx {
        server,
        generations: &generations,
        run_start: Instant::now(),
        opts: set.probe,
    };
    let upgrade = match measure::prepare(&ctx, cur) {
        Ok(()) => {
            let exit_by = Instant::now() + spec.drain_timeout + Duration::from_secs(2);
            let t0 = Instant::now();
            let rec = measure::perform(&ctx, 1, &mut cur, Some(exit_by));
            Some((rec, t0))
        }
        Err(e) => {
            progress(&format!("idle-conns: cannot prepare the upgrade: {e}"));
            None
        }
    };
    let t0 = upgrade.as_ref().map_or_else(Instant::now, |(_, t)| *t);
    let all_ended = wait_for(&ended, n, t0 + spec.drain_timeout + RECONNECT_SLACK);
    if !all_ended {
        let _ = give_up_tx.send(true);
    }
    let results = clients
        .join()
        .map_err(|_| io::Error::other("idle-conns client thread panicked"))??;
    drop(give_up_tx);
    let report = summary::build(summary::Input {
        server: spec.kind.name(),
        requested: n,
        open_ms,
        ended_before_upgrade: ended_before,
        results: &results,
        upgrade: upgrade.map(|(r, _)| r),
        t0,
        deadline: spec.drain_timeout,
        nofile: spec.nofile,
    });
    Ok((report, cur.pid))
}

/// Waits until `counter` reaches `n` or `deadline` passes (10 ms steps, abortable).
fn wait_for(counter: &AtomicUsize, n: usize, deadline: Instant) -> bool {
    loop {
        if counter.load(Ordering::SeqCst) >= n {
            return true;
        }
        if Instant::now() >= deadline || crate::abort::requested() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests;
