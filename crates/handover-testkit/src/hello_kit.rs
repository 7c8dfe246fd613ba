//! Everything the library's old kit (`crates/handover/tests/support/mod.rs`) exported, for a
//! test that said `use support::*;` (see the crate doc for where each item lives now).

pub use crate::binaries::{
    binaries, example_binary, example_binary_with, Binaries, Version, V1_GREETING, V2_GREETING,
};
pub use crate::hello::{parse_serving, Ctx, Server, Spawned};
pub use crate::http::{
    get, get_timeout, hello_at, read_response, request_bytes, Addr, PendingRequest, ReadError,
    Response, Stream,
};
pub use crate::load::{Load, LoadMode, LoadStats};
pub use crate::logs::Log;
pub use crate::notify::Notify;
pub use crate::proc::{
    children_of, descendants, describe, fd_targets, is_alive, proc_stat, self_pid,
    settled_fd_count, socket_inodes, tcp_inode, udp_drops, ProcInfo,
};
pub use crate::reap::{
    assert_no_zombies, assert_only_processes, live_processes, reap_all, reaped_statuses, wait_exit,
    Exit,
};
pub use crate::sys::{free_port, pass_as_fd3, pass_fds, raw_fd, signal, try_signal};
pub use crate::tools::{in_ci, which};
pub use crate::udp;
pub use crate::wait::{poll_until, LONG, SHORT};
