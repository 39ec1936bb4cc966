//! `strata plan`: a dry run of the placement, as a table or JSON.

use clap::Args;

use super::model_args::ModelArgs;
use super::print_out;
use super::table::text_table;
use crate::devices::HumanBytes;
use crate::engine::{plan_for, PlanReport};

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    let policy = args.model.resources.resolve()?.settings.budget_policy();
    let report = plan_for(&args.model.load_options(policy)?)?;
    if args.json {
        print_out(&(serde_json::to_string_pretty(&to_json(&report))? + "\n"))?;
    } else {
        print_out(&table(&report))?;
    }
    Ok(())
}

fn to_json(r: &PlanReport) -> serde_json::Value {
    serde_json::json!({
        "model": r.config.name,
        "architecture": r.config.architecture.gguf_name(),
        "layers": r.config.n_layer,
        "ctx_size": r.ctx_size,
        "devices": r.plan.devices,
        "spill": spill_labels(r),
        "footprint": r.footprint,
    })
}

/// The plan as an aligned text table.
pub fn table(r: &PlanReport) -> String {
    let mut rows = vec![[
        "device", "layers", "weights", "kv cache", "other", "total", "budget", "headroom",
    ]
    .map(String::from)
    .to_vec()];
    for d in &r.plan.devices {
        let layers = if d.layers.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{}-{} ({})",
                d.layers.start,
                d.layers.end - 1,
                d.layers.len()
            )
        };
        let headroom = if d.headroom < 0 {
            format!("-{}", HumanBytes(d.headroom.unsigned_abs()))
        } else {
            HumanBytes(d.headroom as u64).to_string()
        };
        rows.push(vec![
            d.label.clone(),
            layers,
            HumanBytes(d.weight_bytes).to_string(),
            HumanBytes(d.kv_bytes).to_string(),
            HumanBytes(d.other_bytes).to_string(),
            HumanBytes(d.total_bytes).to_string(),
            HumanBytes(d.budget).to_string(),
            headroom,
        ]);
    }
    let mut out = format!(
        "model {} ({}, {} layers), context {}\n",
        r.config.name,
        r.config.architecture.gguf_name(),
        r.config.n_layer,
        r.ctx_size
    );
    out.push_str(&text_table(&rows, 2));
    let spill = spill_labels(r);
    if !spill.is_empty() {
        out.push_str(&format!(
            "{} take(s) only the layers the GPUs cannot hold\n",
            spill.join(", ")
        ));
    }
    out
}

/// The devices that only take what the GPUs cannot hold.
fn spill_labels(r: &PlanReport) -> Vec<String> {
    r.devices
        .iter()
        .filter(|d| d.spill)
        .map(|d| d.label.clone())
        .collect()
}
