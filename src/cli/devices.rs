//! `strata devices`: every device found (NVML GPUs and the CPU), its
//! memory and readings, what each mode would let Strata plan for on it,
//! what the settings in effect allow now, and what other processes hold.

use clap::Args;
use serde_json::json;

use super::print_out;
use super::resource_args::ResourceArgs;
use super::table::text_table;
use crate::devices::HumanBytes;
use crate::resources::probe::{CpuReading, GpuReading};
use crate::resources::settings::{Resolved, SETTINGS};
use crate::resources::{budget, discover, DeviceProbe, Mode};

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub resources: ResourceArgs,
}

pub fn run(args: &DevicesArgs) -> anyhow::Result<()> {
    let resolved = args.resources.resolve()?;
    let probe = discover();
    let report = DevicesReport::read(probe.as_ref(), resolved)?;
    if args.json {
        print_out(&(serde_json::to_string_pretty(&report.to_json())? + "\n"))?;
    } else {
        print_out(&report.table())?;
    }
    Ok(())
}

/// One reading of the machine, with the settings in effect.
pub struct DevicesReport {
    pub probe: String,
    pub cpu: CpuReading,
    pub gpus: Vec<GpuReading>,
    pub resolved: Resolved,
}

impl DevicesReport {
    pub fn read(probe: &dyn DeviceProbe, resolved: Resolved) -> anyhow::Result<Self> {
        Ok(Self {
            probe: probe.describe(),
            cpu: probe.cpu()?,
            gpus: probe.gpus()?,
            resolved,
        })
    }

    /// What `mode` allows on a GPU of `total` bytes (before what is free).
    fn gpu_mode_budget(mode: Mode, total: u64) -> u64 {
        let s = mode.defaults();
        budget(total, s.vram_cap, s.vram_reserve)
    }

    fn cpu_mode_budget(mode: Mode, total: u64) -> u64 {
        mode.defaults().vram_cap.of(total)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let policy = self.resolved.settings.budget_policy();
        let modes = |f: &dyn Fn(Mode) -> u64| -> serde_json::Map<String, serde_json::Value> {
            Mode::ALL
                .iter()
                .map(|&m| (m.name().to_string(), json!(f(m))))
                .collect()
        };
        let c = &self.cpu;
        let gpus: Vec<_> = self
            .gpus
            .iter()
            .map(|g| {
                json!({
                    "device": format!("cuda:{}", g.index),
                    "reading": g,
                    "mode_budgets": modes(&|m| Self::gpu_mode_budget(m, g.total)),
                    "budget_now": policy.gpu(g.total, g.free),
                })
            })
            .collect();
        json!({
            "probe": self.probe,
            "cpu": {
                "device": "cpu",
                "reading": c,
                "mode_budgets": modes(&|m| Self::cpu_mode_budget(m, c.total)),
                "budget_now": policy.cpu(c.total, c.available),
            },
            "gpus": gpus,
            "settings": self.resolved.settings,
            "sources": self.resolved.sources,
        })
    }

