//! `--watch PATH`: upgrade when a file changes. Polls `stat` (no inotify: it works the same on
//! every file system and through symbolic links switched by a deploy), waits until the file
//! has been left alone for the debounce period, and only then checks that it is a complete
//! executable: a half-copied binary never triggers an upgrade.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::events::{Event, Events};

/// What identifies a version of the file: if any of it changes, the file changed.
type Identity = Option<(u64, u64, u64, i64, i64, i64, i64, u32)>;

fn identity(path: &Path) -> Identity {
    // Follows symbolic links: switching `current -> release-2` is a change.
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.mode(),
    ))
}

/// Watches each path in its own task; each settled, complete change sends one upgrade event.
pub fn start(paths: &[PathBuf], debounce: Duration, events: &Events) {
    for path in paths {
        let events = events.clone();
        let path = path.clone();
        // Taken now, so a change made right after start-up is seen as a change.
        let baseline = identity(&path);
        if baseline.is_none() {
            tracing::warn!(
                "watch: {} does not exist (yet); it will trigger an upgrade once it does",
                path.display()
            );
        }
        tokio::spawn(async move { watch(path, baseline, debounce, events).await });
    }
}

async fn watch(path: PathBuf, mut baseline: Identity, debounce: Duration, events: Events) {
    let poll = (debounce / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    // The changed identity being waited on, and since when it has been stable.
    let mut settling: Option<(Identity, Instant)> = None;
    // The last identity judged (complete or not), so each version is judged once.
    let mut judged: Identity = None;
    loop {
        tokio::time::sleep(poll).await;
        let now = identity(&path);
        if now == baseline || now.is_none() {
            settling = None;
            continue;
        }
        match &settling {
            Some((id, since)) if *id == now => {
                if since.elapsed() < debounce || judged == now {
                    continue;
                }
            }
            _ => {
                settling = Some((now, Instant::now()));
                continue;
            }
        }
        judged = now;
        match check_complete(&path) {
            Ok(()) => {
                tracing::info!("watch: {} changed; upgrading", path.display());
                baseline = now;
                settling = None;
                let trigger = format!("watch: {}", path.display());
                if events
                    .send(Event::Upgrade {
                        trigger,
                        reply: None,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(why) => tracing::warn!(
                "watch: {} changed, but {why}; waiting for a complete executable",
                path.display()
            ),
        }
    }
}

/// Whether `path` is a complete executable: a regular file with an execute bit, which is
/// either a `#!` script or an ELF file whose headers, segments and section headers all lie
/// within the file (a copy still in progress is shorter).
pub fn check_complete(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("it cannot be read ({e})"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.mode() & 0o111 == 0 {
        return Err("it is not executable (no x bit)".into());
    }
    let size = meta.size();
    if size == 0 {
        return Err("it is empty".into());
    }
    let mut file = File::open(path).map_err(|e| format!("it cannot be read ({e})"))?;
    let mut head = [0u8; 64];
    let n = read_at_most(&mut file, &mut head).map_err(|e| format!("it cannot be read ({e})"))?;
    let head = &head[..n];
    if head.starts_with(b"#!") {
        return Ok(());
    }
    if head.starts_with(b"\x7fELF") {
        return check_elf(&mut file, head, size);
    }
    Err("it is neither an ELF executable nor a #! script".into())
}

fn read_at_most(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn check_elf(file: &mut File, head: &[u8], size: u64) -> Result<(), String> {
    let truncated = |what: &str, end: u64| {
        Err(format!(
            "it is truncated: its {what} end at byte {end}, but the file has {size} bytes"
        ))
    };
    let wide = match head.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("it has an unknown ELF class".into()),
    };
    let little = match head.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err("it has an unknown ELF byte order".into()),
    };
    let header_len = if wide { 64 } else { 52 };
    if head.len() < header_len {
        return truncated("ELF header", header_len as u64);
    }
    let num = |bytes: &[u8]| -> u64 {
        let mut v = 0u64;
        for i in 0..bytes.len() {
            let b = if little {
                bytes[bytes.len() - 1 - i]
            } else {
                bytes[i]
            };
            v = (v << 8) | u64::from(b);
        }
        v
    };
    let field = |off: usize, len: usize| num(&head[off..off + len]);
    let (phoff, shoff, phentsize, phnum, shentsize, shnum) = if wide {
        (
            field(0x20, 8),
            field(0x28, 8),
            field(0x36, 2),
            field(0x38, 2),
            field(0x3a, 2),
            field(0x3c, 2),
        )
    } else {
        (
            field(0x1c, 4),
            field(0x20, 4),
            field(0x2a, 2),
            field(0x2c, 2),
            field(0x2e, 2),
            field(0x30, 2),
        )
    };
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    if ph_end > size {
        return truncated("program headers", ph_end);
    }
    if shoff != 0 {
        let sh_end = shoff.saturating_add(shentsize.saturating_mul(shnum));
        if sh_end > size {
            return truncated("section headers", sh_end);
        }
    }
    // Every segment's bytes must be there too.
    let entry_len = if wide { 56 } else { 32 };
    if phnum > 0 && (entry_len..=256).contains(&phentsize) && phnum <= 4096 {
        let mut table = vec![0u8; (phentsize * phnum) as usize];
        file.seek(SeekFrom::Start(phoff))
            .and_then(|_| file.read_exact(&mut table))
            .map_err(|e| format!("its program headers cannot be read ({e})"))?;
        for entry in table.chunks(phentsize as usize) {
            let (offset, filesz) = if wide {
                (num(&entry[8..16]), num(&entry[32..40]))
            } else {
                (num(&entry[4..8]), num(&entry[16..20]))
            };
            let end = offset.saturating_add(filesz);
            if end > size {
                return truncated("segments", end);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn judges_completeness() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, b"#!/bin/sh\necho hi\n", 0o755);
        assert!(check_complete(&p).is_ok());
        write(&p, b"#!/bin/sh\n", 0o644);
        assert!(check_complete(&p).unwrap_err().contains("not executable"));
        write(&p, b"", 0o755);
        assert!(check_complete(&p).unwrap_err().contains("empty"));
        write(&p, b"just text", 0o755);
        assert!(check_complete(&p).unwrap_err().contains("neither"));
        assert!(check_complete(dir.path())
            .unwrap_err()
            .contains("not a regular file"));

        // A real ELF binary (this test), then a truncated copy of it.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        write(&p, &exe, 0o755);
        assert_eq!(check_complete(&p), Ok(()));
        for len in [exe.len() - 1, exe.len() / 2, 100, 10] {
            write(&p, &exe[..len], 0o755);
            let e = check_complete(&p).unwrap_err();
            assert!(e.contains("truncated"), "{len}: {e}");
        }
    }

    #[tokio::test]
    async fn a_settled_complete_change_triggers_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app");
        write(&p, b"#!/bin/sh\n# v1\n", 0o755);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        start(std::slice::from_ref(&p), Duration::from_millis(100), &tx);
        // Not executable yet: judged, not triggered.
        let tmp = dir.path().join("app.new");
        write(&tmp, b"#!/bin/sh\n# v2\n", 0o644);
        std::fs::rename(&tmp, &p).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(rx.try_recv().is_err(), "an incomplete file triggered");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no upgrade after the file became executable")
            .unwrap();
        assert!(matches!(ev, Event::Upgrade { ref trigger, .. } if trigger.contains("watch")));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(rx.try_recv().is_err(), "one change, one upgrade");
    }
}
