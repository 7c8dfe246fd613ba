//! How a worker proves it is ready: `--ready notify | tcp:ADDR | http:URL | delay:DUR`.
//!
//! A probe of the shared listening socket would prove nothing (the supervisor's own socket
//! accepts, and the old worker may answer), so the probes target a per-worker address: `{port}`
//! in ADDR/URL is a free port chosen for each worker and exported to it as
//! `HANDOVER_HEALTH_PORT`. `notify` gives each worker a `NOTIFY_SOCKET` of its own.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::events::{Event, Events, WorkerId};
use crate::notify::NotifySocket;
use crate::probe;

/// The variable naming the per-worker port.
pub const HEALTH_PORT_VAR: &str = "HANDOVER_HEALTH_PORT";
const PORT_PLACEHOLDER: &str = "{port}";

/// `--ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyMode {
    /// `READY=1` on the worker's own `NOTIFY_SOCKET`.
    Notify,
    /// A TCP connect succeeds.
    Tcp(Target),
    /// `GET` answers 2xx.
    Http {
        /// Where to connect.
        target: Target,
        /// The authority as written, for the `Host` header (`{port}` replaced per worker).
        host: String,
        /// The path and query.
        path: String,
    },
    /// Still running after this long.
    Delay(Duration),
}

/// A probe address; the port may be chosen per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The IP address to connect to.
    pub ip: IpAddr,
    /// `None` for `{port}`.
    pub port: Option<u16>,
}

impl Target {
    fn parse(s: &str) -> Result<Target, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} has no port (write HOST:PORT or HOST:{{port}})"))?;
        let ip = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    format!("{host:?} is not an IP address (names other than localhost are not looked up)")
                })?,
        };
        let port = if port == PORT_PLACEHOLDER {
            None
        } else {
            Some(
                port.parse()
                    .map_err(|_| format!("invalid port {port:?} (expected 1-65535 or {{port}})"))?,
            )
        };
        Ok(Target { ip, port })
    }

    fn with_port(&self, chosen: Option<u16>) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.or(chosen).unwrap_or(0))
    }

    /// Whether the probe reaches a per-worker port.
    pub fn per_worker(&self) -> bool {
        self.port.is_none()
    }
}

impl FromStr for ReadyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: String| format!("invalid readiness mode {s:?}: {why}");
        if s == "notify" {
            return Ok(ReadyMode::Notify);
        }
        if s == "tcp" {
            return Ok(ReadyMode::Tcp(Target {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: None,
            }));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            return Target::parse(addr).map(ReadyMode::Tcp).map_err(invalid);
        }
        if let Some(d) = s.strip_prefix("delay:") {
            return handover::parse_duration(d)
                .map(ReadyMode::Delay)
                .map_err(|e| invalid(e.to_string()));
        }
        if let Some(url) = s.strip_prefix("http:") {
            return parse_http(url).map_err(invalid);
        }
        Err(format!(
            "unknown readiness mode {s:?}; expected notify, tcp, tcp:ADDR, http:URL or delay:DUR \
             (e.g. tcp:127.0.0.1:{{port}}, http://127.0.0.1:{{port}}/healthz, http:/healthz, delay:2s)"
        ))
    }
}

fn parse_http(url: &str) -> Result<ReadyMode, String> {
    // `--ready http://HOST/...` arrives here as `//HOST/...`; `http:http://HOST/...` too.
    let url = url.strip_prefix("http:").unwrap_or(url);
    if url.starts_with('/') && !url.starts_with("//") {
        return Ok(ReadyMode::Http {
            target: Target {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: None,
            },
            host: format!("127.0.0.1:{PORT_PLACEHOLDER}"),
            path: url.to_string(),
        });
    }
    let rest = url
        .strip_prefix("//")
        .ok_or("expected http://HOST:PORT/PATH or http:/PATH")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path
    };
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_string()
    };
    Ok(ReadyMode::Http {
        target: Target::parse(&with_port)?,
        host: authority.to_string(),
        path,
    })
}

impl fmt::Display for ReadyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |t: &Target| match t.port {
            Some(p) => SocketAddr::new(t.ip, p).to_string(),
            None => format!("{}:{PORT_PLACEHOLDER}", SocketAddr::new(t.ip, 0).ip()),
        };
        match self {
            ReadyMode::Notify => f.write_str("notify"),
            ReadyMode::Tcp(t) => write!(f, "tcp:{}", show(t)),
            ReadyMode::Http { host, path, .. } => write!(f, "http://{host}{path}"),
            ReadyMode::Delay(d) => write!(f, "delay:{d:?}"),
        }
    }
}

