//! Prometheus metrics of the worker: requests by route and status, tokens
//! in and out, time to first token and per-token latency, queue depth,
//! requests in flight, per-device memory budget and planned use, throttle
//! waits and cancelled generations. Gauges that mirror live state (queue,
//! in flight, yielding) are read when `/metrics` is scraped.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::AppState;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub prompt_tokens: IntCounter,
    pub completion_tokens: IntCounter,
    pub cancelled: IntCounter,
    pub time_to_first_token: Histogram,
    pub token_latency: Histogram,
    pub throttle_wait: Histogram,
    queue_depth: IntGauge,
    in_flight: IntGauge,
    yielding: IntGauge,
    device_budget: IntGaugeVec,
    device_planned: IntGaugeVec,
}

const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            registered(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            registered(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            registered(&registry, Histogram::with_opts(opts).expect("valid metric"))
        };
        let device_gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["device"]).expect("valid metric");
            registered(&registry, g)
        };
        let requests = registered(
            &registry,
            IntCounterVec::new(
                Opts::new("strata_requests_total", "HTTP requests by route and status"),
                &["route", "status"],
            )
            .expect("valid metric"),
        );
        Self {
            requests,
            prompt_tokens: counter("strata_prompt_tokens_total", "Prompt tokens processed"),
            completion_tokens: counter("strata_completion_tokens_total", "Tokens generated"),
            cancelled: counter(
                "strata_cancelled_generations_total",
                "Generations stopped because the client went away",
            ),
            time_to_first_token: histogram(
                "strata_time_to_first_token_seconds",
                "From request arrival to the first generated token",
            ),
            token_latency: histogram(
                "strata_token_latency_seconds",
                "Time between two generated tokens",
            ),
            throttle_wait: histogram(
                "strata_throttle_wait_seconds",
                "Time a request waited for the throttle",
            ),
            queue_depth: gauge("strata_queue_depth", "Requests waiting for the engine"),
            in_flight: gauge(
                "strata_requests_in_flight",
                "Requests admitted and not finished",
            ),
            yielding: gauge("strata_yielding", "1 while yielding to the desktop"),
            device_budget: device_gauge(
                "strata_device_memory_budget_bytes",
                "Bytes the resource manager allows on each device",
            ),
            device_planned: device_gauge(
                "strata_device_memory_planned_bytes",
                "Bytes placed on each device (weights, KV cache, workspace)",
            ),
            registry,
        }
    }

    pub fn set_device(&self, device: &str, budget: u64, planned: u64) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.device_budget
            .with_label_values(&[device])
            .set(clamp(budget));
        self.device_planned
            .with_label_values(&[device])
            .set(clamp(planned));
    }

    /// The text exposition, with the live gauges read from `state`.
    pub fn render(&self, state: &AppState) -> String {
        let engines = state.pool.engines();
        let queued: usize = engines.iter().map(|(_, e)| e.queue_depth()).sum();
        self.queue_depth.set(queued as i64);
        for d in state.pool.devices_status() {
            self.set_device(&d.label, d.budget, d.used);
        }
        let status = state.resources.status();
        self.in_flight.set(status.in_flight as i64);
        self.yielding.set(i64::from(status.yielding.is_some()));
        encode(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The Content-Type of the Prometheus text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers `metric` with `registry` and hands it back.
pub fn registered<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

/// The text exposition of everything in `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("text encoding cannot fail");
    String::from_utf8(out).expect("prometheus text is UTF-8")
}

/// States with a `{route, status}` request counter.
pub trait CountsRequests {
    fn request_counter(&self) -> &IntCounterVec;
}

impl CountsRequests for AppState {
    fn request_counter(&self) -> &IntCounterVec {
        &self.metrics.requests
    }
}

/// Middleware: counts every routed request by its route and final status.
pub async fn track<S: CountsRequests>(
    State(state): State<S>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    state
        .request_counter()
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}
