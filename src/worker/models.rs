//! The worker's model store, managed from afar: list what it holds, pull
//! a model as a job the caller polls, delete one it does not serve.
//!
//! Routes (under the API key when one is set; the scheduler reaches them
//! through `/v1/nodes/{id}/models`):
//! - `GET /v1/admin/models`: every model in the store, `loaded` marking
//!   the ones this worker serves;
//! - `POST /v1/admin/models/pull` `{"model": "hf:..."}`: 202 and the job;
//!   a pull of a model already being pulled returns that job;
//! - `GET /v1/admin/models/pull/{job}`: running / done / failed, bytes done
//!   of total, the digest or the error;
//! - `DELETE /v1/admin/models/{model}`: 409 while it is loaded, 404 when
//!   the store does not have it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::api::extract::OpenAiJson;
use crate::api::{ApiError, AppState};
use crate::model_store::catalog::Catalog;
use crate::model_store::inventory::inventory;
use crate::model_store::progress::{Display, PullState, Reporter};
use crate::model_store::pull::{pull, PullOptions};
use crate::model_store::{HubCache, HubFile, ModelRef};

/// The store a worker manages and its pull jobs.
pub struct NodeModels {
    pub cache: HubCache,
    pub pull: PullOptions,
    pub catalog: Catalog,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl NodeModels {
    pub fn new(cache: HubCache, catalog: Catalog) -> Self {
        Self {
            pull: PullOptions::from_env(cache.clone()),
            cache,
            catalog,
            jobs: Mutex::default(),
        }
    }

    /// The store the Hugging Face environment points at, no catalog.
    pub fn from_env() -> Self {
        Self::new(HubCache::locate(None), Catalog::default())
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Job {
    id: String,
    model: String,
    progress: Arc<PullState>,
    outcome: Mutex<Outcome>,
}

#[derive(Clone)]
enum Outcome {
    Running,
    Done {
        sha256: Option<String>,
        path: PathBuf,
    },
    Failed(String),
}

/// A pull job as the caller sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: String,
    pub model: String,
    /// `running`, `done` or `failed`.
    pub status: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Job {
    fn status(&self) -> JobStatus {
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut s = JobStatus {
            job: self.id.clone(),
            model: self.model.clone(),
            status: "running".into(),
            done_bytes: self.progress.done(),
            total_bytes: self.progress.total(),
            sha256: None,
            path: None,
            error: None,
        };
        match outcome {
            Outcome::Running => {}
            Outcome::Done { sha256, path } => {
                s.status = "done".into();
                s.done_bytes = s.total_bytes.max(s.done_bytes);
                s.sha256 = sha256;
                s.path = Some(path.display().to_string());
            }
            Outcome::Failed(e) => {
                s.status = "failed".into();
                s.error = Some(e);
            }
        }
        s
    }
}

#[derive(Debug, Deserialize)]
pub struct PullRequest {
    pub model: String,
}

fn hub_file(model: &str) -> Result<HubFile, ApiError> {
    match model.parse::<ModelRef>() {
        Ok(ModelRef::Hub(h)) => Ok(h),
        Ok(ModelRef::Path(_)) => Err(ApiError::invalid(
            "model",
            format!("`model` must be hf:OWNER/REPO/FILE.gguf[@REVISION], got `{model}`"),
        )),
        Err(e) => Err(ApiError::invalid("model", e.to_string())),
    }
}

/// The files of the models this worker has loaded, as canonical paths,
/// with the models' names.
fn loaded_files(s: &AppState) -> Vec<(String, PathBuf)> {
    s.pool
        .files_in_use()
        .into_iter()
        .filter_map(|(id, p)| Some((id, std::fs::canonicalize(p).ok()?)))
        .collect()
}

pub async fn list(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = s.models.clone();
    let loaded = loaded_files(&s);
    let mut entries = tokio::task::spawn_blocking(move || inventory(&store.cache))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("reading the model store: {e}")))?;
    for e in &mut entries {
        e.loaded =
            std::fs::canonicalize(&e.path).is_ok_and(|p| loaded.iter().any(|(_, l)| *l == p));
    }
    Ok(Json(serde_json::json!({
        "store": s.models.cache.root().display().to_string(),
        "models": entries,
    })))
}

pub async fn start_pull(
    State(s): State<AppState>,
    OpenAiJson(req): OpenAiJson<PullRequest>,
) -> Result<Response, ApiError> {
    let file = hub_file(&req.model)?;
    let model = file.to_string();
    let job = {
        let mut jobs = s.models.jobs();
        let running = jobs.values().find(|j| {
            j.model == model
                && matches!(
                    *j.outcome.lock().unwrap_or_else(|e| e.into_inner()),
                    Outcome::Running
                )
        });
        if let Some(job) = running {
            return Ok((StatusCode::ACCEPTED, Json(job.status())).into_response());
        }
        let reporter = Reporter::new(Display::Log);
        let job = Arc::new(Job {
            id: crate::scheduler::lease::new_id("job"),
            model: model.clone(),
            progress: reporter.state.clone(),
            outcome: Mutex::new(Outcome::Running),
        });
        jobs.insert(job.id.clone(), job.clone());
        let mut opts = s.models.pull.clone();
        opts.pinned = s.models.catalog.pinned(&file).map(str::to_string);
        let runner = job.clone();
        tokio::spawn(async move {
            tracing::info!(job = %runner.id, "pulling {model}");
            let outcome = match pull(&file, &opts, reporter).await {
                Ok(p) => {
                    tracing::info!(job = %runner.id, "pulled {model} to {}", p.path.display());
                    Outcome::Done {
                        sha256: p.sha256,
                        path: p.path,
                    }
                }
                Err(e) => {
                    tracing::warn!(job = %runner.id, "pull failed: {e}");
                    Outcome::Failed(e.to_string())
                }
            };
            *runner.outcome.lock().unwrap_or_else(|e| e.into_inner()) = outcome;
        });
        job
    };
    Ok((StatusCode::ACCEPTED, Json(job.status())).into_response())
}

pub async fn pull_status(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    let job = s.models.jobs().get(&id).cloned();
    job.map(|j| Json(j.status())).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no pull job `{id}` on this worker"),
        )
    })
}

pub async fn delete(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let file = hub_file(&model)?;
    let Some(path) = s.models.cache.resolve(&file) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "{file} is not in this worker's model store ({})",
                s.models.cache.root().display()
            ),
        ));
    };
    let blob = std::fs::canonicalize(&path).ok();
    if let Some((id, _)) = loaded_files(&s)
        .into_iter()
        .find(|(_, p)| Some(p) == blob.as_ref())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!("{file} is in use: this worker has it loaded as `{id}`; stop serving it first"),
        )
        .with_code("model_in_use"));
    }
    let removed = s
        .models
        .cache
        .remove(&file)
        .map_err(|e| ApiError::internal(format!("deleting {file}: {e}")))?;
    let freed = removed.map_or(0, |r| r.freed_bytes);
    tracing::info!("deleted {file} from the model store ({freed} bytes freed)");
    Ok(Json(
        serde_json::json!({"deleted": file.to_string(), "freed_bytes": freed}),
    ))
}
