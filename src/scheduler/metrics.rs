//! Prometheus metrics of the gateway: requests by route and status as the
//! client saw them, forwarding attempts by outcome (a failover shows as a
//! `failed` or `busy` attempt followed by an `ok` one), and the nodes
//! registered and active when scraped. Names start with `strata_gateway_`
//! so that `strata serve` can expose them next to its worker's metrics.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

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
            registry,
        }
    }

    /// Counts one forwarding attempt's outcome.
    pub fn attempt(&self, outcome: &str) {
        self.attempts.with_label_values(&[outcome]).inc();
    }

    /// The text exposition, with the node gauges set from `nodes`.
    pub fn render(&self, nodes: &[NodeRecord], now_ms: u64) -> String {
        self.nodes.set(nodes.len() as i64);
        let active = nodes.iter().filter(|r| r.lease_live(now_ms)).count();
        self.active.set(active as i64);
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
