//! Managing a node's models through the scheduler: each route finds the
//! node, passes the call to the worker's `/v1/admin/models` routes with
//! the caller's `Authorization`, and waits at most the node timeout. The
//! worker's answer (success or its error) comes back as it was; a node
//! that is unknown (404), holds no live lease (503), cannot be reached
//! (502) or does not answer in time (504) gets an error that says so.
//!
//! - `GET /v1/nodes/{id}/models`
//! - `POST /v1/nodes/{id}/models/pull` `{"model": "hf:..."}`
//! - `GET /v1/nodes/{id}/models/pull/{job}`
//! - `DELETE /v1/nodes/{id}/models/{model}`

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::registry::store_error;
use super::service::Scheduler;
use crate::api::ApiError;

pub async fn list(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    to_node(&s, &id, Method::GET, "/v1/admin/models", &headers, None).await
}

pub async fn pull(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = "/v1/admin/models/pull";
    to_node(&s, &id, Method::POST, path, &headers, Some(body)).await
}

pub async fn job(
    State(s): State<Scheduler>,
    Path((id, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/v1/admin/models/pull/{job}");
    to_node(&s, &id, Method::GET, &path, &headers, None).await
}

pub async fn delete(
    State(s): State<Scheduler>,
    Path((id, model)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/v1/admin/models/{model}");
    to_node(&s, &id, Method::DELETE, &path, &headers, None).await
}

async fn to_node(
    s: &Scheduler,
    id: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    let node = s.store.get(id).await.map_err(store_error)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no node `{id}` is registered"),
        )
        .with_code("unknown_node")
    })?;
    if !node.lease_live(s.now_ms()) {
        return Err(ApiError::unavailable(format!(
            "node `{id}` holds no live lease; it cannot be managed until it renews"
        )));
    }
    let url = format!("{}{path}", node.info.endpoint.trim_end_matches('/'));
    let timeout = s.config.node_timeout;
    let mut req = s.client.request(method, url).timeout(timeout);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth.clone());
    }
    if let Some(body) = body {
        req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let res = req.send().await.map_err(|e| {
        if e.is_timeout() {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                format!("node `{id}` did not answer within {timeout:?}"),
            )
            .with_code("node_timeout")
        } else {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                format!("node `{id}` could not be reached: {e}"),
            )
        }
    })?;
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let text = res.bytes().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            format!("node `{id}` broke off its answer: {e}"),
        )
    })?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], text).into_response())
}
