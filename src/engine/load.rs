//! Loading: open the GGUF, resolve devices, plan the placement, read each
//! stage's blocks onto its device, and build the tokenizer.

use std::path::PathBuf;
use std::time::Instant;

use crate::devices::{budget, open, BudgetedDevice, DeviceList, HumanBytes};
use crate::model::accounting::footprint;
use crate::model::chat_template::ChatTemplate;
use crate::model::{GgufFile, LayeredModel, ModelConfig, StageSpec, Tokenizer};
use crate::placement::{plan, DeviceBudget, Footprint, Plan, Strategy};
use crate::resources::BudgetPolicy;

use super::EngineError;

/// Context length used when none is asked for and the model allows more.
pub const DEFAULT_CTX: usize = 4096;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub model: PathBuf,
    pub devices: DeviceList,
    pub strategy: Strategy,
    /// Positions per sequence; defaults to min(model context, 4096).
    pub ctx_size: Option<usize>,
    /// Budgets for devices listed without one (the resource mode's).
    pub budget_policy: BudgetPolicy,
}

/// A model ready to generate.
pub struct LoadedModel {
    pub model: LayeredModel,
    pub tokenizer: Tokenizer,
    /// The chat template (the file's, or a fallback).
    pub template: ChatTemplate,
    pub plan: Plan,
    /// Every device listed, in plan order (only those with layers opened).
    pub devices: Vec<BudgetedDevice>,
    pub ctx_size: usize,
    /// The file it was loaded from.
    pub path: std::path::PathBuf,
}

/// What `strata plan` shows.
pub struct PlanReport {
    pub config: ModelConfig,
    pub ctx_size: usize,
    pub footprint: Footprint,
    pub devices: Vec<BudgetedDevice>,
    pub plan: Plan,
}

fn ctx_for(opts: &LoadOptions, cfg: &ModelConfig) -> Result<usize, EngineError> {
    match opts.ctx_size {
        None => Ok(cfg.context_length.min(DEFAULT_CTX)),
        Some(c) if c >= 1 && c <= cfg.context_length => Ok(c),
        Some(c) => Err(EngineError::Invalid(format!(
            "`--ctx-size` must be between 1 and the model's context length {}, got {c}",
            cfg.context_length
        ))),
    }
}

/// Plans without loading any weights.
pub fn plan_for(opts: &LoadOptions) -> Result<PlanReport, EngineError> {
    let gguf = GgufFile::open(&opts.model)?;
    plan_open(&gguf, opts)
}

fn plan_open(gguf: &GgufFile, opts: &LoadOptions) -> Result<PlanReport, EngineError> {
    let config = ModelConfig::from_gguf(gguf)?;
    let ctx_size = ctx_for(opts, &config)?;
    let footprint = footprint(gguf, &config, ctx_size)?;
    let devices = budget(&opts.devices, &opts.budget_policy)?;
    let budgets: Vec<DeviceBudget> = devices
        .iter()
        .map(|d| {
            let b = DeviceBudget::new(d.label.clone(), d.budget);
            if d.spill {
                b.spill()
            } else {
                b
            }
        })
        .collect();
    let plan = plan(&footprint, &budgets, &opts.strategy)?;
    Ok(PlanReport {
        config,
        ctx_size,
        footprint,
        devices,
        plan,
    })
}

/// Loads the model as planned.
pub fn load(opts: &LoadOptions) -> Result<LoadedModel, EngineError> {
    let started = Instant::now();
    let mut gguf = GgufFile::open(&opts.model)?;
    let report = plan_open(&gguf, opts)?;
    let stages: Vec<StageSpec> = report
        .plan
        .stages()
        .into_iter()
        .map(|(i, layers)| {
            Ok(StageSpec {
                device: open(report.devices[i].clone())?.device,
                label: report.devices[i].label.clone(),
                layers,
            })
        })
        .collect::<Result<_, crate::devices::DeviceError>>()?;
    let model = LayeredModel::load(&mut gguf, &stages, report.ctx_size)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let template = ChatTemplate::from_gguf(&gguf, &tokenizer);
    for d in report.plan.devices.iter().filter(|d| !d.layers.is_empty()) {
        tracing::info!(
            device = %d.label,
            layers = ?d.layers,
            bytes = %HumanBytes(d.total_bytes),
            budget = %HumanBytes(d.budget),
            "placed"
        );
    }
    tracing::info!(
        model = %report.config.name,
        secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        "model loaded"
    );
    Ok(LoadedModel {
        model,
        tokenizer,
        template,
        plan: report.plan,
        devices: report.devices,
        ctx_size: report.ctx_size,
        path: opts.model.clone(),
    })
}
