//! Scheduler state behind one trait: the node registry, leases and the
//! epoch counter. [`MemoryStore`] keeps it in a mutex (tests, and the
//! embedded scheduler of `strata serve` when no state file is wanted);
//! the embedded durable store and the Redis store live in their own files.
//! Every read-modify-write is atomic in each store (a lock, a write
//! transaction, a Lua script), and all apply the rules of [`super::lease`].

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lease::{self, Heartbeat, LeaseError};
use super::node::{NodeInfo, NodeRecord};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("store: {0}")]
    Backend(String),
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Registers a node (a new id, or `id` again after a lost lease) with
    /// a fresh epoch and lease.
    async fn register(
        &self,
        id: Option<String>,
        info: NodeInfo,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<NodeRecord, StoreError>;

    async fn heartbeat(
        &self,
        id: &str,
        hb: Heartbeat,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<NodeRecord, StoreError>;

    /// A clean leave: removes the node if (`lease_id`, `epoch`) hold it.
    async fn leave(
        &self,
        id: &str,
        lease_id: &str,
        epoch: u64,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    async fn get(&self, id: &str) -> Result<Option<NodeRecord>, StoreError>;

    async fn list(&self) -> Result<Vec<NodeRecord>, StoreError>;

    /// Removes nodes whose lease lapsed `stale_ms` ago or more; returns
    /// their ids.
    async fn sweep(&self, now_ms: u64, stale_ms: u64) -> Result<Vec<String>, StoreError>;

    /// Adds one forwarded request's outcome to the node's figures.
    async fn record_result(
        &self,
        id: &str,
        success: bool,
        latency_ms: f64,
    ) -> Result<(), StoreError>;

    /// The last epoch handed out (0 before the first).
    async fn current_epoch(&self) -> Result<u64, StoreError>;

    /// Takes the lock `name` for `ttl_ms` if nobody holds it; the token
    /// releases it. Stores of one process have no one to share with.
    async fn try_lock(&self, _name: &str, _ttl_ms: u64) -> Result<Option<String>, StoreError> {
        Ok(Some(lease::new_id("t")))
    }

    /// Releases `name` if `token` still holds it; `false` otherwise.
    async fn unlock(&self, _name: &str, _token: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
}

#[derive(Default)]
struct MemoryState {
    epoch: u64,
    nodes: HashMap<String, NodeRecord>,
}

/// All state in one mutex; lost on exit.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A store holding `records`, its epoch counter at `epoch` (a durable
    /// store's state, loaded on open).
    pub(crate) fn restored(records: Vec<NodeRecord>, epoch: u64) -> Self {
        let nodes = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        Self {
            state: Mutex::new(MemoryState { epoch, nodes }),
        }
    }

    /// Puts `record` in place, registered under an epoch a durable counter
    /// handed out.
    pub(crate) fn put_registered(&self, record: NodeRecord) {
        let mut s = self.lock();
        s.epoch = s.epoch.max(record.epoch);
        s.nodes.insert(record.id.clone(), record);
    }

    pub(crate) fn get_now(&self, id: &str) -> Option<NodeRecord> {
        self.lock().nodes.get(id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<NodeRecord> {
        let mut v: Vec<NodeRecord> = self.lock().nodes.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn register(
        &self,
        id: Option<String>,
        info: NodeInfo,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        let mut s = self.lock();
        s.epoch += 1;
        let id = id.unwrap_or_else(|| lease::new_id("n"));
        let record = lease::register(id.clone(), s.nodes.get(&id), s.epoch, info, now_ms, ttl_ms);
        s.nodes.insert(id, record.clone());
        Ok(record)
    }

    async fn heartbeat(
        &self,
        id: &str,
        hb: Heartbeat,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        let mut s = self.lock();
        lease::check(s.nodes.get(id), id, &hb.lease_id, hb.epoch, now_ms)?;
        let record = s.nodes.get_mut(id).expect("checked");
        lease::renew(record, hb, now_ms, ttl_ms);
        Ok(record.clone())
    }

    async fn leave(
        &self,
        id: &str,
        lease_id: &str,
        epoch: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        lease::check(s.nodes.get(id), id, lease_id, epoch, now_ms)?;
        s.nodes.remove(id);
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        Ok(self.get_now(id))
    }

    async fn list(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Ok(self.all())
    }

    async fn sweep(&self, now_ms: u64, stale_ms: u64) -> Result<Vec<String>, StoreError> {
        let mut s = self.lock();
        let stale: Vec<String> = s
            .nodes
            .values()
            .filter(|r| lease::is_stale(r, now_ms, stale_ms))
            .map(|r| r.id.clone())
            .collect();
        for id in &stale {
            s.nodes.remove(id);
        }
        Ok(stale)
    }

    async fn record_result(
        &self,
        id: &str,
        success: bool,
        latency_ms: f64,
    ) -> Result<(), StoreError> {
        if let Some(r) = self.lock().nodes.get_mut(id) {
            r.stats.record(success, latency_ms);
        }
        Ok(())
    }

    async fn current_epoch(&self) -> Result<u64, StoreError> {
        Ok(self.lock().epoch)
    }
}
