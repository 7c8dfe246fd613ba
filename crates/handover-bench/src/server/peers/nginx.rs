//! nginx's binary upgrade: one master + one worker (127.0.0.1 only, running as the current
//! user, prefix, managed pid file and temp dirs in the run's private directory; `daemon on`,
//! as nginx ignores USR2 under `daemon off` while its parent lives). The
//! "version" is the configuration: the upgrade renames the other build's config over
//! `nginx.conf`, then does the classic dance on the master from the pid file: `USR2` (the
//! master re-executes nginx, which reads the new config), waits for the new master to write
//! its pid file and start its worker, then `WINCH` and `QUIT` to the old master.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::kill;
use crate::reaper;
use crate::server::hello::{GREETING_V1, GREETING_V2};
use crate::server::ServerKind;
use crate::version::{Greetings, Version};

const TEMPLATE: &str = include_str!("../../../peers/nginx/nginx.conf.in");
const CONF: &str = "nginx.conf";
const NEXT: &str = "nginx.conf.next";
const PID: &str = "nginx.pid";
/// Longest wait for the new master (pid file + worker) during an upgrade.
const NEW_MASTER_TIMEOUT: Duration = Duration::from_secs(5);

/// nginx with its binary upgrade.
#[derive(Debug, Clone)]
pub struct Nginx {
    bin: PathBuf,
    user: String,
}

/// Finds nginx; `Err` is why it cannot be used.
pub fn setup() -> Result<(Arc<dyn ServerKind>, String), String> {
    let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("nginx not found (apt-get install nginx)")?;
    let out = Command::new(&bin)
        .arg("-v")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let version = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let kind = Nginx {
        bin,
        user: user_directive(),
    };
    Ok((Arc::new(kind), version))
}

/// `user NAME GROUP;` when running as root (so workers keep the current user instead of
/// nginx's default `nobody`); nothing otherwise (nginx then runs as the current user anyway).
pub fn user_directive() -> String {
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid != 0 {
        return String::new();
    }
    let name = |p: *const libc::c_char| {
        // SAFETY: p is a NUL-terminated string from getpwuid/getgrgid, checked non-null.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: getpwuid/getgrgid return NULL or a pointer to static storage; only read here,
    // on the setup thread before any other thread calls them.
    let user = unsafe { libc::getpwuid(uid).as_ref().map(|p| name(p.pw_name)) };
    let group = unsafe { libc::getgrgid(gid).as_ref().map(|g| name(g.gr_name)) };
    match (user, group) {
        (Some(u), Some(g)) => format!("user {u} {g};"),
        _ => String::new(),
    }
}

impl Nginx {
    fn config(&self, dir: &Path, port: u16, v: Version) -> String {
        let greeting = match v {
            Version::V1 => GREETING_V1,
            Version::V2 => GREETING_V2,
        };
        TEMPLATE
            .replace("@USER@", &self.user)
            .replace("@DIR@", &dir.display().to_string())
            .replace("@PORT@", &port.to_string())
            .replace("@GREETING@", greeting)
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn port_of(dir: &Path) -> io::Result<u16> {
    std::fs::read_to_string(dir.join("port"))?
        .trim()
        .parse()
        .map_err(io::Error::other)
}

/// Waits for a master other than `old` in the pid file, with a worker below it.
fn wait_new_master(dir: &Path, old: u32) -> io::Result<u32> {
    let deadline = Instant::now() + NEW_MASTER_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(pid) = read_pid(&dir.join(PID)).filter(|&p| p != old) {
            if reaper::has_child(pid) {
                return Ok(pid);
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Err(io::Error::other(format!(
        "no new nginx master with a worker within {NEW_MASTER_TIMEOUT:?}"
    )))
}

impl ServerKind for Nginx {
    fn name(&self) -> String {
        "nginx".into()
    }

    fn greetings(&self) -> Greetings {
        Greetings::new(GREETING_V1, GREETING_V2)
    }

    fn start(&self, dir: &Path, port: u16) -> io::Result<Command> {
        for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(t))?;
        }
        std::fs::write(dir.join("port"), port.to_string())?;
        std::fs::write(dir.join(CONF), self.config(dir, port, Version::V1))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join(CONF))
            .args(["-e", "stderr"]);
        Ok(cmd)
    }

    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()> {
        std::fs::write(dir.join(NEXT), self.config(dir, port_of(dir)?, to))
    }

    fn upgrade(&self, dir: &Path, _to: Version, _worker_pid: u32) -> io::Result<()> {
        let old = read_pid(&dir.join(PID)).ok_or_else(|| io::Error::other("no nginx.pid"))?;
        std::fs::rename(dir.join(NEXT), dir.join(CONF))?;
        kill(old, libc::SIGUSR2)?;
        wait_new_master(dir, old)?;
        kill(old, libc::SIGWINCH)?;
        kill(old, libc::SIGQUIT)
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
}
