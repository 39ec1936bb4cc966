//! The placement planner: which contiguous range of layers runs on which
//! device. A pure function of byte counts and budgets, with no I/O.
//!
//! Each device that receives layers also pays an activation workspace; the
//! first one holds the token embedding and the last one the output head
//! (with a copy of the embedding when the head is tied and the two devices
//! differ). A safety margin of every budget is never planned.
//!
//! The default strategy balances: it finds the smallest load ratio `r`
//! (bytes planned / usable budget) such that filling the devices in order up
//! to `r` of their budgets places every layer, so the most loaded device is
//! as little loaded as possible and each device's share follows its budget.
//! Spill devices (the CPU listed beside GPUs) are the exception: they take
//! only the layers the others cannot hold, the others filled up to their
//! whole usable budget first (partial offload, a model larger than the
//! card), because a layer there runs many times slower.

mod footprint;

pub use footprint::Footprint;

use std::ops::Range;

use serde::Serialize;

/// Fraction of every budget kept free.
pub const SAFETY_MARGIN: f64 = 0.02;

/// A device as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceBudget {
    pub label: String,
    pub budget: u64,
    /// Used by the balancing strategy only for layers the other devices
    /// cannot hold.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spill: bool,
}

impl DeviceBudget {
    pub fn new(label: impl Into<String>, budget: u64) -> Self {
        Self {
            label: label.into(),
            budget,
            spill: false,
        }
    }

    /// This device as a spill device (see the module docs).
    pub fn spill(self) -> Self {
        Self {
            spill: true,
            ..self
        }
    }

    /// The budget less the safety margin.
    pub fn usable(&self) -> u64 {
        self.budget - (self.budget as f64 * SAFETY_MARGIN).ceil() as u64
    }
}

/// How layers are assigned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Balance,
    /// Layer counts by device label; devices not named get none, except the
    /// last device, which takes the rest.
    Manual(Vec<(String, usize)>),
}

/// What one device receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevicePlan {
    pub label: String,
    pub layers: Range<usize>,
    pub weight_bytes: u64,
    pub kv_bytes: u64,
    /// Embedding, head and activation workspace.
    pub other_bytes: u64,
    pub total_bytes: u64,
    pub budget: u64,
    /// Budget left after this plan (negative never happens in a valid plan,
    /// but a signed type keeps the table honest).
    pub headroom: i64,
}

/// A placement: one entry per device, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub devices: Vec<DevicePlan>,
}

impl Plan {
    /// `(device index, layers)` of the devices that run layers.
    pub fn stages(&self) -> Vec<(usize, Range<usize>)> {
        self.devices
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.layers.is_empty())
            .map(|(i, d)| (i, d.layers.clone()))
            .collect()
    }

    /// The highest `total / usable budget` over the devices.
    pub fn max_load(&self, devices: &[DeviceBudget]) -> f64 {
        self.devices
            .iter()
            .zip(devices)
            .map(|(p, d)| ratio(p.total_bytes, d.usable()))
            .fold(0.0, f64::max)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no devices to place the model on")]
    NoDevices,
    #[error("the model does not fit: device `{device}` is short by {short} bytes (needs {needed}, usable budget {usable} of {budget})")]
    DoesNotFit {
        device: String,
        short: u64,
        needed: u64,
        usable: u64,
        budget: u64,
    },
    #[error("`--layers` names device `{0}`, which is not in the device list")]
    UnknownDevice(String),
    #[error("`--layers` gives {given} layers, the model has {n_layer}")]
    LayerCount { given: usize, n_layer: usize },
}

/// Plans `fp` onto `devices` with `strategy`.
pub fn plan(
    fp: &Footprint,
    devices: &[DeviceBudget],
    strategy: &Strategy,
) -> Result<Plan, PlacementError> {
    if devices.is_empty() {
        return Err(PlacementError::NoDevices);
    }
    let counts = match strategy {
        Strategy::Balance => balance(fp, devices)?,
        Strategy::Manual(wanted) => manual_counts(fp.n_layer(), devices, wanted)?,
    };
    let plan = build(fp, devices, &counts);
    for (p, d) in plan.devices.iter().zip(devices) {
        if p.total_bytes > d.usable() {
            return Err(PlacementError::DoesNotFit {
                device: d.label.clone(),
                short: p.total_bytes - d.usable(),
                needed: p.total_bytes,
                usable: d.usable(),
                budget: d.budget,
            });
        }
    }
    Ok(plan)
}

fn ratio(bytes: u64, usable: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else if usable == 0 {
        f64::INFINITY
    } else {
        bytes as f64 / usable as f64
    }
}

/// Fills devices in order, each up to `caps[i]` bytes; returns layer counts
/// and how many layers were placed.
fn fill(fp: &Footprint, caps: &[u64]) -> (Vec<usize>, usize) {
    let n = fp.n_layer();
    let mut counts = vec![0; caps.len()];
    let mut next = 0;
    let mut first_used: Option<usize> = None;
    for (i, &cap) in caps.iter().enumerate() {
        let mut used = fp.workspace_bytes
            + if first_used.is_none() {
                fp.embedding_bytes
            } else {
                0
            };
        while next < n {
            let mut add = fp.layer_bytes(next);
            if next == n - 1 {
                add += fp.head_cost(first_used.unwrap_or(i) != i);
            }
            if used + add > cap {
                break;
            }
            used += add;
            counts[i] += 1;
            next += 1;
        }
        if counts[i] > 0 && first_used.is_none() {
            first_used = Some(i);
        }
    }
    (counts, next)
}

