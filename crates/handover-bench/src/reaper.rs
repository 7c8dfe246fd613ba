//! Process bookkeeping: this process is a child subreaper, so server generations orphaned by
//! an exiting parent are reparented here and reaped, and nothing is left behind.

use std::io;

/// Makes this process a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `pid` has exited (gone, or a zombie waiting to be reaped).
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).is_none_or(|(state, _)| state == 'Z' || state == 'X'),
        Err(_) => true,
    }
}

/// `(state, ppid)` from the text of `/proc/PID/stat`.
fn stat_fields(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut it = rest.split_ascii_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// A process below this one: `(pid, state)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descendant {
    /// Its PID.
    pub pid: u32,
    /// Its state letter from `/proc/PID/stat` (`Z` = zombie).
    pub state: char,
}

/// Every process whose ancestry leads to this one (children, grandchildren, ...).
pub fn descendants() -> Vec<Descendant> {
    let me = std::process::id();
    let mut all = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some((state, ppid)) = stat_fields(&stat) {
                    all.push((pid, ppid, state));
                }
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![me];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, state) in &all {
            if ppid == parent && pid != me {
                found.push(Descendant { pid, state });
                frontier.push(pid);
            }
        }
    }
    found
}

/// Whether some live process has `pid` as its parent.
pub fn has_child(pid: u32) -> bool {
    !children(pid).is_empty()
}

/// The live processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let (state, ppid) = stat_fields(&stat)?;
            (ppid == pid && state != 'Z' && state != 'X').then_some(child)
        })
        .collect()
}

/// Reaps every child that has exited, without blocking. Call only when no `std::process`
/// child is being waited for elsewhere (it would lose its status). Returns `(pid, how it
/// ended)` for each: `exit N` or `signal N`.
pub fn reap_exited() -> Vec<(u32, String)> {
    let mut reaped = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return reaped;
        }
        let how = if libc::WIFSIGNALED(status) {
            format!("signal {}", libc::WTERMSIG(status))
        } else {
            format!("exit {}", libc::WEXITSTATUS(status))
        };
        reaped.push((pid as u32, how));
    }
}

/// Sends `sig` to `pid`; a vanished process is not an error.
pub fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill with a positive pid.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        assert_eq!(
            stat_fields("42 (a) b (c)) S 7 42 42 0"),
            Some(('S', 7)),
            "the name may contain ') '"
        );
        assert!(!exited(std::process::id()));
    }
}
