//! Prometheus metrics of the gateway: requests by route and status as the
//! client saw them, forwarding attempts by outcome (a failover shows as a
//! `failed` or `busy` attempt followed by an `ok` one), and the nodes
//! registered and active when scraped. Names start with `strata_gateway_`
//! so that `strata serve` can expose them next to its worker's metrics.

use prometheus::{GaugeVec, IntCounterVec, IntGauge, Opts, Registry};

use super::health::{HealthMonitor, HealthState};
use super::node::NodeRecord;
use super::service::Scheduler;
use crate::api::metrics::{encode, registered, CountsRequests};

pub struct GatewayMetrics {
    registry: Registry,
    pub requests: IntCounterVec,
    /// Outcomes: `ok` (passed on), `busy` (429), `failed` (error, 5xx, 409,
    /// lease lapsed).
    pub attempts: IntCounterVec,
    nodes: IntGauge,
    active: IntGauge,
    /// Per node, by `figure`: health (0 healthy, 1 degraded, 2 unhealthy),
    /// success_rate, latency_avg_ms, latency_p95_ms, uptime_score,
    /// consecutive_failures, requests, successes, tokens_per_s.
    node: GaugeVec,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registered(&registry, c)
        };
        let gauge = |name: &str, help: &str| {
            registered(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        Self {
            requests: counter_vec(
                "strata_gateway_requests_total",
                "Requests the scheduler answered, by route and status",
                &["route", "status"],
            ),
            attempts: counter_vec(
                "strata_gateway_forward_attempts_total",
                "Requests forwarded to a worker, by outcome (ok, busy, failed)",
                &["outcome"],
            ),
            nodes: gauge("strata_gateway_nodes", "Nodes registered"),
            active: gauge("strata_gateway_active_nodes", "Nodes holding a live lease"),
            node: registered(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "strata_gateway_node",
                        "Per-node figures: health (0 healthy, 1 degraded, 2 unhealthy), success_rate, latency_avg_ms, latency_p95_ms, uptime_score, consecutive_failures, requests, successes, tokens_per_s",
                    ),
                    &["node", "figure"],
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }

    /// Counts one forwarding attempt's outcome.
    pub fn attempt(&self, outcome: &str) {
        self.attempts.with_label_values(&[outcome]).inc();
    }

    /// The text exposition, with the node gauges set from `nodes` and
    /// this scheduler's health checks.
    pub fn render(&self, nodes: &[NodeRecord], now_ms: u64, health: &HealthMonitor) -> String {
        self.nodes.set(nodes.len() as i64);
        let active = nodes.iter().filter(|r| r.lease_live(now_ms)).count();
        self.active.set(active as i64);
        self.node.reset();
        for r in nodes {
            let h = health.figures(&r.id);
            let state = match h.state {
                HealthState::Healthy => 0.0,
                HealthState::Degraded => 1.0,
                HealthState::Unhealthy => 2.0,
            };
            let figures = [
                ("health", state),
                ("success_rate", r.stats.success_rate()),
                ("latency_avg_ms", r.stats.latency_ms),
                ("latency_p95_ms", h.latency_p95_ms.unwrap_or(0.0)),
                ("uptime_score", h.uptime_score),
                ("consecutive_failures", f64::from(h.consecutive_failures)),
                ("requests", r.stats.requests as f64),
                ("successes", r.stats.successes as f64),
                ("tokens_per_s", r.load.tokens_per_s),
            ];
            for (figure, v) in figures {
                self.node.with_label_values(&[r.id.as_str(), figure]).set(v);
            }
        }
        encode(&self.registry)
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CountsRequests for Scheduler {
    fn request_counter(&self) -> &IntCounterVec {
        &self.metrics.requests
    }
}
