//! The grey release (canary upgrade) on the wire: what `handover upgrade --canary` asks for,
//! the figures `status` shows while it runs, and the decision kept in `last_upgrade`. Only the
//! supervisor's proxy mode runs canaries; a library-mode server refuses the requests.

use serde::{Deserialize, Serialize};

/// The body of `{"request":"canary", ...}`: start a new generation, send it a share of new
/// requests (HTTP) or connections (TCP) for a while, then promote it or roll it back.
///
/// Shares and rates are in basis points (hundredths of a percent: `1000` is 10%), so that the
/// request stays exact and comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRequest {
    /// The new generation's share of new requests or connections, in basis points (1..=9999).
    pub share_bp: u32,
    /// How long the canary runs before it is promoted (if the rule never tripped).
    pub for_ms: u64,
    /// The canary is rolled back once its error rate exceeds the old generation's by more
    /// than this, in basis points.
    pub max_error_rate_bp: u32,
    /// The rule is applied only once the canary has answered this many requests; fewer at
    /// `for_ms` is a rollback ("not enough traffic").
    pub min_requests: u64,
    /// Split by client address (a share of addresses, each always on one side) instead of
    /// by request.
    #[serde(default)]
    pub sticky_ip: bool,
}

/// The reply to `promote` and `abort`: what was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionReport {
    /// `"promoted"` or `"rolled_back"`.
    pub decision: String,
    /// The canary's generation.
    pub generation: u64,
    /// The canary's PID.
    pub pid: u32,
    /// Why, with the figures (the same line as the log and `last_upgrade`).
    pub reason: String,
}

/// One generation's counters since the canary started, in [`CanaryStatus`] and
/// [`CanaryOutcome`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationCounters {
    /// The generation.
    pub generation: u64,
    /// Answers (HTTP) or connections (TCP) since the canary started.
    pub requests: u64,
    /// Errors among them: 5xx answers, including the proxy's own 502/504 (HTTP); a failed
    /// connect or a reset before the worker's first byte (TCP).
    pub errors: u64,
    /// `errors / requests`, in percent (0 without requests).
    pub error_rate_percent: f64,
    /// Answers by status class, `[1xx, 2xx, 3xx, 4xx, 5xx]` (HTTP; all zero for TCP).
    pub status_classes: [u64; 5],
    /// Median time to the response head (HTTP) or to the connection (TCP), in milliseconds,
    /// as the upper bound of its histogram bucket (`null` without requests).
    pub p50_ms: Option<f64>,
    /// The 99th percentile, the same way.
    pub p99_ms: Option<f64>,
}

/// A canary in progress, in `status` (`canary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryStatus {
    /// What was asked for.
    pub request: CanaryRequest,
    /// Since the canary started to receive traffic, in milliseconds.
    pub elapsed_ms: u64,
    /// The generation that serves the rest (the one that was current).
    pub old: GenerationCounters,
    /// The canary.
    pub new: GenerationCounters,
}

/// How a canary ended, in `last_upgrade` (`canary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryOutcome {
    /// `"promoted"` or `"rolled_back"`.
    pub decision: String,
    /// Why, with the figures: `"healthy for 10s: 1.0% errors (3 of 300) vs 0.0% (0 of
    /// 1200)"`, `"error rate 100.0% (100 of 100) exceeds 0.0% (0 of 400) + 1.0%"`, `"not
    /// enough traffic: 12 of --min-requests 100"`, `"aborted by hand"`, ...
    pub reason: String,
    /// What was asked for.
    pub request: CanaryRequest,
    /// The old generation's counters at the decision.
    pub old: GenerationCounters,
    /// The canary's.
    pub new: GenerationCounters,
}
