//! The public face of `strata serve`: the embedded scheduler's lease API
//! and gateway, with the local worker's `/health` and `/metrics` (the
//! worker's metrics followed by the gateway's) on the same port.

use axum::extract::State;
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::api::auth::{require_key, ApiKey};
use crate::api::metrics::TEXT_FORMAT;
use crate::api::{health_report, with_fallbacks, ApiError, AppState};
use crate::scheduler::http::routes;
use crate::scheduler::service::Scheduler;

#[derive(Clone)]
struct AllInOne {
    scheduler: Scheduler,
    worker: AppState,
}

impl ApiKey for AllInOne {
    fn api_key(&self) -> Option<&str> {
        self.scheduler.api_key()
    }
}

pub fn router(scheduler: Scheduler, worker: AppState) -> Router {
    let s = AllInOne {
        scheduler: scheduler.clone(),
        worker,
    };
    let observe = Router::new()
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(
            s.clone(),
            require_key::<AllInOne>,
        ))
        .route("/health", get(health))
        .with_state(s);
    with_fallbacks(routes(scheduler).merge(observe))
}

/// The local worker's health, with the scheduler's count of live nodes.
async fn health(State(s): State<AllInOne>) -> Response {
    let (status, mut body) = health_report(&s.worker);
    body["active_nodes"] = s.scheduler.active_nodes().await.into();
    (status, Json(body)).into_response()
}

async fn metrics_text(State(s): State<AllInOne>) -> Result<Response, ApiError> {
    let mut text = s.worker.metrics.render(&s.worker);
    text.push_str(&s.scheduler.render_metrics().await?);
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response())
}
