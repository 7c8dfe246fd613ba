//! One generation's traffic as the proxy saw it: answers (HTTP) or connections (TCP), errors,
//! status classes and a latency histogram. Lock-free (relaxed atomics: each figure is exact on
//! its own; a snapshot taken under load may be a request apart between two figures), so the
//! request path pays a few increments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use handover::control_socket::GenerationCounters;

/// Upper bounds of the latency buckets, in microseconds: 100 µs doubling up to ~105 s; the
/// last bucket takes the rest.
const BUCKETS: usize = 21;

fn bucket_bound_us(i: usize) -> u64 {
    100u64 << i
}

/// What one generation has answered.
#[derive(Debug, Default)]
pub struct GenStats {
    requests: AtomicU64,
    errors: AtomicU64,
    classes: [AtomicU64; 5],
    latency: [AtomicU64; BUCKETS],
}

/// How one exchange ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer with this status (the worker's, or the proxy's own 502/504).
    Status(u16),
    /// A TCP connection that reached the worker and got its first byte (or a clean close).
    Connected,
    /// A TCP connection that failed: no connect, or a reset before the worker's first byte.
    Failed,
}

/// The figures at one moment (differences of two give a period).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Answers or connections.
    pub requests: u64,
    /// Errors among them.
    pub errors: u64,
    /// By status class, 1xx to 5xx.
    pub classes: [u64; 5],
    /// Latency histogram counts.
    pub latency: [u64; BUCKETS],
}

impl GenStats {
    /// Counts one exchange that took `took` (to the response head, or to the connection).
    pub fn record(&self, answer: Answer, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let error = match answer {
            Answer::Status(s) => {
                let class = usize::from(s / 100).clamp(1, 5) - 1;
                self.classes[class].fetch_add(1, Ordering::Relaxed);
                s >= 500
            }
            Answer::Connected => false,
            Answer::Failed => true,
        };
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = (0..BUCKETS - 1)
            .find(|&i| us <= bucket_bound_us(i))
            .unwrap_or(BUCKETS - 1);
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The figures now.
    pub fn snapshot(&self) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            requests: load(&self.requests),
            errors: load(&self.errors),
            classes: std::array::from_fn(|i| load(&self.classes[i])),
            latency: std::array::from_fn(|i| load(&self.latency[i])),
        }
    }
}

impl Snapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            classes: std::array::from_fn(|i| self.classes[i].saturating_sub(earlier.classes[i])),
            latency: std::array::from_fn(|i| self.latency[i].saturating_sub(earlier.latency[i])),
        }
    }

    /// `errors / requests` (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The upper bound (ms) of the bucket holding quantile `q` (0..1); `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_bound_us(i) as f64 / 1000.0);
            }
        }
        None
    }

    /// The wire form, for `status` and `last_upgrade`.
    pub fn counters(&self, generation: u64) -> GenerationCounters {
        GenerationCounters {
            generation,
            requests: self.requests,
            errors: self.errors,
            error_rate_percent: (self.error_rate() * 10_000.0).round() / 100.0,
            status_classes: self.classes,
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_classes_errors_and_quantiles() {
        let s = GenStats::default();
        let before = s.snapshot();
        for _ in 0..98 {
            s.record(Answer::Status(200), Duration::from_micros(150));
        }
        s.record(Answer::Status(502), Duration::from_millis(3));
        s.record(Answer::Status(404), Duration::from_secs(500));
        let d = s.snapshot().since(&before);
        assert_eq!((d.requests, d.errors), (100, 1));
        assert_eq!(d.classes, [0, 98, 0, 1, 1]);
        assert_eq!(d.quantile_ms(0.5), Some(0.2)); // the 100..200 µs bucket
        assert_eq!(d.quantile_ms(0.99), Some(3.2));
        let c = d.counters(7);
        assert_eq!((c.generation, c.error_rate_percent), (7, 1.0));
        assert_eq!(Snapshot::default().quantile_ms(0.5), None);
        s.record(Answer::Failed, Duration::ZERO);
        assert_eq!(s.snapshot().since(&before).errors, 2);
    }
}
