//! Alerts: what changed in the fleet, at four levels (INFO, WARNING,
//! ERROR, CRITICAL), kept in a bounded ring, logged through `tracing`,
//! served at `/v1/events` (JSON, or a live SSE stream) and, when a webhook
//! is set, POSTed to it as JSON with retries.
//!
//! Levels: a node degraded (one failed health check) is WARNING, unhealthy
//! (three in a row) ERROR, recovered or restarting its engine INFO, and a
//! model left with no healthy worker CRITICAL.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Info,
    Warning,
    Error,
    Critical,
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "INFO" => Ok(Level::Info),
            "WARNING" | "WARN" => Ok(Level::Warning),
            "ERROR" => Ok(Level::Error),
            "CRITICAL" => Ok(Level::Critical),
            _ => Err(format!(
                "must be INFO, WARNING, ERROR or CRITICAL, got `{s}`"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increases by one per event of this scheduler.
    pub id: u64,
    /// Unix time, milliseconds.
    pub at_ms: u64,
    pub level: Level,
    /// What happened: `node_degraded`, `node_unhealthy`, `node_recovered`,
    /// `model_unserved`, `engine_restart`, `node_registered`, ...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub message: String,
}

/// Events kept for `/v1/events` by default.
pub const DEFAULT_CAPACITY: usize = 1000;
/// Deliveries tried per event before the webhook gives it up.
pub const WEBHOOK_ATTEMPTS: u32 = 4;

pub struct Events {
    ring: Mutex<VecDeque<Event>>,
    capacity: usize,
    next: AtomicU64,
    live: broadcast::Sender<Event>,
    webhook: Option<mpsc::Sender<Event>>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Events {
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            next: AtomicU64::new(1),
            live: broadcast::channel(256).0,
            webhook: None,
        }
    }

    /// Also POSTs every event to `url` (from a task of the current
    /// runtime), retrying with backoff; a full queue drops the event with
    /// a warning in the log.
    pub fn with_webhook(mut self, url: String) -> Self {
        let (tx, mut rx) = mpsc::channel::<Event>(1024);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                deliver(&client, &url, &event).await;
            }
        });
        self.webhook = Some(tx);
        self
    }

    /// Records an event: the ring, the log, live subscribers, the webhook.
    pub fn emit(
        &self,
        level: Level,
        kind: &str,
        node: Option<&str>,
        model: Option<&str>,
        message: String,
    ) -> Event {
        let event = Event {
            id: self.next.fetch_add(1, Ordering::AcqRel),
            at_ms: unix_ms(),
            level,
            kind: kind.to_string(),
            node: node.map(str::to_string),
            model: model.map(str::to_string),
            message,
        };
        let node = event.node.as_deref().unwrap_or("-");
        match level {
            Level::Info => tracing::info!(kind, node, "{}", event.message),
            Level::Warning => tracing::warn!(kind, node, "{}", event.message),
            Level::Error | Level::Critical => {
                tracing::error!(kind, node, level = ?level, "{}", event.message)
            }
        }
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(event.clone());
        }
        let _ = self.live.send(event.clone());
        if let Some(hook) = &self.webhook {
            if hook.try_send(event.clone()).is_err() {
                tracing::warn!("the webhook queue is full; event {} not sent", event.id);
            }
        }
        event
    }

    /// Events after `after` at `min` level or above, oldest first.
    pub fn since(&self, after: u64, min: Level) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .filter(|e| e.id > after && e.level >= min)
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

async fn deliver(client: &reqwest::Client, url: &str, event: &Event) {
    for attempt in 0..WEBHOOK_ATTEMPTS {
        match client.post(url).json(event).send().await {
            Ok(res) if res.status().is_success() => return,
            Ok(res) => tracing::warn!(
                "webhook {url} answered {} for event {}",
                res.status(),
                event.id
            ),
            Err(e) => tracing::warn!("webhook {url} failed for event {}: {e}", event.id),
        }
        if attempt + 1 < WEBHOOK_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
    }
    tracing::warn!(
        "webhook {url}: event {} given up after {WEBHOOK_ATTEMPTS} attempts",
        event.id
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_and_filters_by_level() {
        let e = Events::new(3);
        for i in 0..5 {
            let level = if i % 2 == 0 {
                Level::Info
            } else {
                Level::Error
            };
            e.emit(level, "k", Some("n"), None, format!("{i}"));
        }
        let all = e.since(0, Level::Info);
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4, 5]);
        let errors = e.since(0, Level::Error);
        assert_eq!(errors.iter().map(|e| e.id).collect::<Vec<_>>(), [4]);
        assert_eq!(e.since(4, Level::Info).len(), 1);
        assert_eq!("warn".parse::<Level>(), Ok(Level::Warning));
        assert!("loud".parse::<Level>().unwrap_err().contains("`loud`"));
    }
}
