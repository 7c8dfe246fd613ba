//! What the machine has: programs on `PATH`, the Python interpreter, whether this is CI (where
//! a missing tool is a failure rather than a skip).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Searches `PATH` for an executable.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Running in CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// The Python 3 interpreter, by absolute path (no shims between exec and the worker).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed for these tests (apt-get install python3)");
        assert!(out.status.success(), "python3 -c failed");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}
