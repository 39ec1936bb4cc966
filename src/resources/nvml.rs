//! The NVML probe: readings of every NVIDIA GPU through `nvml-wrapper`.
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`), so the binary builds
//! and runs on machines without the driver; there [`NvmlProbe::new`] fails
//! and discovery falls back to the CPU. Readings a GPU does not support
//! (power on some boards, per-process memory in containers) are `None`,
//! never an error.

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;

use super::probe::{DeviceProbe, GpuProcess, GpuReading, ProbeError};

pub struct NvmlProbe {
    nvml: Nvml,
    driver: String,
}

impl NvmlProbe {
    /// Loads NVML; the error says why not (no library, no driver, no GPU).
    pub fn new() -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| format!("NVML: {e}"))?;
        let count = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
        if count == 0 {
            return Err("NVML reports no GPU".into());
        }
        let driver = nvml
            .sys_driver_version()
            .unwrap_or_else(|_| "unknown".into());
        Ok(Self { nvml, driver })
    }
}

fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

impl DeviceProbe for NvmlProbe {
    fn describe(&self) -> String {
        let n = self.nvml.device_count().unwrap_or(0);
        format!("NVML: {n} NVIDIA GPU(s), driver {}", self.driver)
    }

    fn gpus(&self) -> Result<Vec<GpuReading>, ProbeError> {
        let err = |e: nvml_wrapper::error::NvmlError| ProbeError(format!("NVML: {e}"));
        let count = self.nvml.device_count().map_err(err)?;
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            let d = self.nvml.device_by_index(index).map_err(err)?;
            let mem = d.memory_info().map_err(err)?;
            let mut processes: Vec<GpuProcess> = Vec::new();
            let compute = d.running_compute_processes().unwrap_or_default();
            let graphics = d.running_graphics_processes().unwrap_or_default();
            for p in compute.into_iter().chain(graphics) {
                if processes.iter().any(|q| q.pid == p.pid) {
                    continue; // a process doing both is listed twice
                }
                processes.push(GpuProcess {
                    pid: p.pid,
                    name: process_name(p.pid),
                    bytes: match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b),
                        UsedGpuMemory::Unavailable => None,
                    },
                });
            }
            out.push(GpuReading {
                index,
                name: d.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                total: mem.total,
                used: mem.used,
                free: mem.free,
                processes,
                temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                utilization_pct: d.utilization_rates().ok().map(|u| u.gpu),
                power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            });
        }
        Ok(out)
    }
}

/// How NVML finds the card CUDA calls by an ordinal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Card {
    Index(u32),
    Uuid(String),
}

/// The card behind CUDA ordinal `ordinal`, given `CUDA_VISIBLE_DEVICES`
/// and `CUDA_DEVICE_ORDER`. CUDA numbers only the cards it may see, in the
/// device order; NVML numbers every card in PCI bus order. The two agree
/// only under `PCI_BUS_ID` order (which strata sets when it is unset);
/// otherwise, or for a MIG slice or an entry CUDA would not accept, `None`.
pub fn card_of(visible: Option<&str>, order: Option<&str>, ordinal: usize) -> Option<Card> {
    if order != Some("PCI_BUS_ID") {
        return None;
    }
    let Some(visible) = visible else {
        return u32::try_from(ordinal).ok().map(Card::Index);
    };
    let entry = visible.split(',').map(str::trim).nth(ordinal)?;
    if let Ok(i) = entry.parse::<u32>() {
        return Some(Card::Index(i));
    }
    entry
        .starts_with("GPU-")
        .then(|| Card::Uuid(entry.to_string()))
}

/// `(NVML index, total, free)` bytes of `card`.
pub fn memory(card: &Card) -> Result<(u32, u64, u64), String> {
    let err = |e: nvml_wrapper::error::NvmlError| format!("NVML: {e}");
    let nvml = Nvml::init().map_err(err)?;
    let device = match card {
        Card::Index(i) => nvml.device_by_index(*i),
        Card::Uuid(u) => nvml.device_by_uuid(u.as_str()),
    }
    .map_err(err)?;
    let mem = device.memory_info().map_err(err)?;
    Ok((device.index().map_err(err)?, mem.total, mem.free))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_ordinals_map_to_nvml_cards_only_in_bus_order() {
        let bus = Some("PCI_BUS_ID");
        assert_eq!(card_of(None, bus, 1), Some(Card::Index(1)));
        assert_eq!(
            card_of(None, None, 1),
            None,
            "CUDA's default order is fastest first"
        );
        assert_eq!(card_of(None, Some("FASTEST_FIRST"), 0), None);
        assert_eq!(card_of(Some("2,0"), bus, 0), Some(Card::Index(2)));
        assert_eq!(card_of(Some("2, 0"), bus, 1), Some(Card::Index(0)));
        assert_eq!(card_of(Some("2,0"), bus, 2), None, "only two are visible");
        assert_eq!(card_of(Some(""), bus, 0), None);
        assert_eq!(
            card_of(Some("GPU-8a1f,1"), bus, 0),
            Some(Card::Uuid("GPU-8a1f".into()))
        );
        assert_eq!(card_of(Some("MIG-5c3e"), bus, 0), None);
    }

    /// On a machine without the driver the probe must fail with a reason,
    /// not panic; on one with it, readings must be self-consistent.
    #[test]
    fn loads_or_says_why_not() {
        match NvmlProbe::new() {
            Err(reason) => assert!(!reason.is_empty()),
            Ok(p) => {
                for g in p.gpus().unwrap() {
                    assert!(g.used <= g.total && g.free <= g.total, "{g:?}");
                }
            }
        }
    }
}
