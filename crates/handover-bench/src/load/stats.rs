//! What the load client counts: outcomes per 100 ms slice, failures by kind, and a latency
//! histogram. One `Stats` per worker thread, merged at the end.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::version::Version;

/// Width of one throughput slice.
pub const SLICE: Duration = Duration::from_millis(100);

/// Why a request failed. The client never retries, so each is one lost request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The connection for it could not be opened (refused, reset during connect, timed out).
    Connect,
    /// End of stream or reset before the whole response arrived.
    Read,
    /// Sending the request failed.
    Write,
    /// No whole response within the per-request timeout.
    Timeout,
    /// A response whose status is not 2xx.
    Status,
    /// A 2xx response whose body starts with neither version's greeting.
    Body,
    /// A response this client could not parse.
    Protocol,
}

/// Number of failure kinds.
pub const KINDS: usize = 7;

impl Failure {
    /// Every kind, in report order.
    pub const ALL: [Failure; KINDS] = [
        Failure::Connect,
        Failure::Read,
        Failure::Write,
        Failure::Timeout,
        Failure::Status,
        Failure::Body,
        Failure::Protocol,
    ];

    /// Short name used in the JSON and the table.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Read => "read",
            Failure::Write => "write",
            Failure::Timeout => "timeout",
            Failure::Status => "non_2xx",
            Failure::Body => "wrong_body",
            Failure::Protocol => "protocol",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one 100 ms slice.
#[derive(Debug, Default, Clone, Copy)]
pub struct Slice {
    /// Successful requests by version (`[v1, v2]`).
    pub ok: [u32; 2],
    /// Failed requests by kind (see [`Failure::ALL`]).
    pub failed: [u32; KINDS],
    /// Stale answers (see [`crate::generations`]).
    pub stale: u32,
}

impl Slice {
    /// All successful requests.
    pub fn ok_total(&self) -> u32 {
        self.ok[0] + self.ok[1]
    }

    /// All failed requests.
    pub fn failed_total(&self) -> u32 {
        self.failed.iter().sum()
    }
}

/// Everything one worker (or, merged, the whole client) counted.
#[derive(Debug, Clone)]
pub struct Stats {
    start: Instant,
    /// Per-slice counters from `start`.
    pub slices: Vec<Slice>,
    /// Latency of successful requests, microseconds.
    pub latency: Histogram<u64>,
    /// Connections opened.
    pub connections: u64,
    /// Responses that announced `Connection: close` (in keep-alive mode: drain notices).
    pub announced_closes: u64,
    /// Rate-limited mode: requests sent more than one pacing period after they were due.
    pub late: u64,
    /// Rate-limited mode: how long after its due time each request was sent, microseconds
    /// (how well the client held the schedule).
    pub lag: Histogram<u64>,
}

impl Stats {
    /// Empty counters for a run that started at `start` and lasts at most `span`.
    pub fn new(start: Instant, span: Duration) -> Self {
        let n = (span.as_millis() / SLICE.as_millis()) as usize + 1;
        Stats {
            start,
            slices: vec![Slice::default(); n],
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            connections: 0,
            announced_closes: 0,
            late: 0,
            lag: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
        }
    }

    fn slice(&mut self, at: Instant) -> &mut Slice {
        let i = (at.saturating_duration_since(self.start).as_millis() / SLICE.as_millis()) as usize;
        let last = self.slices.len() - 1;
        &mut self.slices[i.min(last)]
    }

    /// A successful request that took `latency` and was answered by `version`.
    pub fn ok(&mut self, at: Instant, latency: Duration, version: Version) {
        self.slice(at).ok[version.index()] += 1;
        self.latency
            .saturating_record(latency.as_micros().max(1) as u64);
    }

    /// A failed request.
    pub fn fail(&mut self, at: Instant, kind: Failure) {
        self.slice(at).failed[kind.index()] += 1;
    }

    /// A stale answer (counted in addition to its success).
    pub fn stale(&mut self, at: Instant) {
        self.slice(at).stale += 1;
    }

    /// Adds `other`'s counts (same start and span) to these.
    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in self.slices.iter_mut().zip(&other.slices) {
            for v in 0..2 {
                a.ok[v] += b.ok[v];
            }
            for k in 0..KINDS {
                a.failed[k] += b.failed[k];
            }
            a.stale += b.stale;
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.connections += other.connections;
        self.announced_closes += other.announced_closes;
        self.late += other.late;
        let _ = self.lag.add(&other.lag);
    }

    /// Sum over all slices.
    pub fn total(&self) -> Slice {
        let mut t = Slice::default();
        for s in &self.slices {
            for v in 0..2 {
                t.ok[v] += s.ok[v];
            }
            for k in 0..KINDS {
                t.failed[k] += s.failed[k];
            }
            t.stale += s.stale;
        }
        t
    }

    /// Drops trailing empty slices (the span is an upper bound).
    pub fn trim(&mut self) {
        while self.slices.len() > 1 && self.slices.last().is_some_and(is_empty) {
            self.slices.pop();
        }
    }
}

fn is_empty(s: &Slice) -> bool {
    s.ok_total() == 0 && s.failed_total() == 0 && s.stale == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_slices_and_merge() {
        let t0 = Instant::now();
        let mut a = Stats::new(t0, Duration::from_secs(1));
        let mut b = Stats::new(t0, Duration::from_secs(1));
        a.ok(
            t0 + Duration::from_millis(50),
            Duration::from_micros(100),
            Version::V1,
        );
        b.ok(
            t0 + Duration::from_millis(150),
            Duration::from_micros(300),
            Version::V2,
        );
        b.fail(t0 + Duration::from_secs(5), Failure::Read);
        a.merge(&b);
        assert_eq!(a.slices[0].ok, [1, 0]);
        assert_eq!(a.slices[1].ok, [0, 1]);
        assert_eq!(
            a.slices.last().unwrap().failed[1],
            1,
            "late ones clamp to the end"
        );
        assert_eq!(a.total().ok_total(), 2);
        assert_eq!(a.latency.len(), 2);
    }
}
