//! The models a worker serves, loaded and unloaded by demand within the
//! devices' budgets.
//!
//! Every model has a slot: unloaded, loading, or loaded with its engine.
//! A request takes a [`ModelLease`] on its model (counted as in flight
//! until dropped). A model that is not loaded is planned against what the
//! loaded ones leave free on each device; if the planner says it fits, its
//! bytes are reserved and it loads (one task, whoever waits shares it). If
//! not, idle loaded models (no request in flight) of the same or lower
//! priority are unloaded one at a time, lowest priority and least recently
//! used first, until it fits. A model the planner says cannot fit even on
//! empty devices never loads, and an in-flight request is never cut to
//! make room: the request gets an error that says why. A model idle for
//! the keep-alive time is unloaded by the keeper task. A pool of one model
//! keeps it loaded for good.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use super::{load, plan_for, EngineError, EngineHandle, LoadOptions, LoadedModel};
use crate::api::ServedModel;
use crate::devices::{BudgetSpec, BudgetedDevice, DeviceKind, DeviceList, DeviceSpec, HumanBytes};
use crate::placement::Strategy;
use crate::resources::BudgetPolicy;

/// Idle time after which a model is unloaded when nothing asked for it.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(300);

/// A model the pool may load.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The name clients pass as `model`.
    pub id: String,
    pub path: PathBuf,
    /// Higher is more important; a model only unloads others of the same
    /// or lower priority.
    pub priority: i32,
}

/// One device the pool places models on.
#[derive(Debug, Clone)]
pub struct PoolDevice {
    pub label: String,
    pub kind: DeviceKind,
    pub budget: u64,
    pub total: u64,
}

impl PoolDevice {
    pub fn from_budgeted(d: &BudgetedDevice) -> Self {
        Self {
            label: d.label.clone(),
            kind: d.kind,
            budget: d.budget,
            total: d.total,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub devices: Vec<PoolDevice>,
    pub strategy: Strategy,
    pub ctx_size: Option<usize>,
    /// `None`: loaded models stay until room is needed.
    pub keep_alive: Option<Duration>,
    pub decode_pause: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the model `{asked}` does not exist; this worker serves {served}")]
    Unknown { asked: String, served: String },
    #[error("the model `{id}` cannot be loaded on this worker's devices: {reason}")]
    NeverFits { id: String, reason: String },
    #[error("no room to load `{id}` now: {why}; retry later")]
    NoRoom { id: String, why: String },
    #[error("loading `{id}` failed: {reason}")]
    LoadFailed { id: String, reason: String },
    #[error("`{id}` is restarting after its engine failed; retry in {} s", retry_after.as_secs().max(1))]
    Restarting { id: String, retry_after: Duration },
}

enum State {
    Unloaded,
    Loading {
        bytes: Vec<u64>,
    },
    Loaded {
        model: Arc<ServedModel>,
        engine: EngineHandle,
        bytes: Vec<u64>,
    },
}

struct Slot {
    spec: ModelSpec,
    state: State,
    in_flight: usize,
    last_used: Instant,
    /// Never unloaded (a pool of one model).
    pinned: bool,
    /// Why the last load failed, until the next attempt.
    last_error: Option<String>,
    restarts: Restarts,
}

/// A model's engine restarts, and the backoff before the next load.
#[derive(Debug, Default, Clone)]
struct Restarts {
    total: u64,
    /// Restarts in a row, each within [`STREAK_RESET`] of the last.
    streak: u32,
    last: Option<(Instant, String)>,
    /// No load before this.
    not_before: Option<Instant>,
}

/// First wait before an engine restarts; doubles per restart in a row.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(1);
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// An engine that ran this long since its last restart starts a new
/// streak.
pub const STREAK_RESET: Duration = Duration::from_secs(300);
/// Engines busy with no progress this long are given up by default.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(300);

impl Restarts {
    /// Records a restart now; the backoff before the engine loads again.
    fn record(&mut self, why: String) -> Duration {
        let recent = self
            .last
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < STREAK_RESET);
        self.streak = if recent { self.streak + 1 } else { 1 };
        self.total += 1;
        let backoff = RESTART_BACKOFF
            .saturating_mul(1 << (self.streak - 1).min(16))
            .min(RESTART_BACKOFF_MAX);
        self.last = Some((Instant::now(), why));
        self.not_before = Some(Instant::now() + backoff);
        backoff
    }
}

/// Engine restarts of the whole pool, for heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartReport {
    pub total: u64,
    /// The wait the last restarted model had (0 before any restart).
    pub backoff_ms: u64,
    pub last: Option<String>,
}

