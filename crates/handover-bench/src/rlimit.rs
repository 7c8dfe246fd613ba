//! `RLIMIT_NOFILE`: raised to the hard limit at start, so 10,000 idle connections fit in the
//! benchmark and in the servers it starts (they inherit the limit).

use serde::Serialize;

/// The open-files limit before and after raising it.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct NoFile {
    /// Soft limit found at start.
    pub soft_before: u64,
    /// Soft limit now (= hard, unless raising failed).
    pub soft: u64,
    /// Hard limit (raise it with `ulimit -Hn` as root, `LimitNOFILE=` in systemd, or
    /// `/etc/security/limits.conf`).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_nofile() -> NoFile {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return NoFile::default();
    }
    let before = rl.rlim_cur;
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            rl.rlim_cur = rl.rlim_max;
        }
    }
    NoFile {
        soft_before: before,
        soft: rl.rlim_cur,
        hard: rl.rlim_max,
    }
}
