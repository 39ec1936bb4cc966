//! The Redis store, for several schedulers sharing one state.
//!
//! Layout, every key under the hash tag `{strata}` (or the configured
//! prefix's tag) so all of them live in one cluster slot and one Lua
//! script may touch them together:
//!
//! - `{strata}:epoch`: the epoch counter (`INCR`, persisted with Redis);
//! - `{strata}:nodes`: the set of node ids;
//! - `{strata}:node:<id>`: a hash of the node's lease fields (`epoch`,
//!   `lease_id`, `expires`, `last_seen`, `registered`), its request
//!   figures (`requests`, `successes`, `latency`) and two JSON blobs the
//!   scripts never parse (`info`, `load`).
//!
//! Every read-modify-write (register, heartbeat, leave, sweep, recording a
//! result) is one Lua script applying the rules of [`super::lease`].
//! Connections go through a `ConnectionManager` (reconnects) with response
//! and connection timeouts; idempotent reads are retried a bounded number
//! of times, registration (which takes an epoch) never is. Times come from
//! the caller, on the clock all schedulers share: see [`RedisClock`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::clock::Clock;
use super::lease::{self, Heartbeat, LeaseError};
use super::node::{NodeInfo, NodeRecord, NodeStats, LATENCY_EWMA_ALPHA};
use super::store::{Store, StoreError};

/// Tries of an idempotent call before its error is returned.
pub const IDEMPOTENT_TRIES: usize = 3;
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

// Returns the new record's hash (field, value, ...).
const REGISTER: &str = r#"
local epoch = redis.call('INCR', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'epoch', epoch, 'lease_id', ARGV[2],
  'info', ARGV[3], 'load', ARGV[4], 'registered', ARGV[5], 'last_seen', ARGV[5],
  'expires', tonumber(ARGV[5]) + tonumber(ARGV[6]))
redis.call('HSETNX', KEYS[3], 'requests', 0)
redis.call('HSETNX', KEYS[3], 'successes', 0)
redis.call('HSETNX', KEYS[3], 'latency', '0')
return redis.call('HGETALL', KEYS[3])
"#;

// Shared by heartbeat and leave: 'ok' or why not.
const CHECK: &str = r#"
local function check(key, lease_id, epoch, now)
  local f = redis.call('HMGET', key, 'epoch', 'lease_id', 'expires')
  if not f[1] then return 'unknown' end
  if tonumber(f[1]) ~= tonumber(epoch) then return 'stale:' .. f[1] end
  if f[2] ~= lease_id then return 'wrong' end
  if tonumber(now) >= tonumber(f[3]) then return 'expired' end
  return 'ok'
end
"#;

// `{why}` when refused, else `{'ok', field, value, ...}`: the renewed
// record comes back in the same round trip.
const HEARTBEAT: &str = r#"
local r = check(KEYS[1], ARGV[1], ARGV[2], ARGV[4])
if r ~= 'ok' then return {r} end
redis.call('HSET', KEYS[1], 'load', ARGV[3], 'last_seen', ARGV[4],
  'expires', tonumber(ARGV[4]) + tonumber(ARGV[5]))
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'info', ARGV[6]) end
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, 'ok')
return all
"#;

const LEAVE: &str = r#"
local r = check(KEYS[2], ARGV[2], ARGV[3], ARGV[4])
if r ~= 'ok' then return r end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
return 'ok'
"#;

// KEYS[1]: the node set; node keys are derived from it (same slot).
const SWEEP: &str = r#"
local removed = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[3] .. id
  local f = redis.call('HMGET', key, 'expires', 'last_seen')
  local now = tonumber(ARGV[1])
  if not f[1] then
    redis.call('SREM', KEYS[1], id)
  elseif now >= tonumber(f[1]) and now - tonumber(f[2]) >= tonumber(ARGV[2]) then
    redis.call('DEL', key)
    redis.call('SREM', KEYS[1], id)
    table.insert(removed, id)
  end
end
return removed
"#;

const RECORD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'requests', 1)
if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'successes', 1) end
local l = tonumber(ARGV[2])
if n > 1 then
  local a = tonumber(ARGV[3])
  l = a * l + (1 - a) * tonumber(redis.call('HGET', KEYS[1], 'latency'))
end
redis.call('HSET', KEYS[1], 'latency', string.format('%.17g', l))
return n
"#;

