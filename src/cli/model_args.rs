//! Arguments shared by every command that loads a model.

use std::path::PathBuf;

use clap::Args;

use crate::devices::{DeviceKind, DeviceList, DeviceSpec};
use crate::engine::LoadOptions;
use crate::model_store::{HubCache, ModelRef};
use crate::placement::Strategy;
use crate::resources::{discover, BudgetPolicy, DeviceProbe};

use super::resource_args::ResourceArgs;

/// The model the README's commands fetch (scripts/fetch-models).
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF model: a file, or hf:OWNER/REPO/FILE.gguf[@REVISION] from the
    /// model store (`strata models pull` puts it there). `serve` and
    /// `worker` take it more than once (`-m a.gguf -m b.gguf`) and load
    /// each by demand.
    #[arg(long, short = 'm', default_value = DEFAULT_MODEL, env = "STRATA_MODEL")]
    pub model: Vec<ModelRef>,
    /// The model store [default: HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub].
    #[arg(long, env = "STRATA_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Devices and budgets, e.g. `cpu`, `cuda:0,cuda:1,cpu`,
    /// `cuda:0=6GiB,cuda:1=60%,cpu=8GiB`, `cpu=300MiB,cpu=200MiB,cpu=1GiB`
    /// [default: every NVIDIA GPU found when built with CUDA, else the CPU].
    #[arg(long, env = "STRATA_DEVICES")]
    pub devices: Option<DeviceList>,
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

/// The devices a command uses when `--devices` is not given: every GPU the
/// probe finds (in a CUDA build), else the CPU. GPUs only, not GPUs and the
/// CPU: a layer on the CPU is many times slower, so spilling onto it is
/// left to an explicit `--devices cuda:0,cpu`.
pub fn auto_devices(probe: &dyn DeviceProbe) -> DeviceList {
    let gpus = probe.gpus().unwrap_or_default();
    let cpu = || {
        DeviceList(vec![DeviceSpec {
            kind: DeviceKind::Cpu,
            budget: None,
        }])
    };
    if gpus.is_empty() {
        return cpu();
    }
    if !cfg!(feature = "cuda") {
        tracing::warn!(
            "{} NVIDIA GPU(s) found, but this strata was built without CUDA: running on the CPU \
             (rebuild with `--features cuda`)",
            gpus.len()
        );
        return cpu();
    }
    DeviceList(
        gpus.iter()
            .map(|g| DeviceSpec {
                kind: DeviceKind::Cuda(g.index as usize),
                budget: None,
            })
            .collect(),
    )
}

impl ModelArgs {
    /// The models' files: the paths given, or where the store keeps hub
    /// references.
    pub fn model_paths(&self) -> anyhow::Result<Vec<PathBuf>> {
        self.model.iter().map(|m| self.resolve(m)).collect()
    }

    fn resolve(&self, model: &ModelRef) -> anyhow::Result<PathBuf> {
        match model {
            ModelRef::Path(p) => Ok(p.clone()),
            ModelRef::Hub(h) => {
                let store = HubCache::locate(self.model_dir.as_deref());
                store.resolve(h).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{h} is not in the model store {}: run `strata models pull {h}`",
                        store.root().display()
                    )
                })
            }
        }
    }

    /// The one model of a command that takes one.
    pub fn model_path(&self) -> anyhow::Result<PathBuf> {
        match self.model.as_slice() {
            [one] => self.resolve(one),
            many => anyhow::bail!(
                "this command takes one model; `-m` was given {} times",
                many.len()
            ),
        }
    }

    /// Load options of the one model with `policy` budgeting devices
    /// listed without one.
    pub fn load_options(&self, policy: BudgetPolicy) -> anyhow::Result<LoadOptions> {
        self.load_options_for(self.model_path()?, policy)
    }

    /// Load options of the file `model`.
    pub fn load_options_for(
        &self,
        model: PathBuf,
        policy: BudgetPolicy,
    ) -> anyhow::Result<LoadOptions> {
        Ok(LoadOptions {
            model,
            devices: self
                .devices
                .clone()
                .unwrap_or_else(|| auto_devices(discover().as_ref())),
            strategy: match &self.layers {
                Some(LayerCounts(c)) => Strategy::Manual(c.clone()),
                None => Strategy::Balance,
            },
            ctx_size: self.ctx_size,
            budget_policy: policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::probe::gpu;
    use crate::resources::FakeProbe;

    #[test]
    fn auto_takes_the_gpus_found_or_the_cpu() {
        let none = auto_devices(&FakeProbe::new(vec![]));
        assert_eq!(none.0.len(), 1);
        assert_eq!(none.0[0].kind, DeviceKind::Cpu);
        let two = FakeProbe::new(vec![gpu(0, "a", 1 << 30, &[]), gpu(1, "b", 1 << 30, &[])]);
        let kinds: Vec<DeviceKind> = auto_devices(&two).0.iter().map(|d| d.kind).collect();
        if cfg!(feature = "cuda") {
            assert_eq!(kinds, [DeviceKind::Cuda(0), DeviceKind::Cuda(1)]);
        } else {
            assert_eq!(kinds, [DeviceKind::Cpu], "a CPU build cannot use them");
        }
    }
}
