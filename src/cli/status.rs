//! `strata status`: the cluster as a scheduler sees it, as a table or JSON.

use clap::Args;

use super::print_out;
use super::table::text_table;
use crate::scheduler::registry::{NodeStatus, NodesStatus};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The scheduler's base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "STRATA_SCHEDULER"
    )]
    pub scheduler: String,
    /// The scheduler's API key, when it has one.
    #[arg(long, env = "STRATA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/nodes", args.scheduler.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = runtime.block_on(async {
        let mut req = reqwest::Client::new().get(&url);
        if let Some(key) = &args.api_key {
            req = req.bearer_auth(key);
        }
        let res = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the scheduler at {url}: {e}"))?;
        anyhow::ensure!(res.status().is_success(), "{url} answered {}", res.status());
        Ok::<_, anyhow::Error>(res.text().await?)
    })?;
    if args.json {
        return Ok(print_out(&(text + "\n"))?);
    }
    let status: NodesStatus = serde_json::from_str(&text)?;
    Ok(print_out(&table(&status))?)
}

/// The scheduler's checks, and the worker's own word when it disagrees.
fn health_cell(n: &NodeStatus) -> String {
    let state = n.health.state.to_string();
    match (n.record.load.healthy, n.health.consecutive_failures) {
        (false, _) => format!("{state}, self-reported unhealthy"),
        (true, 0) => state,
        (true, f) => format!("{state} ({f} failed)"),
    }
}

pub fn table(s: &NodesStatus) -> String {
    let mut rows = vec![[
        "node",
        "state",
        "epoch",
        "lease left",
        "load",
        "yield",
        "health",
        "uptime %",
        "requests",
        "ok %",
        "latency",
        "p95",
        "tok/s",
        "models",
        "endpoint",
    ]
    .map(String::from)
    .to_vec()];
    for n in &s.nodes {
        let r = &n.record;
        rows.push(vec![
            r.id.clone(),
            if n.active { "active" } else { "inactive" }.into(),
            r.epoch.to_string(),
            format!("{:.1}s", n.lease_left_ms as f64 / 1000.0),
            format!("{}/{}", r.load.in_flight, r.load.max_in_flight),
            if r.load.yielding { "yes" } else { "no" }.into(),
            health_cell(n),
            format!("{:.0}", n.health.uptime_score * 100.0),
            r.stats.requests.to_string(),
            format!("{:.0}", r.stats.success_rate() * 100.0),
            format!("{:.0} ms", r.stats.latency_ms),
            n.health
                .latency_p95_ms
                .map_or("-".into(), |p| format!("{p:.0} ms")),
            format!("{:.1}", r.load.tokens_per_s),
            r.info.models.join(","),
            r.info.endpoint.clone(),
        ]);
    }
    format!(
        "{} nodes: {} active, {} inactive; policy {}; epoch {}\n{}",
        s.total,
        s.active,
        s.inactive,
        s.policy,
        s.epoch,
        text_table(&rows, 2)
    )
}
