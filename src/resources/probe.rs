//! Device discovery behind a trait: what GPUs the machine has, how much
//! memory each has and who uses it, and how much system memory there is.
//!
//! [`discover`] returns the NVML probe when the NVIDIA driver answers, and a
//! CPU-only probe (with one log line saying why) when it does not; tests
//! use [`FakeProbe`], whose readings are scripted and can change over time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Memory one process holds on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub name: String,
    /// `None` where the driver does not say (Windows WDDM, some containers).
    pub bytes: Option<u64>,
}

/// One reading of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuReading {
    /// NVML index; with `CUDA_DEVICE_ORDER=PCI_BUS_ID` (which strata sets
    /// when unset) also the CUDA ordinal.
    pub index: u32,
    pub name: String,
    pub total: u64,
    pub used: u64,
    pub free: u64,
    pub processes: Vec<GpuProcess>,
    pub temperature_c: Option<u32>,
    pub utilization_pct: Option<u32>,
    pub power_w: Option<f64>,
}

/// The CPU device: the machine's memory and cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuReading {
    pub name: String,
    pub cores: usize,
    pub total: u64,
    pub available: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device probe failed: {0}")]
pub struct ProbeError(pub String);

/// A source of device readings.
pub trait DeviceProbe: Send + Sync {
    /// What backs this probe, for logs and `strata devices`
    /// ("NVML, driver 550.54.15", "no NVIDIA GPU: ...").
    fn describe(&self) -> String;
    /// Every GPU, in index order; empty when there are none.
    fn gpus(&self) -> Result<Vec<GpuReading>, ProbeError>;
    /// The CPU device.
    fn cpu(&self) -> Result<CpuReading, ProbeError> {
        read_cpu()
    }
}

/// The probe for this machine: NVML when it loads, else CPU only, with one
/// log line that says why (not an error: Strata runs on the CPU).
pub fn discover() -> Arc<dyn DeviceProbe> {
    match super::nvml::NvmlProbe::new() {
        Ok(p) => {
            tracing::info!("{}", p.describe());
            Arc::new(p)
        }
        Err(reason) => {
            let p = CpuOnlyProbe { reason };
            tracing::info!("{}; running on the CPU", p.describe());
            Arc::new(p)
        }
    }
}

/// A machine without NVIDIA GPUs (or without the driver).
pub struct CpuOnlyProbe {
    pub reason: String,
}

impl DeviceProbe for CpuOnlyProbe {
    fn describe(&self) -> String {
        format!("no NVIDIA GPU found ({})", self.reason)
    }

    fn gpus(&self) -> Result<Vec<GpuReading>, ProbeError> {
        Ok(Vec::new())
    }
}

/// System memory from `/proc/meminfo`, cores from the scheduler's affinity
/// mask, and the CPU model from `/proc/cpuinfo`.
pub fn read_cpu() -> Result<CpuReading, ProbeError> {
    let (total, available) = crate::devices::system_memory()
        .ok_or_else(|| ProbeError("cannot read /proc/meminfo".into()))?;
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "cpu".into());
    Ok(CpuReading {
        name,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        total,
        available,
    })
}

/// Scripted readings for tests: a queue of frames, each the GPUs as one
/// `gpus()` call sees them. Each call takes the next frame; the last one
/// stays. `set` replaces the script with one frame, `fail_next` makes the
/// next calls fail (fault tests).
#[derive(Clone, Default)]
pub struct FakeProbe {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    frames: VecDeque<Vec<GpuReading>>,
    failures: usize,
    calls: usize,
    cpu: Option<CpuReading>,
}

impl FakeProbe {
    pub fn new(gpus: Vec<GpuReading>) -> Self {
        Self::scripted(vec![gpus])
    }

    pub fn scripted(frames: Vec<Vec<GpuReading>>) -> Self {
        let probe = Self::default();
        probe.state.lock().unwrap().frames = frames.into();
        probe
    }

    pub fn with_cpu(self, cpu: CpuReading) -> Self {
        self.state.lock().unwrap().cpu = Some(cpu);
        self
    }

    /// From now on every reading is `gpus`.
    pub fn set(&self, gpus: Vec<GpuReading>) {
        self.state.lock().unwrap().frames = VecDeque::from([gpus]);
    }

    pub fn fail_next(&self, calls: usize) {
        self.state.lock().unwrap().failures = calls;
    }

    /// How many times `gpus()` was called.
    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }
}

impl DeviceProbe for FakeProbe {
    fn describe(&self) -> String {
        "fake probe".into()
    }

    fn gpus(&self) -> Result<Vec<GpuReading>, ProbeError> {
        let mut s = self.state.lock().unwrap();
        s.calls += 1;
        if s.failures > 0 {
            s.failures -= 1;
            return Err(ProbeError("scripted failure".into()));
        }
        let frame = if s.frames.len() > 1 {
            s.frames.pop_front()
        } else {
            s.frames.front().cloned()
        };
        Ok(frame.unwrap_or_default())
    }

    fn cpu(&self) -> Result<CpuReading, ProbeError> {
        match &self.state.lock().unwrap().cpu {
            Some(c) => Ok(c.clone()),
            None => read_cpu(),
        }
    }
}

/// A GPU reading for tests and examples: `total` bytes, of which each
/// process in `processes` (pid, bytes) holds its share; used = their sum.
pub fn gpu(index: u32, name: &str, total: u64, processes: &[(u32, u64)]) -> GpuReading {
    let used: u64 = processes.iter().map(|p| p.1).sum();
    GpuReading {
        index,
        name: name.into(),
        total,
        used,
        free: total.saturating_sub(used),
        processes: processes
            .iter()
            .map(|&(pid, bytes)| GpuProcess {
                pid,
                name: format!("pid{pid}"),
                bytes: Some(bytes),
            })
            .collect(),
        temperature_c: Some(40),
        utilization_pct: Some(0),
        power_w: Some(30.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_probe_plays_its_script_then_holds_the_last_frame() {
        let p = FakeProbe::scripted(vec![
            vec![gpu(0, "a", 100, &[(1, 10)])],
            vec![gpu(0, "a", 100, &[(1, 20)])],
        ]);
        assert_eq!(p.gpus().unwrap()[0].used, 10);
        assert_eq!(p.gpus().unwrap()[0].used, 20);
        assert_eq!(p.gpus().unwrap()[0].used, 20);
        p.fail_next(1);
        assert!(p.gpus().is_err());
        p.set(vec![]);
        assert!(p.gpus().unwrap().is_empty());
        assert_eq!(p.calls(), 5);
    }

    #[test]
    fn this_machine_has_a_cpu() {
        let c = read_cpu().unwrap();
        assert!(
            c.total > 0 && c.available <= c.total && c.cores >= 1,
            "{c:?}"
        );
    }
}
