//! Active health checks: besides heartbeats, the scheduler asks each
//! worker with a live lease for `/health` every interval (30 s by default)
//! with a timeout. One failure makes a node degraded, three in a row
//! unhealthy (no new work routed to it), one success recovered. A worker
//! whose agent heartbeats but whose API cannot be reached is caught here.
//!
//! The state is this scheduler's own observation (two schedulers may see
//! different networks), kept in memory with figures the gateway adds: the
//! last 100 probes (the uptime score: the share that succeeded) and the
//! last 100 forwarded latencies (their 95th percentile).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::events::{Events, Level};

/// Consecutive failed checks that make a node unhealthy.
pub const UNHEALTHY_AFTER: u32 = 3;
/// Probes and latencies kept per node for the uptime score and p95.
pub const WINDOW: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    #[default]
    Healthy,
    Degraded,
    Unhealthy,
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
        })
    }
}

/// One node's health as `/v1/nodes` and `strata status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthFigures {
    pub state: HealthState,
    pub consecutive_failures: u32,
    /// Share of the last checks that succeeded (1 before the first).
    pub uptime_score: f64,
    /// 95th percentile of the last forwarded latencies, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<f64>,
    pub checks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct NodeHealth {
    state: HealthState,
    consecutive_failures: u32,
    checks: u64,
    probes: VecDeque<bool>,
    latencies: VecDeque<f64>,
    last_error: Option<String>,
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() == WINDOW {
        q.pop_front();
    }
    q.push_back(v);
}

impl NodeHealth {
    /// Applies one check; the state before and after.
    fn record(&mut self, result: Result<(), String>) -> (HealthState, HealthState) {
        let before = self.state;
        self.checks += 1;
        push(&mut self.probes, result.is_ok());
        match result {
            Ok(()) => {
                self.consecutive_failures = 0;
                self.state = HealthState::Healthy;
                self.last_error = None;
            }
            Err(e) => {
                self.consecutive_failures += 1;
                self.state = if self.consecutive_failures >= UNHEALTHY_AFTER {
                    HealthState::Unhealthy
                } else {
                    HealthState::Degraded
                };
                self.last_error = Some(e);
            }
        }
        (before, self.state)
    }

    fn figures(&self) -> HealthFigures {
        let uptime_score = if self.probes.is_empty() {
            1.0
        } else {
            self.probes.iter().filter(|&&ok| ok).count() as f64 / self.probes.len() as f64
        };
        HealthFigures {
            state: self.state,
            consecutive_failures: self.consecutive_failures,
            uptime_score,
            latency_p95_ms: p95(&self.latencies),
            checks: self.checks,
            last_error: self.last_error.clone(),
        }
    }
}

/// The nearest-rank 95th percentile.
fn p95(samples: &VecDeque<f64>) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = samples.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64) * 0.95).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Every node's health, as this scheduler sees it.
#[derive(Default)]
pub struct HealthMonitor {
    nodes: Mutex<HashMap<String, NodeHealth>>,
}

impl HealthMonitor {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeHealth>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a check of `node` and emits an event when its state
    /// changes; the new state.
    pub fn observe(&self, node: &str, result: Result<(), String>, events: &Events) -> HealthState {
        let error = result.as_ref().err().cloned();
        let (before, after) = self
            .lock()
            .entry(node.to_string())
            .or_default()
            .record(result);
        let failures = self.figures(node).consecutive_failures;
        match (before, after) {
            (HealthState::Healthy, HealthState::Degraded) => {
                events.emit(
                    Level::Warning,
                    "node_degraded",
                    Some(node),
                    None,
                    format!(
                        "health check failed ({}); degraded",
                        error.unwrap_or_default()
                    ),
                );
            }
            (HealthState::Degraded, HealthState::Unhealthy) => {
                events.emit(
                    Level::Error,
                    "node_unhealthy",
                    Some(node),
                    None,
                    format!(
                        "{failures} health checks failed in a row ({}); unhealthy, no new work",
                        error.unwrap_or_default()
                    ),
                );
            }
            (HealthState::Degraded | HealthState::Unhealthy, HealthState::Healthy) => {
                events.emit(
                    Level::Info,
                    "node_recovered",
                    Some(node),
                    None,
                    format!("health check passed; recovered from {before}"),
                );
            }
            _ => {}
        }
        after
    }

    pub fn state(&self, node: &str) -> HealthState {
        self.lock()
            .get(node)
            .map_or(HealthState::Healthy, |h| h.state)
    }

    pub fn figures(&self, node: &str) -> HealthFigures {
        self.lock()
            .get(node)
            .map_or_else(|| NodeHealth::default().figures(), NodeHealth::figures)
    }

    /// Adds a forwarded request's latency to the node's p95 window.
    pub fn record_latency(&self, node: &str, ms: f64) {
        push(
            &mut self.lock().entry(node.to_string()).or_default().latencies,
            ms,
        );
    }

    pub fn forget(&self, node: &str) {
        self.lock().remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_degrades_three_make_unhealthy_one_success_recovers() {
        let events = Events::new(100);
        let m = HealthMonitor::default();
        let fail = || Err("timed out".to_string());
        assert_eq!(m.observe("n", Ok(()), &events), HealthState::Healthy);
        assert_eq!(m.observe("n", fail(), &events), HealthState::Degraded);
        assert_eq!(m.observe("n", fail(), &events), HealthState::Degraded);
        assert_eq!(m.observe("n", fail(), &events), HealthState::Unhealthy);
        assert_eq!(m.observe("n", fail(), &events), HealthState::Unhealthy);
        assert_eq!(m.figures("n").consecutive_failures, 4);
        assert_eq!(m.observe("n", Ok(()), &events), HealthState::Healthy);
        let seen: Vec<(Level, String)> = events
            .since(0, Level::Info)
            .into_iter()
            .map(|e| (e.level, e.kind))
            .collect();
        assert_eq!(
            seen,
            [
                (Level::Warning, "node_degraded".to_string()),
                (Level::Error, "node_unhealthy".to_string()),
                (Level::Info, "node_recovered".to_string()),
            ]
        );
        let f = m.figures("n");
        assert_eq!(f.checks, 6);
        assert!((f.uptime_score - 2.0 / 6.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        let m = HealthMonitor::default();
        assert_eq!(m.figures("n").latency_p95_ms, None);
        for ms in 1..=100 {
            m.record_latency("n", ms as f64);
        }
        assert_eq!(m.figures("n").latency_p95_ms, Some(95.0));
        m.record_latency("n", 1000.0);
        assert_eq!(
            m.figures("n").latency_p95_ms,
            Some(96.0),
            "the oldest left the window"
        );
    }
}
