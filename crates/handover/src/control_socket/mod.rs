//! The control socket: `handover upgrade`, `handover status` and `handover stop` talk to a
//! running server (the `handover run` supervisor or a library-mode server) through it.
//!
//! # Transport
//!
//! A Unix stream socket, created with mode `0600` by [`ControlServer::bind`]. Every accepted
//! peer is checked with `SO_PEERCRED`: only the server's own (effective) uid and root may use
//! it; anyone else gets an error reply and the connection is closed. One request per
//! connection:
//!
//! 1. the client writes **one JSON object on one line** (at most [`MAX_REQUEST_BYTES`] bytes
//!    before the `\n`; the end of the stream also ends the line);
//! 2. the server writes **one JSON object on one line** and closes the connection.
//!
//! The request must arrive within [`DEFAULT_READ_TIMEOUT`]. A malformed, unknown, oversized
//! or late request gets an error reply; the server never stops serving because of a client.
//!
//! # Requests
//!
//! | request | JSON | reply `result` |
//! |---|---|---|
//! | upgrade | `{"request":"upgrade"}` | [`UpgradeReport`], sent once the outcome is known |
//! | status | `{"request":"status"}` | [`Status`] |
//! | stop | `{"request":"stop"}` | [`StopReport`], sent when the graceful stop has begun |
//! | canary | `{"request":"canary","share_bp":1000,"for_ms":60000,"max_error_rate_bp":100,"min_requests":100,"sticky_ip":false}` | [`UpgradeReport`] (with `canary`) once promoted; an error with the reason once rolled back |
//! | promote, abort | `{"request":"promote"}`, `{"request":"abort"}` | [`DecisionReport`] |
//!
//! `canary`, `promote` and `abort` are for the supervisor in proxy mode; a library-mode
//! server (and the supervisor in socket mode) answers them with an error that says why.
//!
//! Unknown fields in a request are ignored, so newer clients can add optional ones.
//!
//! # Replies
//!
//! ```text
//! {"ok":true,"result":{...}}
//! {"ok":false,"error":"the new worker (generation 4, pid 4242) exited with status 3 before it was ready; generation 3 (pid 4100) keeps serving"}
//! ```
//!
//! A failed upgrade is an `ok:false` reply whose `error` says why; the server keeps serving
//! with the previous version.
//!
//! ## `result` of `upgrade`: [`UpgradeReport`]
//!
//! ```json
//! {"pid":4242,"generation":4,"previous_pids":[4100],"duration_ms":812}
//! ```
//!
//! ## `result` of `status`: [`Status`] (`schema_version` 3)
//!
//! ```json
//! {
//!   "schema_version": 3,
//!   "kind": "supervisor",
//!   "name": "app",
//!   "pid": 4000,
//!   "state": "running",
//!   "generation": 4,
//!   "uptime_ms": 3600000,
//!   "restarts": 0,
//!   "listeners": ["tcp://127.0.0.1:8080"],
//!   "workers": [
//!     {"generation": 4, "pid": 4242, "state": "ready", "uptime_ms": 5000},
//!     {"generation": 3, "pid": 4100, "state": "draining", "uptime_ms": 600000}
//!   ],
//!   "last_upgrade": {
//!     "ok": true, "trigger": "control socket", "generation": 4, "pid": 4242,
//!     "error": null, "started_unix_ms": 1767225600000, "duration_ms": 812
//!   },
//!   "resumed": null,
//!   "canary": null
//! }
//! ```
//!
//! Field by field, see [`Status`], [`WorkerStatus`], [`UpgradeRecord`] and [`ResumeRecord`].
//! Fields may be added in later versions without changing `schema_version`; a change of
//! meaning bumps it. Version 2: in a library-mode server `last_upgrade` is, until the process
//! tries an upgrade of its own, the upgrade that created it (version 1 said `null` there), and
//! `resumed` is new. The `state` `"lame_duck"` (a stop began with a lame duck: still serving,
//! health checks fail) came later, without a bump: an older client reads it as unknown.
//! Version 3: `state` may be `canary`, with the canary's figures in `canary`
//! ([`CanaryStatus`]); `last_upgrade.canary` holds a canary's decision ([`CanaryOutcome`]).
//!
//! ## `result` of `stop`: [`StopReport`]
//!
//! ```json
//! {"pid":4000}
//! ```
//!
//! # A server that upgrades itself
//!
//! Every generation must answer on the same path. The first one [`ControlServer::bind`]s it
//! with [`ControlServer::remove_on_drop`]`(false)`, hands [`ControlServer::try_clone_fd`] to
//! the next generation with its listeners, and stops serving (aborts the `serve` task) once
//! it has handed over; the next one adopts the socket with [`ControlServer::from_listener`].
//! The generation that stops for good removes the file.
//!
//! # Example
//!
//! ```no_run
//! use handover::control_socket::{self, ControlServer, Request, Response, StopReport};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let server = ControlServer::bind("/run/app/control.sock")?;
//! tokio::spawn(server.serve(|request: Request| async move {
//!     match request {
//!         Request::Stop => Ok(Response::Stopping(StopReport { pid: std::process::id() })),
//!         other => Err(format!("{other:?} is not supported here")),
//!     }
//! }));
//! # Ok(()) }
//! // Elsewhere (a blocking call):
//! let reply = control_socket::request("/run/app/control.sock", Request::Status);
//! ```

// Without the `supervisor` feature this module is private: the library serves the socket
// (`Builder::control_socket`) and the client is left out.
#![cfg_attr(not(feature = "supervisor"), allow(unused_imports, dead_code))]

mod canary;
#[cfg(feature = "supervisor")]
mod client;
mod protocol;
mod server;
#[cfg(all(test, feature = "supervisor"))]
mod tests;

pub use canary::{CanaryOutcome, CanaryRequest, CanaryStatus, DecisionReport, GenerationCounters};
#[cfg(feature = "supervisor")]
pub use client::{request, request_with_timeout, ClientError};
pub use protocol::{
    unix_ms, Request, Response, ResumeRecord, ServerKind, ServerState, Status, StopReport,
    UpgradeRecord, UpgradeReport, WorkerState, WorkerStatus, DEFAULT_READ_TIMEOUT,
    MAX_REQUEST_BYTES, STATUS_SCHEMA_VERSION,
};
pub use server::{ControlServer, Handler};
