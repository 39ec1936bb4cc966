//! `strata check`: runs the correctness oracles (see `engine::check`) on a
//! device of this machine and prints one row per check; fails when any
//! check does. Without `-m` it generates small models of several
//! quantization types (seeded, in a temporary folder) and checks each.

use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use clap::Args;

use super::make_model::{parse_quant, quant_name};
use super::model_args::auto_devices;
use super::print_out;
use super::table::text_table;
use crate::devices::{DeviceKind, DeviceList};
use crate::engine::check::{run_checks, CheckOptions, CheckResult};
use crate::model::synth::{write_synthetic, SynthSpec};
use crate::resources::discover;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The device to check: `cpu` or `cuda:N` (default: the first GPU
    /// found in a CUDA build, else the CPU).
    #[arg(long)]
    pub device: Option<String>,
    /// Model files to check (repeatable); default: generated models.
    #[arg(long = "model", short = 'm')]
    pub models: Vec<PathBuf>,
    /// Weight types of the generated models, comma-separated.
    #[arg(long, default_value = "f32,q4_0,q4_1,q8_0,q4_k,q6_k", value_delimiter = ',', value_parser = parse_quant)]
    pub quant: Vec<GgmlDType>,
    /// Decode steps after the prompt.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn device_kind(args: &CheckArgs) -> anyhow::Result<DeviceKind> {
    let list = match &args.device {
        Some(d) => d.parse::<DeviceList>()?,
        None => auto_devices(discover().as_ref()),
    };
    match list.0.as_slice() {
        [one] if one.budget.is_none() => Ok(one.kind),
        _ => anyhow::bail!(
            "`--device` takes one device without a budget (`cpu` or `cuda:N`), got `{}`",
            args.device.as_deref().unwrap_or_default()
        ),
    }
}

/// A folder removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.steps >= 1, "`--steps` must be at least 1, got 0");
    let device = device_kind(args)?;
    let scratch =
        Scratch(std::env::temp_dir().join(format!("strata-check-{}", std::process::id())));
    let models: Vec<(String, PathBuf)> = if args.models.is_empty() {
        std::fs::create_dir_all(&scratch.0)?;
        args.quant
            .iter()
            .map(|&q| {
                let name = format!("tiny-{}", quant_name(q));
                let path = scratch.0.join(format!("{name}.gguf"));
                write_synthetic(&SynthSpec::tiny(q, 42), &path)?;
                Ok((name, path))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        args.models
            .iter()
            .map(|p| (p.display().to_string(), p.clone()))
            .collect()
    };
    let mut rows: Vec<(String, CheckResult)> = Vec::new();
    for (name, path) in &models {
        let opts = CheckOptions {
            model: path.clone(),
            device,
            steps: args.steps,
        };
        for r in run_checks(&opts).map_err(|e| anyhow::anyhow!("{name}: {e}"))? {
            rows.push((name.clone(), r));
        }
    }
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(m, r)| serde_json::json!({"model": m, "result": r}))
            .collect();
        print_out(&(serde_json::to_string_pretty(&list)? + "\n"))?;
    } else {
        print_out(&table(&rows))?;
    }
    let failed = rows.iter().filter(|(_, r)| !r.passed).count();
    anyhow::ensure!(failed == 0, "{failed} of {} checks failed", rows.len());
    Ok(())
}

fn table(rows: &[(String, CheckResult)]) -> String {
    let mut out = vec![[
        "model",
        "check",
        "result",
        "max |diff|",
        "max |logit|",
        "relative",
        "tolerance",
    ]
    .map(String::from)
    .to_vec()];
    let mut setups: Vec<(&str, &str)> = Vec::new();
    for (model, r) in rows {
        out.push(vec![
            model.clone(),
            r.check.to_string(),
            if r.passed { "ok" } else { "FAIL" }.to_string(),
            format!("{:.3e}", r.max_diff),
            format!("{:.3}", r.scale),
            format!("{:.2e}", r.relative()),
            format!("{:.0e}", r.tolerance),
        ]);
        if !setups.iter().any(|(c, _)| *c == r.check) {
            setups.push((r.check, &r.setup));
        }
    }
    let mut text = text_table(&out, 3);
    for (check, setup) in setups {
        text.push_str(&format!("{check}: {setup}\n"));
    }
    text
}
