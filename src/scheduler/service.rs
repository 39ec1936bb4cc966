//! The scheduler as a service: its configuration, the shared state of its
//! HTTP handlers, the sweep loop, and which nodes are eligible for a model.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::clock::Clock;
use super::events::{Events, Level};
use super::health::{HealthMonitor, HealthState};
use super::metrics::GatewayMetrics;
use super::node::NodeRecord;
use super::policy::{choose, Candidate, Policy};
use super::store::{Store, StoreError};
use super::watch::{new_watch, WatchState};

/// Production lease TTL (DESIGN.md: about 30 s, heartbeats every 10 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// A node whose lease lapsed this long ago is removed.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(300);
/// How often each live node's `/health` is checked by default.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call to manage a node's models may take by default.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most nodes one request is tried on before the gateway gives up.
pub const DEFAULT_MAX_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub ttl: Duration,
    pub stale_after: Duration,
    /// How often expired nodes are swept (default: a third of the TTL).
    pub sweep_interval: Duration,
    /// Workers must present it to register, when set.
    pub join_token: Option<String>,
    /// Clients must send `Authorization: Bearer KEY` to the gateway and
    /// the status route, when set; it is passed on to the workers.
    pub api_key: Option<String>,
    pub policy: Policy,
    pub max_attempts: usize,
    /// Per-attempt time allowed to get response headers from a worker.
    pub connect_timeout: Duration,
    pub max_body_bytes: usize,
    /// How long a call to manage a node's models may take.
    pub node_timeout: Duration,
    /// How often every live node's `/health` is checked, and how long a
    /// check may take.
    pub health_interval: Duration,
    pub health_timeout: Duration,
    /// Events kept for `/v1/events`.
    pub event_capacity: usize,
    /// Where events are POSTed, when set.
    pub webhook: Option<String>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            stale_after: DEFAULT_STALE_AFTER,
            sweep_interval: DEFAULT_TTL / 3,
            join_token: None,
            api_key: None,
            policy: Policy::BestScore,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            connect_timeout: Duration::from_secs(10),
            max_body_bytes: crate::api::DEFAULT_MAX_BODY_BYTES,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            event_capacity: super::events::DEFAULT_CAPACITY,
            webhook: None,
        }
    }
}

/// State shared by the registry and gateway handlers.
#[derive(Clone)]
pub struct Scheduler {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<SchedulerConfig>,
    pub client: reqwest::Client,
    pub metrics: Arc<GatewayMetrics>,
    pub events: Arc<Events>,
    pub health: Arc<HealthMonitor>,
    pub(crate) watch: Arc<Mutex<WatchState>>,
    turn: Arc<AtomicU64>,
    /// Requests this gateway forwarded and has not seen end, per node.
    forwarded: Arc<Mutex<HashMap<String, u64>>>,
}

/// Why no node could take a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NoNode {
    /// No registered worker, live or not, serves the model: to an OpenAI
    /// client the model does not exist (404).
    UnknownModel,
    /// Workers that serve the model are registered, but none holds a live
    /// lease.
    NoneServes,
    /// Every live worker serving it yields to its desktop.
    AllYielding,
    /// Every live worker serving it is unhealthy (by its own report or
    /// this scheduler's health checks).
    AllUnhealthy,
}

