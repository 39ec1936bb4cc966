//! From a device list to byte budgets, then to candle devices.
//!
//! [`budget_devices`] is the pure half: labels, budgets and spill marks from
//! the list, the resource policy and memory readings; planning needs no
//! more. [`resolve`] takes the readings (the machine's memory from `/proc`,
//! a GPU's from NVML, or from CUDA itself where NVML does not answer) and
//! opens the devices. A GPU given twice is read once and opened twice: two
//! candle devices on one card, with the copies between them that two cards
//! would need.

use std::collections::BTreeMap;
use std::ops::Deref;

use candle_core::Device;
use serde::Serialize;

use super::{budget_bytes, system_memory, DeviceError, DeviceKind, DeviceList};
use crate::resources::BudgetPolicy;

/// What a GPU's budget is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    pub total: u64,
    pub free: u64,
    /// NVML's index of the card, when NVML answered.
    pub nvml_index: Option<u32>,
}

/// A device entry with its label and budget, not yet opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetedDevice {
    /// `cpu`, `cuda:0`; `cpu:1`, `cuda:0#1` for a device listed more than
    /// once.
    pub label: String,
    #[serde(skip)]
    pub kind: DeviceKind,
    /// Bytes the planner may use on it.
    pub budget: u64,
    /// The device's total memory.
    pub total: u64,
    /// A CPU listed beside GPUs: it takes only the layers they cannot hold.
    pub spill: bool,
    /// NVML's index of the GPU (what the desktop-yield monitor watches).
    #[serde(skip)]
    pub nvml_index: Option<u32>,
}

/// A device ready for loading: its budget and the candle device.
#[derive(Debug, Clone)]
pub struct ResolvedDevice {
    pub budgeted: BudgetedDevice,
    pub device: Device,
}

impl Deref for ResolvedDevice {
    type Target = BudgetedDevice;

    fn deref(&self) -> &BudgetedDevice {
        &self.budgeted
    }
}

/// Labels and budgets of every entry of `list` under `policy`. `cpu` is the
/// machine's (total, available) memory; `gpu` reads a card by CUDA ordinal
/// and is asked once per card. An entry without its own budget gets the
/// policy's, split evenly between the entries naming the same device.
pub fn budget_devices(
    list: &DeviceList,
    policy: &BudgetPolicy,
    cpu: (u64, u64),
    gpu: &mut dyn FnMut(usize) -> Result<GpuMemory, DeviceError>,
) -> Result<Vec<BudgetedDevice>, DeviceError> {
    let mut count: BTreeMap<DeviceKind, usize> = BTreeMap::new();
    for spec in &list.0 {
        *count.entry(spec.kind).or_default() += 1;
    }
    let any_gpu = count.keys().any(|k| matches!(k, DeviceKind::Cuda(_)));
    let mut memory: BTreeMap<usize, GpuMemory> = BTreeMap::new();
    let mut seen: BTreeMap<DeviceKind, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(list.0.len());
    for spec in &list.0 {
        let n = count[&spec.kind];
        let k = seen.entry(spec.kind).or_default();
        let nth = *k;
        *k += 1;
        let (total, share, nvml_index) = match spec.kind {
            DeviceKind::Cpu => (cpu.0, policy.cpu(cpu.0, cpu.1), None),
            DeviceKind::Cuda(ordinal) => {
                let m = match memory.get(&ordinal) {
                    Some(m) => *m,
                    None => *memory.entry(ordinal).or_insert(gpu(ordinal)?),
                };
                (m.total, policy.gpu(m.total, m.free), m.nvml_index)
            }
        };
        let name = match spec.kind {
            DeviceKind::Cpu => "cpu".to_string(),
            DeviceKind::Cuda(i) => format!("cuda:{i}"),
        };
        let label = match (n, spec.kind) {
            (1, _) => name,
            (_, DeviceKind::Cpu) => format!("cpu:{nth}"),
            (_, DeviceKind::Cuda(_)) => format!("{name}#{nth}"),
        };
        out.push(BudgetedDevice {
            label,
            kind: spec.kind,
            budget: budget_bytes(spec.budget, total, share / n as u64),
            total,
            spill: spec.kind == DeviceKind::Cpu && any_gpu,
            nvml_index,
        });
    }
    for (kind, &n) in &count {
        let entries = out.iter().filter(|d| d.kind == *kind);
        let given: u64 = entries.clone().map(|d| d.budget).sum();
        let total = entries.clone().next().map_or(0, |d| d.total);
        if n > 1 && given > total {
            return Err(DeviceError::OverCommitted {
                device: match kind {
                    DeviceKind::Cpu => "cpu".into(),
                    DeviceKind::Cuda(i) => format!("cuda:{i}"),
                },
                given,
                total,
            });
        }
    }
    Ok(out)
}