pub struct ModelPool {
    opts: PoolOptions,
    slots: Mutex<Vec<Slot>>,
    changed: Notify,
    /// Figures of engines since unloaded, so totals never go backwards.
    retired_tokens: AtomicU64,
    retired_cancelled: AtomicU64,
    created: u64,
}

/// A model held for one request: it stays loaded until this drops.
pub struct ModelLease {
    pool: Arc<ModelPool>,
    index: usize,
    pub model: Arc<ServedModel>,
    pub engine: EngineHandle,
}

impl Drop for ModelLease {
    fn drop(&mut self) {
        let mut slots = self.pool.lock();
        let slot = &mut slots[self.index];
        slot.in_flight = slot.in_flight.saturating_sub(1);
        slot.last_used = Instant::now();
    }
}

/// One model in `/health` and the pool's status.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    pub id: String,
    /// Times its engine was restarted after a panic or a hang.
    pub restarts: u64,
    /// `loaded`, `loading`, `unloaded`, or `restarting` (waiting out the
    /// backoff after its engine failed).
    pub state: &'static str,
    pub priority: i32,
    pub in_flight: usize,
    pub idle_ms: u64,
    /// Bytes planned on each device (in the pool's device order).
    pub bytes: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One device in the pool's status.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    pub label: String,
    pub budget: u64,
    pub total: u64,
    /// Bytes of the loaded and loading models.
    pub used: u64,
}

impl ModelPool {
    /// A pool over `specs`; nothing is loaded yet.
    pub fn new(specs: Vec<ModelSpec>, opts: PoolOptions) -> Arc<Self> {
        let pinned = specs.len() == 1;
        let slots = specs
            .into_iter()
            .map(|spec| Slot {
                spec,
                state: State::Unloaded,
                in_flight: 0,
                last_used: Instant::now(),
                pinned,
                last_error: None,
                restarts: Restarts::default(),
            })
            .collect();
        Arc::new(Self {
            opts,
            slots: Mutex::new(slots),
            changed: Notify::new(),
            retired_tokens: AtomicU64::new(0),
            retired_cancelled: AtomicU64::new(0),
            created: crate::api::respond::unix_now(),
        })
    }

