//! The proxy phase's servers: the `hello` upstream alone (direct), behind `handover run
//! --proxy http://|https://|tcp://`, or behind nginx (`proxy_pass` to a keep-alive upstream,
//! plain or `listen ... ssl`, or `stream`). The https setups use the bench's certificate
//! ([`crate::tls::Pki`]).
//! Each setup gets a private directory, is started and waited for, and stopped (graceful signal,
//! SIGKILL after a grace, reaping).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::probe::{self, Probe};
use crate::process::{free_port, StopReport};
use crate::version::{Greetings, Version};

/// The binary the worker COMMAND points to; upgrades rename the other build over it.
pub const RUNNING: &str = "hello";
const NEXT: &str = "hello.next";
/// The supervisor's control socket, in the setup's directory.
pub const CONTROL: &str = "control.sock";

/// What the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HTTP/1.1 reverse proxy.
    Http,
    /// The same, TLS terminated by the proxy.
    Https,
    /// Plain TCP forwarding.
    Tcp,
}

/// What sits in front of the upstream `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Nothing: the client talks to `hello` itself.
    Direct,
    /// `handover run --proxy SCHEME://...`.
    Handover(Scheme),
    /// nginx (`http` + `upstream { keepalive 64; }`, or `stream`).
    Nginx(Scheme),
}

impl Scheme {
    /// As in `--proxy SCHEME://`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tcp => "tcp",
        }
    }
}

impl Target {
    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Handover(Scheme::Http) => "handover http",
            Target::Handover(Scheme::Https) => "handover https",
            Target::Handover(Scheme::Tcp) => "handover tcp",
            Target::Nginx(Scheme::Http) => "nginx http",
            Target::Nginx(Scheme::Https) => "nginx https",
            Target::Nginx(Scheme::Tcp) => "nginx stream",
        }
    }
}

/// Everything the setups need.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `handover` CLI.
    pub handover: PathBuf,
    /// nginx, when found.
    pub nginx: Option<PathBuf>,
    /// `load_module` line for the stream module when it is dynamic ("" when built in).
    pub stream_module: Option<String>,
    /// nginx `worker_processes`.
    pub nginx_workers: String,
    /// `user ...;` when root.
    pub nginx_user: String,
    /// v1 / v2 `hello`.
    pub bins: Binaries,
    /// handover's `--drain-timeout`.
    pub drain_timeout: Duration,
    /// `handover run --busy-poll` (none: its default).
    pub busy_poll: Option<Duration>,
    /// Certificate, key and client configuration of the https setups (none: they fail to
    /// start, saying why).
    pub tls: Option<Arc<crate::tls::Pki>>,
}

impl Tools {
    /// The build of `v`.
    pub fn bin(&self, v: Version) -> &Path {
        match v {
            Version::V1 => &self.bins.v1,
            Version::V2 => &self.bins.v2,
        }
    }
}

/// A started setup.
pub struct Running {
    /// Where the client connects.
    pub addr: SocketAddr,
    /// Private directory.
    pub dir: PathBuf,
    /// The client side of TLS, for https setups (none: plain).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Processes to signal at stop, in order, with their graceful signal.
    stop: Vec<(u32, libc::c_int)>,
    /// The proxy's process (none when direct), and whether its children are part of it (nginx's
    /// workers are; handover's children are the app).
    proxy: Option<(u32, bool)>,
}

fn private_dir() -> io::Result<PathBuf> {
    crate::process::private_dir_named("handover-bench-proxy")
}

fn spawn(mut cmd: Command, log: &Path) -> io::Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    // Reaped by `stop` (reaper::reap_exited), not through the Child.
    Ok(cmd.spawn()?.id())
}

fn hello(dir: &Path, port: &str) -> Command {
    let mut cmd = Command::new(dir.join(RUNNING));
    cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
    cmd
}

