//! The scheduler's router: the registry and lease API under `/v1/nodes`,
//! the OpenAI gateway under `/v1`, and `/health`.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::Uri;
use axum::middleware;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use super::service::Scheduler;
use super::{gateway, registry};
use crate::api::auth::require_key;
use crate::api::ApiError;

/// Lease routes are guarded by the join token and the lease credentials;
/// the gateway and the status by the API key, when one is set.
pub fn router(s: Scheduler) -> Router {
    let guarded = Router::new()
        .route("/v1/nodes", get(registry::nodes))
        .route("/v1/chat/completions", post(gateway::chat))
        .route("/v1/completions", post(gateway::completions))
        .route("/v1/models", get(gateway::models))
        .route_layer(middleware::from_fn_with_state(
            s.clone(),
            require_key::<Scheduler>,
        ));
    Router::new()
        .route("/v1/nodes/register", post(registry::register))
        .route("/v1/nodes/{id}/heartbeat", post(registry::heartbeat))
        .route("/v1/nodes/{id}", delete(registry::leave))
        .route("/health", get(health))
        .merge(guarded)
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
