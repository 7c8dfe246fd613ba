//! The supervisor's Prometheus metrics (text format by `prometheus-client`). They live in the
//! supervisor process, so an upgrade never resets them: a generation's series stay after it
//! has exited, and every counter only grows for the supervisor's life.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `handover_upgrades_started_total` | counter | | upgrades (plain or canary) that started a new worker |
//! | `handover_upgrades_succeeded_total` | counter | | the new worker took over (a canary: once promoted) |
//! | `handover_upgrades_rolled_back_total` | counter | | the new worker failed or the canary was rolled back |
//! | `handover_canary_decisions_total` | counter | `decision` (`promoted`, `rolled_back`), `reason` (`healthy`, `error_rate`, `not_enough_traffic`, `by_hand`, `crashed`) | canary decisions |
//! | `handover_restarts_total` | counter | | workers restarted after exiting unexpectedly |
//! | `handover_generations` | gauge | `state` (`starting`, `ready`, `draining`) | live workers by state |
//! | `handover_drain_duration_seconds` | histogram | | from a worker's retirement to its exit |
//! | `handover_proxy_requests_total` | counter | `generation`, `class` (`1xx` … `5xx`; `tcp` for a TCP connection, `tcp_failed` for a failed one) | proxy mode: answers and connections by generation |
//! | `handover_proxy_errors_total` | counter | `generation` | proxy mode: the errors the canary rule counts (5xx incl. the proxy's 502/504; failed TCP connections) |
//! | `handover_proxy_latency_seconds` | histogram | `generation` | proxy mode: time to the response head (HTTP) or to the connection (TCP) |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the per-generation proxy series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenLabels {
    generation: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    generation: u64,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs doubling to ~105 s: the buckets of the canary's own figures.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// Every metric, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    upgrades_started: Counter,
    upgrades_succeeded: Counter,
    upgrades_rolled_back: Counter,
    canary_decisions: Family<DecisionLabels, Counter>,
    restarts: Counter,
    generations: Family<StateLabels, Gauge>,
    drain_duration: Histogram,
    requests: Family<ClassLabels, Counter>,
    errors: Family<GenLabels, Counter>,
    latency: HistogramFamily<GenLabels>,
}

/// A canary decision's kind of reason, for `handover_canary_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionReason {
    /// Promoted at `--for`.
    Healthy,
    /// The rule tripped.
    ErrorRate,
    /// Fewer than `--min-requests` at `--for`.
    NotEnoughTraffic,
    /// `handover promote` / `handover abort`.
    ByHand,
    /// The canary worker exited.
    Crashed,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            upgrades_started: Counter::default(),
            upgrades_succeeded: Counter::default(),
            upgrades_rolled_back: Counter::default(),
            canary_decisions: Family::default(),
            restarts: Counter::default(),
            generations: Family::default(),
            drain_duration: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            requests: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "handover_upgrades_started",
            "Upgrades (plain or canary) that started a new worker",
            m.upgrades_started.clone(),
        );
        r.register(
            "handover_upgrades_succeeded",
            "Upgrades whose new worker took over (a canary once promoted)",
            m.upgrades_succeeded.clone(),
        );
        r.register(
            "handover_upgrades_rolled_back",
            "Upgrades rolled back: the new worker failed, or the canary was rolled back",
            m.upgrades_rolled_back.clone(),
        );
        r.register(
            "handover_canary_decisions",
            "Canary decisions by outcome and reason",
            m.canary_decisions.clone(),
        );
        r.register(
            "handover_restarts",
            "Workers restarted after exiting unexpectedly",
            m.restarts.clone(),
        );
        r.register(
            "handover_generations",
            "Live workers by state",
            m.generations.clone(),
        );
        r.register(
            "handover_drain_duration_seconds",
            "From a worker's retirement to its exit",
            m.drain_duration.clone(),
        );
        r.register(
            "handover_proxy_requests",
            "Proxy mode: answers (by status class) and TCP connections, by generation",
            m.requests.clone(),
        );
        r.register(
            "handover_proxy_errors",
            "Proxy mode: errors as the canary rule counts them, by generation",
            m.errors.clone(),
        );
        r.register(
            "handover_proxy_latency_seconds",
            "Proxy mode: time to the response head (HTTP) or the connection (TCP), by generation",
            m.latency.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition format (what `GET /metrics` answers).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// An upgrade started a new worker.
    pub fn upgrade_started(&self) {
        self.upgrades_started.inc();
    }

    /// An upgrade's new worker took over.
    pub fn upgrade_succeeded(&self) {
        self.upgrades_succeeded.inc();
    }

    /// An upgrade was rolled back.
    pub fn upgrade_rolled_back(&self) {
        self.upgrades_rolled_back.inc();
    }

    /// A canary was decided.
    pub fn canary_decided(&self, promoted: bool, reason: DecisionReason) {
        let reason = match reason {
            DecisionReason::Healthy => "healthy",
            DecisionReason::ErrorRate => "error_rate",
            DecisionReason::NotEnoughTraffic => "not_enough_traffic",
            DecisionReason::ByHand => "by_hand",
            DecisionReason::Crashed => "crashed",
        };
        let decision = if promoted { "promoted" } else { "rolled_back" };
        self.canary_decisions
            .get_or_create(&DecisionLabels { decision, reason })
            .inc();
    }

    /// A crashed worker was restarted.
    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// How many live workers are starting, ready and draining now.
    pub fn set_generations(&self, starting: usize, ready: usize, draining: usize) {
        for (state, n) in [
            ("starting", starting),
            ("ready", ready),
            ("draining", draining),
        ] {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.generations
                .get_or_create(&StateLabels { state })
                .set(n);
        }
    }

    /// A retired worker exited after `took`.
    pub fn drained(&self, took: Duration) {
        self.drain_duration.observe(took.as_secs_f64());
    }

    /// The handles the proxy counts `generation`'s traffic with (no lookup per request).
    pub fn for_generation(self: &Arc<Self>, generation: u64) -> GenMetrics {
        let class = |class| {
            self.requests
                .get_or_create(&ClassLabels { generation, class })
                .clone()
        };
        GenMetrics {
            classes: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(class),
            tcp: class("tcp"),
            tcp_failed: class("tcp_failed"),
            errors: self.errors.get_or_create(&GenLabels { generation }).clone(),
            latency: self
                .latency
                .get_or_create(&GenLabels { generation })
                .clone(),
        }
    }
}

