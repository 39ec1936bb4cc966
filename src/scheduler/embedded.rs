//! The embedded durable store (the default): redb, a pure-Rust embedded
//! key-value store with ACID write transactions, chosen over SQLite for no
//! C toolchain, one file, and typed tables that fit a registry of JSON
//! records and one counter.
//!
//! Every operation is one write transaction, so read-modify-write is
//! atomic. Registration (which advances the epoch counter) commits with
//! full durability: epochs never go backwards across a restart. Heartbeats
//! and request figures commit without fsync: they are soft state that the
//! next heartbeat rewrites. Lease times are on the scheduler's monotonic
//! clock, which restarts with the process, so on open every stored lease is
//! voided: a worker's next heartbeat gets 410 and it registers again with a
//! new, higher epoch.

use std::path::Path;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::lease::{self, Heartbeat};
use super::node::{NodeInfo, NodeRecord};
use super::store::{Store, StoreError};

const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EPOCH_KEY: &str = "epoch";

pub struct EmbeddedStore {
    db: Database,
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

impl EmbeddedStore {
    /// Opens (or creates) the store at `path` and voids every lease in it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(backend)?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let store = Self { db };
        store.write(Durability::Immediate, |nodes, _| {
            let records: Vec<NodeRecord> = nodes
                .iter()
                .map_err(backend)?
                .map(|e| e.map_err(backend).and_then(|(_, v)| decode(v.value())))
                .collect::<Result<_, _>>()?;
            for mut r in records {
                r.lease_expires_ms = 0;
                r.last_seen_ms = 0;
                nodes
                    .insert(r.id.as_str(), encode(&r)?.as_slice())
                    .map_err(backend)?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `f` in one write transaction over both tables.
    fn write<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(
            &mut redb::Table<&str, &[u8]>,
            &mut redb::Table<&str, u64>,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(durability).map_err(backend)?;
        let out = {
            let mut nodes = txn.open_table(NODES).map_err(backend)?;
            let mut meta = txn.open_table(META).map_err(backend)?;
            f(&mut nodes, &mut meta)?
        };
        txn.commit().map_err(backend)?;
        Ok(out)
    }

    fn get_record(
        nodes: &redb::Table<&str, &[u8]>,
        id: &str,
    ) -> Result<Option<NodeRecord>, StoreError> {
        match nodes.get(id).map_err(backend)? {
            Some(v) => decode(v.value()).map(Some),
            None => Ok(None),
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
        self.write(Durability::Immediate, |nodes, meta| {
            let epoch = meta
                .get(EPOCH_KEY)
                .map_err(backend)?
                .map_or(0, |v| v.value())
                + 1;
            meta.insert(EPOCH_KEY, epoch).map_err(backend)?;
            let id = id.unwrap_or_else(|| lease::new_id("n"));
            let previous = Self::get_record(nodes, &id)?;
            let record = lease::register(id, previous.as_ref(), epoch, info, now_ms, ttl_ms);
            nodes
                .insert(record.id.as_str(), encode(&record)?.as_slice())
                .map_err(backend)?;
            Ok(record)
        })
    }

    async fn heartbeat(
        &self,
        id: &str,
        hb: Heartbeat,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        self.write(Durability::None, |nodes, _| {
            let current = Self::get_record(nodes, id)?;
            lease::check(current.as_ref(), id, &hb.lease_id, hb.epoch, now_ms)?;
            let mut record = current.expect("checked");
            lease::renew(&mut record, hb, now_ms, ttl_ms);
            nodes
                .insert(id, encode(&record)?.as_slice())
                .map_err(backend)?;
            Ok(record)
        })
    }

    async fn leave(
        &self,
        id: &str,
        lease_id: &str,
        epoch: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(Durability::Immediate, |nodes, _| {
            let current = Self::get_record(nodes, id)?;
            lease::check(current.as_ref(), id, lease_id, epoch, now_ms)?;
            nodes.remove(id).map_err(backend)?;
            Ok(())
        })
    }

    async fn get(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let nodes = match txn.open_table(NODES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        match nodes.get(id).map_err(backend)? {
            Some(v) => decode(v.value()).map(Some),
            None => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let nodes = match txn.open_table(NODES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(backend(e)),
        };
        let out = nodes
            .iter()
            .map_err(backend)?
            .map(|e| e.map_err(backend).and_then(|(_, v)| decode(v.value())))
            .collect();
        out
    }

    async fn sweep(&self, now_ms: u64, stale_ms: u64) -> Result<Vec<String>, StoreError> {
        self.write(Durability::None, |nodes, _| {
            let mut stale = Vec::new();
            for entry in nodes.iter().map_err(backend)? {
                let (_, v) = entry.map_err(backend)?;
                let r = decode(v.value())?;
                if lease::is_stale(&r, now_ms, stale_ms) {
                    stale.push(r.id);
                }
            }
            for id in &stale {
                nodes.remove(id.as_str()).map_err(backend)?;
            }
            Ok(stale)
        })
    }

    async fn record_result(
        &self,
        id: &str,
        success: bool,
        latency_ms: f64,
    ) -> Result<(), StoreError> {
        self.write(Durability::None, |nodes, _| {
            if let Some(mut r) = Self::get_record(nodes, id)? {
                r.stats.record(success, latency_ms);
                nodes.insert(id, encode(&r)?.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
    }

    async fn current_epoch(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        match txn.open_table(META) {
            Ok(t) => Ok(t.get(EPOCH_KEY).map_err(backend)?.map_or(0, |v| v.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(backend(e)),
        }
    }
}