/// How `balance_over` treats one device.
#[derive(Clone, Copy)]
enum Share {
    /// Up to the common load ratio being searched.
    Balanced,
    /// Up to its whole usable budget.
    Full,
    /// No layers.
    Nothing,
}

fn balance(fp: &Footprint, devices: &[DeviceBudget]) -> Result<Vec<usize>, PlacementError> {
    let mixed = devices.iter().any(|d| d.spill) && devices.iter().any(|d| !d.spill);
    if mixed {
        // Spill devices idle while the others hold the model; else the
        // others fill up and the spill devices share the rest.
        for role in [
            |d: &DeviceBudget| {
                if d.spill {
                    Share::Nothing
                } else {
                    Share::Balanced
                }
            },
            |d: &DeviceBudget| {
                if d.spill {
                    Share::Balanced
                } else {
                    Share::Full
                }
            },
        ] {
            let shares: Vec<Share> = devices.iter().map(role).collect();
            if let Some(counts) = balance_over(fp, devices, &shares) {
                return Ok(counts);
            }
        }
    }
    let shares = vec![Share::Balanced; devices.len()];
    balance_over(fp, devices, &shares).ok_or_else(|| {
        // Everything that did not fit would have to go on the last device.
        let (mut counts, placed) = fill(fp, &caps(devices, &shares, 1.0));
        let last = devices.len() - 1;
        counts[last] += fp.n_layer() - placed;
        let built = build(fp, devices, &counts);
        let d = &devices[last];
        let needed = built.devices[last].total_bytes;
        PlacementError::DoesNotFit {
            device: d.label.clone(),
            short: needed.saturating_sub(d.usable()),
            needed,
            usable: d.usable(),
            budget: d.budget,
        }
    })
}

/// Each device's byte cap when the balanced ones are loaded to `r`.
fn caps(devices: &[DeviceBudget], shares: &[Share], r: f64) -> Vec<u64> {
    devices
        .iter()
        .zip(shares)
        .map(|(d, share)| match share {
            Share::Balanced => (d.usable() as f64 * r).floor().min(d.usable() as f64) as u64,
            Share::Full => d.usable(),
            Share::Nothing => 0,
        })
        .collect()
}

/// The layer counts at the smallest load ratio of the balanced devices that
/// places every layer; `None` when even a ratio of 1 does not.
fn balance_over(fp: &Footprint, devices: &[DeviceBudget], shares: &[Share]) -> Option<Vec<usize>> {
    let n = fp.n_layer();
    if fill(fp, &caps(devices, shares, 1.0)).1 < n {
        return None;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..64 {
        let mid = (lo + hi) / 2.0;
        if fill(fp, &caps(devices, shares, mid)).1 == n {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(fill(fp, &caps(devices, shares, hi)).0)
}

fn manual_counts(
    n_layer: usize,
    devices: &[DeviceBudget],
    wanted: &[(String, usize)],
) -> Result<Vec<usize>, PlacementError> {
    let mut counts = vec![0usize; devices.len()];
    let mut named = vec![false; devices.len()];
    for (label, count) in wanted {
        let i = devices
            .iter()
            .position(|d| &d.label == label)
            .ok_or_else(|| PlacementError::UnknownDevice(label.clone()))?;
        counts[i] = *count;
        named[i] = true;
    }
    let given: usize = counts.iter().sum();
    let last = devices.len() - 1;
    if given > n_layer || (named[last] && given != n_layer) {
        return Err(PlacementError::LayerCount { given, n_layer });
    }
    counts[last] += n_layer - given;
    Ok(counts)
}

/// Turns layer counts into the full per-device accounting.
fn build(fp: &Footprint, devices: &[DeviceBudget], counts: &[usize]) -> Plan {
    let used: Vec<usize> = (0..devices.len()).filter(|&i| counts[i] > 0).collect();
    let first = used.first().copied();
    let last = used.last().copied();
    let mut start = 0;
    let devices = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let layers = start..start + counts[i];
            start = layers.end;
            let weight_bytes: u64 = layers.clone().map(|l| fp.layer_weight_bytes[l]).sum();
            let kv_bytes: u64 = layers.clone().map(|l| fp.layer_kv_bytes[l]).sum();
            let mut other_bytes = 0;
            if counts[i] > 0 {
                other_bytes += fp.workspace_bytes;
            }
            if Some(i) == first {
                other_bytes += fp.embedding_bytes;
            }
            if Some(i) == last {
                other_bytes += fp.head_cost(first != last);
            }
            let total_bytes = weight_bytes + kv_bytes + other_bytes;
            DevicePlan {
                label: d.label.clone(),
                layers,
                weight_bytes,
                kv_bytes,
                other_bytes,
                total_bytes,
                budget: d.budget,
                headroom: d.budget as i64 - total_bytes as i64,
            }
        })
        .collect();
    Plan { devices }
}

#[cfg(test)]
mod tests;
