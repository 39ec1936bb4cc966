//! The scheduler's router: the registry and lease API under `/v1/nodes`,
//! the OpenAI gateway under `/v1`, `/health` and `/metrics`.
//!
//! [`routes`] is everything but `/health` and `/metrics`, so that
//! `strata serve` can put its local worker's health and metrics next to
//! the gateway on one port.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

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
        .route("/v1/nodes/{id}/models", get(node_models::list))
        .route("/v1/nodes/{id}/models/pull", post(node_models::pull))
        .route("/v1/nodes/{id}/models/pull/{job}", get(node_models::job))
        .route(
            "/v1/nodes/{id}/models/{*model}",
            delete(node_models::delete),
        );
    Router::new()
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
        Ok(self.metrics.render(&nodes, self.now_ms()))
    }
}