/// Budgets every device of `list` under `policy` without opening any
/// (what planning needs).
pub fn budget(
    list: &DeviceList,
    policy: &BudgetPolicy,
) -> Result<Vec<BudgetedDevice>, DeviceError> {
    let cpu = system_memory().unwrap_or((u64::MAX, u64::MAX));
    budget_devices(list, policy, cpu, &mut read_gpu)
}

/// Budgets and opens every device of `list` under `policy`.
pub fn resolve(
    list: &DeviceList,
    policy: &BudgetPolicy,
) -> Result<Vec<ResolvedDevice>, DeviceError> {
    budget(list, policy)?.into_iter().map(open).collect()
}

/// Opens the candle device of `budgeted`.
pub fn open(budgeted: BudgetedDevice) -> Result<ResolvedDevice, DeviceError> {
    let device = match budgeted.kind {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Cuda(ordinal) => open_cuda(ordinal)?,
    };
    Ok(ResolvedDevice { budgeted, device })
}

/// A card's memory: from NVML when it answers for this ordinal, else from
/// CUDA (which means opening the device).
fn read_gpu(ordinal: usize) -> Result<GpuMemory, DeviceError> {
    if !cfg!(feature = "cuda") {
        return Err(DeviceError::NoCuda(format!("cuda:{ordinal}")));
    }
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let order = std::env::var("CUDA_DEVICE_ORDER").ok();
    if let Some(card) =
        crate::resources::nvml::card_of(visible.as_deref(), order.as_deref(), ordinal)
    {
        match crate::resources::nvml::memory(&card) {
            Ok((index, total, free)) => {
                return Ok(GpuMemory {
                    total,
                    free,
                    nvml_index: Some(index),
                })
            }
            Err(reason) => tracing::debug!("cuda:{ordinal}: {reason}; asking CUDA"),
        }
    }
    cuda_memory(ordinal)
}

