//! The scheduler's watch over its fleet, one round per health interval:
//! every node with a live lease is asked for `/health` (concurrently, each
//! within the health timeout) and the [`HealthMonitor`] updated; nodes
//! whose lease lapsed since the last round, and engine restarts workers
//! report in their heartbeats, become events; and a model that no longer
//! has a healthy worker with a live lease raises a CRITICAL event (an INFO
//! one when it has one again).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use super::events::Level;
use super::health::HealthState;
use super::node::NodeRecord;
use super::service::Scheduler;

/// What the last round saw, to tell changes.
#[derive(Default)]
pub struct WatchState {
    live: HashSet<String>,
    unserved: BTreeSet<String>,
    /// Engine restarts each node reported, by node.
    restarts: HashMap<String, u64>,
}

impl Scheduler {
    /// Runs a round every `health_interval` until the task is dropped.
    pub fn spawn_health_checks(&self) -> tokio::task::JoinHandle<()> {
        let s = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(s.config.health_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                s.check_all().await;
            }
        })
    }

    /// One round: check every live node, then note what changed.
    pub async fn check_all(&self) {
        let nodes = match self.store.list().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("health round skipped: {e}");
                return;
            }
        };
        let now = self.now_ms();
        let live: Vec<&NodeRecord> = nodes.iter().filter(|r| r.lease_live(now)).collect();
        let checks = live.iter().map(|r| self.check(r));
        let results = futures_util::future::join_all(checks).await;
        for (r, result) in live.iter().zip(results) {
            self.health.observe(&r.id, result, &self.events);
        }
        self.note_changes(&nodes, now);
    }

    async fn check(&self, r: &NodeRecord) -> Result<(), String> {
        let url = format!("{}/health", r.info.endpoint.trim_end_matches('/'));
        let timeout = self.config.health_timeout;
        match self.client.get(&url).timeout(timeout).send().await {
            Ok(res) if res.status().is_success() => Ok(()),
            Ok(res) => Err(format!("/health answered {}", res.status())),
            Err(e) if e.is_timeout() => Err(format!("/health did not answer within {timeout:?}")),
            Err(e) => Err(format!("/health unreachable: {e}")),
        }
    }

    fn note_changes(&self, nodes: &[NodeRecord], now: u64) {
        let mut w = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        let live: HashSet<String> = nodes
            .iter()
            .filter(|r| r.lease_live(now))
            .map(|r| r.id.clone())
            .collect();
        for id in w.live.difference(&live) {
            if nodes.iter().any(|r| &r.id == id) {
                self.events.emit(
                    Level::Warning,
                    "lease_lapsed",
                    Some(id),
                    None,
                    "no heartbeat renewed the lease within its TTL; no new work".into(),
                );
            }
        }
        w.live = live;
        for r in nodes {
            let seen = w
                .restarts
                .entry(r.id.clone())
                .or_insert(r.load.engine_restarts);
            if r.load.engine_restarts > *seen {
                self.events.emit(
                    Level::Info,
                    "engine_restart",
                    Some(&r.id),
                    None,
                    format!(
                        "the worker restarted its engine ({} restarts so far, next backoff {} ms): {}",
                        r.load.engine_restarts,
                        r.load.restart_backoff_ms,
                        r.load.last_restart.as_deref().unwrap_or("no reason given")
                    ),
                );
                *seen = r.load.engine_restarts;
            }
        }
        let unserved = self.unserved_models(nodes, now);
        for model in unserved.difference(&w.unserved) {
            self.events.emit(
                Level::Critical,
                "model_unserved",
                None,
                Some(model),
                format!("no healthy worker with a live lease serves `{model}`"),
            );
        }
        for model in w.unserved.difference(&unserved) {
            self.events.emit(
                Level::Info,
                "model_served",
                None,
                Some(model),
                format!("`{model}` has a healthy worker again"),
            );
        }
        w.unserved = unserved;
    }

    /// Models some registered node serves that no healthy, live node does.
    fn unserved_models(&self, nodes: &[NodeRecord], now: u64) -> BTreeSet<String> {
        let serves = |r: &NodeRecord| {
            r.lease_live(now)
                && r.load.healthy
                && self.health.state(&r.id) != HealthState::Unhealthy
        };
        let all: BTreeSet<&String> = nodes.iter().flat_map(|r| &r.info.models).collect();
        all.into_iter()
            .filter(|m| !nodes.iter().any(|r| serves(r) && r.info.models.contains(m)))
            .cloned()
            .collect()
    }
}

/// A fresh watch state for a new scheduler.
pub fn new_watch() -> std::sync::Arc<Mutex<WatchState>> {
    std::sync::Arc::default()
}