/// One generation's proxy series (clones of the registered metrics: the same counters).
#[derive(Debug, Clone)]
pub struct GenMetrics {
    classes: [Counter; 5],
    tcp: Counter,
    tcp_failed: Counter,
    errors: Counter,
    latency: Histogram,
}

impl GenMetrics {
    /// An HTTP answer with `status` (the worker's, or the proxy's 502/504).
    pub fn answer(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].inc();
        if status >= 500 {
            self.errors.inc();
        }
        self.latency.observe(took.as_secs_f64());
    }

    /// A TCP connection; `failed`: no connect, or a reset before the worker's first byte.
    pub fn connection(&self, failed: bool, took: Duration) {
        if failed {
            self.tcp_failed.inc();
            self.errors.inc();
        } else {
            self.tcp.inc();
        }
        self.latency.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_and_keeps_a_generation_after_it_is_gone() {
        let m = Arc::new(Metrics::new());
        m.upgrade_started();
        m.upgrade_succeeded();
        m.canary_decided(false, DecisionReason::ErrorRate);
        m.set_generations(0, 1, 1);
        m.drained(Duration::from_millis(20));
        let g1 = m.for_generation(1);
        g1.answer(200, Duration::from_millis(1));
        g1.answer(502, Duration::from_millis(1));
        drop(g1);
        m.for_generation(2).connection(true, Duration::ZERO);
        let text = m.render();
        for line in [
            "handover_upgrades_started_total 1",
            "handover_upgrades_succeeded_total 1",
            "handover_upgrades_rolled_back_total 0",
            "handover_canary_decisions_total{decision=\"rolled_back\",reason=\"error_rate\"} 1",
            "handover_restarts_total 0",
            "handover_generations{state=\"ready\"} 1",
            "handover_drain_duration_seconds_count 1",
            "handover_proxy_requests_total{generation=\"1\",class=\"2xx\"} 1",
            "handover_proxy_requests_total{generation=\"1\",class=\"5xx\"} 1",
            "handover_proxy_errors_total{generation=\"1\"} 1",
            "handover_proxy_requests_total{generation=\"2\",class=\"tcp_failed\"} 1",
            "handover_proxy_latency_seconds_count{generation=\"1\"} 2",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }
}
