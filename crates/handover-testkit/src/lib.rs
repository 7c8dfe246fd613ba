//! The end-to-end test kit of the handover crates (not published): real processes, real
//! signals, real loopback sockets, every wait bounded.
//!
//! A dev-dependency of `handover`, `handover-cli` and `handover-frameworks`. A test starts
//! with a context — [`hello::Ctx`] for the library's `hello` example, [`supervisor::Ctx`] for
//! the `handover` binary — which serialises the tests of its process, makes the test process a
//! child subreaper, gives the test a temporary directory and on drop kills and reaps every
//! process the test started, printing their logs when it failed ([`scope::Scope`]).
//!
//! # Layout
//!
//! | Module | Its one reason to change |
//! |---|---|
//! | [`wait`] | the deadlines (`LONG`, `SHORT`) and the polling every wait uses |
//! | [`sys`] | the kit's direct OS calls (signals, subreaper, `waitpid`, `flock`, fds for a child): the only `unsafe` |
//! | [`proc`] | what `/proc` says: process state and parent, descendants, fds, sockets |
//! | [`reap`] | the test process as a subreaper: exit statuses, leftover processes, zombies |
//! | [`logs`] | captured stdout/stderr and waiting for a line |
//! | [`scope`] | what every test owns: serialisation, temp dir, logs, cleanup |
//! | [`binaries`] | the programs under test: `hello` v1/v2 (built once per run), the library's other examples, the frameworks' examples, the package's binaries |
//! | [`tools`] | what the machine has: `PATH` lookups, Python, CI |
//! | [`http`] | the HTTP/1.1 client (TCP or unix socket) and response reader |
//! | [`http10`] | the supervisor tests' HTTP/1.0 client and its load, counted per worker version |
//! | [`load`] | continuous load: the client-thread engine, its counts, the HTTP/1.1 load |
//! | [`notify`] | a stand-in for systemd's `NOTIFY_SOCKET` |
//! | [`spray`] | hostile datagrams for a QUIC port (garbage, truncated headers, forged CIDs, an Initial flood), counted by kind |
//! | [`udp`] | the UDP request/response load: datagrams unanswered, answered twice, stale |
//! | [`tls`] | a test CA (rcgen), the verifying rustls clients, HTTPS and HTTP/2 loads, `hello` over TLS |
//! | `h3` | (feature `h3`) the HTTP/3 clients (quinn + h3): one request; `h3/pinger`: one connection kept with a request every N ms; `h3/load`: a load of many connections; failures by kind; `h3/server`: the `h3` example started and upgraded; `h3/relay`: datagrams held back |
//! | [`hello`] | the library's harness: `hello` started, upgraded and stopped, its `serving` lines |
//! | [`supervisor`] | the supervisor's harness: `handover run`, its client commands, the Python workers |
//! | [`hello_kit`] | re-exports: what the library's old `support` module exported |
//! | [`cli_kit`] | re-exports: what the CLI's old `support` module exported |
//!
//! The Python workers are `fixtures/worker.py` (socket from fd 3), `fixtures/port_worker.py`
//! (proxy mode, binds the port it is given) and `fixtures/udp_worker.py` (a UDP socket from
//! fd 3). `fixtures/h3_client.py` is not a worker but a client: aioquic's HTTP/3, the QUIC
//! tests' second implementation.
//!
//! # Porting a test written against an old kit
//!
//! Replace `mod support;` + `use support::*;` with one `use`:
//!
//! | Old | New |
//! |---|---|
//! | `crates/handover/tests/support/mod.rs`: `use support::*;` | `use handover_testkit::hello_kit::*;` |
//! | `crates/handover/tests/support/tls.rs`: `use support::tls::*;` | `use handover_testkit::tls::*;` |
//! | `crates/handover-cli/tests/support/mod.rs`: `use support::*;` | `use handover_testkit::cli_kit::*;` |
//! | `crates/handover/tests/support/udp.rs`: `use support::udp::UdpLoad;`, or the CLI's `#[path]` include of it | `use handover_testkit::udp::UdpLoad;` |
//! | `crate::support::{get_timeout, ...}` (library test submodules) | `handover_testkit::hello_kit::{get_timeout, ...}` |
//! | `crate::support::{Ctx, LONG, ...}` (CLI test submodules) | `handover_testkit::cli_kit::{Ctx, LONG, ...}` |
//! | `crates/handover-frameworks/tests/common/mod.rs`: `common::example(name)` | `handover_testkit::binaries::example(name)` |
//! | frameworks: `#[path = "../../handover/tests/support/mod.rs"] mod support;` | `use handover_testkit::hello_kit::*;` |
//!
//! Every name kept its meaning, with these exceptions:
//!
//! | Old (CLI kit) | New |
//! |---|---|
//! | `HANDOVER` (the binary's path, a `&str` const) | [`supervisor::handover_exe()`] (a `&Path`, found beside the test binary) |
//! | `log.wait_for(from, needle, timeout) -> Option<String>` | `log.wait_for(from, timeout, \|l\| l.contains(needle)) -> Option<(usize, String)>` (one [`logs::Log`] for both kits; `expect(from, needle, timeout)` is unchanged) |
//! | `Log` kept lines as written | ANSI colour codes are removed (the library kit's behaviour) |
//!
//! | Old (library kit) | New |
//! |---|---|
//! | `Server { pid, first_pid, log, addrs }` | `Server { pid, log, addrs }` (`first_pid` was never read) |
//! | `Stream::shutdown_write`, `workspace_root`, `number_after`, `Ctx::exe`, `PendingRequest::local`, `Log::push`, `Notify::wait_field`, `Load::ok_count` | gone or private: no test used them |
//!
//! Where each concern lives now, and what was written twice before:
//!
//! | Item | Was in | Now |
//! |---|---|---|
//! | `ProcInfo`, `proc_stat`, `is_alive`, `descendants` | both kits | [`proc`] |
//! | `children_of`, `fd_targets`, `settled_fd_count`, `socket_inodes`, `tcp_inode`, `describe`, `self_pid` | library kit | [`proc`] |
//! | `zombies_of` | CLI kit | [`proc`] |
//! | subreaper, `reap_all`, killing what a test left | both kits | [`sys`], [`reap`], [`scope`] |
//! | `Exit`, `wait_exit`, `reaped_statuses`, `live_processes`, `assert_only_processes`, `assert_no_zombies` | library kit (the CLI kit's `wait_child` is now `wait_exit`) | [`reap`] |
//! | `signal` | both kits | [`sys`] |
//! | `try_signal`, `pass_fds`, `pass_as_fd3`, `raw_fd`, `free_port` | library kit | [`sys`] |
//! | `poll_until`, `LONG`, `SHORT` | both kits | [`wait`] |
//! | `Log` | both kits (two versions) | [`logs`] |
//! | the test context's temp dir, serialisation, cleanup, log printing | both kits' `Ctx` | [`scope::Scope`] (both `Ctx` deref to it) |
//! | the load's threads, counters and merge | library kit's `Load` and `tls::TlsLoad` (a near copy) | [`load::Load`] (`TlsLoad` derefs to it) |
//! | `binaries`, `example_binary`, `Binaries`, `Version`, `V1_GREETING`, `V2_GREETING` | library kit | [`binaries`] |
//! | `UdpLoad`, `UdpStats` | library kit's `udp.rs` | [`udp`] |
//! | `example` | frameworks' `common` | [`binaries`] |
//! | `which`, `in_ci` | library kit | [`tools`] |
//! | `python` | CLI kit | [`tools`] |
//! | `Addr`, `Stream`, `Response`, `ReadError`, `read_response`, `request_bytes`, `get`, `get_timeout`, `hello_at`, `PendingRequest` | library kit | [`http`] |
//! | `get`, `Failure`, `pid_of`, `version_of`, `Load`, `Stats` | CLI kit | [`http10`] |
//! | `LoadMode`, `LoadStats`, `Load` | library kit | [`load`] |
//! | `Notify` | library kit | [`notify`] |
//! | `Ctx`, `Server`, `Spawned`, `parse_serving` | library kit | [`hello`] |
//! | `Ctx`, `Supervisor`, `run_bounded`, `write_app` | CLI kit | [`supervisor`] |
//! | `Pki`, `TlsLoad`, `TlsMode`, `https_get`, `https_hello`, `start_tls`, `upgrade_tls`, ... | library kit's `tls.rs` | [`tls`] |
//!
//! `hello` is built with the `tls` feature always (it used to follow the testing crate's
//! feature), so that the library's tests and the frameworks' tests share one build per run.

#![deny(missing_docs)]

pub mod binaries;
pub mod cli_kit;
#[cfg(feature = "h3")]
pub mod h3;
pub mod handoff;
pub mod hello;
pub mod hello_kit;
pub mod http;
pub mod http10;
pub mod load;
pub mod logs;
pub mod notify;
pub mod proc;
pub mod reap;
pub mod scope;
pub mod spray;
pub mod supervisor;
pub mod sys;
pub mod tls;
pub mod tools;
pub mod udp;
pub mod wait;
