//! The programs the supervisor rows run, one per version: handover's `hello` (two builds),
//! the Node.js `http` server (drain snippet or stock `server.close()`), the stdlib Python
//! worker of the CLI tests and a WSGI app. A version is written next to the running one
//! (untimed) and renamed over it in the upgrade (timed), so a starting worker never reads
//! half a file and an old one keeps what it loaded.

use std::io;
use std::path::{Path, PathBuf};

use crate::binaries::Binaries;
use crate::server::hello::{GREETING_V1, GREETING_V2};
use crate::version::Version;

const SERVER_JS: &str = include_str!("../../peers/supervisors/server.js");
const APP_PY: &str = include_str!("../../peers/supervisors/app.py");
/// The CLI tests' worker, as is: fd 3, `READY=1` on `NOTIFY_SOCKET`, drain on SIGTERM.
const WORKER_PY: &str = include_str!("../../../handover-testkit/fixtures/worker.py");

/// A program, with the source or binary of each version.
#[derive(Debug, Clone)]
pub enum App {
    /// handover's `hello` example (v1 and v2 builds).
    Hello(Binaries),
    /// The Node.js server; `true`: the README's drain snippet, `false`: stock `server.close()`.
    Node(bool),
    /// The CLI tests' stdlib Python worker (HTTP/1.0, a thread per connection).
    PyWorker,
    /// The WSGI app (`app:wsgi`).
    Wsgi,
}

/// The greeting of `v`.
pub fn greeting(v: Version) -> &'static str {
    match v {
        Version::V1 => GREETING_V1,
        Version::V2 => GREETING_V2,
    }
}

impl App {
    /// The file the worker command runs or imports, in the run's directory.
    pub fn file(&self) -> &'static str {
        match self {
            App::Hello(_) => "hello",
            App::Node(_) => "server.js",
            App::PyWorker => "worker.py",
            App::Wsgi => "app.py",
        }
    }

    /// Short name for row names.
    pub fn label(&self) -> &'static str {
        match self {
            App::Hello(_) => "hello",
            App::Node(true) => "node+drain",
            App::Node(false) => "node",
            App::PyWorker => "python",
            App::Wsgi => "wsgi",
        }
    }

    /// `dir/<file>`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(self.file())
    }

    fn next(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.next", self.file()))
    }

    /// Writes version `v` as `dir/<file>.next`.
    pub fn prepare(&self, dir: &Path, v: Version) -> io::Result<()> {
        let next = self.next(dir);
        let text = match self {
            App::Hello(bins) => {
                let bin = match v {
                    Version::V1 => &bins.v1,
                    Version::V2 => &bins.v2,
                };
                return std::fs::copy(bin, next).map(|_| ());
            }
            App::Node(snippet) => SERVER_JS
                .replace("@GREETING@", greeting(v))
                .replace("@DRAIN@", if *snippet { "snippet" } else { "stock" }),
            App::PyWorker => WORKER_PY
                .replace("@VERSION@", greeting(v))
                .replace("@BEHAVIOUR@", "serve"),
            App::Wsgi => APP_PY.replace("@GREETING@", greeting(v)),
        };
        std::fs::write(next, text)
    }

    /// Renames the prepared version over the running one.
    pub fn swap(&self, dir: &Path) -> io::Result<()> {
        std::fs::rename(self.next(dir), self.path(dir))
    }

    /// Writes version `v` in place (the first start).
    pub fn install(&self, dir: &Path, v: Version) -> io::Result<()> {
        self.prepare(dir, v)?;
        self.swap(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_carry_the_greeting_and_the_drain() {
        let dir = crate::process::private_dir_named("supervisors-app-test").unwrap();
        App::Node(true).install(&dir, Version::V2).unwrap();
        let js = std::fs::read_to_string(dir.join("server.js")).unwrap();
        assert!(js.contains("const GREETING = 'v2 Welcome New Server';"));
        assert!(js.contains("const DRAIN = 'snippet';"));
        App::PyWorker.install(&dir, Version::V1).unwrap();
        let py = std::fs::read_to_string(dir.join("worker.py")).unwrap();
        assert!(py.contains("VERSION = \"v1 Welcome Server\""));
        assert!(!py.contains("@VERSION@") && !py.contains("@BEHAVIOUR@"));
        App::Wsgi.prepare(&dir, Version::V1).unwrap();
        App::Wsgi.swap(&dir).unwrap();
        assert!(!dir.join("app.py.next").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
