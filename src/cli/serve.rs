//! `strata serve` and `strata worker`: load a model over the local devices
//! and serve the OpenAI API on it.
//!
//! `serve` is the all-in-one: an embedded scheduler (memory store) with
//! its gateway on the public address (127.0.0.1:8080 by default), and one
//! local worker on a loopback port that registers with it through the
//! same agent, lease and fencing code as a remote worker. `/health` and
//! `/metrics` on the public port are the local worker's, with the
//! gateway's metrics added. Registration takes a random join token, so no
//! other machine can join a `serve`. `worker` is the worker alone, with an
//! agent for a remote scheduler.
//!
//! Order matters: the resource settings are resolved and the process
//! priority applied before any thread exists, so every thread tokio and
//! the engine create inherits it. On SIGINT/SIGTERM a worker first leaves
//! its scheduler, then the servers stop accepting, let in-flight requests
//! finish for up to `--shutdown-timeout`, cut what is left and exit 0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::all_in_one;
use super::listen::{bind, reachable, Serving};
use super::model_args::ModelArgs;
use crate::api::{app, ApiConfig, AppState, DEFAULT_MAX_BODY_BYTES};
use crate::devices::{parse_bytes, DeviceKind, HumanBytes};
use crate::engine::load;
use crate::model_store::catalog::Catalog;
use crate::model_store::HubCache;
use crate::resources::{discover, ResourceManager};
use crate::scheduler::clock::MonotonicClock;
use crate::scheduler::service::{Scheduler, SchedulerConfig};
use crate::scheduler::store::MemoryStore;
use crate::worker::agent::{self, AgentConfig};
use crate::worker::models::NodeModels;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "STRATA_HOST")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = 8080, env = "STRATA_PORT")]
    pub port: u16,
    /// The name clients pass as `model` (default: the file name without
    /// `.gguf`).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "STRATA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Read the API key from this file (first line).
    #[arg(long, conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// Largest request body accepted.
    #[arg(long, default_value = "2MB", value_parser = parse_body_limit)]
    pub max_body: usize,
    /// Digests pinned for pulls this node makes when asked remotely (TOML,
    /// `[[model]] ref = "hf:..." sha256 = "..."`).
    #[arg(long, env = "STRATA_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// How long in-flight requests may run on after SIGINT/SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

fn parse_body_limit(s: &str) -> Result<usize, String> {
    parse_bytes(s)
        .filter(|&b| (1024..=1 << 30).contains(&b))
        .map(|b| b as usize)
        .ok_or_else(|| format!("must be a size from 1KiB to 1GiB, like 2MB (default {DEFAULT_MAX_BODY_BYTES} bytes), got `{s}`"))
}

/// The local worker, loaded and ready to serve.
struct LocalWorker {
    loaded: crate::engine::LoadedModel,
    id: String,
    resources: Arc<ResourceManager>,
    config: ApiConfig,
    /// The bytes placed on each GPU, for desktop yield.
    own_bytes: BTreeMap<u32, u64>,
    models: NodeModels,
}

impl LocalWorker {
    /// Resolves the settings, applies the priority, loads the model.
    fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let settings = args.model.resources.resolve()?.settings;
        let resources = ResourceManager::new(settings);
        resources.apply_priority();
        let api_key = read_api_key(args)?;
        let opts = args.model.load_options(resources.budget_policy())?;
        if !opts.model.exists() {
            anyhow::bail!(
                "model file {} not found: run `scripts/fetch-models` for the default model, \
                 `strata make-model --out FILE` for a synthetic one, or pass `-m FILE`",
                opts.model.display()
            );
        }
        let id = args.model_name.clone().unwrap_or_else(|| {
            opts.model
                .file_stem()
                .map_or("model".into(), |s| s.to_string_lossy().into_owned())
        });
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
        let own_bytes = loaded
            .plan
            .devices
            .iter()
            .zip(&loaded.devices)
            .filter_map(|(p, d)| match d.kind {
                DeviceKind::Cuda(i) => Some((i as u32, p.total_bytes)),
                DeviceKind::Cpu => None,
            })
            .collect();
        let config = ApiConfig {
            api_key,
            max_body_bytes: args.max_body,
        };
        let catalog = match &args.catalog {
            Some(path) => Catalog::load(path)?,
            None => Catalog::default(),
        };
        let models = NodeModels::new(HubCache::locate(args.model.model_dir.as_deref()), catalog);
        Ok(Self {
            models,
            loaded,
            id,
            resources,
            config,
            own_bytes,
        })
    }

    /// Starts the engine and the GPU watch (inside the runtime).
    fn start(self) -> AppState {
        if !self.own_bytes.is_empty() {
            self.resources.watch_gpus(discover(), self.own_bytes);
        }
        AppState::new(self.loaded, self.id, self.resources, self.config).with_models(self.models)
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-http")
        .build()?)
}

