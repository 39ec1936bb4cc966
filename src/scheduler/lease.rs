//! The lease rules, as pure functions over node records, so every store
//! applies the same protocol (DESIGN.md, "The lease protocol"):
//!
//! - registering takes a fresh epoch from the one counter that only
//!   increases, and a fresh lease; a worker that re-registers under its old
//!   id keeps the id but gets the new epoch, which fences its old work;
//! - a heartbeat renews the lease only if the node is known (else 410),
//!   stamped with the node's current epoch (else 409), carries the current
//!   lease id and the lease has not expired (else 410);
//! - leases are timed with the scheduler's clock only.

use serde::Serialize;

use super::node::{LoadReport, NodeInfo, NodeRecord};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum LeaseError {
    #[error("node `{0}` is not registered")]
    UnknownNode(String),
    #[error("the lease of node `{0}` has expired; register again")]
    Expired(String),
    #[error("lease `{given}` is not the current lease of node `{node}`")]
    WrongLease { node: String, given: String },
    #[error("epoch {given} is stale: node `{node}` now holds epoch {current}")]
    StaleEpoch {
        node: String,
        given: u64,
        current: u64,
    },
}

impl LeaseError {
    /// The HTTP status the protocol gives it: 409 for a stale epoch, 410
    /// for anything that means "you hold no lease".
    pub fn status(&self) -> u16 {
        match self {
            LeaseError::StaleEpoch { .. } => 409,
            _ => 410,
        }
    }
}

/// A new random id (`n-` / `l-` prefixed hex).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// The record for a registration with `epoch` (already taken from the
/// counter). Request figures survive a re-registration under the same id.
pub fn register(
    id: String,
    previous: Option<&NodeRecord>,
    epoch: u64,
    info: NodeInfo,
    now_ms: u64,
    ttl_ms: u64,
) -> NodeRecord {
    NodeRecord {
        id,
        lease_id: new_id("l"),
        epoch,
        info,
        // A worker registers once its engine runs: healthy until a
        // heartbeat says otherwise; its slots are unknown until then.
        load: LoadReport {
            healthy: true,
            ..LoadReport::default()
        },
        stats: previous.map(|p| p.stats.clone()).unwrap_or_default(),
        registered_ms: now_ms,
        lease_expires_ms: now_ms.saturating_add(ttl_ms),
        last_seen_ms: now_ms,
    }
}

/// Checks that `record` is held by (`lease_id`, `epoch`) and live.
pub fn check(
    record: Option<&NodeRecord>,
    id: &str,
    lease_id: &str,
    epoch: u64,
    now_ms: u64,
) -> Result<(), LeaseError> {
    let r = record.ok_or_else(|| LeaseError::UnknownNode(id.to_string()))?;
    if r.epoch != epoch {
        return Err(LeaseError::StaleEpoch {
            node: id.to_string(),
            given: epoch,
            current: r.epoch,
        });
    }
    if r.lease_id != lease_id {
        return Err(LeaseError::WrongLease {
            node: id.to_string(),
            given: lease_id.to_string(),
        });
    }
    if !r.lease_live(now_ms) {
        return Err(LeaseError::Expired(id.to_string()));
    }
    Ok(())
}

/// What a heartbeat carries besides its credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Heartbeat {
    pub lease_id: String,
    pub epoch: u64,
    #[serde(default)]
    pub load: LoadReport,
    /// Updated models / devices, when they changed.
    pub info: Option<NodeInfo>,
}

/// Renews `record` after `check` passed.
pub fn renew(record: &mut NodeRecord, hb: Heartbeat, now_ms: u64, ttl_ms: u64) {
    record.load = hb.load;
    if let Some(info) = hb.info {
        record.info = info;
    }
    record.lease_expires_ms = now_ms.saturating_add(ttl_ms);
    record.last_seen_ms = now_ms;
}

/// Whether a node not seen for `stale_ms` should be removed.
pub fn is_stale(record: &NodeRecord, now_ms: u64, stale_ms: u64) -> bool {
    !record.lease_live(now_ms) && now_ms.saturating_sub(record.last_seen_ms) >= stale_ms
}
