//! PID files that are replaced atomically on every upgrade.
//!
//! During an upgrade the pid file must switch from the old generation's PID
//! to the new one's without ever being missing, empty or half-written, since
//! supervisors and scripts may read it at any moment. Writing a temp file and
//! renaming it over the target gives exactly that.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest pid file content we bother reading: a PID plus a newline is far
/// shorter, and anything bigger is not ours.
const MAX_CONTENT: u64 = 64;

/// Prefixes an error with the pid file path, keeping its kind.
fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("pid file {}: {e}", path.display()))
}

/// Atomically makes `path` contain `"{pid}\n"`.
///
/// Writes a uniquely named temp file in the same directory (same filesystem,
/// so the rename is atomic), fsyncs it and renames it over `path`. If `path`
/// is a symlink, the link itself is replaced and its target is left alone, so
/// a pid file in a shared directory cannot be used to clobber another file.
/// On error the temp file is removed and `path` is unchanged.
pub(crate) fn write_pid_file(path: &Path, pid: u32) -> io::Result<()> {
    write_inner(path, pid).map_err(|e| with_path(path, e))
}

fn write_inner(path: &Path, pid: u32) -> io::Result<()> {
    let (tmp_path, mut file) = create_temp_beside(path)?;
    let result = (|| {
        file.write_all(format!("{pid}\n").as_bytes())?;
        // Without this a crash right after the rename can leave an empty file
        // under the final name on some filesystems.
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp_path, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// Creates a new, exclusive temp file next to `path`.
fn create_temp_beside(path: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last_err = None;
    // PID + counter is unique among live processes sharing the directory;
    // the time only helps against leftovers from a crashed process that had
    // the same PID. Retry a few times on collision all the same.
    for _ in 0..8 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(".{}.{n}.{nanos}.tmp", std::process::id()));
        let tmp = dir.join(name);
        // create_new = O_CREAT|O_EXCL: never reuse or follow anything that is
        // already there. O_NOFOLLOW is implied by O_EXCL for the final
        // component but stated for clarity; O_CLOEXEC so a concurrent fork+exec
        // (spawning the next generation) does not inherit it.
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        match opened {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not create a temp file")))
}

/// Removes `path` if it still contains `pid`; returns whether it did.
///
/// Used at the final stop: if a newer generation (or an unrelated instance)
/// has since written its own PID, the file is left alone. A missing file is
/// `Ok(false)`. The file is opened with `O_NOFOLLOW` (a symlink is an error,
/// never followed) and `O_NONBLOCK` (a FIFO planted at `path` cannot hang us),
/// and only a regular file is considered. Between the check and the unlink
/// another process could replace the file; the inode is re-checked right
/// before unlinking to keep that window tiny, but it cannot be closed
/// entirely without a lock that pid file readers do not take anyway.
pub(crate) fn remove_pid_file_if_ours(path: &Path, pid: u32) -> io::Result<bool> {
    remove_inner(path, pid).map_err(|e| with_path(path, e))
}

fn remove_inner(path: &Path, pid: u32) -> io::Result<bool> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(false);
    }
    let mut content = Vec::new();
    // One byte past the limit tells "long file" apart from "exactly at the
    // limit", so a truncated read can never look like a match.
    file.take(MAX_CONTENT + 1).read_to_end(&mut content)?;
    let ours = content.len() as u64 <= MAX_CONTENT
        && std::str::from_utf8(&content)
            .map(|s| s.trim() == pid.to_string())
            .unwrap_or(false);
    if !ours {
        return Ok(false);
    }
    match fs::symlink_metadata(path) {
        Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        write_pid_file(&path, 123).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "123\n");
        write_pid_file(&path, 456).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "456\n");
        // No temp files left behind.
        assert_eq!(entries(dir.path()), ["app.pid"]);
    }

    #[test]
    fn mode_is_0644_under_default_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        write_pid_file(&path, 1).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // The umask can only remove bits; group/other write must never appear.
        assert_eq!(mode & !0o644, 0, "{mode:o}");
        assert_ne!(mode & 0o600, 0, "{mode:o}");
    }

    #[test]
    fn symlink_at_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("app.pid");
        symlink(&victim, &path).unwrap();

        write_pid_file(&path, 77).unwrap();

        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&path).unwrap(), "77\n");
    }

    #[test]
    fn write_errors_carry_the_path_and_leave_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/app.pid");
        let err = write_pid_file(&missing, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().starts_with("pid file "), "{err}");

        // Renaming a file over a non-empty directory fails after the temp
        // file was created: it must be cleaned up.
        let target = dir.path().join("busy");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), "").unwrap();
        assert!(write_pid_file(&target, 1).is_err());
        assert_eq!(entries(dir.path()), ["busy"]);
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        let err = write_pid_file(Path::new("/"), 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn removes_only_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        write_pid_file(&path, 10).unwrap();
        assert!(!remove_pid_file_if_ours(&path, 11).unwrap());
        assert!(path.exists());
        assert!(remove_pid_file_if_ours(&path, 10).unwrap());
        assert!(!path.exists());
        // Missing file.
        assert!(!remove_pid_file_if_ours(&path, 10).unwrap());
    }

    #[test]
    fn remove_tolerates_whitespace_and_rejects_junk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        fs::write(&path, "  42 \n\n").unwrap();
        assert!(remove_pid_file_if_ours(&path, 42).unwrap());
        for junk in ["42x", "4 2", "", "\u{ff}42", "042"] {
            fs::write(&path, junk).unwrap();
            assert!(!remove_pid_file_if_ours(&path, 42).unwrap(), "{junk:?}");
            assert!(path.exists());
        }
        fs::write(&path, [b'4', b'2', 0xff]).unwrap();
        assert!(!remove_pid_file_if_ours(&path, 42).unwrap());
        let mut big = "42".to_owned();
        big.push_str(&" ".repeat(100));
        fs::write(&path, big).unwrap();
        assert!(!remove_pid_file_if_ours(&path, 42).unwrap());
    }

    #[test]
    fn remove_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "42\n").unwrap();
        let path = dir.path().join("app.pid");
        symlink(&victim, &path).unwrap();
        let err = remove_pid_file_if_ours(&path, 42).unwrap_err();
        assert!(err.to_string().contains("app.pid"), "{err}");
        assert!(victim.exists());
        assert!(fs::symlink_metadata(&path).is_ok());
    }

    #[test]
    fn remove_ignores_non_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        fs::create_dir(&path).unwrap();
        assert!(!remove_pid_file_if_ours(&path, 1).unwrap());
        fs::remove_dir(&path).unwrap();

        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Would block forever without O_NONBLOCK.
        assert!(!remove_pid_file_if_ours(&path, 1).unwrap());
        assert!(path.exists());
    }
}
