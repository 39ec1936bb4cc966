//! The embedded durable store (the default): redb, a pure-Rust embedded
//! key-value store with ACID write transactions, chosen over SQLite for no
//! C toolchain, one file, and typed tables that fit a registry of JSON
//! records and one counter.
//!
//! What must survive a restart is the epoch counter (epochs never go
//! backwards) and who is registered; that goes to the file, with fsync, on
//! every registration, leave and sweep. Leases are timed on the
//! scheduler's monotonic clock, which restarts with the process, so a
//! stored lease would be void after a restart anyway: heartbeats (lease,
//! load, devices) and request figures live only in a [`MemoryStore`] in
//! front of the file, which makes a heartbeat a hash-map update instead of
//! a write transaction. The figures reach the file with the next
//! registration of the node and when the store is dropped. On open every
//! lease is void: a worker's next heartbeat gets 410 and it registers again
//! with a new, higher epoch.
//!
//! Writes to the file are serialized by one lock, held across the
//! transaction and the update of the memory in front, so the two agree on
//! the order of registrations.

use std::path::Path;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::lease::{self, Heartbeat};
use super::node::{NodeInfo, NodeRecord};
use super::store::{MemoryStore, Store, StoreError};

const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EPOCH_KEY: &str = "epoch";

pub struct EmbeddedStore {
    db: Database,
    /// Every record with its live lease, load and figures.
    live: MemoryStore,
    /// Held across each write to the file and the matching memory update.
    writes: tokio::sync::Mutex<()>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<NodeRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(backend)
}

fn encode(r: &NodeRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(r).map_err(backend)
}

type Tables<'t> = (
    redb::Table<'t, &'static str, &'static [u8]>,
    redb::Table<'t, &'static str, u64>,
);

impl EmbeddedStore {
    /// Opens (or creates) the store at `path`; every lease in it is void.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(backend)?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let (records, epoch) = Self::write_to(&db, |(nodes, meta)| {
            let epoch = meta
                .get(EPOCH_KEY)
                .map_err(backend)?
                .map_or(0, |v| v.value());
            let records = nodes
                .iter()
                .map_err(backend)?
                .map(|e| e.map_err(backend).and_then(|(_, v)| decode(v.value())))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((records, epoch))
        })?;
        let records = records
            .into_iter()
            .map(|mut r| {
                r.lease_expires_ms = 0;
                r.last_seen_ms = 0;
                r
            })
            .collect();
        Ok(Self {
            db,
            live: MemoryStore::restored(records, epoch),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Runs `f` in one write transaction over both tables, committed with
    /// fsync.
    fn write_to<T>(
        db: &Database,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        let out = {
            let mut tables = (
                txn.open_table(NODES).map_err(backend)?,
                txn.open_table(META).map_err(backend)?,
            );
            f(&mut tables)?
        };
        txn.commit().map_err(backend)?;
        Ok(out)
    }

    /// Writes every record as it stands in memory (figures included).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _w = self.writes.lock().await;
        self.write_all()
    }

    fn write_all(&self) -> Result<(), StoreError> {
        let records = self.live.all();
        Self::write_to(&self.db, |(nodes, _)| {
            for r in &records {
                nodes
                    .insert(r.id.as_str(), encode(r)?.as_slice())
                    .map_err(backend)?;
            }
            Ok(())
        })
    }

    fn remove_from_file(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        Self::write_to(&self.db, |(nodes, _)| {
            for id in ids {
                nodes.remove(id.as_str()).map_err(backend)?;
            }
            Ok(())
        })
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // `&mut self`: no write can be under way.
        if let Err(e) = self.write_all() {
            tracing::warn!("saving node figures on close failed: {e}");
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn register(
        &self,
        id: Option<String>,
        info: NodeInfo,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        let _w = self.writes.lock().await;
        let id = id.unwrap_or_else(|| lease::new_id("n"));
        let previous = self.live.get_now(&id);
        let record = Self::write_to(&self.db, |(nodes, meta)| {
            let epoch = meta
                .get(EPOCH_KEY)
                .map_err(backend)?
                .map_or(0, |v| v.value())
                + 1;
            meta.insert(EPOCH_KEY, epoch).map_err(backend)?;
            let record = lease::register(id, previous.as_ref(), epoch, info, now_ms, ttl_ms);
            nodes
                .insert(record.id.as_str(), encode(&record)?.as_slice())
                .map_err(backend)?;
            Ok(record)
        })?;
        self.live.put_registered(record.clone());
        Ok(record)
    }

    async fn heartbeat(
        &self,
        id: &str,
        hb: Heartbeat,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        self.live.heartbeat(id, hb, now_ms, ttl_ms).await
    }

    async fn leave(
        &self,
        id: &str,
        lease_id: &str,
        epoch: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let _w = self.writes.lock().await;
        self.live.leave(id, lease_id, epoch, now_ms).await?;
        self.remove_from_file(&[id.to_string()])
    }

    async fn get(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.live.get(id).await
    }

    async fn list(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.live.list().await
    }

    async fn sweep(&self, now_ms: u64, stale_ms: u64) -> Result<Vec<String>, StoreError> {
        let _w = self.writes.lock().await;
        let stale = self.live.sweep(now_ms, stale_ms).await?;
        self.remove_from_file(&stale)?;
        Ok(stale)
    }

    async fn record_result(
        &self,
        id: &str,
        success: bool,
        latency_ms: f64,
    ) -> Result<(), StoreError> {
        self.live.record_result(id, success, latency_ms).await
    }

    async fn current_epoch(&self) -> Result<u64, StoreError> {
        self.live.current_epoch().await
    }
}
