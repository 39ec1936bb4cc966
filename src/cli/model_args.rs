//! Arguments shared by every command that loads a model.

use std::path::PathBuf;

use clap::Args;

use crate::devices::DeviceList;
use crate::engine::LoadOptions;
use crate::placement::Strategy;
use crate::resources::BudgetPolicy;

use super::resource_args::ResourceArgs;

/// The model the README's commands fetch (scripts/fetch-models).
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF model file.
    #[arg(long, short = 'm', default_value = DEFAULT_MODEL, env = "STRATA_MODEL")]
    pub model: PathBuf,
    /// Devices and budgets, e.g. `cpu`, `cuda:0,cuda:1,cpu`,
    /// `cuda:0=6GiB,cuda:1=60%,cpu=8GiB`, `cpu=300MiB,cpu=200MiB,cpu=1GiB`.
    #[arg(long, default_value = "cpu", env = "STRATA_DEVICES")]
    pub devices: DeviceList,
    /// Manual layer counts, e.g. `cuda:0=20,cuda:1=12` (the rest go to the
    /// last device). Without it layers are balanced by budget.
    #[arg(long, value_parser = parse_layers)]
    pub layers: Option<LayerCounts>,
    /// Context length per sequence (default: the model's, at most 4096).
    #[arg(long)]
    pub ctx_size: Option<usize>,
    #[command(flatten)]
    pub resources: ResourceArgs,
}

/// `--layers` parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCounts(pub Vec<(String, usize)>);

fn parse_layers(s: &str) -> Result<LayerCounts, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (dev, n) = entry
                .split_once('=')
                .ok_or_else(|| format!("`--layers` entry `{entry}` must be DEVICE=COUNT"))?;
            let n = n
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("`--layers` entry `{entry}`: `{n}` is not a layer count"))?;
            Ok((dev.trim().to_string(), n))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(LayerCounts)
}

impl ModelArgs {
    /// Load options with `policy` budgeting devices listed without one.
    pub fn load_options(&self, policy: BudgetPolicy) -> LoadOptions {
        LoadOptions {
            model: self.model.clone(),
            devices: self.devices.clone(),
            strategy: match &self.layers {
                Some(LayerCounts(c)) => Strategy::Manual(c.clone()),
                None => Strategy::Balance,
            },
            ctx_size: self.ctx_size,
            budget_policy: policy,
        }
    }
}
