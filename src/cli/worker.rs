//! `strata worker`: `strata serve` plus the agent that registers with a
//! scheduler and keeps the lease.

use clap::Args;

use super::serve::{run_worker, ServeArgs};
use crate::worker::agent::AgentConfig;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The scheduler's base URL.
    #[arg(long, env = "STRATA_SCHEDULER")]
    pub scheduler: String,
    /// The URL the scheduler reaches this worker at [default: the address
    /// it listens on].
    #[arg(long, env = "STRATA_ADVERTISE")]
    pub advertise: Option<String>,
    /// The scheduler's join token.
    #[arg(long, env = "STRATA_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
}

pub fn run(args: &WorkerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.scheduler.starts_with("http://") || args.scheduler.starts_with("https://"),
        "`--scheduler` must be an http:// or https:// URL, got `{}`",
        args.scheduler
    );
    if args.advertise.is_none() && (args.serve.host == "0.0.0.0" || args.serve.host == "::") {
        anyhow::bail!(
            "`--host {}` listens on every interface: give `--advertise http://ADDRESS:PORT` so the scheduler can reach this worker",
            args.serve.host
        );
    }
    let agent = AgentConfig {
        scheduler: args.scheduler.clone(),
        advertise: args.advertise.clone().unwrap_or_default(),
        join_token: args.join_token.clone(),
    };
    run_worker(&args.serve, agent)
}