impl ReadyMode {
    /// A warning for a probe that a previous generation could answer.
    pub fn warning(&self) -> Option<String> {
        let fixed = match self {
            ReadyMode::Tcp(t) | ReadyMode::Http { target: t, .. } => !t.per_worker(),
            _ => false,
        };
        fixed.then(|| {
            format!(
                "--ready {self} probes a fixed port, which the old worker may answer during an \
                 upgrade; use {PORT_PLACEHOLDER} so each worker is probed on its own port"
            )
        })
    }
}

/// A free port on `ip` (the kernel's choice; free when this returns).
pub fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    Ok(TcpListener::bind(SocketAddr::new(ip, 0))?
        .local_addr()?
        .port())
}

/// One worker's readiness check, prepared before it is started.
#[derive(Debug)]
pub struct Prepared {
    /// Variables for the worker's environment.
    pub env: Vec<(OsString, OsString)>,
    check: Check,
}

#[derive(Debug)]
enum Check {
    Notify(NotifySocket),
    Tcp(SocketAddr),
    Http {
        addr: SocketAddr,
        host: String,
        path: String,
    },
    Delay(Duration),
}

/// Prepares worker `id`'s check: binds its notification socket in `runtime_dir`, or picks its
/// port. `worker_port` (proxy mode) is the port the worker serves on: `{port}` means it.
pub fn prepare(
    mode: &ReadyMode,
    runtime_dir: &Path,
    id: WorkerId,
    worker_port: Option<u16>,
) -> std::io::Result<Prepared> {
    let mut env = Vec::new();
    let mut port_for = |t: &Target| -> std::io::Result<Option<u16>> {
        if !t.per_worker() {
            return Ok(None);
        }
        if worker_port.is_some() {
            return Ok(worker_port);
        }
        let port = free_port(t.ip)?;
        env.push((HEALTH_PORT_VAR.into(), port.to_string().into()));
        Ok(Some(port))
    };
    let check = match mode {
        ReadyMode::Notify => {
            let socket = NotifySocket::bind(&runtime_dir.join(format!("w{}.sock", id.0)))?;
            env.push(("NOTIFY_SOCKET".into(), socket.path().as_os_str().to_owned()));
            Check::Notify(socket)
        }
        ReadyMode::Tcp(t) => Check::Tcp(t.with_port(port_for(t)?)),
        ReadyMode::Http { target, host, path } => {
            let port = port_for(target)?;
            let host = match port {
                Some(p) => host.replace(PORT_PLACEHOLDER, &p.to_string()),
                None => host.clone(),
            };
            Check::Http {
                addr: target.with_port(port),
                host,
                path: path.clone(),
            }
        }
        ReadyMode::Delay(d) => Check::Delay(*d),
    };
    Ok(Prepared { env, check })
}

impl Prepared {
    /// Runs the check for the started worker `id`: sends [`Event::Ready`] once it passes.
    /// Probe failures are kept in `last_error` for the timeout message. Runs until aborted
    /// (a notification socket keeps being read so that the worker never blocks on it).
    pub async fn run(self, id: WorkerId, events: Events, last_error: Arc<Mutex<Option<String>>>) {
        let ready = |how: String| {
            let _ = events.send(Event::Ready { id, how });
        };
        match self.check {
            Check::Notify(socket) => {
                let stopped = || {
                    let _ = events.send(Event::StoppedAccepting {
                        id,
                        on_channel: false,
                    });
                };
                socket.run(|| ready("READY=1".into()), stopped).await
            }
            Check::Delay(d) => {
                tokio::time::sleep(d).await;
                ready(format!("still running after {d:?}"));
            }
            Check::Tcp(addr) => {
                if poll(last_error, move || probe::tcp(addr)).await.is_some() {
                    ready(format!("connected to {addr}"));
                }
            }
            Check::Http { addr, host, path } => {
                let (h, p) = (host.clone(), path.clone());
                if let Some(code) = poll(last_error, move || probe::http(addr, &h, &p)).await {
                    ready(format!("GET http://{host}{path} answered {code}"));
                }
            }
        }
    }
}

/// Repeats `probe` until it succeeds, a little less often as time goes by. `None` when the
/// check was dropped (nobody waits for the answer) or the probing thread failed (the readiness
/// timeout then tells the operator).
///
/// The probes run on a blocking thread because the runtime's timer ticks in whole
/// milliseconds: a worker that binds in 2 ms would be seen 1-2 ms late, and every upgrade
/// waits on that (issue 16). Dropping the future (the check is aborted: the worker exited or
/// timed out) stops the thread after the probe in progress.
async fn poll<T, F>(last_error: Arc<Mutex<Option<String>>>, mut probe: F) -> Option<T>
where
    T: Send + 'static,
    F: FnMut() -> Result<T, String> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let probing = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match probe() {
                Ok(v) => return Some(v),
                Err(e) => {
                    tracing::debug!("readiness probe: {e}");
                    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
            std::thread::sleep(retry_pause(start.elapsed()));
        }
        None
    });
    match probing.await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!("the readiness probe stopped: {e}");
            None
        }
    }
}

