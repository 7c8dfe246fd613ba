//! The v1 and v2 builds of the `hello` example: given on the command line, or built with
//! `cargo build --release -p handover --example hello` (`--features tls` for `--tls`) and a
//! different `HELLO_GREETING` and `CARGO_TARGET_DIR` for each.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::server::hello::{GREETING_V1, GREETING_V2};

/// Paths of the two builds.
#[derive(Debug, Clone, Serialize)]
pub struct Binaries {
    /// Build answering with the v1 greeting.
    pub v1: PathBuf,
    /// Build answering with the v2 greeting.
    pub v2: PathBuf,
}

/// The workspace this crate belongs to (two levels above its manifest).
pub fn default_workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Uses `v1`/`v2` when both are given, otherwise builds both in `workspace`, with the `tls`
/// feature when `tls` (into their own target directories, so switching does not rebuild).
pub fn resolve(
    v1: Option<PathBuf>,
    v2: Option<PathBuf>,
    workspace: &Path,
    tls: bool,
) -> io::Result<Binaries> {
    let bins = match (v1, v2) {
        (Some(v1), Some(v2)) => Binaries { v1, v2 },
        (None, None) => Binaries {
            v1: build(workspace, "v1", GREETING_V1, tls)?,
            v2: build(workspace, "v2", GREETING_V2, tls)?,
        },
        _ => {
            return Err(io::Error::other(
                "give both --bin-v1 and --bin-v2, or neither (to build them)",
            ))
        }
    };
    for b in [&bins.v1, &bins.v2] {
        if !b.is_file() {
            return Err(io::Error::other(format!("{} is not a file", b.display())));
        }
    }
    Ok(bins)
}

fn build(workspace: &Path, version: &str, greeting: &str, tls: bool) -> io::Result<PathBuf> {
    let dir = if tls {
        format!("{version}-tls")
    } else {
        version.to_string()
    };
    let target = workspace.join("target").join("bench").join(dir);
    eprintln!("building hello {version} in {} ...", target.display());
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace)
        .args(["build", "--release", "-p", "handover", "--example", "hello"])
        .args(if tls { &["--features", "tls"][..] } else { &[] })
        .env("HELLO_GREETING", greeting)
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "building hello {version} failed: {status}"
        )));
    }
    Ok(target.join("release").join("examples").join("hello"))
}
