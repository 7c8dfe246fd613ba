//! Go peers (facebookgo/grace, cloudflare/tableflip): the sources in `peers/<name>/main.go`
//! are built twice (v1/v2 greeting via `-ldflags -X main.greeting=...`) with
//! `GO111MODULE=off GOPATH=/usr/share/gocode`, offline. Upgrade = rename the other build over
//! the running path + SIGUSR2 (grace) / SIGHUP (tableflip).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{kill, Peer, PeerOpts};
use crate::server::hello::{GREETING_V1, GREETING_V2};
use crate::server::ServerKind;
use crate::version::{Greetings, Version};

const GOPATH: &str = "/usr/share/gocode";
const GRACE_SRC: &str = include_str!("../../../peers/grace/main.go");
const TABLEFLIP_SRC: &str = include_str!("../../../peers/tableflip/main.go");
const RUNNING: &str = "server";
const NEXT: &str = "server.next";

/// A Go peer with its two builds.
#[derive(Debug, Clone)]
pub struct GoPeer {
    peer: Peer,
    v1: PathBuf,
    v2: PathBuf,
    drain_timeout: Duration,
}

/// Checks for `go` and the packaged library, builds both versions; `Err` is why not.
pub fn setup(
    peer: Peer,
    build_dir: &Path,
    opts: &PeerOpts,
) -> Result<(Arc<dyn ServerKind>, String), String> {
    let go_version =
        go_version().ok_or("`go` not found (apt-get install golang-go)".to_string())?;
    let (pkg, deb, src) = match peer {
        Peer::Grace => (
            "github.com/facebookgo/grace/gracehttp",
            "golang-github-facebookgo-grace-dev",
            GRACE_SRC,
        ),
        _ => (
            "github.com/cloudflare/tableflip",
            "golang-github-cloudflare-tableflip-dev",
            TABLEFLIP_SRC,
        ),
    };
    if !Path::new(GOPATH).join("src").join(pkg).is_dir() {
        return Err(format!(
            "{GOPATH}/src/{pkg} missing (apt-get install {deb})"
        ));
    }
    let name = peer.name().replace('/', "-");
    let src_dir = build_dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src_dir).map_err(|e| e.to_string())?;
    std::fs::write(src_dir.join("main.go"), src).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let v1 = build(build_dir, &src_dir, &format!("{name}-v1"), GREETING_V1)?;
    let v2 = build(build_dir, &src_dir, &format!("{name}-v2"), GREETING_V2)?;
    let kind = GoPeer {
        peer,
        v1,
        v2,
        drain_timeout: opts.drain_timeout,
    };
    let detail = format!("{go_version}, built in {:.1} s", t.elapsed().as_secs_f64());
    Ok((Arc::new(kind), detail))
}

fn go_version() -> Option<String> {
    let out = Command::new("go").arg("version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn build(build_dir: &Path, src_dir: &Path, out: &str, greeting: &str) -> Result<PathBuf, String> {
    let bin = build_dir.join(out);
    let res = Command::new("go")
        .current_dir(src_dir)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", build_dir.join("gocache"))
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(format!("-ldflags=-X 'main.greeting={greeting}'"))
        .arg("main.go")
        .output()
        .map_err(|e| format!("go build: {e}"))?;
    if !res.status.success() {
        let err = String::from_utf8_lossy(&res.stderr);
        let tail: Vec<&str> = err.lines().rev().take(4).collect();
        return Err(format!(
            "go build failed ({}): {}",
            res.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(bin)
}

impl GoPeer {
    fn bin(&self, v: Version) -> &Path {
        match v {
            Version::V1 => &self.v1,
            Version::V2 => &self.v2,
        }
    }
}

impl ServerKind for GoPeer {
    fn name(&self) -> String {
        self.peer.name().to_string()
    }

    fn greetings(&self) -> Greetings {
        Greetings::new(GREETING_V1, GREETING_V2)
    }

    fn start(&self, dir: &Path, port: u16) -> io::Result<Command> {
        let running = dir.join(RUNNING);
        std::fs::copy(self.bin(Version::V1), &running)?;
        let mut cmd = Command::new(&running);
        cmd.arg("-listen").arg(format!("127.0.0.1:{port}"));
        if self.peer == Peer::Tableflip {
            cmd.arg("-pid-file")
                .arg(dir.join("tableflip.pid"))
                .arg("-drain-timeout")
                .arg(format!("{}ms", self.drain_timeout.as_millis()));
        }
        Ok(cmd)
    }

    fn prepare_upgrade(&self, dir: &Path, to: Version) -> io::Result<()> {
        std::fs::copy(self.bin(to), dir.join(NEXT)).map(|_| ())
    }

    fn upgrade(&self, dir: &Path, _to: Version, current_pid: u32) -> io::Result<()> {
        std::fs::rename(dir.join(NEXT), dir.join(RUNNING))?;
        let sig = match self.peer {
            Peer::Grace => libc::SIGUSR2,
            _ => libc::SIGHUP,
        };
        kill(current_pid, sig)
    }
}
