//! `strata models pull | list | rm`: the model store of this node (the
//! Hugging Face cache at `--model-dir`, `HF_HUB_CACHE` or `$HF_HOME/hub`),
//! or with `--node ID` of a worker, through the scheduler.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::HumanBytes;

use super::print_out;
use super::table::text_table;
use crate::devices::parse_bytes;
use crate::model_store::catalog::Catalog;
use crate::model_store::inventory::{inventory, ModelEntry};
use crate::model_store::progress::{Display, Reporter};
use crate::model_store::pull::{pull, PullOptions, DEFAULT_CHUNK};
use crate::model_store::{HubCache, HubFile, ModelRef};

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
    /// The model store [default: HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub].
    #[arg(long, global = true, env = "STRATA_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Manage this worker's store instead (a node id from `strata status`).
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// The scheduler's base URL (with `--node`).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "STRATA_SCHEDULER"
    )]
    pub scheduler: String,
    /// The scheduler's API key, when it has one (with `--node`).
    #[arg(long, global = true, env = "STRATA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download hf:OWNER/REPO/FILE.gguf[@REVISION] into the store, checked
    /// by SHA-256 (HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE apply).
    Pull(PullArgs),
    /// The models in the store: size, quantization, architecture, layers,
    /// digest.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a model from the store.
    Rm {
        /// hf:OWNER/REPO/FILE.gguf[@REVISION]
        model: String,
    },
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// hf:OWNER/REPO/FILE.gguf[@REVISION]
    pub model: String,
    /// A TOML file of pinned digests (`[[model]] ref = "hf:..."
    /// sha256 = "..."`).
    #[arg(long, env = "STRATA_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Bytes per ranged request (what a resumed download keeps).
    #[arg(long, default_value_t = DEFAULT_CHUNK, value_parser = parse_chunk)]
    pub chunk_size: usize,
}

fn parse_chunk(s: &str) -> Result<usize, String> {
    parse_bytes(s)
        .filter(|&b| (4096..=1 << 32).contains(&b))
        .map(|b| b as usize)
        .ok_or_else(|| format!("must be a size from 4KiB to 4GiB, like 10MB, got `{s}`"))
}

/// `model` as a hub reference, or an error naming the argument.
pub fn hub_ref(model: &str) -> anyhow::Result<HubFile> {
    match model.parse::<ModelRef>()? {
        ModelRef::Hub(h) => Ok(h),
        ModelRef::Path(p) => anyhow::bail!(
            "`{}` is a path; the model store takes hf:OWNER/REPO/FILE.gguf[@REVISION]",
            p.display()
        ),
    }
}

pub fn run(args: &ModelsArgs) -> anyhow::Result<()> {
    if let Some(node) = &args.node {
        return super::node_models::run(args, node);
    }
    let cache = HubCache::locate(args.model_dir.as_deref());
    match &args.command {
        ModelsCommand::Pull(p) => run_pull(cache, p),
        ModelsCommand::List { json } => {
            let entries = inventory(&cache)
                .with_context(|| format!("reading the model store {}", cache.root().display()))?;
            if *json {
                print_out(&format!("{}\n", serde_json::to_string_pretty(&entries)?))?;
            } else {
                print_out(&list_table(&entries, &cache.root().display().to_string()))?;
            }
            Ok(())
        }
        ModelsCommand::Rm { model } => {
            let file = hub_ref(model)?;
            match cache.remove(&file)? {
                Some(r) if r.blob_deleted => print_out(&format!(
                    "removed {file} ({} freed)\n",
                    HumanBytes(r.freed_bytes)
                ))?,
                Some(_) => print_out(&format!(
                    "removed {file} (its file stays: another revision uses it)\n"
                ))?,
                None => anyhow::bail!(
                    "{file} is not in the model store {}",
                    cache.root().display()
                ),
            }
            Ok(())
        }
    }
}

fn run_pull(cache: HubCache, args: &PullArgs) -> anyhow::Result<()> {
    let file = hub_ref(&args.model)?;
    let mut opts = PullOptions::from_env(cache);
    opts.chunk_size = args.chunk_size;
    if let Some(path) = &args.catalog {
        opts.pinned = Catalog::load(path)?.pinned(&file).map(str::to_string);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pulled = runtime.block_on(pull(&file, &opts, Reporter::new(Display::Auto)))?;
    let how = if pulled.cached {
        "already in the store"
    } else {
        "pulled"
    };
    print_out(&format!(
        "{how}: {file} ({}, sha256 {}) at {}\n",
        HumanBytes(pulled.size),
        pulled.sha256.as_deref().unwrap_or("-"),
        pulled.path.display()
    ))?;
    Ok(())
}

/// The store's models as a table (`store`: where they are, for the empty
/// case).
pub fn list_table(entries: &[ModelEntry], store: &str) -> String {
    if entries.is_empty() {
        return format!("no models in {store} (strata models pull hf:OWNER/REPO/FILE.gguf)\n");
    }
    let mut rows = vec![[
        "model", "quant", "arch", "loaded", "size", "layers", "sha256",
    ]
    .map(String::from)
    .to_vec()];
    for e in entries {
        rows.push(vec![
            e.model.clone(),
            e.quant.clone(),
            e.architecture.clone(),
            if e.loaded { "yes" } else { "-" }.into(),
            HumanBytes(e.size).to_string(),
            e.layers.map_or("-".into(), |l| l.to_string()),
            e.sha256
                .as_deref()
                .map_or("-".into(), |s| s[..12].to_string()),
        ]);
    }
    text_table(&rows, 4)
}
