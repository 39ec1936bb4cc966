//! Device lists: parsing `--devices`, and (in [`resolve`]) turning entries
//! into byte budgets and candle devices.
//!
//! Syntax: comma-separated entries `KIND[=BUDGET]`, where KIND is `cpu` or
//! `cuda:N` and BUDGET is a size (`6GiB`, `300MiB`, `512MB`, `1000000`) or a
//! percentage of the device's total memory (`60%`). A kind listed more than
//! once gives virtual devices: `cpu,cpu` runs on the CPU but is planned,
//! placed and crossed like two GPUs, so the multi-device path runs
//! everywhere; `cuda:0,cuda:0` is one GPU as two devices, which exercises
//! the device-to-device path on a one-GPU machine. An entry without a
//! budget gets the one the resource manager's [`BudgetPolicy`] allows (the
//! mode's cap and reserve), shared between the virtual devices of one
//! device; a budget written in the entry wins over it.

mod resolve;

pub use resolve::{
    budget, budget_devices, open, resolve, BudgetedDevice, GpuMemory, ResolvedDevice,
};

use std::fmt;
use std::str::FromStr;

#[cfg(doc)]
use crate::resources::BudgetPolicy;
use crate::resources::Percent;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("`--devices` is empty")]
    Empty,
    #[error("`--devices` entry `{0}` is not `cpu` or `cuda:N`")]
    UnknownKind(String),
    #[error("`--devices` entry `{entry}`: budget `{budget}` is not a size (like 6GiB, 300MiB) or a percentage (1% to 100%)")]
    BadBudget { entry: String, budget: String },
    #[error(
        "`--devices` gives `{device}` budgets of {given} bytes in all, more than its {total} bytes"
    )]
    OverCommitted {
        device: String,
        given: u64,
        total: u64,
    },
    #[error("`--devices` names `{0}`, but this strata was built without CUDA support (rebuild with `--features cuda`)")]
    NoCuda(String),
    #[error("device `{device}`: {reason}")]
    Unavailable { device: String, reason: String },
}

/// What kind of device an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceKind {
    Cpu,
    Cuda(usize),
}

/// A budget as written by the user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetSpec {
    Bytes(u64),
    Percent(Percent),
}

/// One entry of `--devices`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    pub kind: DeviceKind,
    pub budget: Option<BudgetSpec>,
}

/// A parsed `--devices` value.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceList(pub Vec<DeviceSpec>);

impl FromStr for DeviceList {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kind, budget) = match entry.split_once('=') {
                Some((k, b)) => (k.trim(), Some(b.trim())),
                None => (entry, None),
            };
            let kind = match kind {
                "cpu" => DeviceKind::Cpu,
                k => match k.strip_prefix("cuda:").map(str::parse::<usize>) {
                    Some(Ok(i)) => DeviceKind::Cuda(i),
                    _ if k == "cuda" => DeviceKind::Cuda(0),
                    _ => return Err(DeviceError::UnknownKind(entry.to_string())),
                },
            };
            let budget = budget
                .map(|b| {
                    parse_budget(b).ok_or_else(|| DeviceError::BadBudget {
                        entry: entry.to_string(),
                        budget: b.to_string(),
                    })
                })
                .transpose()?;
            out.push(DeviceSpec { kind, budget });
        }
        if out.is_empty() {
            return Err(DeviceError::Empty);
        }
        Ok(Self(out))
    }
}

fn parse_budget(s: &str) -> Option<BudgetSpec> {
    if let Some(p) = s.strip_suffix('%') {
        let p: Percent = p.parse().ok()?;
        return (p > Percent::ZERO).then_some(BudgetSpec::Percent(p));
    }
    parse_bytes(s).map(BudgetSpec::Bytes)
}

/// Parses a byte size: a number with an optional unit (B, KB, MB, GB, TB in
/// powers of 1000; KiB, MiB, GiB, TiB in powers of 1024; K, M, G, T as the
/// binary ones). Overflow is refused, not wrapped.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0f64.powi(2),
        "g" | "gib" => 1024.0f64.powi(3),
        "t" | "tib" => 1024.0f64.powi(4),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    let bytes = (n * mult).round();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// A size for people: `1.50 GiB`, `300.00 MiB`, `512 B`.
pub struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut u = 0;
        while v >= 1024.0 && u < UNITS.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        if u == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.2} {}", UNITS[u])
        }
    }
}

/// Memory of this machine: (total, available), from `/proc/meminfo`.
pub fn system_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// The budget of an entry on a device of `total` bytes: the entry's own,
/// else `default` (what the resource manager allows).
pub fn budget_bytes(spec: Option<BudgetSpec>, total: u64, default: u64) -> u64 {
    match spec {
        None => default,
        Some(BudgetSpec::Bytes(b)) => b,
        Some(BudgetSpec::Percent(p)) => p.of(total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let l: DeviceList = "cuda:0=6GiB,cuda:1=60%,cpu=8GiB".parse().unwrap();
        assert_eq!(
            l.0,
            vec![
                DeviceSpec {
                    kind: DeviceKind::Cuda(0),
                    budget: Some(BudgetSpec::Bytes(6 << 30))
                },
                DeviceSpec {
                    kind: DeviceKind::Cuda(1),
                    budget: Some(BudgetSpec::Percent(Percent::whole(60)))
                },
                DeviceSpec {
                    kind: DeviceKind::Cpu,
                    budget: Some(BudgetSpec::Bytes(8 << 30))
                },
            ]
        );
        let l: DeviceList = "cpu=300MiB, cpu=200MiB ,cpu=1GiB".parse().unwrap();
        assert_eq!(l.0.len(), 3);
        assert_eq!(l.0[1].budget, Some(BudgetSpec::Bytes(200 << 20)));
        assert_eq!("cpu".parse::<DeviceList>().unwrap().0[0].budget, None);
    }

    #[test]
    fn refuses_bad_entries_by_name() {
        assert_eq!(
            "tpu:0".parse::<DeviceList>().unwrap_err(),
            DeviceError::UnknownKind("tpu:0".into())
        );
        let e = "cpu=lots".parse::<DeviceList>().unwrap_err();
        assert!(e.to_string().contains("`lots`"), "{e}");
        assert!("cpu=0%".parse::<DeviceList>().is_err());
        assert!("cpu=101%".parse::<DeviceList>().is_err());
        assert!("cpu=99999999999TiB".parse::<DeviceList>().is_err());
        assert_eq!(
            "cuda:0,cuda:0".parse::<DeviceList>().unwrap().0.len(),
            2,
            "one GPU as two devices"
        );
        assert_eq!(" , ".parse::<DeviceList>().unwrap_err(), DeviceError::Empty);
    }

    #[test]
    fn byte_units() {
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_bytes("2 MB"), Some(2_000_000));
        assert_eq!(parse_bytes("1k"), Some(1024));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(HumanBytes(3 << 29).to_string(), "1.50 GiB");
        assert_eq!(HumanBytes(100).to_string(), "100 B");
    }

    #[test]
    fn percent_budgets_do_not_overflow() {
        let half = Some(BudgetSpec::Percent(Percent::whole(50)));
        assert_eq!(budget_bytes(half, 0, 7), 0);
        assert_eq!(budget_bytes(half, 3, 7), 1);
        assert_eq!(budget_bytes(None, 3, 7), 7);
        let all = Some(BudgetSpec::Percent(Percent::FULL));
        assert_eq!(budget_bytes(all, u64::MAX, 0), u64::MAX);
    }
}
