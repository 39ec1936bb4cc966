//! `strata models --node ID ...`: the same commands on a worker's store,
//! through the scheduler. A pull starts a job on the worker; this polls it
//! and shows its progress until it is done or failed.

use std::time::Duration;

use indicatif::HumanBytes;
use serde_json::Value;

use super::models::{list_table, ModelsArgs, ModelsCommand};
use super::print_out;
use crate::model_store::inventory::ModelEntry;
use crate::worker::models::JobStatus;

/// How often a remote pull is polled.
const POLL: Duration = Duration::from_millis(500);

struct Remote {
    client: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Remote {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method, &url);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the scheduler at {url}: {e}"))?;
        let status = res.status();
        let value: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            anyhow::bail!("{status}: {message}");
        }
        Ok(value)
    }
}

pub fn run(args: &ModelsArgs, node: &str) -> anyhow::Result<()> {
    let remote = Remote {
        client: reqwest::Client::new(),
        base: format!(
            "{}/v1/nodes/{node}/models",
            args.scheduler.trim_end_matches('/')
        ),
        api_key: args.api_key.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &args.command {
            ModelsCommand::List { json } => {
                let v = remote.call(reqwest::Method::GET, "", None).await?;
                if *json {
                    return Ok(print_out(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&v)?
                    ))?);
                }
                let entries: Vec<ModelEntry> = serde_json::from_value(v["models"].clone())?;
                let store = v["store"].as_str().unwrap_or("?");
                Ok(print_out(&list_table(&entries, store))?)
            }
            ModelsCommand::Pull(p) => {
                anyhow::ensure!(
                    p.catalog.is_none(),
                    "`--catalog` is the worker's own (its `--catalog`); leave it out with `--node`"
                );
                let body = serde_json::json!({"model": p.model});
                let mut job: JobStatus = serde_json::from_value(
                    remote
                        .call(reqwest::Method::POST, "/pull", Some(body))
                        .await?,
                )?;
                let mut shown = u64::MAX;
                while job.status == "running" {
                    let tenth = job.done_bytes * 10 / job.total_bytes.max(1);
                    if tenth != shown && job.total_bytes > 0 {
                        shown = tenth;
                        eprintln!(
                            "{node}: {} of {} ({}%)",
                            HumanBytes(job.done_bytes),
                            HumanBytes(job.total_bytes),
                            tenth * 10
                        );
                    }
                    tokio::time::sleep(POLL).await;
                    let path = format!("/pull/{}", job.job);
                    job = serde_json::from_value(
                        remote.call(reqwest::Method::GET, &path, None).await?,
                    )?;
                }
                match job.status.as_str() {
                    "done" => Ok(print_out(&format!(
                        "{node}: pulled {} ({}, sha256 {})\n",
                        job.model,
                        HumanBytes(job.total_bytes),
                        job.sha256.as_deref().unwrap_or("-")
                    ))?),
                    _ => anyhow::bail!(
                        "{node}: pulling {} failed: {}",
                        job.model,
                        job.error.as_deref().unwrap_or("no reason given")
                    ),
                }
            }
            ModelsCommand::Rm { model } => {
                let v = remote
                    .call(reqwest::Method::DELETE, &format!("/{model}"), None)
                    .await?;
                Ok(print_out(&format!(
                    "{node}: removed {} ({} freed)\n",
                    v["deleted"].as_str().unwrap_or(model),
                    HumanBytes(v["freed_bytes"].as_u64().unwrap_or(0))
                ))?)
            }
        }
    })
}
