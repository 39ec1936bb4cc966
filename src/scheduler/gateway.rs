//! The OpenAI gateway: each request goes to a live, healthy, non-yielding
//! worker that serves its model, chosen by the selection policy.
//!
//! The body is forwarded as it came, with the worker's epoch in
//! `X-Strata-Epoch` (the worker refuses any epoch but its current one).
//! Until the worker's response headers arrive nothing has reached the
//! client, so a failure (connection refused or reset, a 5xx, a 409 for a
//! fenced epoch, a 429, or the worker's lease lapsing while we wait) is
//! retried on another eligible node, up to `max_attempts` nodes. After
//! that the response streams through chunk by chunk, and an error
//! mid-stream reaches the client as an SSE error event.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::node::NodeRecord;
use super::registry::store_error;
use super::service::{ForwardGuard, NoNode, Scheduler};
use crate::api::ApiError;

/// The epoch a forwarded request is stamped with.
pub const EPOCH_HEADER: &str = "x-strata-epoch";
/// The node id a forwarded request is meant for.
pub const NODE_HEADER: &str = "x-strata-node";

/// The two fields the gateway reads of a request; the rest is the worker's.
#[derive(Debug, Deserialize)]
struct Routing {
    model: Option<String>,
}

pub async fn chat(
    State(s): State<Scheduler>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    forward(s, "/v1/chat/completions", headers, body).await
}

pub async fn completions(
    State(s): State<Scheduler>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    forward(s, "/v1/completions", headers, body).await
}

/// The models live workers serve, sorted, each once.
async fn live_models(s: &Scheduler) -> Result<Vec<String>, ApiError> {
    let now = s.now_ms();
    let mut ids: Vec<String> = s
        .store
        .list()
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|r| r.lease_live(now))
        .flat_map(|r| r.info.models)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn card(id: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "strata"})
}

/// `/v1/models`: the union of what live workers serve.
pub async fn models(State(s): State<Scheduler>) -> Result<Json<serde_json::Value>, ApiError> {
    let data: Vec<_> = live_models(&s).await?.iter().map(|id| card(id)).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `/v1/models/{id}`: the model's card while a live worker serves it.
pub async fn model(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if live_models(&s).await?.contains(&id) {
        return Ok(Json(card(&id)));
    }
    Err(ApiError::unknown_model(format!(
        "the model `{id}` does not exist: no live worker serves it"
    )))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
}

/// Why an attempt did not produce a response to pass on.
enum Attempt {
    /// 429, with the worker's `Retry-After` in seconds.
    Busy(Option<u64>),
    Failed(String),
}

async fn forward(
    s: Scheduler,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        return Err(ApiError::unsupported_media_type(ct));
    }
    let routing: Routing = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed(format!("the request body is not valid JSON: {e}")))?;
    let model = routing
        .model
        .ok_or_else(|| ApiError::invalid("model", "`model`: missing field `model`"))?;
    let nodes = s
        .eligible(&model)
        .await
        .map_err(store_error)?
        .map_err(|why| match why {
            NoNode::UnknownModel => ApiError::unknown_model(why.message(&model)),
            _ => ApiError::unavailable(why.message(&model)),
        })?;
    let mut tried: HashSet<String> = HashSet::new();
    let mut outcomes = Vec::new();
    for _ in 0..s.config.max_attempts {
        let remaining: Vec<NodeRecord> = nodes
            .iter()
            .filter(|n| !tried.contains(&n.id))
            .cloned()
            .collect();
        let Some(node) = s.pick(&remaining).cloned() else {
            break;
        };
        tried.insert(node.id.clone());
        let auth = headers.get(header::AUTHORIZATION);
        match attempt(&s, &node, path, &body, auth).await {
            Ok(response) => {
                s.metrics.attempt("ok");
                return Ok(response);
            }
            Err(busy @ Attempt::Busy(_)) => {
                s.metrics.attempt("busy");
                outcomes.push(busy);
            }
            Err(Attempt::Failed(why)) => {
                s.metrics.attempt("failed");
                tracing::warn!(node = %node.id, "forwarding failed, trying another node: {why}");
                outcomes.push(Attempt::Failed(format!("{}: {why}", node.id)));
            }
        }
    }
    if outcomes.iter().all(|o| matches!(o, Attempt::Busy(_))) {
        let mut e = ApiError::unavailable(format!(
            "every worker serving `{model}` is busy; retry later"
        ));
        // The soonest any of them said it could take more.
        let soonest = outcomes.iter().filter_map(|o| match o {
            Attempt::Busy(after) => *after,
            Attempt::Failed(_) => None,
        });
        e.retry_after = soonest.min().or(e.retry_after);
        return Err(e);
    }
    let failures: Vec<String> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Attempt::Failed(w) => Some(w),
            Attempt::Busy(_) => None,
        })
        .collect();
    Err(ApiError::new(
        StatusCode::BAD_GATEWAY,
        "server_error",
        format!("no worker could take the request: {}", failures.join("; ")),
    ))
}