/// How long `serve` waits for its local worker to register.
const REGISTRATION_WAIT: Duration = Duration::from_secs(15);

/// `strata serve`: the embedded scheduler and one local worker.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let worker = LocalWorker::load(args)?;
    runtime()?.block_on(async move {
        let state = worker.start();
        let id = state.pool.ids().join("`, `");
        let (public, public_addr) = bind(&args.host, args.port).await?;
        let (internal, internal_addr) = bind("127.0.0.1", 0).await?;
        let join_token = format!("{:032x}", rand::random::<u128>());
        let scheduler = Scheduler::new(
            Arc::new(MemoryStore::new()),
            Arc::new(MonotonicClock::new()),
            SchedulerConfig {
                join_token: Some(join_token.clone()),
                api_key: state.config.api_key.clone(),
                max_body_bytes: args.max_body,
                ..SchedulerConfig::default()
            },
        );
        let sweeper = scheduler.spawn_sweeper();
        let front = all_in_one::router(scheduler, state.clone());
        let serving = Serving::start(vec![(public, front), (internal, app(state.clone()))]);
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let agent = agent::spawn(
            AgentConfig {
                scheduler: format!("http://{}", reachable(public_addr)),
                advertise: format!("http://{internal_addr}"),
                join_token: Some(join_token),
            },
            state.clone(),
            stopped,
        );
        let registered = tokio::time::timeout(REGISTRATION_WAIT, async {
            while state.fence.epoch() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        registered.await.map_err(|_| {
            anyhow::anyhow!(
                "the local worker (http://{internal_addr}) did not register with the embedded \
                 scheduler (http://{public_addr}) within {REGISTRATION_WAIT:?}; see the log above"
            )
        })?;
        tracing::info!(model = %id, worker = %internal_addr, "listening on http://{public_addr}");
        eprintln!("strata: serving `{id}` on http://{public_addr} (OpenAI API under /v1)");
        // The scheduler lives and dies with this process: no leave needed.
        let result = serving
            .until_signal(args.shutdown_timeout, async {
                agent.abort();
                sweeper.abort();
            })
            .await;
        result
    })
}

/// `strata worker`: the worker's API plus the agent that keeps a lease
/// with a scheduler (`agent.advertise` empty: the address it listens on).
pub fn run_worker(args: &ServeArgs, mut agent: AgentConfig) -> anyhow::Result<()> {
    let worker = LocalWorker::load(args)?;
    runtime()?.block_on(async move {
        let state = worker.start();
        let id = state.pool.ids().join("`, `");
        let (listener, local) = bind(&args.host, args.port).await?;
        if agent.advertise.is_empty() {
            agent.advertise = format!("http://{local}");
        }
        let serving = Serving::start(vec![(listener, app(state.clone()))]);
        tracing::info!(model = %id, "listening on http://{local}");
        eprintln!("strata: serving `{id}` on http://{local} (OpenAI API under /v1)");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let agent = agent::spawn(agent, state, stopped);
        // Leave first, so the scheduler routes nothing more here while the
        // requests in flight drain.
        serving
            .until_signal(args.shutdown_timeout, async move {
                let _ = stop.send(true);
                let _ = tokio::time::timeout(LEAVE_WAIT, agent).await;
            })
            .await
    })
}

/// How long a stopping worker waits to leave its scheduler.
const LEAVE_WAIT: Duration = Duration::from_secs(3);