/// Starts `target` (logs appended to `log`) and waits until it answers `GET /` with v1.
pub fn start(target: Target, tools: &Tools, log: &Path) -> io::Result<Running> {
    let dir = private_dir()?;
    std::fs::copy(tools.bin(Version::V1), dir.join(RUNNING))?;
    let port = free_port()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let pki = match target {
        Target::Handover(Scheme::Https) | Target::Nginx(Scheme::Https) => Some(
            tools
                .tls
                .clone()
                .ok_or_else(|| io::Error::other("no certificate (tls setup failed at start)"))?,
        ),
        _ => None,
    };
    let mut run = Running {
        addr,
        dir: dir.clone(),
        tls: pki.as_ref().map(|p| Arc::clone(&p.client)),
        stop: Vec::new(),
        proxy: None,
    };
    let started = (|| -> io::Result<()> {
        match target {
            Target::Direct => {
                let pid = spawn(hello(&dir, &port.to_string()), log)?;
                run.stop.push((pid, libc::SIGTERM));
            }
            Target::Handover(scheme) => {
                let mut cmd = Command::new(&tools.handover);
                cmd.arg("run")
                    .args(["--proxy", &format!("{}://{addr}", scheme.name())])
                    .arg("--control")
                    .arg(dir.join(CONTROL))
                    .args([
                        "--drain-timeout",
                        &format!("{}ms", tools.drain_timeout.as_millis()),
                    ]);
                if let Some(p) = &pki {
                    cmd.arg("--tls-cert")
                        .arg(&p.cert)
                        .arg("--tls-key")
                        .arg(&p.key);
                }
                if let Some(b) = tools.busy_poll {
                    cmd.args(["--busy-poll", &format!("{}us", b.as_micros())]);
                }
                cmd.arg("--")
                    .arg(dir.join(RUNNING))
                    .args(["--listen", "127.0.0.1:{port}"]);
                let pid = spawn(cmd, log)?;
                run.stop.push((pid, libc::SIGTERM));
                run.proxy = Some((pid, false));
            }
            Target::Nginx(scheme) => {
                let nginx = tools
                    .nginx
                    .as_ref()
                    .ok_or_else(|| io::Error::other("nginx not found"))?;
                let up = free_port()?;
                let hello_pid = spawn(hello(&dir, &up.to_string()), log)?;
                for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                    std::fs::create_dir_all(dir.join(t))?;
                }
                let conf = nginx_conf(tools, scheme, pki.as_deref(), &dir, port, up)?;
                std::fs::write(dir.join("nginx.conf"), conf)?;
                let mut cmd = Command::new(nginx);
                cmd.arg("-p")
                    .arg(&dir)
                    .arg("-c")
                    .arg(dir.join("nginx.conf"))
                    .args(["-e", "stderr"]);
                let pid = spawn(cmd, log)?;
                run.stop.push((pid, libc::SIGQUIT));
                run.proxy = Some((pid, true));
                run.stop.push((hello_pid, libc::SIGTERM));
            }
        }
        wait_ready(addr, run.tls.as_ref(), Duration::from_secs(15))
    })();
    match started {
        Ok(()) => Ok(run),
        Err(e) => {
            run.stop(Duration::from_secs(2));
            Err(e)
        }
    }
}