/// One try on `node`: a response to pass on, or why not.
async fn attempt(
    s: &Scheduler,
    node: &NodeRecord,
    path: &str,
    body: &Bytes,
    auth: Option<&HeaderValue>,
) -> Result<Response, Attempt> {
    let guard = s.forwarding(&node.id);
    let started = Instant::now();
    let url = format!("{}{path}", node.info.endpoint.trim_end_matches('/'));
    let mut request = s
        .client
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(EPOCH_HEADER, node.epoch)
        .header(NODE_HEADER, &node.id)
        .body(body.clone());
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth.clone());
    }
    let send = request.send();
    let response = tokio::select! {
        r = send => r,
        () = lease_lapses(s, node) => {
            let _ = s.store.record_result(&node.id, false, started.elapsed().as_secs_f64() * 1e3).await;
            return Err(Attempt::Failed("its lease lapsed while the request waited".into()));
        }
    };
    let latency = started.elapsed().as_secs_f64() * 1e3;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            let _ = s.store.record_result(&node.id, false, latency).await;
            return Err(Attempt::Failed(e.to_string()));
        }
    };
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        return Err(Attempt::Busy(after.map(|a| a.max(1))));
    }
    if status.is_server_error() || status == StatusCode::CONFLICT {
        let _ = s.store.record_result(&node.id, false, latency).await;
        let text = response.text().await.unwrap_or_default();
        return Err(Attempt::Failed(format!(
            "status {status}: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    let _ = s.store.record_result(&node.id, true, latency).await;
    s.health.record_latency(&node.id, latency);
    Ok(pass_through(response, guard))
}

/// Resolves when `node` no longer holds the lease it was picked under.
async fn lease_lapses(s: &Scheduler, node: &NodeRecord) {
    let every = Duration::from_millis((s.ttl_ms() / 6).max(50));
    loop {
        tokio::time::sleep(every).await;
        match s.store.get(&node.id).await {
            Ok(Some(r)) if r.epoch == node.epoch && r.lease_live(s.now_ms()) => {}
            Ok(_) => return,
            Err(_) => {} // a store hiccup is not the worker's fault
        }
    }
}

/// The worker's response, streamed as it arrives; `guard` counts it as in
/// flight until the stream ends.
fn pass_through(response: reqwest::Response, guard: ForwardGuard) -> Response {
    let status = response.status();
    let mut headers = HeaderMap::new();
    for name in [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        header::CACHE_CONTROL,
    ] {
        if let Some(v) = response.headers().get(&name) {
            headers.insert(name, v.clone());
        }
    }
    let sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let upstream = response.bytes_stream();
    let body = stream::unfold(
        (upstream, Some(guard), false),
        move |(mut upstream, guard, done)| async move {
            if done {
                return None;
            }
            match upstream.next().await {
                Some(Ok(bytes)) => {
                    Some((Ok::<Bytes, std::io::Error>(bytes), (upstream, guard, false)))
                }
                Some(Err(e)) if sse => {
                    let err = ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "server_error",
                        format!("the worker failed mid-stream: {e}"),
                    );
                    let event = format!("data: {}\n\ndata: [DONE]\n\n", err.body());
                    Some((Ok(Bytes::from(event)), (upstream, guard, true)))
                }
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), (upstream, guard, true))),
                None => None,
            }
        },
    );
    let mut out = Body::from_stream(body).into_response();
    *out.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    out.headers_mut().extend(headers);
    if sse {
        out.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    out
}
