//! The registry and lease API: register, heartbeat, leave, and the status
//! of all nodes. Lease errors keep the protocol's statuses: 410 when the
//! caller holds no lease (unknown node, expired, wrong lease), 409 for a
//! stale epoch; a missing or wrong join token is 401.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::events::Level;
use super::health::HealthFigures;
use super::lease::{Heartbeat, LeaseError};
use super::node::{NodeInfo, NodeRecord};
use super::service::Scheduler;
use super::store::StoreError;
use crate::api::extract::OpenAiJson;
use crate::api::ApiError;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RegisterRequest {
    /// The id this worker had, when it registers again.
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub join_token: Option<String>,
    #[serde(flatten)]
    pub info: NodeInfo,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RegisterResponse {
    pub node_id: String,
    pub lease_id: String,
    pub epoch: u64,
    pub ttl_ms: u64,
    /// How often to heartbeat: a third of the TTL.
    pub heartbeat_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HeartbeatResponse {
    pub epoch: u64,
    pub lease_left_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LeaveRequest {
    pub lease_id: String,
    pub epoch: u64,
}

/// One node in `/v1/nodes`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NodeStatus {
    pub active: bool,
    /// Milliseconds of lease left (0 when lapsed).
    pub lease_left_ms: u64,
    /// This scheduler's health checks of it.
    #[serde(default)]
    pub health: HealthFigures,
    #[serde(flatten)]
    pub record: NodeRecord,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NodesStatus {
    pub total: usize,
    pub active: usize,
    pub inactive: usize,
    pub policy: String,
    pub epoch: u64,
    pub nodes: Vec<NodeStatus>,
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Lease(l) => lease_error(&l),
        StoreError::Backend(m) => {
            ApiError::unavailable(format!("the scheduler's store failed: {m}"))
        }
    }
}

fn lease_error(e: &LeaseError) -> ApiError {
    let status = StatusCode::from_u16(e.status()).expect("409 or 410");
    let code = if e.status() == 409 {
        "stale_epoch"
    } else {
        "no_lease"
    };
    ApiError::new(status, "lease_error", e.to_string()).with_code(code)
}

pub async fn register(
    State(s): State<Scheduler>,
    OpenAiJson(req): OpenAiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    if let Some(token) = s.config.join_token.as_deref() {
        let given = req.join_token.as_deref().unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return Err(ApiError::unauthorized(
                "registration needs this scheduler's join token (`join_token`)",
            ));
        }
    }
    if req.info.endpoint.is_empty() {
        return Err(ApiError::invalid(
            "endpoint",
            "`endpoint` must be the worker's base URL, got an empty string",
        ));
    }
    let ttl = s.ttl_ms();
    let record = s
        .store
        .register(req.node_id, req.info, s.now_ms(), ttl)
        .await
        .map_err(store_error)?;
    // A new incarnation starts with a clean health record.
    s.health.forget(&record.id);
    s.events.emit(
        Level::Info,
        "node_registered",
        Some(&record.id),
        None,
        format!(
            "registered at {} with epoch {}, serving {}",
            record.info.endpoint,
            record.epoch,
            record.info.models.join(", ")
        ),
    );
    Ok(Json(RegisterResponse {
        node_id: record.id,
        lease_id: record.lease_id,
        epoch: record.epoch,
        ttl_ms: ttl,
        heartbeat_ms: ttl / 3,
    }))
}

pub async fn heartbeat(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    OpenAiJson(hb): OpenAiJson<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let now = s.now_ms();
    let record = s
        .store
        .heartbeat(&id, hb, now, s.ttl_ms())
        .await
        .map_err(store_error)?;
    Ok(Json(HeartbeatResponse {
        epoch: record.epoch,
        lease_left_ms: record.lease_expires_ms.saturating_sub(now),
    }))
}

pub async fn leave(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    OpenAiJson(req): OpenAiJson<LeaveRequest>,
) -> Result<Response, ApiError> {
    s.store
        .leave(&id, &req.lease_id, req.epoch, s.now_ms())
        .await
        .map_err(store_error)?;
    s.health.forget(&id);
    s.events.emit(
        Level::Info,
        "node_left",
        Some(&id),
        None,
        "left cleanly".into(),
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn nodes(State(s): State<Scheduler>) -> Result<Json<NodesStatus>, ApiError> {
    let now = s.now_ms();
    let records = s.store.list().await.map_err(store_error)?;
    let nodes: Vec<NodeStatus> = records
        .into_iter()
        .map(|r| NodeStatus {
            active: r.lease_live(now),
            lease_left_ms: r.lease_expires_ms.saturating_sub(now),
            health: s.health.figures(&r.id),
            record: r,
        })
        .collect();
    let active = nodes.iter().filter(|n| n.active).count();
    Ok(Json(NodesStatus {
        total: nodes.len(),
        active,
        inactive: nodes.len() - active,
        policy: s.config.policy.to_string(),
        epoch: s.store.current_epoch().await.map_err(store_error)?,
        nodes,
    }))
}
