//! The worker `serve` and `worker` run: its resource manager (settings
//! resolved, priority applied before any thread exists), its API key, its
//! model store, and its models.
//!
//! One `-m`: the model is loaded at start and stays loaded. Several: they
//! go into a [`ModelPool`] over the devices' budgets; each is checked to
//! fit the devices at start (a model that could never load is an error
//! now, not at its first request), the first is loaded at once, the others
//! by demand, and idle ones are unloaded after `--keep-alive`. Either way a
//! supervisor restarts an engine that panicked or hung (`--watchdog`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::serve::ServeArgs;
use crate::api::{ApiConfig, AppState};
use crate::devices::{budget, BudgetedDevice, HumanBytes};
use crate::engine::pool::PoolDevice;
use crate::engine::{load, LoadedModel, ModelPool, ModelSpec, PoolOptions};
use crate::model_store::catalog::Catalog;
use crate::model_store::HubCache;
use crate::resources::{discover, ResourceManager};
use crate::worker::models::NodeModels;

enum Models {
    One {
        loaded: Box<LoadedModel>,
        id: String,
    },
    Pool {
        pool: Arc<ModelPool>,
        first: String,
    },
}

pub struct LocalWorker {
    models: Models,
    watchdog: Duration,
    resources: Arc<ResourceManager>,
    config: ApiConfig,
    /// The bytes Strata may hold on each GPU, for desktop yield (NVML's
    /// per-process figure is used when the driver gives one).
    own_bytes: BTreeMap<u32, u64>,
    store: NodeModels,
}

fn missing(path: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!(
        "model file {} not found: run `scripts/fetch-models` for the default model, \
         `strata make-model --out FILE` for a synthetic one, or pass `-m FILE`",
        path.display()
    )
}

/// Bytes Strata places on each GPU, by NVML index (what the desktop-yield
/// monitor compares with the card's use): entries naming one card add up,
/// CPUs and cards NVML does not know are left out.
fn bytes_per_card<'a>(
    devices: impl Iterator<Item = (&'a BudgetedDevice, u64)>,
) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for (d, bytes) in devices {
        if let Some(index) = d.nvml_index {
            *out.entry(index).or_default() += bytes;
        }
    }
    out
}

fn stem(path: &std::path::Path) -> String {
    path.file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned())
}

