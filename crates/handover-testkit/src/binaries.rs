//! The programs the tests start, built or found once: the `hello` example in two versions, the
//! library's other examples, the frameworks' examples, and the binaries of the package under
//! test.
//!
//! `hello` is built once per test run for every crate: each test process runs one `cargo build`
//! of the `hello` and `hello_v2` examples (v1 and v2: the same server, two greetings) into
//! `<target>/e2e/build` (a no-op once built), always with the same features, so the library's
//! tests and the frameworks' tests find the same build, and a cold run compiles the
//! dependencies once, not once per version.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::sys::lock_exclusive;

/// The body `hello` v1 answers before ` pid=<pid>`.
pub const V1_GREETING: &str = "Welcome Server";
/// The body `hello` v2 (the `hello_v2` example) answers before ` pid=<pid>`.
pub const V2_GREETING: &str = "Welcome New Server";

/// Immutable snapshots of the two builds of `hello`.
pub struct Binaries {
    /// v1: the default greeting.
    pub v1: PathBuf,
    /// v2: [`V2_GREETING`].
    pub v2: PathBuf,
}

impl Binaries {
    /// The snapshot of `v`.
    pub fn for_version(&self, v: Version) -> &Path {
        match v {
            Version::V1 => &self.v1,
            Version::V2 => &self.v2,
        }
    }
}

/// One of the two builds of `hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Answers [`V1_GREETING`].
    V1,
    /// Answers [`V2_GREETING`].
    V2,
}

impl Version {
    /// What this version answers before ` pid=<pid>`.
    pub fn greeting(self) -> &'static str {
        match self {
            Version::V1 => V1_GREETING,
            Version::V2 => V2_GREETING,
        }
    }
    /// The other version.
    pub fn other(self) -> Version {
        match self {
            Version::V1 => Version::V2,
            Version::V2 => Version::V1,
        }
    }
}

fn workspace_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

fn target_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Builds (debug profile) v1 and v2 of `hello` (the `hello` and `hello_v2` examples, in one cargo
/// build), once per test process, and returns immutable snapshots of them.
///
/// Every test process runs `cargo build` (a no-op unless the sources changed), so while one
/// process copies a binary another may be relinking it. The build and the snapshot are therefore
/// done under an exclusive flock on `<target>/e2e/.lock`, and tests only ever read the
/// snapshots (`<target>/e2e/snap/hello-<version>-<identity>`), which nothing writes after they
/// are created.
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| {
        let e2e = target_root().join("e2e");
        fs::create_dir_all(e2e.join("snap")).expect("create target/e2e/snap");
        let lock = fs::File::create(e2e.join(".lock")).expect("create target/e2e/.lock");
        lock_exclusive(&lock);
        let built = build_library_examples(&["hello", "hello_v2"], "tls");
        let (v1, v2) = (&built[0], &built[1]);
        prune_snapshots(&e2e.join("snap"));
        let bins = Binaries {
            v1: snapshot(v1, "v1"),
            v2: snapshot(v2, "v2"),
        };
        drop(lock);
        bins
    })
}

/// Builds (debug profile) another example of the `handover` crate, once per test process, next
/// to `hello` (same target directory and features, so only the example itself is compiled),
/// and returns an immutable snapshot of it. Upgrades re-execute the same file: generations tell
/// themselves apart by their PIDs.
pub fn example_binary(example: &str) -> PathBuf {
    example_binary_with(example, "tls")
}

/// [`example_binary`] for an example that needs more of the library's features than `tls`
/// (e.g. `h3`, with `quic`): built with `features` (comma-separated) in the same target
/// directory, where cargo keeps the builds of each feature set apart. With
/// `HANDOVER_E2E_RELEASE=1` in the environment it is a release build (for measurements).
pub fn example_binary_with(example: &str, features: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<(String, String), PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let key = (example.to_string(), features.to_string());
    if let Some(p) = built.get(&key) {
        return p.clone();
    }
    let e2e = target_root().join("e2e");
    fs::create_dir_all(e2e.join("snap")).expect("create target/e2e/snap");
    let lock = fs::File::create(e2e.join(".lock")).expect("create target/e2e/.lock");
    lock_exclusive(&lock);
    let release = std::env::var_os("HANDOVER_E2E_RELEASE").is_some_and(|v| v == "1");
    let bin = if release {
        build_release_example(example, features)
    } else {
        build_library_examples(&[example], features).remove(0)
    };
    let snap = snapshot(&bin, "v1");
    drop(lock);
    built.insert(key, snap.clone());
    snap
}