// Deletes the lock only for the holder of its token.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    register: Script,
    heartbeat: Script,
    leave: Script,
    sweep: Script,
    record: Script,
    unlock: Script,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`); keys start with
    /// `{namespace}:`.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| backend(format!("{url}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| backend(format!("{url}: {e}")))?;
        Ok(Self {
            conn,
            prefix: format!("{{{namespace}}}:"),
            register: Script::new(REGISTER),
            heartbeat: Script::new(&format!("{CHECK}{HEARTBEAT}")),
            leave: Script::new(&format!("{CHECK}{LEAVE}")),
            sweep: Script::new(SWEEP),
            record: Script::new(RECORD),
            unlock: Script::new(UNLOCK),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}node:{id}", self.prefix)
    }

    /// Retries an idempotent call on connection-level errors.
    async fn idempotent<T, F, Fut>(&self, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut last = None;
        for _ in 0..IDEMPOTENT_TRIES {
            match f(self.conn.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                    last = Some(e)
                }
                Err(e) => return Err(backend(e)),
            }
        }
        Err(backend(last.expect("at least one try")))
    }

    fn record_from(&self, h: HashMap<String, String>) -> Result<NodeRecord, StoreError> {
        let get = |k: &str| {
            h.get(k)
                .cloned()
                .ok_or_else(|| backend(format!("node hash lacks `{k}`")))
        };
        let num = |k: &str| -> Result<u64, StoreError> {
            get(k)?.parse::<f64>().map(|v| v as u64).map_err(backend)
        };
        Ok(NodeRecord {
            id: get("id")?,
            lease_id: get("lease_id")?,
            epoch: num("epoch")?,
            info: serde_json::from_str(&get("info")?).map_err(backend)?,
            load: serde_json::from_str(&get("load")?).map_err(backend)?,
            stats: NodeStats {
                requests: num("requests")?,
                successes: num("successes")?,
                latency_ms: get("latency")?.parse().map_err(backend)?,
                gateway_in_flight: 0,
            },
            registered_ms: num("registered")?,
            lease_expires_ms: num("expires")?,
            last_seen_ms: num("last_seen")?,
        })
    }
}

/// A flat `HGETALL` reply as a map.
fn pairs(flat: &[String]) -> HashMap<String, String> {
    flat.chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

/// A lease script's answer as the protocol's error.
fn lease_answer(answer: &str, id: &str, hb_lease: &str, hb_epoch: u64) -> Result<(), StoreError> {
    let node = id.to_string();
    Err(StoreError::Lease(match answer {
        "ok" => return Ok(()),
        "unknown" => LeaseError::UnknownNode(node),
        "expired" => LeaseError::Expired(node),
        "wrong" => LeaseError::WrongLease {
            node,
            given: hb_lease.to_string(),
        },
        s => match s.strip_prefix("stale:").and_then(|c| c.parse::<f64>().ok()) {
            Some(current) => LeaseError::StaleEpoch {
                node,
                given: hb_epoch,
                current: current as u64,
            },
            None => return Err(backend(format!("unexpected script answer `{s}`"))),
        },
    }))
}

#[async_trait]
impl Store for RedisStore {
    async fn register(
        &self,
        id: Option<String>,
        info: NodeInfo,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        let id = id.unwrap_or_else(|| lease::new_id("n"));
        let fresh = lease::register(id.clone(), None, 0, info, now_ms, ttl_ms);
        let mut conn = self.conn.clone();
        let fields: Vec<String> = self
            .register
            .key(self.key("epoch"))
            .key(self.key("nodes"))
            .key(self.node_key(&id))
            .arg(&id)
            .arg(&fresh.lease_id)
            .arg(serde_json::to_string(&fresh.info).map_err(backend)?)
            .arg(serde_json::to_string(&fresh.load).map_err(backend)?)
            .arg(now_ms)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        self.record_from(pairs(&fields))
    }

    async fn heartbeat(
        &self,
        id: &str,
        hb: Heartbeat,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        let load = serde_json::to_string(&hb.load).map_err(backend)?;
        let info = match &hb.info {
            Some(i) => serde_json::to_string(i).map_err(backend)?,
            None => String::new(),
        };
        let key = self.node_key(id);
        let reply: Vec<String> = self
            .idempotent(|mut c| {
                let mut inv = self.heartbeat.prepare_invoke();
                inv.key(&key)
                    .arg(&hb.lease_id)
                    .arg(hb.epoch)
                    .arg(&load)
                    .arg(now_ms)
                    .arg(ttl_ms)
                    .arg(&info);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let (answer, fields) = reply
            .split_first()
            .ok_or_else(|| backend("an empty heartbeat reply"))?;
        lease_answer(answer, id, &hb.lease_id, hb.epoch)?;
        self.record_from(pairs(fields))
    }

    async fn leave(
        &self,
        id: &str,
        lease_id: &str,
        epoch: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let answer: String = self
            .leave
            .key(self.key("nodes"))
            .key(self.node_key(id))
            .arg(id)
            .arg(lease_id)
            .arg(epoch)
            .arg(now_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        lease_answer(&answer, id, lease_id, epoch)
    }

    async fn get(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let key = self.node_key(id);
        let h: HashMap<String, String> = self
            .idempotent(|mut c| {
                let key = key.clone();
                async move { c.hgetall(key).await }
            })
            .await?;
        if h.is_empty() {
            return Ok(None);
        }
        self.record_from(h).map(Some)
    }

    async fn list(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let set = self.key("nodes");
        let ids: Vec<String> = self
            .idempotent(|mut c| {
                let set = set.clone();
                async move { c.smembers(set).await }
            })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
        let hashes: Vec<HashMap<String, String>> = self
            .idempotent(|mut c| {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.hgetall(k);
                }
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let mut out: Vec<NodeRecord> = hashes
            .into_iter()
            .filter(|h| !h.is_empty())
            .map(|h| self.record_from(h))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn sweep(&self, now_ms: u64, stale_ms: u64) -> Result<Vec<String>, StoreError> {
        let set = self.key("nodes");
        let node_prefix = self.node_key("");
        self.idempotent(|mut c| {
            let mut inv = self.sweep.prepare_invoke();
            inv.key(&set).arg(now_ms).arg(stale_ms).arg(&node_prefix);
            async move { inv.invoke_async(&mut c).await }
        })
        .await
    }

    async fn record_result(
        &self,
        id: &str,
        success: bool,
        latency_ms: f64,
    ) -> Result<(), StoreError> {
        // Not retried: a retry after a lost reply would count twice.
        let mut conn = self.conn.clone();
        let _: u64 = self
            .record
            .key(self.node_key(id))
            .arg(if success { "1" } else { "0" })
            .arg(format!("{latency_ms:.17}"))
            .arg(LATENCY_EWMA_ALPHA)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<Option<String>, StoreError> {
        let token = lease::new_id("t");
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(&format!("lock:{name}")))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(set.map(|_| token))
    }

    async fn unlock(&self, name: &str, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let n: u64 = self
            .unlock
            .key(self.key(&format!("lock:{name}")))
            .arg(token)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn current_epoch(&self) -> Result<u64, StoreError> {
        let key = self.key("epoch");
        let v: Option<u64> = self
            .idempotent(|mut c| {
                let key = key.clone();
                async move { c.get(key).await }
            })
            .await?;
        Ok(v.unwrap_or(0))
    }
}

/// The clock schedulers sharing a Redis agree on: this process's monotonic
/// clock, shifted to Redis's `TIME` (milliseconds) when created. Leases
/// stay timed by a monotonic clock (no jumps when the host's wall clock is
/// set), and two schedulers differ by no more than their round trips to
/// Redis at start.
pub struct RedisClock {
    start: Instant,
    offset_ms: AtomicI64,
}

impl RedisClock {
    pub async fn sync(url: &str) -> Result<Arc<Self>, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(backend)?;
        let before = Instant::now();
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let rtt_half = before.elapsed() / 2;
        let redis_ms = secs * 1000 + micros / 1000;
        let start = Instant::now();
        let offset = redis_ms as i64 + rtt_half.as_millis() as i64;
        Ok(Arc::new(Self {
            start,
            offset_ms: AtomicI64::new(offset),
        }))
    }
}

impl Clock for RedisClock {
    fn now_ms(&self) -> u64 {
        (self.start.elapsed().as_millis() as i64 + self.offset_ms.load(Ordering::Acquire)).max(0)
            as u64
    }
}
