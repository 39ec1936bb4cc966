//! The worker's OpenAI-compatible HTTP API (axum).
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions` (JSON or
//! SSE with `stream: true`), `GET /v1/models`, `GET /v1/models/{id}`,
//! `GET /health` (200 only while the engine answers), `GET /metrics`
//! (Prometheus text). A request goes: auth → JSON extraction
//! ([`extract`]) → validation into a `ValidRequest` ([`validate`]) →
//! admission by the resource manager (429 with `Retry-After` at once when
//! full) → the engine actor → [`respond`]. Every error leaves through
//! [`ApiError`] in the OpenAI shape. [`app`] builds the router from an
//! [`AppState`], so tests can call it without a socket.

pub mod auth;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod respond;
pub mod types;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

pub use error::ApiError;

use crate::engine::{EngineHandle, LoadedModel};
use crate::resources::ResourceManager;
use crate::scheduler::gateway::EPOCH_HEADER;
use crate::worker::fence::Fence;
use crate::worker::models::{self as node_models, NodeModels};
use extract::OpenAiJson;
use metrics::Metrics;
use respond::ResponseMeta;
use types::{ChatRequest, CompletionRequest, ModelCard, ModelList};
use validate::{validate_chat, validate_completion, ValidRequest};

/// Default most bytes of a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2_000_000;
/// An engine busy without progress for this long is reported unhealthy.
pub const ENGINE_STALL: Duration = Duration::from_secs(60);

/// Settings of the HTTP face.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `None`: no auth.
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The model this worker serves.
pub struct ServedModel {
    /// The name clients pass as `model`.
    pub id: String,
    pub created: u64,
    pub loaded: Arc<LoadedModel>,
    /// The resource manager's pause between decode steps.
    pub decode_pause: Duration,
}

#[derive(Clone)]
pub struct AppState {
    pub model: Arc<ServedModel>,
    pub engine: EngineHandle,
    pub resources: Arc<ResourceManager>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ApiConfig>,
    /// The epoch fence of a worker registered with a scheduler.
    pub fence: Arc<Fence>,
    /// The model store and its pull jobs.
    pub models: Arc<NodeModels>,
}

impl AppState {
    /// Starts the engine over `loaded` and readies the metrics.
    pub fn new(
        loaded: LoadedModel,
        id: String,
        resources: Arc<ResourceManager>,
        config: ApiConfig,
    ) -> Self {
        let loaded = Arc::new(loaded);
        let metrics = Arc::new(Metrics::new());
        for d in &loaded.plan.devices {
            metrics.set_device(&d.label, d.budget, d.total_bytes);
        }
        Self {
            model: Arc::new(ServedModel {
                id,
                created: respond::unix_now(),
                decode_pause: resources.settings().decode_pause,
                loaded: loaded.clone(),
            }),
            engine: EngineHandle::spawn(loaded),
            resources,
            metrics,
            config: Arc::new(config),
            fence: Arc::new(Fence::default()),
            models: Arc::new(NodeModels::from_env()),
        }
    }

    /// The same state over the model store `models`.
    pub fn with_models(mut self, models: NodeModels) -> Self {
        self.models = Arc::new(models);
        self
    }
}

/// The router. `/health` is open; everything else needs the API key when
/// one is set.
pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/metrics", get(metrics_text))
        .route("/v1/admin/models", get(node_models::list))
        .route("/v1/admin/models/pull", post(node_models::start_pull))
        .route("/v1/admin/models/pull/{job}", get(node_models::pull_status))
        .route("/v1/admin/models/{*model}", delete(node_models::delete))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key::<AppState>,
        ));
    let routes = Router::new()
        .route("/health", get(health))
        .merge(protected)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track::<AppState>,
        ))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes));
    with_fallbacks(routes).with_state(state)
}

/// OpenAI-shaped 404 for unknown routes and 405 for wrong methods.
pub fn with_fallbacks<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(|uri: Uri| async move { ApiError::route_not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
}

/// The fence check on a request's `X-Strata-Epoch` header.
fn fenced(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let stamp = headers.get(EPOCH_HEADER).and_then(|v| v.to_str().ok());
    s.fence.check(stamp)
}

async fn chat(
    State(s): State<AppState>,
    headers: HeaderMap,
    OpenAiJson(req): OpenAiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    fenced(&s, &headers)?;
    let valid = validate_chat(req, &s.model)?;
    serve(s, valid, arrived).await
}

async fn completions(
    State(s): State<AppState>,
    headers: HeaderMap,
    OpenAiJson(req): OpenAiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    fenced(&s, &headers)?;
    let valid = validate_completion(req, &s.model)?;
    serve(s, valid, arrived).await
}

/// Admission, then the engine, then the response.
async fn serve(s: AppState, valid: ValidRequest, arrived: Instant) -> Result<Response, ApiError> {
    let admitted = s.resources.admit().await?;
    s.metrics
        .throttle_wait
        .observe(admitted.throttle_wait.as_secs_f64());
    let events = s
        .engine
        .submit(valid.generate)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let meta = ResponseMeta::new(valid.endpoint, &s.model.id, valid.include_usage, arrived);
    if valid.stream {
        Ok(respond::stream(meta, events, admitted.permit, s.metrics.clone()).into_response())
    } else {
        respond::collect(meta, events, admitted.permit, s.metrics.clone()).await
    }
}

fn card(m: &ServedModel) -> ModelCard {
    ModelCard {
        id: m.id.clone(),
        object: "model",
        created: m.created,
        owned_by: "strata",
    }
}

async fn models(State(s): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![card(&s.model)],
    })
}

async fn model(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    if id == s.model.id {
        Ok(Json(card(&s.model)))
    } else {
        Err(ApiError::model_not_found(&id, &s.model.id))
    }
}

async fn health(State(s): State<AppState>) -> Response {
    let (status, body) = health_report(&s);
    (status, Json(body)).into_response()
}

/// `/health`: 200 while the engine answers (503 when it stalled), with
/// the engine's and the resource manager's state.
pub fn health_report(s: &AppState) -> (StatusCode, serde_json::Value) {
    let healthy = s.engine.is_healthy(ENGINE_STALL);
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "model": s.model.id,
        "engine": {"busy": s.engine.is_busy(), "queue_depth": s.engine.queue_depth()},
        "resources": s.resources.status(),
    });
    (status, body)
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, metrics::TEXT_FORMAT)],
        s.metrics.render(&s),
    )
}