fn nginx_conf(
    tools: &Tools,
    scheme: Scheme,
    pki: Option<&crate::tls::Pki>,
    dir: &Path,
    port: u16,
    up: u16,
) -> io::Result<String> {
    let d = dir.display();
    let head = format!(
        "{user}\nworker_processes {w};\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\n\
         error_log stderr notice;\nevents {{ worker_connections 16384; }}\n",
        user = tools.nginx_user,
        w = tools.nginx_workers,
    );
    // https: the http setup's server with `listen ... ssl` and the bench's certificate; no
    // session cache or tickets, matching the client (every close-mode connection is a full
    // handshake on both proxies).
    let listen = match (scheme, pki) {
        (Scheme::Https, Some(p)) => format!(
            "listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    \
             ssl_certificate_key {};\n    ssl_session_cache off;\n    \
             ssl_session_tickets off;",
            p.cert.display(),
            p.key.display()
        ),
        (Scheme::Https, None) => return Err(io::Error::other("nginx https without a certificate")),
        _ => format!("listen 127.0.0.1:{port};"),
    };
    Ok(match scheme {
        Scheme::Http | Scheme::Https => format!(
            "{head}http {{\n  access_log off;\n  client_body_temp_path {d}/client_body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             keepalive_requests 1000000;\n  keepalive_timeout 75s;\n  \
             upstream app {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}\n  \
             server {{\n    {listen}\n    location / {{\n      \
             proxy_pass http://app;\n      proxy_http_version 1.1;\n      \
             proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        ),
        Scheme::Tcp => {
            let module = tools.stream_module.clone().ok_or_else(|| {
                io::Error::other(
                    "nginx stream module not found (apt-get install libnginx-mod-stream)",
                )
            })?;
            format!(
                "{module}\n{head}stream {{\n  upstream app {{ server 127.0.0.1:{up}; }}\n  \
                 server {{ listen 127.0.0.1:{port}; proxy_pass app; }}\n}}\n"
            )
        }
    })
}

fn wait_ready(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    within: Duration,
) -> io::Result<()> {
    let greetings = greetings();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline && !crate::abort::requested() {
        if let Probe::Answer {
            status: 200,
            version: Some(Version::V1),
            ..
        } = probe::once_over(addr, &greetings, Duration::from_millis(500), tls)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::other(format!(
        "{addr} did not answer v1 within {within:?} (see the log)"
    )))
}

/// The `hello` greetings.
pub fn greetings() -> Greetings {
    use crate::server::hello::{GREETING_V1, GREETING_V2};
    Greetings::new(GREETING_V1, GREETING_V2)
}

impl Running {
    /// CPU time (user + system, clock ticks) the proxy has used so far; none when direct.
    pub fn proxy_cpu_ticks(&self) -> Option<u64> {
        let (pid, children) = self.proxy?;
        let mut total = crate::cpu::ticks(pid)?;
        if children {
            total += crate::cpu::children_of(pid)
                .into_iter()
                .filter_map(crate::cpu::ticks)
                .sum::<u64>();
        }
        Some(total)
    }

    /// Copies the build of `to` next to the running binary (untimed).
    pub fn prepare_upgrade(&self, tools: &Tools, to: Version) -> io::Result<()> {
        std::fs::copy(tools.bin(to), self.dir.join(NEXT)).map(|_| ())
    }

    /// Renames it over the binary the worker COMMAND points to.
    pub fn swap_binary(&self) -> io::Result<()> {
        std::fs::rename(self.dir.join(NEXT), self.dir.join(RUNNING))
    }

    /// Graceful signals, then SIGKILL to whatever is left after `grace`, reaping; removes
    /// the directory.
    pub fn stop(&self, grace: Duration) -> StopReport {
        crate::process::stop_everything(&self.stop, grace, &self.dir)
    }
}

/// Finds nginx and its stream module.
pub fn find_nginx() -> (Option<PathBuf>, Option<String>, String) {
    let Some(bin) = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        return (None, None, "nginx not found (apt-get install nginx)".into());
    };
    let out = Command::new(&bin).arg("-V").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    let version = text.lines().next().unwrap_or("nginx").trim().to_string();
    let stream = if text.contains("--with-stream ") || text.ends_with("--with-stream") {
        Some(String::new())
    } else {
        [
            "/usr/lib/nginx/modules/ngx_stream_module.so",
            "/usr/share/nginx/modules/ngx_stream_module.so",
        ]
        .iter()
        .find(|p| Path::new(p).is_file())
        .map(|p| format!("load_module {p};"))
    };
    (Some(bin), stream, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Tools {
        Tools {
            handover: PathBuf::from("handover"),
            nginx: None,
            stream_module: None,
            nginx_workers: "2".into(),
            nginx_user: String::new(),
            bins: Binaries {
                v1: PathBuf::from("v1"),
                v2: PathBuf::from("v2"),
            },
            drain_timeout: Duration::from_secs(1),
            busy_poll: None,
            tls: None,
        }
    }

    /// nginx https is the nginx http server with `listen ... ssl`, the bench's files and no
    /// session reuse; nginx http is unchanged by it.
    #[test]
    fn nginx_https_is_http_plus_ssl_without_resumption() {
        let pki = crate::tls::Pki::new().unwrap();
        let dir = Path::new("/tmp/x");
        let http = nginx_conf(&tools(), Scheme::Http, None, dir, 8443, 9000).unwrap();
        let https = nginx_conf(&tools(), Scheme::Https, Some(&pki), dir, 8443, 9000).unwrap();
        assert!(http.contains("listen 127.0.0.1:8443;\n"));
        assert!(!http.contains("ssl"));
        for want in [
            "listen 127.0.0.1:8443 ssl;".to_string(),
            format!("ssl_certificate {};", pki.cert.display()),
            format!("ssl_certificate_key {};", pki.key.display()),
            "ssl_session_cache off;".into(),
            "ssl_session_tickets off;".into(),
        ] {
            assert!(https.contains(&want), "{want} in {https}");
        }
        let strip = |c: &str| {
            c.lines()
                .filter(|l| !l.contains("ssl") && !l.contains("listen"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&http), strip(&https), "same proxy_pass and upstream");
        assert!(nginx_conf(&tools(), Scheme::Https, None, dir, 1, 2).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(Target::Handover(Scheme::Https).name(), "handover https");
        assert_eq!(Target::Nginx(Scheme::Https).name(), "nginx https");
        assert_eq!(Scheme::Https.name(), "https");
    }
}
