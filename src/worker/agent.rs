//! The worker agent: registers this worker with a scheduler, heartbeats at
//! the interval the scheduler asks (a third of the TTL) with its load,
//! memory and yield state, and registers again (keeping its node id, with
//! a new epoch) when the scheduler answers 409 or 410. Failed calls are
//! retried with jittered exponential backoff. The fence stops the worker
//! taking work once a full TTL passes without a renewal. On shutdown it
//! leaves cleanly.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::api::AppState;
use crate::scheduler::lease::Heartbeat;
use crate::scheduler::node::{DeviceReport, LoadReport, NodeInfo};
use crate::scheduler::registry::{
    HeartbeatResponse, LeaveRequest, RegisterRequest, RegisterResponse,
};

/// First retry delay after a failed call; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of the scheduler.
    pub scheduler: String,
    /// Base URL the scheduler reaches this worker's API at.
    pub advertise: String,
    pub join_token: Option<String>,
}

/// Exponential backoff with full jitter: a delay in [d/2, d) for the
/// `attempt`-th retry, d = start × 2^attempt capped at `max`.
pub fn backoff(attempt: u32, start: Duration, max: Duration) -> Duration {
    let d = start.saturating_mul(1u32 << attempt.min(16)).min(max);
    d / 2 + d.mul_f64(rand::random::<f64>() / 2.0)
}

enum CallError {
    /// 409 or 410: the lease is gone; register again.
    LeaseLost(String),
    Other(String),
}

struct Agent {
    cfg: AgentConfig,
    state: AppState,
    client: reqwest::Client,
    node_id: Option<String>,
}

impl Agent {
    fn info(&self) -> NodeInfo {
        let devices = self
            .state
            .pool
            .devices_status()
            .into_iter()
            .map(|d| DeviceReport {
                label: d.label,
                total: d.total,
                budget: d.budget,
                used: d.used,
            })
            .collect();
        NodeInfo {
            endpoint: self.cfg.advertise.clone(),
            models: self.state.pool.ids(),
            mode: self.state.resources.settings().mode.to_string(),
            devices,
        }
    }

    fn load(&self, tokens_per_s: f64) -> LoadReport {
        let r = self.state.resources.status();
        let engines = self.state.pool.engines();
        let restarts = self.state.pool.restart_report();
        LoadReport {
            in_flight: r.in_flight,
            max_in_flight: r.max_in_flight,
            queue_depth: engines.iter().map(|(_, e)| e.queue_depth()).sum(),
            yielding: r.yielding.is_some(),
            healthy: engines
                .iter()
                .all(|(_, e)| e.is_healthy(crate::api::ENGINE_STALL)),
            tokens_per_s,
            engine_restarts: restarts.total,
            restart_backoff_ms: restarts.backoff_ms,
            last_restart: restarts.last,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.cfg.scheduler.trim_end_matches('/'));
        let res = self
            .client
            .request(method, url)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Other(e.to_string()))?;
        let status = res.status().as_u16();
        if status == 409 || status == 410 {
            return Err(CallError::LeaseLost(res.text().await.unwrap_or_default()));
        }
        if !res.status().is_success() {
            return Err(CallError::Other(format!(
                "status {status}: {}",
                res.text().await.unwrap_or_default()
            )));
        }
        if status == 204 {
            return serde_json::from_str("null").map_err(|e| CallError::Other(e.to_string()));
        }
        res.json()
            .await
            .map_err(|e| CallError::Other(e.to_string()))
    }

    /// Registers, retrying until it succeeds or shutdown.
    async fn register(&mut self, stop: &mut watch::Receiver<bool>) -> Option<RegisterResponse> {
        let mut attempt = 0;
        loop {
            let req = RegisterRequest {
                node_id: self.node_id.clone(),
                join_token: self.cfg.join_token.clone(),
                info: self.info(),
            };
            match self
                .call::<RegisterResponse>(reqwest::Method::POST, "/v1/nodes/register", &req)
                .await
            {
                Ok(r) => {
                    self.node_id = Some(r.node_id.clone());
                    self.state
                        .fence
                        .renewed(r.epoch, Duration::from_millis(r.ttl_ms));
                    tracing::info!(node = %r.node_id, epoch = r.epoch, scheduler = %self.cfg.scheduler, "registered");
                    return Some(r);
                }
                Err(CallError::LeaseLost(m) | CallError::Other(m)) => {
                    let wait = backoff(attempt, BACKOFF_START, BACKOFF_MAX);
                    tracing::warn!(
                        "registering with {} failed ({m}); retrying in {wait:?}",
                        self.cfg.scheduler
                    );
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return None,
                    }
                }
            }
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tokens_before = self.state.pool.tokens_generated();
        let mut measured_since = std::time::Instant::now();
        'register: loop {
            let Some(lease) = self.register(&mut stop).await else {
                return;
            };
            let every = Duration::from_millis(lease.heartbeat_ms.max(10));
            let mut failures = 0;
            // The first heartbeat goes at once: registration carries no
            // load, and the scheduler should know this worker's slots.
            let mut wait = Duration::ZERO;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {
                        self.leave(&lease).await;
                        return;
                    }
                }
                let tokens = self.state.pool.tokens_generated();
                let elapsed = measured_since.elapsed().as_secs_f64().max(1e-3);
                let rate = (tokens - tokens_before) as f64 / elapsed;
                tokens_before = tokens;
                measured_since = std::time::Instant::now();
                let hb = Heartbeat {
                    lease_id: lease.lease_id.clone(),
                    epoch: lease.epoch,
                    load: self.load(rate),
                    info: Some(self.info()),
                };
                let path = format!("/v1/nodes/{}/heartbeat", lease.node_id);
                match self
                    .call::<HeartbeatResponse>(reqwest::Method::POST, &path, &hb)
                    .await
                {
                    Ok(_) => {
                        failures = 0;
                        wait = every;
                        self.state
                            .fence
                            .renewed(lease.epoch, Duration::from_millis(lease.ttl_ms));
                    }
                    Err(CallError::LeaseLost(m)) => {
                        tracing::warn!(node = %lease.node_id, "lease lost ({m}); registering again");
                        continue 'register;
                    }
                    Err(CallError::Other(m)) => {
                        failures += 1;
                        wait = backoff(failures, BACKOFF_START, every);
                        tracing::warn!(node = %lease.node_id, "heartbeat failed ({m})");
                    }
                }
            }
        }
    }

    async fn leave(&self, lease: &RegisterResponse) {
        let req = LeaveRequest {
            lease_id: lease.lease_id.clone(),
            epoch: lease.epoch,
        };
        let path = format!("/v1/nodes/{}", lease.node_id);
        match self.call::<()>(reqwest::Method::DELETE, &path, &req).await {
            Ok(()) => tracing::info!(node = %lease.node_id, "left the scheduler"),
            Err(CallError::LeaseLost(m) | CallError::Other(m)) => {
                tracing::warn!(node = %lease.node_id, "leaving failed: {m}")
            }
        }
    }
}

/// Starts the agent; setting `stop` to true makes it leave and end.
pub fn spawn(
    cfg: AgentConfig,
    state: AppState,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let agent = Agent {
        cfg,
        state,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client"),
        node_id: None,
    };
    tokio::spawn(agent.run(stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let s = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 0..40 {
            let d = backoff(attempt, s, max);
            let full = s.saturating_mul(1 << attempt.min(16)).min(max);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