/// Builds these examples of the `handover` crate with one cargo invocation into
/// `<target>/e2e/build`, with `features`, and returns their paths in the same order.
fn build_library_examples(examples: &[&str], features: &str) -> Vec<PathBuf> {
    let target = target_root().join("e2e").join("build");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-p", "handover"]);
    for example in examples {
        cmd.args(["--example", example]);
    }
    // `hello` always with TLS (the TLS tests start hello with --tls-cert): one build serves
    // the library's tests with and without their `tls` feature, and the frameworks' tests.
    cmd.args(["--features", features])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_BUILD_TARGET")
        // Each example's own default greeting, whatever the caller's environment says.
        .env_remove("HELLO_GREETING")
        .stdin(Stdio::null());
    let names = examples.join(", ");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the examples {names}: {e}"));
    assert!(
        out.status.success(),
        "building the examples {names} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    examples
        .iter()
        .map(|example| {
            let bin = target.join("debug").join("examples").join(example);
            assert!(
                bin.is_file(),
                "{} missing after a successful build",
                bin.display()
            );
            bin
        })
        .collect()
}

/// A release build of one example of the `handover` crate into `<target>/e2e/build`.
fn build_release_example(example: &str, features: &str) -> PathBuf {
    let target = target_root().join("e2e").join("build");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "-p", "handover", "--example", example])
        .args(["--features", features])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("HELLO_GREETING")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the example {example}: {e}"));
    assert!(
        out.status.success(),
        "building the example {example} (release) failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("release").join("examples").join(example)
}

/// An immutable copy of a freshly built binary, named after its identity (inode, size, mtime).
fn snapshot(bin: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(bin).expect("stat built binary");
    let example = bin.file_name().expect("a file").to_string_lossy();
    let snap = target_root().join("e2e").join("snap").join(format!(
        "{example}-{name}-{}-{}-{}.{}",
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    ));
    if !snap.is_file() {
        let tmp = snap.with_extension("tmp");
        fs::copy(bin, &tmp).expect("snapshot the example");
        fs::rename(&tmp, &snap).expect("snapshot the example");
    }
    snap
}

/// Removes snapshots nobody can still be using: older than any test may run (nextest kills a
/// test after 12 minutes, see .config/nextest.toml).
fn prune_snapshots(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(15 * 60));
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// `<target>/<profile>` of the running test binary (which lives in `<target>/<profile>/deps`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The binary `name` of the package under test, which cargo builds before its integration
/// tests (what `env!("CARGO_BIN_EXE_<name>")` names, found from the test binary's place).
pub(crate) fn package_bin(name: &str) -> PathBuf {
    let bin = profile_dir().join(name);
    assert!(
        bin.is_file(),
        "{} is missing: it is built with the tests of its own package",
        bin.display()
    );
    bin
}

/// The example `name` of handover-frameworks, built by the same cargo invocation as the test
/// (`cargo test` and `cargo nextest run` build every example), or built now when it is missing
/// or older than its sources (`cargo test --test NAME` builds only the test).
pub fn example(name: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let bin = profile_dir.join("examples").join(name);
    if !is_fresh(&bin, name) {
        build_example(name, &profile_dir);
    }
    assert!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    bin
}

fn frameworks_dir() -> PathBuf {
    workspace_root().join("crates/handover-frameworks")
}

/// Whether `bin` is newer than the example's sources and the library's.
fn is_fresh(bin: &Path, name: &str) -> bool {
    let Some(built) = mtime(bin) else {
        return false;
    };
    let examples = frameworks_dir().join("examples");
    let sources = [
        examples.join(format!("{name}.rs")),
        examples.join("proto"),
        workspace_root().join("crates/handover/src"),
    ];
    sources.iter().all(|s| newest(s).is_none_or(|t| t <= built))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of a file, or of the files in a directory tree.
fn newest(p: &Path) -> Option<SystemTime> {
    let own = mtime(p);
    let Ok(rd) = fs::read_dir(p) else {
        return own;
    };
    rd.flatten()
        .filter_map(|e| newest(&e.path()))
        .chain(own)
        .max()
}

fn build_example(name: &str, profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "handover-frameworks", "--example", name])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(frameworks_dir())
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