/// `cuda:N` cannot be used, for `reason` (candle's errors without their
/// backtrace).
#[cfg(feature = "cuda")]
fn unavailable(ordinal: usize, reason: String) -> DeviceError {
    DeviceError::Unavailable {
        device: format!("cuda:{ordinal}"),
        reason,
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, DeviceError> {
    use crate::model::error::candle_message;
    Device::new_cuda(ordinal).map_err(|e| unavailable(ordinal, candle_message(e)))
}

#[cfg(feature = "cuda")]
fn cuda_memory(ordinal: usize) -> Result<GpuMemory, DeviceError> {
    use crate::model::error::candle_message;
    let device = open_cuda(ordinal)?;
    let cuda = device
        .as_cuda_device()
        .map_err(|e| unavailable(ordinal, candle_message(e)))?;
    let (free, total) = cuda
        .cuda_stream()
        .context()
        .mem_get_info()
        .map_err(|e| unavailable(ordinal, e.to_string()))?;
    Ok(GpuMemory {
        total: total as u64,
        free: free as u64,
        nvml_index: None,
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NoCuda(format!("cuda:{ordinal}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_memory(ordinal: usize) -> Result<GpuMemory, DeviceError> {
    Err(DeviceError::NoCuda(format!("cuda:{ordinal}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Percent;

    const POLICY: BudgetPolicy = BudgetPolicy {
        cap: Percent::whole(50),
        reserve: 0,
    };
    const GIB: u64 = 1 << 30;

    /// A 24 GiB card with 20 GiB free, NVML index = ordinal + 3, that counts
    /// how often it is read.
    fn cards(reads: &mut Vec<usize>) -> impl FnMut(usize) -> Result<GpuMemory, DeviceError> + '_ {
        move |ordinal| {
            reads.push(ordinal);
            Ok(GpuMemory {
                total: 24 * GIB,
                free: 20 * GIB,
                nvml_index: Some(ordinal as u32 + 3),
            })
        }
    }

    fn budgets(list: &str) -> Result<Vec<BudgetedDevice>, DeviceError> {
        let mut reads = Vec::new();
        let mut read = cards(&mut reads);
        budget_devices(
            &list.parse().unwrap(),
            &POLICY,
            (64 * GIB, 40 * GIB),
            &mut read,
        )
    }

    #[test]
    fn the_policy_budgets_entries_without_their_own() {
        let (total, available) = system_memory().unwrap();
        let r = resolve(&"cpu".parse().unwrap(), &POLICY).unwrap();
        assert_eq!(r[0].budget, (total / 2).min(available));
        let r = resolve(&"cpu,cpu".parse().unwrap(), &POLICY).unwrap();
        assert_eq!(
            r[0].budget,
            (total / 2).min(available) / 2,
            "virtual cpus share"
        );
        let r = resolve(&"cpu=10%".parse().unwrap(), &POLICY).unwrap();
        assert_eq!(r[0].budget, total / 10, "the entry's own budget wins");
    }

    #[test]
    fn virtual_cpus_get_distinct_labels() {
        let l: DeviceList = "cpu=1GiB,cpu=2GiB".parse().unwrap();
        let r = resolve(&l, &POLICY).unwrap();
        assert_eq!(r[0].label, "cpu:0");
        assert_eq!(r[1].label, "cpu:1");
        assert_eq!(r[1].budget, 2 << 30);
        assert!(!r[0].spill && !r[1].spill, "no GPU to spill from");
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(
            resolve(&"cuda:0".parse().unwrap(), &POLICY),
            Err(DeviceError::NoCuda(_))
        ));
    }

    #[test]
    fn a_gpu_budget_is_the_policy_of_its_reading() {
        let d = budgets("cuda:1").unwrap();
        assert_eq!(d[0].label, "cuda:1");
        assert_eq!(
            d[0].budget,
            12 * GIB,
            "50 % of 24 GiB, under the 20 GiB free"
        );
        assert_eq!(d[0].total, 24 * GIB);
        assert_eq!(d[0].nvml_index, Some(4));
        let d = budgets("cuda:0=30%").unwrap();
        assert_eq!(d[0].budget, 24 * GIB * 3 / 10);
    }

    #[test]
    fn a_cpu_beside_a_gpu_spills() {
        let d = budgets("cuda:0,cpu").unwrap();
        assert_eq!((d[0].label.as_str(), d[0].spill), ("cuda:0", false));
        assert_eq!((d[1].label.as_str(), d[1].spill), ("cpu", true));
        assert_eq!(
            d[1].budget,
            32 * GIB,
            "50 % of 64 GiB, under 40 GiB available"
        );
    }

    #[test]
    fn one_gpu_twice_is_two_devices_sharing_its_budget_and_read_once() {
        let mut reads = Vec::new();
        let mut read = cards(&mut reads);
        let d = budget_devices(
            &"cuda:0,cuda:0".parse().unwrap(),
            &POLICY,
            (64 * GIB, 40 * GIB),
            &mut read,
        )
        .unwrap();
        drop(read);
        assert_eq!(reads, [0], "one reading per card");
        let labels: Vec<&str> = d.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["cuda:0#0", "cuda:0#1"]);
        assert_eq!(d[0].budget, 6 * GIB);
        assert_eq!(d[1].budget, 6 * GIB);
        assert!(d.iter().all(|d| d.kind == DeviceKind::Cuda(0) && !d.spill));
        let d = budgets("cuda:0=10GiB,cuda:0=4GiB,cpu").unwrap();
        assert_eq!(d[0].budget, 10 * GIB);
        assert_eq!(d[1].budget, 4 * GIB);
        assert!(d[2].spill);
    }

    #[test]
    fn budgets_of_one_device_may_not_add_up_past_it() {
        let e = budgets("cuda:0=20GiB,cuda:0=20GiB").unwrap_err();
        assert_eq!(
            e,
            DeviceError::OverCommitted {
                device: "cuda:0".into(),
                given: 40 * GIB,
                total: 24 * GIB
            }
        );
        assert!(e.to_string().contains("`cuda:0`"), "{e}");
        assert!(budgets("cpu=40GiB,cpu=40GiB").is_err());
        assert!(budgets("cpu=30GiB,cpu=30GiB").is_ok());
    }

    #[test]
    fn a_failed_reading_names_the_device() {
        let mut failing = |ordinal: usize| {
            Err(DeviceError::Unavailable {
                device: format!("cuda:{ordinal}"),
                reason: "no such device".into(),
            })
        };
        let e = budget_devices(
            &"cpu,cuda:5".parse().unwrap(),
            &POLICY,
            (GIB, GIB),
            &mut failing,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "device `cuda:5`: no such device");
    }
}
