//! What the scheduler knows about a worker: what it registered with, its
//! lease, what its heartbeats report, and the request figures the gateway
//! records. Plain data, serialisable, shared by every store.

use serde::{Deserialize, Serialize};

/// Sent by a worker when it registers (and again in heartbeats).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Base URL of the worker's OpenAI API, e.g. `http://10.0.0.5:8080`.
    pub endpoint: String,
    /// Model ids the worker serves.
    pub models: Vec<String>,
    /// Resource mode (`conservative`, `default`, `aggressive`).
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub devices: Vec<DeviceReport>,
}

/// One device of a worker, as its heartbeat reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub label: String,
    pub total: u64,
    pub budget: u64,
    pub used: u64,
}

/// The load part of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub in_flight: usize,
    pub max_in_flight: usize,
    #[serde(default)]
    pub queue_depth: usize,
    #[serde(default)]
    pub yielding: bool,
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub tokens_per_s: f64,
    /// Times the worker's supervisor restarted an engine.
    #[serde(default)]
    pub engine_restarts: u64,
    /// The wait before its next restart, should one be needed.
    #[serde(default)]
    pub restart_backoff_ms: u64,
    /// Why the engine last restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<String>,
}

/// Request figures the gateway keeps per node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    pub requests: u64,
    pub successes: u64,
    /// Exponential moving average of forwarded request latency (to the
    /// response headers), milliseconds; 0 before the first.
    pub latency_ms: f64,
    /// Requests the gateway has forwarded and not seen end.
    pub gateway_in_flight: u64,
}

/// Weight of the newest sample in the latency moving average.
pub const LATENCY_EWMA_ALPHA: f64 = 0.2;

impl NodeStats {
    pub fn success_rate(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.successes as f64 / self.requests as f64
        }
    }

    pub fn record(&mut self, success: bool, latency_ms: f64) {
        self.requests += 1;
        if success {
            self.successes += 1;
        }
        self.latency_ms = if self.requests == 1 {
            latency_ms
        } else {
            LATENCY_EWMA_ALPHA * latency_ms + (1.0 - LATENCY_EWMA_ALPHA) * self.latency_ms
        };
    }
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub lease_id: String,
    pub epoch: u64,
    pub info: NodeInfo,
    pub load: LoadReport,
    pub stats: NodeStats,
    /// Scheduler-clock milliseconds.
    pub registered_ms: u64,
    pub lease_expires_ms: u64,
    pub last_seen_ms: u64,
}

impl NodeRecord {
    pub fn lease_live(&self, now_ms: u64) -> bool {
        now_ms < self.lease_expires_ms
    }
}