impl NoNode {
    pub fn message(&self, model: &str) -> String {
        match self {
            NoNode::UnknownModel => {
                format!("the model `{model}` does not exist: no worker serves it")
            }
            NoNode::NoneServes => format!("no live worker serves the model `{model}`"),
            NoNode::AllYielding => {
                format!("every worker serving `{model}` is yielding to its desktop; retry later")
            }
            NoNode::AllUnhealthy => format!("every worker serving `{model}` is unhealthy"),
        }
    }
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: SchedulerConfig) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        let mut events = Events::new(config.event_capacity);
        if let Some(url) = &config.webhook {
            events = events.with_webhook(url.clone());
        }
        Self {
            store,
            clock,
            config: Arc::new(config),
            client,
            metrics: Arc::new(GatewayMetrics::new()),
            events: Arc::new(events),
            health: Arc::new(HealthMonitor::default()),
            watch: new_watch(),
            turn: Arc::new(AtomicU64::new(0)),
            forwarded: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn ttl_ms(&self) -> u64 {
        self.config.ttl.as_millis() as u64
    }

    fn forwarded_to(&self, id: &str) -> u64 {
        let map = self.forwarded.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).copied().unwrap_or(0)
    }

    /// Counts a request forwarded to `id` until the guard drops.
    pub fn forwarding(&self, id: &str) -> ForwardGuard {
        let mut map = self.forwarded.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(id.to_string()).or_default() += 1;
        ForwardGuard {
            map: self.forwarded.clone(),
            id: id.to_string(),
        }
    }

    /// Live nodes that serve `model` and can take work, or why there are
    /// none.
    pub async fn eligible(
        &self,
        model: &str,
    ) -> Result<Result<Vec<NodeRecord>, NoNode>, StoreError> {
        let now = self.now_ms();
        let registered: Vec<NodeRecord> = self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|r| r.info.models.iter().any(|m| m == model))
            .collect();
        if registered.is_empty() {
            return Ok(Err(NoNode::UnknownModel));
        }
        let serving: Vec<NodeRecord> = registered
            .into_iter()
            .filter(|r| r.lease_live(now))
            .collect();
        if serving.is_empty() {
            return Ok(Err(NoNode::NoneServes));
        }
        // Healthy by its own report and by this scheduler's checks.
        let healthy: Vec<NodeRecord> = serving
            .iter()
            .filter(|r| r.load.healthy && self.health.state(&r.id) != HealthState::Unhealthy)
            .cloned()
            .collect();
        if healthy.is_empty() {
            return Ok(Err(NoNode::AllUnhealthy));
        }
        let ready: Vec<NodeRecord> = healthy.into_iter().filter(|r| !r.load.yielding).collect();
        if ready.is_empty() {
            return Ok(Err(NoNode::AllYielding));
        }
        Ok(Ok(ready))
    }

    /// The node the policy picks among `nodes` (none: `None`).
    pub fn pick<'a>(&self, nodes: &'a [NodeRecord]) -> Option<&'a NodeRecord> {
        let candidates: Vec<Candidate> = nodes
            .iter()
            .map(|r| {
                // The worker's own report lags a heartbeat; add what this
                // gateway sent since.
                let slots = r.load.max_in_flight.max(1) as f64;
                let load =
                    ((r.load.in_flight as f64 + self.forwarded_to(&r.id) as f64) / slots).min(1.0);
                Candidate {
                    id: r.id.clone(),
                    load,
                    success_rate: r.stats.success_rate(),
                    latency_ms: r.stats.latency_ms,
                    requests: r.stats.requests,
                }
            })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::AcqRel);
        choose(self.config.policy, &candidates, turn, rand::random::<f64>()).map(|i| &nodes[i])
    }

    /// Sweeps stale nodes every `sweep_interval` until the task is dropped.
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let s = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(s.config.sweep_interval);
            loop {
                tick.tick().await;
                // Schedulers sharing a store take turns; the lock lapses by
                // itself if its holder dies mid-sweep.
                let hold = s.config.sweep_interval.as_millis() as u64;
                let token = match s.store.try_lock("sweep", hold).await {
                    Ok(Some(t)) => t,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!("sweep lock failed: {e}");
                        continue;
                    }
                };
                let stale = s.config.stale_after.as_millis() as u64;
                match s.store.sweep(s.now_ms(), stale).await {
                    Ok(removed) => {
                        for id in removed {
                            s.health.forget(&id);
                            s.events.emit(
                                Level::Warning,
                                "node_removed",
                                Some(&id),
                                None,
                                format!(
                                    "removed: its lease lapsed {:?} ago or more",
                                    s.config.stale_after
                                ),
                            );
                        }
                    }
                    Err(e) => tracing::warn!("sweep failed: {e}"),
                }
                let _ = s.store.unlock("sweep", &token).await;
            }
        })
    }
}

impl crate::api::auth::ApiKey for Scheduler {
    fn api_key(&self) -> Option<&str> {
        self.config.api_key.as_deref()
    }
}

impl crate::api::extract::BodyLimit for Scheduler {
    fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes
    }
}

/// Decrements a node's forwarded count on drop.
pub struct ForwardGuard {
    map: Arc<Mutex<HashMap<String, u64>>>,
    id: String,
}

impl Drop for ForwardGuard {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.id) {
            *n = n.saturating_sub(1);
        }
    }
}
