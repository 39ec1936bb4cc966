//! `strata serve`: load a model over the local devices and serve the
//! OpenAI API on it (127.0.0.1:8080 by default).
//!
//! Order matters: the resource settings are resolved and the process
//! priority applied before any thread exists, so every thread tokio and
//! the engine create inherits it. On SIGINT/SIGTERM the server stops
//! accepting, lets in-flight requests finish for up to
//! `--shutdown-timeout`, then cuts what is left and exits 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::model_args::ModelArgs;
use crate::api::{app, ApiConfig, AppState, DEFAULT_MAX_BODY_BYTES};
use crate::devices::{parse_bytes, DeviceKind, HumanBytes};
use crate::engine::load;
use crate::resources::{discover, ResourceManager};
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

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    run_worker(args, None)
}

/// `strata worker`: `serve` plus the agent that keeps a lease with a
/// scheduler (`agent.advertise` empty: the address it listens on).
pub fn run_worker(args: &ServeArgs, agent: Option<AgentConfig>) -> anyhow::Result<()> {
    let settings = args.model.resources.resolve()?.settings;
    let resources = ResourceManager::new(settings);
    resources.apply_priority();
    let api_key = match &args.api_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading `--api-key-file` {}", path.display()))?;
            let key = text.lines().next().unwrap_or("").trim().to_string();
            anyhow::ensure!(
                !key.is_empty(),
                "`--api-key-file` {} is empty",
                path.display()
            );
            Some(key)
        }
        None => args.api_key.clone().filter(|k| !k.is_empty()),
    };
    let opts = args.model.load_options(resources.budget_policy());
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
    // The bytes placed on each GPU, for desktop yield.
    let own_bytes: BTreeMap<u32, u64> = loaded
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-http")
        .build()?;
    runtime.block_on(async move {
        if !own_bytes.is_empty() {
            resources.watch_gpus(discover(), own_bytes);
        }
        let state = AppState::new(loaded, id.clone(), resources, config);
        let agent_state = state.clone();
        let (listener, local) = bind(&args.host, args.port).await?;
        tracing::info!(model = %id, "listening on http://{local}");
        eprintln!("strata: serving `{id}` on http://{local} (OpenAI API under /v1)");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stop = Arc::new(stop);
        let stop_on_signal = stop.clone();
        let agent = agent.map(|mut cfg| {
            if cfg.advertise.is_empty() {
                cfg.advertise = format!("http://{local}");
            }
            agent::spawn(cfg, agent_state, stopped)
        });
        let result = serve_until_signal(listener, app(state), args.shutdown_timeout, move || {
            let _ = stop_on_signal.send(true);
        })
        .await;
        if let Some(agent) = agent {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
        }
        result
    })
}

/// Listens on `host:port` (port 0: a free one); returns the listener and
/// the address it got.
pub async fn bind(host: &str, port: u16) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .with_context(|| format!("`--host` {host} / `--port` {port}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves until SIGINT/SIGTERM, then calls `on_signal` and drains for at
/// most `deadline`.
pub async fn serve_until_signal(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    deadline: Duration,
    on_signal: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signal = stopping.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        on_signal();
        tracing::info!("shutting down: no new connections; draining for up to {deadline:?}");
        eprintln!("strata: shutting down");
        signal.notify_waiters();
    });
    let drained = async {
        stopping.notified().await;
        tokio::time::sleep(deadline).await;
    };
    tokio::select! {
        result = server => result.context("the HTTP server failed")?,
        () = drained => {
            tracing::warn!("shutdown deadline passed: cutting the requests still in flight");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