    pub fn table(&self) -> String {
        let s = &self.resolved.settings;
        let policy = s.budget_policy();
        let mut header: Vec<String> = ["device", "name", "total", "in use", "free"]
            .map(String::from)
            .to_vec();
        header.extend(Mode::ALL.iter().map(|m| m.name().to_string()));
        header.push(format!("now ({})", s.mode));
        let mut rows = vec![header];
        // device, name, then bytes: total, in use, free, each mode, now.
        let row = |device: String, name: String, bytes: Vec<u64>| -> Vec<String> {
            let mut r = vec![device, name];
            r.extend(bytes.into_iter().map(|b| HumanBytes(b).to_string()));
            r
        };
        let c = &self.cpu;
        let mut bytes = vec![c.total, c.total - c.available.min(c.total), c.available];
        bytes.extend(Mode::ALL.map(|m| Self::cpu_mode_budget(m, c.total)));
        bytes.push(policy.cpu(c.total, c.available));
        rows.push(row(
            "cpu".into(),
            format!("{} ({} cores)", c.name, c.cores),
            bytes,
        ));
        for g in &self.gpus {
            let mut bytes = vec![g.total, g.used, g.free];
            bytes.extend(Mode::ALL.map(|m| Self::gpu_mode_budget(m, g.total)));
            bytes.push(policy.gpu(g.total, g.free));
            rows.push(row(format!("cuda:{}", g.index), g.name.clone(), bytes));
        }
        let mut out = format!("{}\n", self.probe);
        out.push_str(&text_table(&rows, 2));
        for g in &self.gpus {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "n/a".into());
            out.push_str(&format!(
                "cuda:{}: {} °C, {} % busy, {} W\n",
                g.index,
                opt(g.temperature_c.map(|t| t.to_string())),
                opt(g.utilization_pct.map(|u| u.to_string())),
                opt(g.power_w.map(|w| format!("{w:.1}"))),
            ));
            let own = std::process::id();
            for p in g.processes.iter().filter(|p| p.pid != own) {
                let bytes = p.bytes.map_or("n/a".into(), |b| HumanBytes(b).to_string());
                out.push_str(&format!("  pid {} {}: {bytes}\n", p.pid, p.name));
            }
        }
        out.push_str("settings in effect:\n");
        let rows: Vec<Vec<String>> = SETTINGS
            .iter()
            .map(|def| {
                let source = self.resolved.sources.get(def.key);
                vec![
                    format!("  {}", def.key),
                    s.value_text(def.key),
                    source.map_or("?".into(), |src| format!("from {}", src.describe(def.key))),
                ]
            })
            .collect();
        out.push_str(&text_table(&rows, 3));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::probe::gpu;
    use crate::resources::settings::Sources;
    use crate::resources::FakeProbe;

    const GIB: u64 = 1 << 30;

    fn report() -> DevicesReport {
        let probe = FakeProbe::new(vec![
            gpu(0, "Big", 24 * GIB, &[(7, 2 * GIB)]),
            gpu(1, "Small", 8 * GIB, &[]),
        ])
        .with_cpu(CpuReading {
            name: "Test CPU".into(),
            cores: 4,
            total: 32 * GIB,
            available: 20 * GIB,
        });
        let env = |_: &str| None;
        let resolved = Sources {
            flags: [("mode", "conservative".to_string())].into(),
            env: &env,
            file: None,
        }
        .resolve()
        .unwrap();
        DevicesReport::read(&probe, resolved).unwrap()
    }

    #[test]
    fn every_mode_and_the_settings_in_effect_are_shown() {
        let j = report().to_json();
        assert_eq!(j["gpus"].as_array().unwrap().len(), 2);
        let big = &j["gpus"][0];
        assert_eq!(
            big["mode_budgets"]["conservative"],
            12 * GIB - 512 * (1 << 20)
        );
        assert_eq!(
            big["mode_budgets"]["aggressive"],
            24 * GIB / 100 * 95 + 24 * GIB % 100 * 95 / 100
        );
        assert_eq!(
            big["budget_now"],
            12 * GIB - 512 * (1 << 20),
            "conservative, 22 GiB free"
        );
        assert_eq!(j["cpu"]["mode_budgets"]["default"], 32 * GIB * 7 / 10);
        assert_eq!(j["cpu"]["budget_now"], 16 * GIB);
        assert_eq!(j["settings"]["mode"], "conservative");
        assert_eq!(j["sources"]["mode"], "flag");
        let t = report().table();
        assert!(t.contains("cuda:1  Small"), "{t}");
        assert!(t.contains("pid 7 pid7: 2.00 GiB"), "{t}");
        assert!(t.contains("now (conservative)"), "{t}");
        assert!(t.contains("vram_cap          50%"), "{t}");
        assert!(t.contains("from flag --mode"), "{t}");
    }
}
