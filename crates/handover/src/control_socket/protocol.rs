//! The control socket's messages: requests, replies and the status schema, as they travel
//! (one JSON line each way). Nothing here does I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::canary::{CanaryOutcome, CanaryRequest, CanaryStatus, DecisionReport};

/// Longest accepted request line, newline excluded.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// How long a client has to send its whole request line.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Version of the [`Status`] schema this crate writes.
pub const STATUS_SCHEMA_VERSION: u32 = 3;

/// A request, written as `{"request":"upgrade"}`, `{"request":"status"}`,
/// `{"request":"stop"}`, `{"request":"canary", ...}` ([`CanaryRequest`]'s fields),
/// `{"request":"promote"}` or `{"request":"abort"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Start a new generation and hand over to it; the reply comes once it is ready (or has
    /// failed and was rolled back).
    Upgrade,
    /// Report the server's state.
    Status,
    /// Stop gracefully: stop accepting, let in-flight work finish, exit.
    Stop,
    /// A grey release: start a new generation, give it a share of the traffic, then promote
    /// it or roll it back by the rule; the reply ([`Response::Upgraded`] or an error with the
    /// reason) comes with the decision. Supervisor proxy mode only.
    Canary(CanaryRequest),
    /// End the canary in progress now: the canary takes all new traffic, the old generation
    /// drains. Replies [`Response::Decided`].
    Promote,
    /// End the canary in progress now: the canary drains, the old generation takes all new
    /// traffic again. Replies [`Response::Decided`].
    Abort,
}

/// The `result` of a successful request, one variant per [`Request`].
// One reply per connection, moved once: the size of the status variant costs nothing worth
// a box (and a box would change the public type).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// The reply to [`Request::Upgrade`] when the new generation took over.
    Upgraded(UpgradeReport),
    /// The reply to [`Request::Status`].
    Status(Status),
    /// The reply to [`Request::Stop`].
    Stopping(StopReport),
    /// The reply to [`Request::Promote`] and [`Request::Abort`].
    Decided(DecisionReport),
}

/// A successful upgrade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// PID of the process that now accepts new connections.
    pub pid: u32,
    /// Its generation number (1 for the first worker), when the server counts them.
    #[serde(default)]
    pub generation: Option<u64>,
    /// PIDs of the processes now draining (the previous version).
    #[serde(default)]
    pub previous_pids: Vec<u32>,
    /// From the request to the new generation being ready (to the promotion, for a
    /// canary), in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// A canary: the decision that promoted it, with its figures (`null` otherwise).
    #[serde(default)]
    pub canary: Option<Box<CanaryOutcome>>,
}

/// A graceful stop has begun.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReport {
    /// PID of the process that is stopping (the supervisor, or the library-mode server).
    pub pid: u32,
}

/// What answers on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerKind {
    /// The `handover run` supervisor: a stable PID, workers as children.
    Supervisor,
    /// A server using the library directly: the PID changes at each upgrade.
    Library,
    /// A kind this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

/// The server as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerState {
    /// The first generation is not ready yet.
    Starting,
    /// A generation is ready and serving.
    Running,
    /// An upgrade is in progress (a new generation is starting); the old one still serves.
    Upgrading,
    /// A canary runs: the new generation gets a share of the traffic (see [`Status::canary`]).
    Canary,
    /// No generation serves (the last one exited unexpectedly); a new one is being started.
    /// Connections wait in the listen backlog meanwhile.
    Restarting,
    /// A graceful stop began with a lame duck (`--lame-duck`): the server still accepts and
    /// serves, but its health checks fail; the drain follows.
    LameDuck,
    /// A graceful stop is in progress.
    Stopping,
    /// A state this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

/// One process of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Started, not ready yet.
    Starting,
    /// Ready: accepts new connections.
    Ready,
    /// Told to stop (an upgrade replaced it, or the server is stopping); finishing its work.
    Draining,
    /// Killed (not ready in time, or its drain deadline passed); about to be reaped.
    Killed,
    /// A state this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

/// The reply to [`Request::Status`]; the JSON schema is in the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`STATUS_SCHEMA_VERSION`] of the server that wrote this.
    pub schema_version: u32,
    /// `"supervisor"` or `"library"`.
    pub kind: ServerKind,
    /// The service name (`--name`), if any.
    #[serde(default)]
    pub name: Option<String>,
    /// PID of the process answering: the supervisor (stable), or the library-mode server.
    pub pid: u32,
    /// `"starting"`, `"running"`, `"upgrading"`, `"restarting"`, `"lame_duck"` or
    /// `"stopping"`.
    pub state: ServerState,
    /// Generation of the process serving new connections (1 for the first; 0 when none
    /// serves yet).
    #[serde(default)]
    pub generation: u64,
    /// Milliseconds since the server (the supervisor, or this process) started.
    #[serde(default)]
    pub uptime_ms: u64,
    /// Workers restarted after exiting unexpectedly, since the start.
    #[serde(default)]
    pub restarts: u64,
    /// The listening sockets, as `tcp://IP:PORT` or `unix:PATH`.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Every live process of the server, newest generation first.
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
    /// The most recent upgrade attempt, or `null` if there was none. A library-mode server
    /// that has not tried one itself shows the upgrade that created it (`generation` and `pid`
    /// are its own then).
    #[serde(default)]
    pub last_upgrade: Option<UpgradeRecord>,
    /// Library mode: set when this process took the listeners back because the generation it
    /// had handed over to crashed after it was ready; `null` otherwise (and always for the
    /// supervisor, which restarts a crashed worker instead).
    #[serde(default)]
    pub resumed: Option<ResumeRecord>,
    /// The canary in progress (`handover upgrade --canary`), or `null`.
    #[serde(default)]
    pub canary: Option<Box<CanaryStatus>>,
}

