//! The resource manager: how much of each device Strata may use, how fast
//! it takes work, and at what priority it runs.
//!
//! - [`probe`] / [`nvml`]: device discovery (NVML for GPUs, `/proc` for
//!   the CPU) behind the [`DeviceProbe`] trait, with a scripted fake.
//! - [`budget`]: budget = total × cap − reserve, overflow-safe.
//! - [`settings`]: the three modes and the flag > env > file > mode
//!   layering of every figure.
//! - [`throttle`], [`admission`]: the minimum interval between request
//!   starts and the concurrency limit, both exact under concurrency.
//! - [`priority`]: nice value and I/O priority through system calls.
//! - [`yield_monitor`]: stop admitting while other processes crowd a GPU.
//!
//! [`ResourceManager`] ties them together for a worker: `admit()` is the
//! one gate a request passes before it reaches the engine.

pub mod admission;
pub mod budget;
pub mod nvml;
pub mod priority;
pub mod probe;
pub mod settings;
pub mod throttle;
pub mod yield_monitor;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use admission::{Admission, AdmissionError, Permit, YieldReason};
pub use budget::{budget, BudgetPolicy, Percent};
pub use priority::{IoPriority, PriorityReport};
pub use probe::{discover, DeviceProbe, FakeProbe, GpuReading};
pub use settings::{Mode, ResourceSettings};
pub use throttle::{Grant, Throttle};

/// A request that passed admission: hold `permit` until it is done.
pub struct Admitted {
    pub permit: Permit,
    /// How long the throttle held it back.
    pub throttle_wait: Duration,
}

/// What a worker reports about its resources (status, health, heartbeats).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResourceStatus {
    pub mode: Mode,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// Why the worker is yielding to its desktop, if it is.
    pub yielding: Option<YieldReason>,
}

/// The resource manager of one worker.
pub struct ResourceManager {
    settings: ResourceSettings,
    throttle: Throttle,
    admission: Arc<Admission>,
}

impl ResourceManager {
    pub fn new(settings: ResourceSettings) -> Arc<Self> {
        // A refused caller should come back once a request could have
        // finished or the yield state been sampled again.
        let retry_after = settings.throttle.max(settings.sample_interval);
        Arc::new(Self {
            throttle: Throttle::new(settings.throttle),
            admission: Admission::new(settings.max_in_flight, retry_after),
            settings,
        })
    }

    pub fn settings(&self) -> &ResourceSettings {
        &self.settings
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    pub fn budget_policy(&self) -> BudgetPolicy {
        self.settings.budget_policy()
    }

    pub fn status(&self) -> ResourceStatus {
        ResourceStatus {
            mode: self.settings.mode,
            in_flight: self.admission.in_flight(),
            max_in_flight: self.admission.limit(),
            yielding: self.admission.yielding(),
        }
    }

    /// The gate before the engine: a slot under the concurrency limit (or an
    /// immediate refusal), then the throttle's start time. The slot is held
    /// while waiting, so waiting requests count as in flight and the queue
    /// stays bounded.
    pub async fn admit(&self) -> Result<Admitted, AdmissionError> {
        let permit = self.admission.try_admit()?;
        let throttle_wait = self.throttle.acquire().await.waited;
        Ok(Admitted {
            permit,
            throttle_wait,
        })
    }

    /// Applies the priority settings to the whole process.
    pub fn apply_priority(&self) -> PriorityReport {
        priority::apply(self.settings.nice, self.settings.io_priority)
    }

    /// Starts the desktop-yield monitor over the GPUs (NVML indexes) this
    /// worker uses, with the bytes it placed on each; `None` when the mode
    /// does not yield or no GPU is used.
    pub fn watch_gpus(
        &self,
        probe: Arc<dyn DeviceProbe>,
        own_bytes: BTreeMap<u32, u64>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.settings.desktop_yield || own_bytes.is_empty() {
            return None;
        }
        let s = &self.settings;
        let watched = own_bytes.keys().copied().collect();
        let detector = yield_monitor::YieldDetector::new(
            s.vram_cap,
            s.vram_reserve,
            s.yield_hysteresis,
            std::process::id(),
            own_bytes,
        );
        Some(yield_monitor::spawn(
            probe,
            watched,
            detector,
            self.admission.clone(),
            s.sample_interval,
        ))
    }
}