    /// A pool of one model already loaded (kept for good).
    pub fn with_loaded(loaded: LoadedModel, id: String, decode_pause: Duration) -> Arc<Self> {
        let devices = loaded
            .devices
            .iter()
            .map(PoolDevice::from_budgeted)
            .collect();
        let bytes = loaded.plan.devices.iter().map(|d| d.total_bytes).collect();
        let spec = ModelSpec {
            id: id.clone(),
            path: loaded.path.clone(),
            priority: 0,
        };
        let pool = Self::new(
            vec![spec],
            PoolOptions {
                devices,
                strategy: Strategy::Balance,
                ctx_size: Some(loaded.ctx_size),
                keep_alive: None,
                decode_pause,
            },
        );
        let state = pool.loaded_state(&id, loaded, bytes);
        pool.lock()[0].state = state;
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn loaded_state(&self, id: &str, loaded: LoadedModel, bytes: Vec<u64>) -> State {
        let loaded = Arc::new(loaded);
        State::Loaded {
            model: Arc::new(ServedModel {
                id: id.to_string(),
                created: self.created,
                loaded: loaded.clone(),
                decode_pause: self.opts.decode_pause,
            }),
            engine: EngineHandle::spawn(loaded),
            bytes,
        }
    }

    /// The names of every model the pool serves, in the order given.
    pub fn ids(&self) -> Vec<String> {
        self.lock().iter().map(|s| s.spec.id.clone()).collect()
    }

    pub fn keep_alive(&self) -> Option<Duration> {
        self.opts.keep_alive
    }

    /// Whether every model could load on the empty devices (a model that
    /// never could is an error at start, not at its first request).
    pub fn check_fits(&self) -> Result<(), PoolError> {
        let full: Vec<u64> = self.opts.devices.iter().map(|d| d.budget).collect();
        let specs: Vec<ModelSpec> = self.lock().iter().map(|s| s.spec.clone()).collect();
        for spec in specs {
            self.plan_bytes(&spec, &full)
                .map_err(|e| PoolError::NeverFits {
                    id: spec.id.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// The models it serves, as `a`, `b` (for messages).
    pub fn served(&self) -> String {
        served_list(&self.lock())
    }

    /// When the pool was made (the `created` of every model card).
    pub fn created(&self) -> u64 {
        self.created
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().iter().any(|s| s.spec.id == id)
    }

    pub fn devices(&self) -> &[PoolDevice] {
        &self.opts.devices
    }

    /// The engines of the loaded models.
    pub fn engines(&self) -> Vec<(String, EngineHandle)> {
        self.lock()
            .iter()
            .filter_map(|s| match &s.state {
                State::Loaded { engine, .. } => Some((s.spec.id.clone(), engine.clone())),
                _ => None,
            })
            .collect()
    }

    /// The files of the loaded and loading models.
    pub fn files_in_use(&self) -> Vec<(String, PathBuf)> {
        self.lock()
            .iter()
            .filter(|s| !matches!(s.state, State::Unloaded))
            .map(|s| (s.spec.id.clone(), s.spec.path.clone()))
            .collect()
    }

    /// Tokens generated by every engine this pool ran.
    pub fn tokens_generated(&self) -> u64 {
        let live: u64 = self
            .engines()
            .iter()
            .map(|(_, e)| e.tokens_generated())
            .sum();
        live + self.retired_tokens.load(Ordering::Acquire)
    }

    pub fn generations_cancelled(&self) -> u64 {
        let live: u64 = self
            .engines()
            .iter()
            .map(|(_, e)| e.generations_cancelled())
            .sum();
        live + self.retired_cancelled.load(Ordering::Acquire)
    }

    pub fn models_status(&self) -> Vec<ModelStatus> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|s| {
                let restarting = s.restarts.not_before.is_some_and(|t| t > now);
                let (state, bytes) = match &s.state {
                    State::Unloaded if restarting => {
                        ("restarting", vec![0; self.opts.devices.len()])
                    }
                    State::Unloaded => ("unloaded", vec![0; self.opts.devices.len()]),
                    State::Loading { bytes } => ("loading", bytes.clone()),
                    State::Loaded { bytes, .. } => ("loaded", bytes.clone()),
                };
                ModelStatus {
                    id: s.spec.id.clone(),
                    restarts: s.restarts.total,
                    state,
                    priority: s.spec.priority,
                    in_flight: s.in_flight,
                    idle_ms: now.duration_since(s.last_used).as_millis() as u64,
                    bytes,
                    last_error: s.last_error.clone(),
                }
            })
            .collect()
    }

    pub fn devices_status(&self) -> Vec<DeviceStatus> {
        let used = used_bytes(&self.lock(), self.opts.devices.len());
        self.opts
            .devices
            .iter()
            .zip(used)
            .map(|(d, used)| DeviceStatus {
                label: d.label.clone(),
                budget: d.budget,
                total: d.total,
                used,
            })
            .collect()
    }

    /// Holds `id` loaded for one request, loading it (and unloading idle
    /// models to make room) first when needed.
    pub async fn acquire(self: &Arc<Self>, id: &str) -> Result<ModelLease, PoolError> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let evicted = {
                let mut slots = self.lock();
                let Some(i) = slots.iter().position(|s| s.spec.id == id) else {
                    return Err(PoolError::Unknown {
                        asked: id.to_string(),
                        served: served_list(&slots),
                    });
                };
                match &slots[i].state {
                    State::Loaded { model, engine, .. } => {
                        let lease = ModelLease {
                            pool: self.clone(),
                            index: i,
                            model: model.clone(),
                            engine: engine.clone(),
                        };
                        slots[i].in_flight += 1;
                        slots[i].last_used = Instant::now();
                        return Ok(lease);
                    }
                    State::Loading { .. } => None,
                    State::Unloaded
                        if slots[i]
                            .restarts
                            .not_before
                            .is_some_and(|t| t > Instant::now()) =>
                    {
                        let t = slots[i].restarts.not_before.expect("checked");
                        return Err(PoolError::Restarting {
                            id: id.to_string(),
                            retry_after: t - Instant::now(),
                        });
                    }
                    State::Unloaded => match self.make_room(&mut slots, i)? {
                        Room::Reserved(budgets) => {
                            tokio::spawn(self.clone().load_slot(i, budgets));
                            None
                        }
                        Room::Evicted(old) => Some(old),
                    },
                }
            };
            match evicted {
                // Dropped outside the lock: the engine thread ends and the
                // weights are freed.
                Some(old) => {
                    self.retire(old);
                    continue;
                }
                None => changed.await,
            }
            // A load that failed leaves the slot unloaded with its reason.
            let failed = {
                let slots = self.lock();
                slots
                    .iter()
                    .find(|s| s.spec.id == id)
                    .and_then(|s| match s.state {
                        State::Unloaded => s.last_error.clone(),
                        _ => None,
                    })
            };
            if let Some(reason) = failed {
                return Err(PoolError::LoadFailed {
                    id: id.to_string(),
                    reason,
                });
            }
        }
    }

    fn retire(&self, old: State) {
        if let State::Loaded { engine, .. } = &old {
            self.retired_tokens
                .fetch_add(engine.tokens_generated(), Ordering::AcqRel);
            self.retired_cancelled
                .fetch_add(engine.generations_cancelled(), Ordering::AcqRel);
        }
        drop(old);
    }

    /// Reserves room for slot `i` (the budgets to load it with), or unloads
    /// one idle model to make some, or says why neither can be done.
    fn make_room(&self, slots: &mut [Slot], i: usize) -> Result<Room, PoolError> {
        let spec = slots[i].spec.clone();
        let used = used_bytes(slots, self.opts.devices.len());
        let free: Vec<u64> = self
            .opts
            .devices
            .iter()
            .zip(&used)
            .map(|(d, u)| d.budget.saturating_sub(*u))
            .collect();
        if let Ok(bytes) = self.plan_bytes(&spec, &free) {
            slots[i].state = State::Loading { bytes };
            slots[i].last_error = None;
            return Ok(Room::Reserved(free));
        }
        let full: Vec<u64> = self.opts.devices.iter().map(|d| d.budget).collect();
        if let Err(e) = self.plan_bytes(&spec, &full) {
            return Err(PoolError::NeverFits {
                id: spec.id,
                reason: e.to_string(),
            });
        }
        let victim = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                matches!(s.state, State::Loaded { .. })
                    && s.in_flight == 0
                    && !s.pinned
                    && s.spec.priority <= spec.priority
            })
            .min_by_key(|(_, s)| (s.spec.priority, s.last_used))
            .map(|(v, _)| v);
        let Some(v) = victim else {
            return Err(PoolError::NoRoom {
                id: spec.id.clone(),
                why: why_no_victim(slots, &spec),
            });
        };
        tracing::info!(
            model = %slots[v].spec.id,
            priority = slots[v].spec.priority,
            idle = ?slots[v].last_used.elapsed(),
            "unloading to make room for `{}`",
            spec.id
        );
        let old = std::mem::replace(&mut slots[v].state, State::Unloaded);
        Ok(Room::Evicted(old))
    }

    fn load_options(&self, spec: &ModelSpec, budgets: &[u64]) -> LoadOptions {
        LoadOptions {
            model: spec.path.clone(),
            devices: DeviceList(
                self.opts
                    .devices
                    .iter()
                    .zip(budgets)
                    .map(|(d, b)| DeviceSpec {
                        kind: d.kind,
                        budget: Some(BudgetSpec::Bytes(*b)),
                    })
                    .collect(),
            ),
            strategy: self.opts.strategy.clone(),
            ctx_size: self.opts.ctx_size,
            budget_policy: BudgetPolicy::default(),
        }
    }

    /// The bytes `spec` would take on each device within `budgets`.
    fn plan_bytes(&self, spec: &ModelSpec, budgets: &[u64]) -> Result<Vec<u64>, EngineError> {
        let report = plan_for(&self.load_options(spec, budgets))?;
        Ok(report.plan.devices.iter().map(|d| d.total_bytes).collect())
    }

    async fn load_slot(self: Arc<Self>, i: usize, budgets: Vec<u64>) {
        let spec = self.lock()[i].spec.clone();
        let opts = self.load_options(&spec, &budgets);
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || load(&opts))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let mut slots = self.lock();
        match result {
            Ok(loaded) => {
                let bytes: Vec<u64> = loaded.plan.devices.iter().map(|d| d.total_bytes).collect();
                let placed: Vec<String> = loaded
                    .plan
                    .devices
                    .iter()
                    .filter(|d| d.total_bytes > 0)
                    .map(|d| format!("{} {}", d.label, HumanBytes(d.total_bytes)))
                    .collect();
                tracing::info!(
                    model = %spec.id,
                    secs = format!("{:.2}", started.elapsed().as_secs_f64()),
                    "loaded on demand: {}",
                    placed.join(", ")
                );
                slots[i].state = self.loaded_state(&spec.id, loaded, bytes);
                slots[i].last_used = Instant::now();
            }
            Err(reason) => {
                tracing::warn!(model = %spec.id, "loading failed: {reason}");
                slots[i].state = State::Unloaded;
                slots[i].last_error = Some(reason);
            }
        }
        drop(slots);
        self.changed.notify_waiters();
    }

    /// Watches the loaded engines every `every`: one that died (a panic) or
    /// has been busy with no progress for `watchdog` (a hang, given up:
    /// its jobs fail) is unloaded and loaded again after a backoff that
    /// doubles per restart in a row (1 s up to 60 s).
    pub fn spawn_supervisor(
        self: &Arc<Self>,
        watchdog: Duration,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                pool.supervise(watchdog);
            }
        })
    }

    fn supervise(self: &Arc<Self>, watchdog: Duration) {
        let mut restarts = Vec::new();
        let mut slots = self.lock();
        for (i, slot) in slots.iter_mut().enumerate() {
            let State::Loaded { engine, .. } = &slot.state else {
                continue;
            };
            let why = match engine.death() {
                Some(why) => why,
                None if engine.stalled(watchdog) => {
                    let why = format!("the engine made no progress for {watchdog:?}");
                    engine.abandon(why.clone());
                    why
                }
                None => continue,
            };
            let backoff = slot.restarts.record(why.clone());
            tracing::warn!(
                model = %slot.spec.id,
                restarts = slot.restarts.total,
                "{why}; restarting the engine in {backoff:?}"
            );
            let old = std::mem::replace(&mut slot.state, State::Unloaded);
            restarts.push((i, slot.spec.id.clone(), backoff, old));
        }
        drop(slots);
        for (_, id, backoff, old) in restarts {
            self.retire(old);
            let pool = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(backoff).await;
                match pool.acquire(&id).await {
                    Ok(lease) => {
                        drop(lease);
                        tracing::info!(model = %id, "engine restarted");
                    }
                    Err(e) => tracing::warn!(model = %id, "restarting the engine failed: {e}"),
                }
            });
        }
    }

    /// Engine restarts so far, for heartbeats.
    pub fn restart_report(&self) -> RestartReport {
        let slots = self.lock();
        let mut report = RestartReport::default();
        let mut latest: Option<Instant> = None;
        for s in slots.iter() {
            report.total += s.restarts.total;
            if let Some((at, why)) = &s.restarts.last {
                if latest.is_none_or(|l| *at > l) {
                    latest = Some(*at);
                    report.last = Some(format!("`{}`: {why}", s.spec.id));
                    report.backoff_ms = s
                        .restarts
                        .not_before
                        .map_or(0, |t| t.saturating_duration_since(*at).as_millis() as u64);
                }
            }
        }
        report
    }

    /// Unloads models idle for the keep-alive time, checking every
    /// `every`, until the pool is dropped.
    pub fn spawn_keeper(self: &Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let keep_alive = self.opts.keep_alive?;
        let pool = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let idle: Vec<State> = {
                    let mut slots = pool.lock();
                    slots
                        .iter_mut()
                        .filter(|s| {
                            matches!(s.state, State::Loaded { .. })
                                && s.in_flight == 0
                                && !s.pinned
                                && s.last_used.elapsed() >= keep_alive
                        })
                        .map(|s| {
                            tracing::info!(model = %s.spec.id, "unloading after {keep_alive:?} idle");
                            std::mem::replace(&mut s.state, State::Unloaded)
                        })
                        .collect()
                };
                for old in idle {
                    pool.retire(old);
                }
            }
        }))
    }
}