/// A library-mode process serving again after its successor crashed, in [`Status::resumed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// PID of the successor that crashed.
    pub successor_pid: u32,
    /// Its generation number.
    pub successor_generation: u64,
    /// How it ended, e.g. `"was killed by signal SIGSEGV"`, `"exited with status 101"`.
    pub successor_ended: String,
    /// When this process took over again, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// One process in [`Status::workers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its generation number.
    pub generation: u64,
    /// Its PID.
    pub pid: u32,
    /// `"starting"`, `"ready"`, `"draining"` or `"killed"`.
    pub state: WorkerState,
    /// Milliseconds since it was started.
    pub uptime_ms: u64,
}

/// The outcome of an upgrade attempt, in [`Status::last_upgrade`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    /// Whether the new generation took over.
    pub ok: bool,
    /// What asked for it: `"SIGHUP"`, `"SIGUSR2"`, `"control socket"`, `"watch: PATH"`.
    pub trigger: String,
    /// The generation that was started, if one was.
    #[serde(default)]
    pub generation: Option<u64>,
    /// The PID of the new process, if one was started.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Why it failed (`null` on success).
    #[serde(default)]
    pub error: Option<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long it took until the outcome was known, in milliseconds.
    pub duration_ms: u64,
    /// A canary upgrade: its decision and figures (`null` for a plain upgrade).
    #[serde(default)]
    pub canary: Option<Box<CanaryOutcome>>,
}

/// The wire form of a reply.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Reply {
    pub(super) ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

impl Reply {
    pub(super) fn error(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            result: None,
            error: Some(message.into()),
        }
    }

    pub(super) fn from_outcome(outcome: Result<Response, String>) -> Reply {
        let value = match outcome {
            Ok(Response::Upgraded(r)) => serde_json::to_value(r),
            Ok(Response::Status(s)) => serde_json::to_value(s),
            Ok(Response::Stopping(s)) => serde_json::to_value(s),
            Ok(Response::Decided(d)) => serde_json::to_value(d),
            Err(e) => return Reply::error(e),
        };
        match value {
            Ok(v) => Reply {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Reply::error(format!("cannot encode the reply: {e}")),
        }
    }

    pub(super) fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self)
            .unwrap_or_else(|_| br#"{"ok":false,"error":"cannot encode the reply"}"#.to_vec());
        line.push(b'\n');
        line
    }
}

/// Milliseconds since the Unix epoch, for [`UpgradeRecord::started_unix_ms`].
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads one request line; the error is the reply's message.
pub(super) fn parse_request(line: &[u8]) -> Result<Request, String> {
    const HINT: &str = r#"expected a JSON object such as {"request":"status"} (requests: upgrade, status, stop, canary, promote, abort)"#;
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| format!("invalid request: not JSON ({e}); {HINT}"))?;
    match value.get("request") {
        None => Err(format!("invalid request: no \"request\" field; {HINT}")),
        Some(serde_json::Value::String(name)) => {
            serde_json::from_value(value.clone()).map_err(|_| {
                let shown: String = name.chars().take(64).collect();
                format!("unknown request {shown:?}; {HINT}")
            })
        }
        Some(_) => Err(format!(
            "invalid request: \"request\" must be a string; {HINT}"
        )),
    }
}

/// Why a reply line is not a successful [`Response`].
pub(super) enum DecodeError {
    Failed(String),
    Protocol(String),
}

/// Reads the reply line to `request`.
pub(super) fn decode_reply(request: Request, line: &[u8]) -> Result<Response, DecodeError> {
    let reply: Reply = serde_json::from_slice(line)
        .map_err(|e| DecodeError::Protocol(format!("not a reply object: {e}")))?;
    if !reply.ok {
        return Err(DecodeError::Failed(reply.error.unwrap_or_else(|| {
            "the server reported an error without a message".into()
        })));
    }
    let result = reply.result.unwrap_or(serde_json::Value::Null);
    let bad = |e: serde_json::Error| DecodeError::Protocol(format!("unexpected result: {e}"));
    Ok(match request {
        Request::Upgrade => Response::Upgraded(serde_json::from_value(result).map_err(bad)?),
        Request::Status => Response::Status(serde_json::from_value(result).map_err(bad)?),
        Request::Stop => Response::Stopping(serde_json::from_value(result).map_err(bad)?),
        Request::Canary(_) => Response::Upgraded(serde_json::from_value(result).map_err(bad)?),
        Request::Promote | Request::Abort => {
            Response::Decided(serde_json::from_value(result).map_err(bad)?)
        }
    })
}
