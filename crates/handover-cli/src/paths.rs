//! Where things live: the default control socket, and the private runtime directory holding
//! each worker's notification socket.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use handover::sys;

/// The directory of default control sockets: `$XDG_RUNTIME_DIR/handover`, else
/// `/run/handover` for root, else `/tmp/handover-<uid>`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => Path::new(&d).join("handover"),
        _ if sys::euid() == 0 => PathBuf::from("/run/handover"),
        _ => PathBuf::from(format!("/tmp/handover-{}", sys::euid())),
    }
}

/// The control socket path: `control` if given, else next to `pid_file` (`app.pid` ->
/// `app.sock`), else `<default_dir>/<name>.sock`.
pub fn control_path(control: Option<&Path>, pid_file: Option<&Path>, name: &str) -> PathBuf {
    if let Some(c) = control {
        return c.to_path_buf();
    }
    if let Some(p) = pid_file {
        return p.with_extension("sock");
    }
    default_dir().join(format!("{name}.sock"))
}

/// Makes sure the directory that will hold the control socket exists. The default directory
/// is created with mode 0700 and must belong to this user and be writable by nobody else (it
/// may be under a shared `/tmp`); a directory named explicitly is only created if missing.
pub fn prepare_control_dir(socket: &Path) -> Result<(), String> {
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let fail = |e: io::Error| format!("cannot create the directory {}: {e}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    if dir == default_dir() {
        let m = std::fs::symlink_metadata(dir).map_err(fail)?;
        if !m.is_dir() || m.uid() != sys::euid() || m.mode() & 0o022 != 0 {
            return Err(format!(
                "{} must be a directory owned by uid {} and writable only by it (found uid {}, mode {:o}); \
                 remove it or choose another path with --control",
                dir.display(),
                sys::euid(),
                m.uid(),
                m.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// For `upgrade|status|stop` without `--control`, `--name` or `--pid-file`: the only socket
/// in the default directory.
pub fn find_single_socket() -> Result<PathBuf, String> {
    let dir = default_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension() == Some(OsStr::new("sock")))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no control socket in {}; is `handover run` running? (or pass --control, --name or --pid-file)",
            dir.display()
        )),
        _ => Err(format!(
            "several servers are running ({}); choose one with --name or --control",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A `--name` must be usable as a file name.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!(
            "invalid name {name:?}: it names a file, so it must be non-empty and contain no '/'"
        ));
    }
    Ok(())
}

/// A directory only this process uses (mode 0700, from `mkdtemp`), removed with everything in
/// it on drop. Holds the per-worker notification sockets.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates `<base>/handover-<name>-XXXXXX`, with `base` = `$XDG_RUNTIME_DIR` if set, else
    /// the temporary directory.
    pub fn create(name: &str) -> Result<RuntimeDir, String> {
        let base = match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if Path::new(&d).is_absolute() && Path::new(&d).is_dir() => PathBuf::from(d),
            _ => std::env::temp_dir(),
        };
        // Keep socket paths well under the 108-byte sun_path limit.
        let short: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(16)
            .collect();
        let template = base.join(format!("handover-{short}-XXXXXX"));
        let fail = |e: io::Error| {
            format!(
                "cannot create a private directory in {}: {e}",
                base.display()
            )
        };
        let path = sys::make_private_dir(&template).map_err(fail)?;
        if path.as_os_str().len() > 80 {
            let _ = std::fs::remove_dir(&path);
            return Err(format!(
                "the runtime directory {} is too long for socket paths; set TMPDIR or XDG_RUNTIME_DIR to a shorter directory",
                path.display()
            ));
        }
        Ok(RuntimeDir { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn control_path_precedence() {
        assert_eq!(
            control_path(
                Some(Path::new("/x/c.sock")),
                Some(Path::new("/run/a.pid")),
                "n"
            ),
            PathBuf::from("/x/c.sock")
        );
        assert_eq!(
            control_path(None, Some(Path::new("/run/app.pid")), "n"),
            PathBuf::from("/run/app.sock")
        );
        assert_eq!(
            control_path(None, None, "web"),
            default_dir().join("web.sock")
        );
    }

    #[test]
    fn names_are_file_names() {
        assert!(validate_name("web-1").is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn runtime_dir_is_private_and_removed() {
        let dir = RuntimeDir::create("a name/with junk").unwrap();
        let path = dir.path().to_path_buf();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        std::fs::write(path.join("f"), "x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
