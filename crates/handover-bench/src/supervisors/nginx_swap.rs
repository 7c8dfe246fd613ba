//! nginx in front of two upstream ports, the habit of swapping a standby (Java shops'
//! blue/green): `hello` v1 serves on port A behind `upstream { server 127.0.0.1:A; }`.
//! Upgrade: start the other build on port B and wait until it answers there, point the
//! upstream at B, `nginx -s reload` (SIGHUP to the master: new workers with the new
//! configuration, the old ones finish their connections and exit); then, off the clock, once
//! the old workers have exited, SIGTERM to the old `hello`.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::read_pid;
use crate::binaries::Binaries;
use crate::probe::{self, Probe};
use crate::process::free_port;
use crate::reaper;
use crate::server::hello::{GREETING_V1, GREETING_V2};
use crate::server::peers::kill;
use crate::server::ServerKind;
use crate::version::{Greetings, Version};

const CONF: &str = "nginx.conf";
const PID: &str = "nginx.pid";
/// Longest wait for the standby `hello` to answer on its port.
const STANDBY_TIMEOUT: Duration = Duration::from_secs(10);

/// nginx + two upstream ports.
#[derive(Debug, Clone)]
pub struct NginxSwap {
    /// nginx.
    pub nginx: PathBuf,
    /// `user ...;` when root.
    pub user: String,
    /// The `hello` builds.
    pub bins: Binaries,
    /// `hello --drain-timeout`.
    pub drain_timeout: Duration,
}

/// The configuration: nginx on `port`, upstream `up` (keep-alive towards it, as in the proxy
/// phase's nginx).
pub fn config(user: &str, dir: &Path, port: u16, up: u16) -> String {
    let d = dir.display();
    format!(
        "{user}\nworker_processes 1;\ndaemon on;\nmaster_process on;\npid {d}/{PID};\n\
         error_log stderr notice;\nevents {{ worker_connections 16384; }}\nhttp {{\n  \
         access_log off;\n  client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         keepalive_requests 1000000;\n  \
         upstream app {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://app;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    )
}

fn ports(dir: &Path) -> io::Result<[u16; 3]> {
    let text = std::fs::read_to_string(dir.join("ports"))?;
    let v: Vec<u16> = text
        .split_whitespace()
        .map(|p| p.parse().map_err(io::Error::other))
        .collect::<io::Result<_>>()?;
    v.try_into()
        .map_err(|_| io::Error::other("ports: expected three numbers"))
}

impl NginxSwap {
    fn bin(&self, v: Version) -> &Path {
        match v {
            Version::V1 => &self.bins.v1,
            Version::V2 => &self.bins.v2,
        }
    }

    /// Starts `hello` build `v` on `port`, output appended to `dir/hello.log`.
    fn spawn_hello(&self, dir: &Path, v: Version, port: u16) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hello.log"))?;
        // Reaped by the benchmark (a subreaper) at the stop, not through the handle.
        let _child = Command::new(self.bin(v))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--drain-timeout")
            .arg(format!("{}ms", self.drain_timeout.as_millis()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        Ok(())
    }
}

impl ServerKind for NginxSwap {
    fn name(&self) -> String {
        "nginx-2-upstreams/hello".into()
    }

    fn greetings(&self) -> Greetings {
        Greetings::new(GREETING_V1, GREETING_V2)
    }

    fn start(&self, dir: &Path, port: u16) -> io::Result<Command> {
        for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(t))?;
        }
        let (a, b) = (free_port()?, free_port()?);
        // The active upstream is the second number; it alternates between a and b.
        std::fs::write(dir.join("ports"), format!("{port} {a} {b}"))?;
        std::fs::write(dir.join("active"), a.to_string())?;
        std::fs::write(dir.join(CONF), config(&self.user, dir, port, a))?;
        self.spawn_hello(dir, Version::V1, a)?;
        let mut cmd = Command::new(&self.nginx);
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join(CONF))
            .args(["-e", "stderr"]);
        Ok(cmd)
    }

    fn prepare_upgrade(&self, _dir: &Path, _to: Version) -> io::Result<()> {
        Ok(())
    }

    fn upgrade(&self, dir: &Path, to: Version, old_hello: u32) -> io::Result<()> {
        let [port, a, b] = ports(dir)?;
        let active: u16 = std::fs::read_to_string(dir.join("active"))?
            .trim()
            .parse()
            .map_err(io::Error::other)?;
        let standby = if active == a { b } else { a };
        self.spawn_hello(dir, to, standby)?;
        let addr = ([127, 0, 0, 1], standby).into();
        let deadline = Instant::now() + STANDBY_TIMEOUT;
        let greetings = self.greetings();
        loop {
            if let Probe::Answer { status: 200, .. } =
                probe::once_over(addr, &greetings, Duration::from_millis(500), None)
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "the standby hello on port {standby} did not answer within {STANDBY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let master = read_pid(&dir.join(PID)).ok_or_else(|| io::Error::other("no nginx.pid"))?;
        let old_workers = reaper::children(master);
        let tmp = dir.join("nginx.conf.next");
        std::fs::write(&tmp, config(&self.user, dir, port, standby))?;
        std::fs::rename(tmp, dir.join(CONF))?;
        std::fs::write(dir.join("active"), standby.to_string())?;
        // `nginx -s reload` is SIGHUP to the master from the pid file.
        kill(master, libc::SIGHUP)?;
        let limit = self.drain_timeout + Duration::from_secs(2);
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while old_workers.iter().any(|&w| !reaper::exited(w)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = kill(old_hello, libc::SIGTERM);
        });
        Ok(())
    }

    fn daemonizes(&self) -> bool {
        true
    }

    fn stop_signal(&self) -> libc::c_int {
        libc::SIGQUIT
    }

    fn stop_target(&self, dir: &Path, serving_pid: u32) -> u32 {
        read_pid(&dir.join(PID)).unwrap_or(serving_pid)
    }

    fn also_stop(&self, _dir: &Path, serving_pid: u32) -> Vec<(u32, libc::c_int)> {
        vec![(serving_pid, libc::SIGTERM)]
    }
}
