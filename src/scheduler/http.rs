//! The scheduler's router: the registry and lease API under `/v1/nodes`,
//! the OpenAI gateway under `/v1`, and `/health`.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::Uri;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use super::service::Scheduler;
use super::{gateway, registry};
use crate::api::ApiError;

pub fn router(s: Scheduler) -> Router {
    Router::new()
        .route("/v1/nodes", get(registry::nodes))
        .route("/v1/nodes/register", post(registry::register))
        .route("/v1/nodes/{id}/heartbeat", post(registry::heartbeat))
        .route("/v1/nodes/{id}", delete(registry::leave))
        .route("/v1/chat/completions", post(gateway::chat))
        .route("/v1/completions", post(gateway::completions))
        .route("/v1/models", get(gateway::models))
        .route("/health", get(health))
        .fallback(|uri: Uri| async move { ApiError::route_not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(s.config.max_body_bytes))
        .with_state(s)
}

async fn health(State(s): State<Scheduler>) -> Json<serde_json::Value> {
    let now = s.now_ms();
    let active = s
        .store
        .list()
        .await
        .map(|v| v.iter().filter(|r| r.lease_live(now)).count())
        .unwrap_or(0);
    Json(json!({"status": "ok", "role": "scheduler", "active_nodes": active}))
}
