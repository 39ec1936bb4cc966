//! `strata scheduler`: the lease registry and OpenAI gateway, with the
//! embedded durable store by default (`--memory` keeps state in memory).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::listen::{bind, Serving};
use crate::scheduler::clock::{Clock, MonotonicClock};
use crate::scheduler::embedded::EmbeddedStore;
use crate::scheduler::http::router;
use crate::scheduler::policy::Policy;
use crate::scheduler::redis_store::{RedisClock, RedisStore};
use crate::scheduler::service::{Scheduler, SchedulerConfig, DEFAULT_MAX_ATTEMPTS};
use crate::scheduler::store::{MemoryStore, Store};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    #[arg(long, default_value = "127.0.0.1", env = "STRATA_HOST")]
    pub host: String,
    #[arg(long, default_value_t = 8080, env = "STRATA_PORT")]
    pub port: u16,
    /// Lease time to live; workers heartbeat every third of it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Remove a node this long after its lease lapsed.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub stale_after: Duration,
    /// How often lapsed nodes are swept (default: a third of the TTL).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub sweep_interval: Option<Duration>,
    /// min_load, best_score, round_robin or random.
    #[arg(long, default_value = "best_score", env = "STRATA_SELECTION_POLICY")]
    pub selection_policy: Policy,
    /// Workers must send this token to register.
    #[arg(long, env = "STRATA_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Require `Authorization: Bearer KEY` on the gateway and `/v1/nodes`
    /// (passed on to the workers, which may require the same key).
    #[arg(long, env = "STRATA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How often every live worker's `/health` is checked.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// How long one health check may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub health_timeout: Duration,
    /// POST every event (JSON) to this URL, with retries.
    #[arg(long, env = "STRATA_WEBHOOK")]
    pub webhook: Option<String>,
    /// How long a call to manage a node's models may take.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub node_timeout: Duration,
    /// Nodes one request may be tried on.
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: usize,
    /// The embedded store's file [default: $XDG_STATE_HOME/strata/scheduler.redb].
    #[arg(long, env = "STRATA_STATE")]
    pub state: Option<PathBuf>,
    /// Keep state in memory only (epochs restart with the process).
    #[arg(long, conflicts_with_all = ["state", "redis"])]
    pub memory: bool,
    /// Share state with other schedulers in Redis (`redis://host:6379/0`).
    #[arg(long, env = "STRATA_REDIS", conflicts_with = "state")]
    pub redis: Option<String>,
    /// Key namespace in Redis (a hash tag: all keys in one cluster slot).
    #[arg(long, default_value = "strata")]
    pub redis_namespace: String,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

fn default_state_file() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("strata/scheduler.redb")
}

pub fn run(args: &SchedulerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.ttl >= Duration::from_millis(100),
        "`--ttl` must be at least 100ms, got {:?}",
        args.ttl
    );
    anyhow::ensure!(
        args.health_interval >= Duration::from_millis(100),
        "`--health-interval` must be at least 100ms, got {:?}",
        args.health_interval
    );
    anyhow::ensure!(
        (1..=16).contains(&args.max_attempts),
        "`--max-attempts` must be from 1 to 16, got {}",
        args.max_attempts
    );
    let config = SchedulerConfig {
        ttl: args.ttl,
        stale_after: args.stale_after,
        sweep_interval: args.sweep_interval.unwrap_or(args.ttl / 3),
        join_token: args.join_token.clone().filter(|t| !t.is_empty()),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        policy: args.selection_policy,
        max_attempts: args.max_attempts,
        node_timeout: args.node_timeout,
        health_interval: args.health_interval,
        health_timeout: args.health_timeout,
        webhook: args.webhook.clone().filter(|w| !w.is_empty()),
        ..SchedulerConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-scheduler")
        .build()?;
    runtime.block_on(async move {
        let (store, clock): (Arc<dyn Store>, Arc<dyn Clock>) = if let Some(url) = &args.redis {
            tracing::info!("state in Redis at {url}");
            let store = RedisStore::connect(url, &args.redis_namespace).await?;
            (Arc::new(store), RedisClock::sync(url).await?)
        } else if args.memory {
            (
                Arc::new(MemoryStore::new()),
                Arc::new(MonotonicClock::new()),
            )
        } else {
            let path = args.state.clone().unwrap_or_else(default_state_file);
            tracing::info!("state in {}", path.display());
            (
                Arc::new(EmbeddedStore::open(&path)?),
                Arc::new(MonotonicClock::new()),
            )
        };
        let scheduler = Scheduler::new(store, clock, config);
        scheduler.spawn_sweeper();
        scheduler.spawn_health_checks();
        let (listener, local) = bind(&args.host, args.port).await?;
        tracing::info!(policy = %args.selection_policy, "scheduler listening on http://{local}");
        eprintln!(
            "strata: scheduler on http://{local} (policy {})",
            args.selection_policy
        );
        Serving::start(vec![(listener, router(scheduler))])
            .until_signal(args.shutdown_timeout, async {})
            .await
    })
}
