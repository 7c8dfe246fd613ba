//! What the framework tests share beyond the library's test kit: the example binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// The example `name` of this crate, built by the same cargo invocation as the test
/// (`cargo test` and `cargo nextest run` build every example), or built now when it is missing
/// or older than its sources (`cargo test --test NAME` builds only the test).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join("examples").join(name);
    if !is_fresh(&bin, name) {
        build(name, profile_dir);
    }
    assert!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    bin
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `bin` is newer than the example's sources and the library's.
fn is_fresh(bin: &Path, name: &str) -> bool {
    let Some(built) = mtime(bin) else {
        return false;
    };
    let examples = manifest_dir().join("examples");
    let sources = [
        examples.join(format!("{name}.rs")),
        examples.join("proto"),
        manifest_dir().join("../handover/src"),
    ];
    sources.iter().all(|s| newest(s).is_none_or(|t| t <= built))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of a file, or of the files in a directory tree.
fn newest(p: &Path) -> Option<SystemTime> {
    let own = mtime(p);
    let Ok(rd) = std::fs::read_dir(p) else {
        return own;
    };
    rd.flatten()
        .filter_map(|e| newest(&e.path()))
        .chain(own)
        .max()
}

fn build(name: &str, profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "handover-frameworks", "--example", name])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(manifest_dir())
        .stdin(Stdio::null());
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cannot run cargo");
    assert!(
        out.status.success(),
        "building the {name} example failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