enum Room {
    Reserved(Vec<u64>),
    Evicted(State),
}

fn used_bytes(slots: &[Slot], devices: usize) -> Vec<u64> {
    let mut used = vec![0u64; devices];
    for s in slots {
        let bytes = match &s.state {
            State::Unloaded => continue,
            State::Loading { bytes } | State::Loaded { bytes, .. } => bytes,
        };
        for (u, b) in used.iter_mut().zip(bytes) {
            *u += b;
        }
    }
    used
}

fn served_list(slots: &[Slot]) -> String {
    let ids: Vec<String> = slots.iter().map(|s| format!("`{}`", s.spec.id)).collect();
    ids.join(", ")
}

/// Why no loaded model can be unloaded for `spec`.
fn why_no_victim(slots: &[Slot], spec: &ModelSpec) -> String {
    let mut busy = Vec::new();
    let mut outrank = Vec::new();
    let mut loading = Vec::new();
    for s in slots.iter().filter(|s| s.spec.id != spec.id) {
        match s.state {
            State::Unloaded => {}
            State::Loading { .. } => loading.push(format!("`{}`", s.spec.id)),
            State::Loaded { .. } if s.in_flight > 0 || s.pinned => {
                busy.push(format!("`{}`", s.spec.id))
            }
            State::Loaded { .. } => outrank.push(format!(
                "`{}` (priority {} > {})",
                s.spec.id, s.spec.priority, spec.priority
            )),
        }
    }
    let mut parts = Vec::new();
    if !busy.is_empty() {
        parts.push(format!("{} serving requests", busy.join(", ")));
    }
    if !outrank.is_empty() {
        parts.push(format!("{} of higher priority", outrank.join(", ")));
    }
    if !loading.is_empty() {
        parts.push(format!("{} loading", loading.join(", ")));
    }
    format!("the devices are full with {}", parts.join("; "))
}
