//! What `/proc` says about processes: state and parent, descendants, open fds and sockets.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::wait::SHORT;

/// One line of `/proc/<pid>/stat`, the fields the tests read.
#[derive(Clone, Debug)]
pub struct ProcInfo {
    /// The process id.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// The state letter (`R`, `S`, `Z` for a zombie, ...).
    pub state: char,
    /// The command name (`comm`).
    pub comm: String,
}

/// The test process's pid.
pub fn self_pid() -> i32 {
    std::process::id() as i32
}

/// `/proc/<pid>/stat`, or `None` once the process is gone (reaped).
pub fn proc_stat(pid: i32) -> Option<ProcInfo> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        state,
        comm,
    })
}

/// Alive and not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some(p) if p.state != 'Z' && p.state != 'X')
}

/// Every process `/proc` lists.
pub(crate) fn all_procs() -> Vec<ProcInfo> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// The pids reachable from `root` through parent links in `procs` (children, grandchildren, ...).
pub(crate) fn tree(procs: &[ProcInfo], root: i32) -> HashSet<i32> {
    let mut by_parent: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        by_parent.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = HashSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &c in by_parent.get(&pid).into_iter().flatten() {
            if out.insert(c) {
                stack.push(c);
            }
        }
    }
    out
}

/// Every descendant of `root` (children, grandchildren, ...), zombies included.
pub fn descendants(root: i32) -> Vec<ProcInfo> {
    let procs = all_procs();
    let ours = tree(&procs, root);
    procs
        .into_iter()
        .filter(|p| ours.contains(&p.pid))
        .collect()
}

/// The children of `pid`, zombies included.
pub fn children_of(pid: i32) -> Vec<ProcInfo> {
    all_procs().into_iter().filter(|p| p.ppid == pid).collect()
}

/// Zombie children of `pid` (children it has not reaped).
pub fn zombies_of(pid: i32) -> Vec<ProcInfo> {
    children_of(pid)
        .into_iter()
        .filter(|p| p.state == 'Z')
        .collect()
}

/// `comm[pid] ppid=.. state=..` for each process, for assertion messages.
pub fn describe(procs: &[ProcInfo]) -> String {
    procs
        .iter()
        .map(|p| format!("{}[{}] ppid={} state={}", p.comm, p.pid, p.ppid, p.state))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `N -> target` for each open fd of `pid`, in fd order.
pub fn fd_targets(pid: i32) -> Vec<String> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut v: Vec<(u32, String)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let n: u32 = e.file_name().to_str()?.parse().ok()?;
            let t = fs::read_link(e.path()).ok()?;
            Some((n, t.display().to_string()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(n, t)| format!("{n} -> {t}")).collect()
}

/// Number of open fds of `pid`, read until three consecutive reads agree (in-flight connections
/// being torn down settle quickly).
pub fn settled_fd_count(pid: i32) -> usize {
    let count = || {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + SHORT;
    let mut last = count();
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(30));
        let c = count();
        if c == last {
            same += 1;
        } else {
            same = 0;
            last = c;
        }
    }
    last
}

/// The inodes of the sockets `pid` has open.
pub fn socket_inodes(pid: i32) -> HashSet<u64> {
    fd_targets(pid)
        .iter()
        .filter_map(|t| t.split_once("socket:[")?.1.strip_suffix(']')?.parse().ok())
        .collect()
}

fn proc_net_addr(a: SocketAddr) -> Option<String> {
    match a {
        SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        )),
        SocketAddr::V6(_) => None,
    }
}

/// Inode of the server-side socket of the TCP connection `local` (server) <- `remote` (client).
/// 0/None while the connection waits in the accept queue.
pub fn tcp_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let (l, r) = (proc_net_addr(local)?, proc_net_addr(remote)?);
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 9 && f[1] == l && f[2] == r {
            f[9].parse().ok().filter(|&ino| ino != 0)
        } else {
            None
        }
    })
}

/// Datagrams the kernel dropped on the IPv4 UDP socket bound to `local` (its receive buffer
/// was full), from the `drops` column of `/proc/net/udp`; `None` if no such socket is listed.
/// A flood test needs it to account for every datagram it sent.
pub fn udp_drops(local: SocketAddr) -> Option<u64> {
    let l = proc_net_addr(local)?;
    let table = fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&l.as_str())).then(|| fields.last()?.parse().ok())?
    })
}
