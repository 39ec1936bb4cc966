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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::all_in_one;
use super::listen::{bind, reachable, Serving};
use super::local_worker::LocalWorker;
use super::model_args::ModelArgs;
use crate::api::{app, DEFAULT_MAX_BODY_BYTES};
use crate::devices::parse_bytes;
use crate::scheduler::clock::MonotonicClock;
use crate::scheduler::service::{Scheduler, SchedulerConfig};
use crate::scheduler::store::MemoryStore;
use crate::worker::agent::{self, AgentConfig};

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
    /// With several `-m`: a model's priority, `NAME=N` (higher wins room;
    /// default 0). Repeat for each.
    #[arg(long = "priority", value_parser = parse_priority)]
    pub priorities: Vec<(String, i32)>,
    /// With several `-m`: unload a model idle this long (`never` keeps
    /// models until room is needed).
    #[arg(long, default_value = "5m", value_parser = parse_keep_alive)]
    pub keep_alive: KeepAlive,
    /// An engine busy this long with no progress is given up (its requests
    /// fail) and restarted, like one that panicked.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub watchdog: Duration,
    /// How long in-flight requests may run on after SIGINT/SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

/// `--keep-alive`: a duration, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive(pub Option<Duration>);

fn parse_keep_alive(s: &str) -> Result<KeepAlive, String> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(KeepAlive(None));
    }
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(KeepAlive(Some(d))),
        _ => Err(format!(
            "must be a duration of at least 1s (like 5m) or `never`, got `{s}`"
        )),
    }
}

fn parse_priority(s: &str) -> Result<(String, i32), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("must be NAME=N (N an integer), got `{s}`"))?;
    let n = n
        .trim()
        .parse::<i32>()
        .map_err(|_| format!("must be NAME=N (N an integer), got `{s}`"))?;
    Ok((name.trim().to_string(), n))
}

fn parse_body_limit(s: &str) -> Result<usize, String> {
    parse_bytes(s)
        .filter(|&b| (1024..=1 << 30).contains(&b))
        .map(|b| b as usize)
        .ok_or_else(|| format!("must be a size from 1KiB to 1GiB, like 2MB (default {DEFAULT_MAX_BODY_BYTES} bytes), got `{s}`"))
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
        let state = worker.start().await?;
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
        let checks = scheduler.spawn_health_checks();
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
                checks.abort();
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
        let state = worker.start().await?;
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
