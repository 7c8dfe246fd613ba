//! PM2 in cluster mode with one instance of the stock Node.js server (`pm2 start server.js -i
//! 1`, `$PORT`), its daemon in a private `PM2_HOME`. Upgrade: rename the other version over
//! `server.js`, then `pm2 reload app` (PM2 starts a new worker, waits for it to listen, then
//! sends the old one SIGINT and kills it after `--kill-timeout`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::app::App;
use super::read_pid;
use crate::server::hello::{GREETING_V1, GREETING_V2};
use crate::server::ServerKind;
use crate::version::{Greetings, Version};

/// PM2 with the stock Node.js server.
#[derive(Debug, Clone)]
pub struct Pm2 {
    /// The `pm2` script.
    pub pm2: PathBuf,
    /// PM2's `--kill-timeout` (how long the old worker may drain).
    pub drain_timeout: Duration,
}

const APP: App = App::Node(false);

fn pm2(bin: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("PM2_HOME", dir.join("pm2"));
    cmd
}

impl ServerKind for Pm2 {
    fn name(&self) -> String {
        "pm2-cluster/node".into()
    }

    fn greetings(&self) -> Greetings {
        Greetings::new(GREETING_V1, GREETING_V2)
    }

    fn start(&self, dir: &Path, port: u16) -> io::Result<Command> {
        APP.install(dir, Version::V1)?;
        let mut cmd = pm2(&self.pm2, dir);
        cmd.arg("start")
            .arg(APP.path(dir))
            .args(["-i", "1", "--name", "app", "--kill-timeout"])
            .arg(self.drain_timeout.as_millis().to_string())
            .env("PORT", port.to_string());
        Ok(cmd)
    }

    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()> {
        APP.prepare(dir, to)
    }

    fn upgrade(&self, dir: &Path, _to: Version, _worker_pid: u32) -> io::Result<()> {
        APP.swap(dir)?;
        let out = pm2(&self.pm2, dir).args(["reload", "app"]).output()?;
        if out.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "pm2 reload: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    fn daemonizes(&self) -> bool {
        true
    }

    /// PM2's daemon ("God"), which stops its workers on SIGTERM.
    fn stop_target(&self, dir: &Path, serving_pid: u32) -> u32 {
        read_pid(&dir.join("pm2/pm2.pid")).unwrap_or(serving_pid)
    }
}
