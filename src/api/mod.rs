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

use crate::engine::{LoadedModel, ModelLease, ModelPool, PoolError};
use crate::resources::Admitted;
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

/// A model loaded for serving.
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
    /// The models this worker serves, loaded by demand.
    pub pool: Arc<ModelPool>,
    pub resources: Arc<ResourceManager>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ApiConfig>,
    /// The epoch fence of a worker registered with a scheduler.
    pub fence: Arc<Fence>,
    /// The model store and its pull jobs.
    pub models: Arc<NodeModels>,
}

impl AppState {
    /// Serves `loaded` alone, kept loaded for good.
    pub fn new(
        loaded: LoadedModel,
        id: String,
        resources: Arc<ResourceManager>,
        config: ApiConfig,
    ) -> Self {
        let pool = ModelPool::with_loaded(loaded, id, resources.settings().decode_pause);
        Self::with_pool(pool, resources, config)
    }

    /// Serves the models of `pool`.
    pub fn with_pool(
        pool: Arc<ModelPool>,
        resources: Arc<ResourceManager>,
        config: ApiConfig,
    ) -> Self {
        Self {
            pool,
            resources,
            metrics: Arc::new(Metrics::new()),
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
        .route("/v1/admin/models/{*model}", delete(node_models::delete));
    #[cfg(feature = "fault-injection")]
    let protected = protected.route("/v1/admin/fault", post(inject_fault));
    let protected = protected.route_layer(middleware::from_fn_with_state(
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
    let (admitted, lease) = admit(&s, &req.model).await?;
    let valid = validate_chat(req, &lease.model)?;
    serve(s, admitted, lease, valid, arrived).await
}

async fn completions(
    State(s): State<AppState>,
    headers: HeaderMap,
    OpenAiJson(req): OpenAiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    fenced(&s, &headers)?;
    let (admitted, lease) = admit(&s, &req.model).await?;
    let valid = validate_completion(req, &lease.model)?;
    serve(s, admitted, lease, valid, arrived).await
}

/// A known model first (404 at once), then admission by the resource
/// manager, then the model held loaded (loading it if need be).
async fn admit(s: &AppState, model: &str) -> Result<(Admitted, ModelLease), ApiError> {
    if !s.pool.contains(model) {
        return Err(pool_error(PoolError::Unknown {
            asked: model.to_string(),
            served: s.pool.served(),
        }));
    }
    let admitted = s.resources.admit().await?;
    s.metrics
        .throttle_wait
        .observe(admitted.throttle_wait.as_secs_f64());
    let lease = s.pool.acquire(model).await.map_err(pool_error)?;
    Ok((admitted, lease))
}

fn pool_error(e: PoolError) -> ApiError {
    match &e {
        PoolError::Unknown { .. } => ApiError::unknown_model(e.to_string()),
        PoolError::NoRoom { .. } => ApiError::unavailable(e.to_string()),
        PoolError::NeverFits { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            e.to_string(),
        )
        .with_code("model_does_not_fit"),
        PoolError::LoadFailed { .. } => ApiError::internal(e.to_string()),
        PoolError::Restarting { retry_after, .. } => {
            let mut out = ApiError::unavailable(e.to_string()).with_code("engine_restarting");
            out.retry_after = Some(retry_after.as_secs().max(1));
            out
        }
    }
}

/// The engine, then the response; the permit and the lease live as long
/// as the response does.
async fn serve(
    s: AppState,
    admitted: Admitted,
    lease: ModelLease,
    valid: ValidRequest,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let events = lease
        .engine
        .submit(valid.generate)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let meta = ResponseMeta::new(
        valid.endpoint,
        &lease.model.id,
        valid.include_usage,
        arrived,
    );
    let held: Box<dyn Send> = Box::new((admitted.permit, lease));
    if valid.stream {
        Ok(respond::stream(meta, events, held, s.metrics.clone()).into_response())
    } else {
        respond::collect(meta, events, held, s.metrics.clone()).await
    }
}

fn card(id: &str, created: u64) -> ModelCard {
    ModelCard {
        id: id.to_string(),
        object: "model",
        created,
        owned_by: "strata",
    }
}

async fn models(State(s): State<AppState>) -> Json<ModelList> {
    let created = s.pool.created();
    Json(ModelList {
        object: "list",
        data: s.pool.ids().iter().map(|id| card(id, created)).collect(),
    })
}

async fn model(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    if s.pool.contains(&id) {
        Ok(Json(card(&id, s.pool.created())))
    } else {
        Err(pool_error(PoolError::Unknown {
            asked: id,
            served: s.pool.served(),
        }))
    }
}

async fn health(State(s): State<AppState>) -> Response {
    let (status, body) = health_report(&s);
    (status, Json(body)).into_response()
}

/// `/health`: 200 while every loaded engine answers (503 when one
/// stalled), with the models (loaded or not, bytes on each device), the
/// devices' budgets and use, and the resource manager's state.
pub fn health_report(s: &AppState) -> (StatusCode, serde_json::Value) {
    let engines = s.pool.engines();
    let healthy = engines.iter().all(|(_, e)| e.is_healthy(ENGINE_STALL));
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let ids = s.pool.ids();
    let body = json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "model": ids.first(),
        "models": s.pool.models_status(),
        "devices": s.pool.devices_status(),
        "engine": {
            "busy": engines.iter().any(|(_, e)| e.is_busy()),
            "queue_depth": engines.iter().map(|(_, e)| e.queue_depth()).sum::<usize>(),
        },
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

/// `POST /v1/admin/fault` `{"fault": "panic"|"hang", "model": ID}`: the
/// model's engine panics or hangs on its next generation. Only in builds
/// with the `fault-injection` feature (tests).
#[cfg(feature = "fault-injection")]
async fn inject_fault(
    State(s): State<AppState>,
    Json(req): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::engine::actor::Fault;
    let fault = match req["fault"].as_str() {
        Some("panic") => Fault::Panic,
        Some("hang") => Fault::Hang,
        other => {
            return Err(ApiError::invalid(
                "fault",
                format!("`fault` must be `panic` or `hang`, got {other:?}"),
            ))
        }
    };
    let engines = s.pool.engines();
    let model = req["model"].as_str();
    let (id, engine) = engines
        .iter()
        .find(|(id, _)| model.is_none_or(|m| m == id))
        .ok_or_else(|| ApiError::invalid("model", "no loaded model by that name"))?;
    engine.inject(fault);
    tracing::warn!(model = %id, "fault injected: {fault:?}");
    Ok(Json(json!({"model": id, "fault": format!("{fault:?}")})))
}
