//! The scheduler's router: the registry and lease API under `/v1/nodes`,
//! the OpenAI gateway under `/v1`, `/health` and `/metrics`.
//!
//! `/` is the web dashboard. [`routes`] is everything but `/health` and
//! `/metrics`, so that `strata serve` can put its local worker's health and
//! metrics next to the gateway on one port.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use futures_util::StreamExt;

use super::events::Level;
use super::registry::store_error;
use super::service::Scheduler;
use super::{gateway, node_models, registry};
use crate::api::auth::require_key;
use crate::api::metrics::track;
use crate::api::{with_fallbacks, ApiError};

/// The full router of `strata scheduler`.
pub fn router(s: Scheduler) -> Router {
    let observe = Router::new()
        .route("/health", get(health))
        .merge(guard(
            s.clone(),
            Router::new().route("/metrics", get(metrics_text)),
        ))
        .with_state(s.clone());
    with_fallbacks(routes(s).merge(observe))
}

/// The lease API and the gateway, counted in the gateway's metrics. Lease
/// routes are guarded by the join token and the lease credentials; the
/// gateway and the status by the API key, when one is set.
pub fn routes(s: Scheduler) -> Router {
    let gateway = Router::new()
        .route("/v1/nodes", get(registry::nodes))
        .route("/v1/chat/completions", post(gateway::chat))
        .route("/v1/completions", post(gateway::completions))
        .route("/v1/models", get(gateway::models))
        .route("/v1/models/{id}", get(gateway::model))
        .route("/v1/events", get(events))
        .route("/v1/nodes/{id}/models", get(node_models::list))
        .route("/v1/nodes/{id}/models/pull", post(node_models::pull))
        .route("/v1/nodes/{id}/models/pull/{job}", get(node_models::job))
        .route(
            "/v1/nodes/{id}/models/{*model}",
            delete(node_models::delete),
        );
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/nodes/register", post(registry::register))
        .route("/v1/nodes/{id}/heartbeat", post(registry::heartbeat))
        .route("/v1/nodes/{id}", delete(registry::leave))
        .merge(guard(s.clone(), gateway))
        .route_layer(middleware::from_fn_with_state(
            s.clone(),
            track::<Scheduler>,
        ))
        .layer(DefaultBodyLimit::max(s.config.max_body_bytes))
        .with_state(s)
}

/// `routes` behind the API key.
fn guard(s: Scheduler, routes: Router<Scheduler>) -> Router<Scheduler> {
    routes.route_layer(middleware::from_fn_with_state(s, require_key::<Scheduler>))
}

/// The web dashboard: one page, no build step, that polls `/v1/nodes` and
/// `/v1/events` every second (with the API key typed into it, kept in the
/// browser's local storage).
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

async fn health(State(s): State<Scheduler>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "role": "scheduler", "active_nodes": s.active_nodes().await}))
}

async fn metrics_text(State(s): State<Scheduler>) -> Result<impl IntoResponse, ApiError> {
    Ok((
        [(header::CONTENT_TYPE, crate::api::metrics::TEXT_FORMAT)],
        s.render_metrics().await?,
    ))
}

impl Scheduler {
    /// Nodes holding a live lease (0 when the store cannot be read).
    pub async fn active_nodes(&self) -> usize {
        let now = self.now_ms();
        self.store
            .list()
            .await
            .map(|v| v.iter().filter(|r| r.lease_live(now)).count())
            .unwrap_or(0)
    }

    /// The gateway's metrics in the Prometheus text format.
    pub async fn render_metrics(&self) -> Result<String, ApiError> {
        let nodes = self.store.list().await.map_err(store_error)?;
        Ok(self.metrics.render(&nodes, self.now_ms(), &self.health))
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct EventsQuery {
    /// Only events with a larger id.
    #[serde(default)]
    after: u64,
    /// The lowest level wanted (INFO by default).
    #[serde(default)]
    level: Option<String>,
}

/// `/v1/events`: the recent events as JSON, or with `Accept:
/// text/event-stream` those and then every new one as SSE.
async fn events(
    State(s): State<Scheduler>,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let min = match &q.level {
        Some(l) => l
            .parse::<Level>()
            .map_err(|e| ApiError::invalid("level", format!("`level` {e}")))?,
        None => Level::Info,
    };
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if !sse {
        return Ok(Json(json!({"events": s.events.since(q.after, min)})).into_response());
    }
    // Subscribe first, so nothing falls between the replay and the live.
    let live = s.events.subscribe();
    let replay = s.events.since(q.after, min);
    let last = replay.last().map_or(q.after, |e| e.id);
    let replay = futures_util::stream::iter(replay);
    let live = futures_util::stream::unfold(live, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |e| std::future::ready(e.id > last && e.level >= min));
    let stream = replay.chain(live).map(|e| {
        Ok::<_, std::convert::Infallible>(
            axum::response::sse::Event::default()
                .event(format!("{:?}", e.level).to_uppercase())
                .id(e.id.to_string())
                .json_data(&e)
                .expect("an event serializes"),
        )
    });
    Ok(axum::response::sse::Sse::new(stream)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response())
}