impl LocalWorker {
    /// Resolves the settings, applies the priority, loads or plans the
    /// models.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let settings = args.model.resources.resolve()?.settings;
        let resources = ResourceManager::new(settings);
        resources.apply_priority();
        let config = ApiConfig {
            api_key: read_api_key(args)?,
            max_body_bytes: args.max_body,
        };
        let catalog = match &args.catalog {
            Some(path) => Catalog::load(path)?,
            None => Catalog::default(),
        };
        let store = NodeModels::new(HubCache::locate(args.model.model_dir.as_deref()), catalog);
        let paths = args.model.model_paths()?;
        if let Some(p) = paths.iter().find(|p| !p.exists()) {
            return Err(missing(p));
        }
        let (models, own_bytes) = if paths.len() == 1 {
            Self::load_one(args, &resources, paths[0].clone())?
        } else {
            Self::plan_pool(args, &resources, paths)?
        };
        anyhow::ensure!(
            args.watchdog >= Duration::from_millis(100),
            "`--watchdog` must be at least 100ms, got {:?}",
            args.watchdog
        );
        Ok(Self {
            models,
            watchdog: args.watchdog,
            resources,
            config,
            own_bytes,
            store,
        })
    }

    fn load_one(
        args: &ServeArgs,
        resources: &ResourceManager,
        path: PathBuf,
    ) -> anyhow::Result<(Models, BTreeMap<u32, u64>)> {
        anyhow::ensure!(
            args.priorities.is_empty(),
            "`--priority` orders several models; one `-m` was given"
        );
        let opts = args
            .model
            .load_options_for(path.clone(), resources.budget_policy())?;
        let id = args.model_name.clone().unwrap_or_else(|| stem(&path));
        let loaded = load(&opts)?;
        for d in loaded.plan.devices.iter().filter(|d| !d.layers.is_empty()) {
            tracing::info!(
                device = %d.label,
                layers = format!("{}-{}", d.layers.start, d.layers.end - 1),
                planned = %HumanBytes(d.total_bytes),
                budget = %HumanBytes(d.budget),
                "placement"
            );
        }
        let own_bytes = bytes_per_card(
            loaded
                .devices
                .iter()
                .zip(&loaded.plan.devices)
                .map(|(d, p)| (d, p.total_bytes)),
        );
        Ok((
            Models::One {
                loaded: Box::new(loaded),
                id,
            },
            own_bytes,
        ))
    }

    fn plan_pool(
        args: &ServeArgs,
        resources: &ResourceManager,
        paths: Vec<PathBuf>,
    ) -> anyhow::Result<(Models, BTreeMap<u32, u64>)> {
        anyhow::ensure!(
            args.model_name.is_none(),
            "`--model-name` names one model; with several `-m` each is named by its file"
        );
        let ids: Vec<String> = paths.iter().map(|p| stem(p)).collect();
        for (i, id) in ids.iter().enumerate() {
            anyhow::ensure!(
                !ids[..i].contains(id),
                "two `-m` files are both named `{id}` (by their file names); rename one"
            );
        }
        for (name, _) in &args.priorities {
            anyhow::ensure!(
                ids.contains(name),
                "`--priority {name}=...`: no model `{name}` (the models are {})",
                ids.join(", ")
            );
        }
        let base = args
            .model
            .load_options_for(paths[0].clone(), resources.budget_policy())?;
        let budgeted = budget(&base.devices, &base.budget_policy)?;
        let own_bytes = bytes_per_card(budgeted.iter().map(|d| (d, d.budget)));
        let devices: Vec<PoolDevice> = budgeted.iter().map(PoolDevice::from_budgeted).collect();
        let specs = paths
            .into_iter()
            .zip(&ids)
            .map(|(path, id)| ModelSpec {
                id: id.clone(),
                path,
                priority: args
                    .priorities
                    .iter()
                    .rev()
                    .find(|(n, _)| n == id)
                    .map_or(0, |(_, p)| *p),
            })
            .collect();
        let pool = ModelPool::new(
            specs,
            PoolOptions {
                devices,
                strategy: base.strategy,
                ctx_size: base.ctx_size,
                keep_alive: args.keep_alive.0,
                decode_pause: resources.settings().decode_pause,
            },
        );
        pool.check_fits()?;
        Ok((
            Models::Pool {
                pool,
                first: ids[0].clone(),
            },
            own_bytes,
        ))
    }

    /// Starts the engines, the keep-alive keeper and the GPU watch (inside
    /// the runtime).
    pub async fn start(self) -> anyhow::Result<AppState> {
        if !self.own_bytes.is_empty() {
            self.resources.watch_gpus(discover(), self.own_bytes);
        }
        let state = match self.models {
            Models::One { loaded, id } => AppState::new(*loaded, id, self.resources, self.config),
            Models::Pool { pool, first } => {
                drop(
                    pool.acquire(&first)
                        .await
                        .with_context(|| format!("loading `{first}`"))?,
                );
                if let Some(keep_alive) = pool.keep_alive() {
                    pool.spawn_keeper(
                        (keep_alive / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)),
                    );
                }
                AppState::with_pool(pool, self.resources, self.config)
            }
        };
        let every = (self.watchdog / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        state.pool.spawn_supervisor(self.watchdog, every);
        Ok(state.with_models(self.store))
    }
}

fn read_api_key(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    let Some(path) = &args.api_key_file else {
        return Ok(args.api_key.clone().filter(|k| !k.is_empty()));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading `--api-key-file` {}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !key.is_empty(),
        "`--api-key-file` {} is empty",
        path.display()
    );
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::DeviceKind;

    fn device(label: &str, kind: DeviceKind, nvml_index: Option<u32>) -> BudgetedDevice {
        BudgetedDevice {
            label: label.into(),
            kind,
            budget: 0,
            total: 0,
            spill: false,
            nvml_index,
        }
    }

    #[test]
    fn one_card_given_twice_is_watched_with_the_bytes_of_both() {
        let devices = [
            device("cuda:0#0", DeviceKind::Cuda(0), Some(2)),
            device("cuda:0#1", DeviceKind::Cuda(0), Some(2)),
            device("cuda:1", DeviceKind::Cuda(1), None),
            device("cpu", DeviceKind::Cpu, None),
        ];
        let bytes = [100, 50, 70, 1000];
        let watched = bytes_per_card(devices.iter().zip(bytes));
        assert_eq!(
            watched,
            BTreeMap::from([(2, 150)]),
            "NVML's index, summed; unknown cards and the CPU left out"
        );
    }
}