/// Tells the probing thread to stop when the check is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The pause before the next probe after `waited` without success: a tenth of the time waited,
/// between 200 µs and 500 ms. A worker that is ready after T is seen by about 1.1 T + 0.2 ms
/// (the upgrade waits on it: a fixed 20 ms first pause made every proxy-mode upgrade of a
/// worker that binds in a few ms take ~29 ms, issue 16), while a slow starter is probed 76
/// times in its first second and twice a second after five seconds.
fn retry_pause(waited: Duration) -> Duration {
    (waited / 10).clamp(Duration::from_micros(200), Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_retried_in_proportion_to_the_time_waited() {
        let ms = Duration::from_millis;
        assert_eq!(retry_pause(Duration::ZERO), Duration::from_micros(200));
        assert_eq!(retry_pause(ms(5)), Duration::from_micros(500));
        assert_eq!(retry_pause(ms(100)), ms(10));
        assert_eq!(retry_pause(ms(4_000)), ms(400));
        assert_eq!(retry_pause(Duration::from_secs(60)), ms(500));
        // A worker ready after 2 ms is found within 0.2 ms of it, one ready after 8 ms
        // within 0.8 ms.
        for (ready, within) in [
            (ms(2), Duration::from_micros(200)),
            (ms(8), Duration::from_micros(800)),
        ] {
            let mut t = Duration::ZERO;
            while t < ready {
                t += retry_pause(t);
            }
            assert!(t <= ready + within, "{ready:?}: seen at {t:?}");
        }
    }

    fn p(s: &str) -> ReadyMode {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_mode() {
        assert_eq!(p("notify"), ReadyMode::Notify);
        assert_eq!(p("delay:2s"), ReadyMode::Delay(Duration::from_secs(2)));
        let ReadyMode::Tcp(t) = p("tcp:127.0.0.1:{port}") else {
            panic!()
        };
        assert!(t.per_worker());
        let ReadyMode::Tcp(t) = p("tcp:[::1]:9000") else {
            panic!()
        };
        assert_eq!(t.with_port(None), "[::1]:9000".parse().unwrap());
        let ReadyMode::Http { target, host, path } = p("http://localhost:{port}/healthz?x=1")
        else {
            panic!()
        };
        assert!(target.per_worker());
        assert_eq!(host, "localhost:{port}");
        assert_eq!(path, "/healthz?x=1");
        let ReadyMode::Http { target, path, .. } = p("http:/ready") else {
            panic!()
        };
        assert!(target.per_worker());
        assert_eq!(path, "/ready");
        assert_eq!(
            p("http:http://127.0.0.1:{port}/x"),
            p("http://127.0.0.1:{port}/x")
        );
        let ReadyMode::Http { target, path, .. } = p("http://127.0.0.1") else {
            panic!()
        };
        assert_eq!(target.port, Some(80));
        assert_eq!(path, "/");
    }

    #[test]
    fn explains_bad_modes() {
        for (s, needle) in [
            ("smoke", "unknown readiness mode"),
            ("tcp:example.com:80", "not an IP address"),
            ("tcp:127.0.0.1", "no port"),
            ("tcp:127.0.0.1:http", "invalid port"),
            ("delay:soon", "invalid duration"),
            ("http:https://x", "expected http://"),
        ] {
            let e = s.parse::<ReadyMode>().unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn proxy_workers_are_probed_on_their_own_port() {
        let dir = std::env::temp_dir();
        let prepared = prepare(&p("tcp"), &dir, WorkerId(1), Some(4321)).unwrap();
        assert!(prepared.env.is_empty());
        let Check::Tcp(addr) = prepared.check else {
            panic!()
        };
        assert_eq!(addr, "127.0.0.1:4321".parse().unwrap());
    }

    #[test]
    fn warns_about_fixed_probe_ports() {
        assert!(p("tcp:127.0.0.1:9000").warning().is_some());
        assert!(p("http:/healthz").warning().is_none());
        assert!(p("notify").warning().is_none());
    }

    #[test]
    fn per_worker_ports_are_exported() {
        let dir = std::env::temp_dir();
        let prepared = prepare(&p("http:/h"), &dir, WorkerId(1), None).unwrap();
        let (k, v) = &prepared.env[0];
        assert_eq!(k, HEALTH_PORT_VAR);
        let port: u16 = v.to_str().unwrap().parse().unwrap();
        let Check::Http { addr, host, .. } = &prepared.check else {
            panic!()
        };
        assert_eq!(addr.port(), port);
        assert_eq!(host, &format!("127.0.0.1:{port}"));
    }
}
