//! From engine events to OpenAI responses: one JSON body, or an SSE stream
//! of chunks ending in `data: [DONE]`.
//!
//! The admission permit lives inside the response (the collecting future or
//! the stream state), so the slot is freed exactly when the response ends,
//! whether it finished, failed or the client went away. Dropping the
//! stream drops the engine's event receiver, which stops the generation
//! before its next decode step.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::{EngineEvent, Summary};

use super::error::ApiError;
use super::metrics::Metrics;
use super::types::Usage;
use super::validate::Endpoint;

/// What every chunk and body of one response shares.
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub endpoint: Endpoint,
    pub include_usage: bool,
    /// When the request arrived (for time to first token).
    pub arrived: Instant,
}

impl ResponseMeta {
    pub fn new(endpoint: Endpoint, model: &str, include_usage: bool, arrived: Instant) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        Self {
            id: format!("{prefix}-{:032x}", rand::random::<u128>()),
            created: unix_now(),
            model: model.to_string(),
            endpoint,
            include_usage,
            arrived,
        }
    }

    fn object(&self, streaming: bool) -> &'static str {
        match (self.endpoint, streaming) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, streaming: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(streaming),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        })
    }

    /// One streamed piece of text (or the role opener, or the final
    /// chunk with `finish_reason`).
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Completion => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        };
        self.envelope(true, json!([choice]))
    }

    fn body(&self, text: &str, summary: &Summary) -> Value {
        let finish = summary.finish.openai_name();
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish,
            }),
            Endpoint::Completion => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish,
            }),
        };
        let mut body = self.envelope(false, json!([choice]));
        body["usage"] = json!(Usage::new(summary.prompt_tokens, summary.completion_tokens));
        body
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Token accounting shared by both response forms.
struct TokenClock {
    metrics: Arc<Metrics>,
    arrived: Instant,
    last_token: Option<Instant>,
}

impl TokenClock {
    fn on_event(&mut self, event: &EngineEvent) {
        match event {
            EngineEvent::Step { token: true, .. } => {
                let now = Instant::now();
                match self.last_token {
                    None => self
                        .metrics
                        .time_to_first_token
                        .observe((now - self.arrived).as_secs_f64()),
                    Some(t) => self.metrics.token_latency.observe((now - t).as_secs_f64()),
                }
                self.last_token = Some(now);
                self.metrics.completion_tokens.inc();
            }
            EngineEvent::Done(s) => self.metrics.prompt_tokens.inc_by(s.prompt_tokens as u64),
            _ => {}
        }
    }
}

/// Waits for the whole generation and answers with one JSON body.
pub async fn collect(
    meta: ResponseMeta,
    mut events: UnboundedReceiver<EngineEvent>,
    held: Box<dyn Send>,
    metrics: Arc<Metrics>,
) -> Result<Response, ApiError> {
    let _held = held;
    let mut clock = TokenClock {
        metrics,
        arrived: meta.arrived,
        last_token: None,
    };
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        clock.on_event(&event);
        match event {
            EngineEvent::Started => {}
            EngineEvent::Step { text: t, .. } => text.push_str(&t),
            EngineEvent::Done(summary) => {
                return Ok(Json(meta.body(&text, &summary)).into_response())
            }
            EngineEvent::Failed(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(ApiError::internal(
        "the engine stopped before the generation ended",
    ))
}

struct StreamState {
    meta: ResponseMeta,
    events: UnboundedReceiver<EngineEvent>,
    clock: TokenClock,
    pending: VecDeque<Event>,
    finished: bool,
    /// The admission permit and the model lease, freed with the stream.
    _held: Box<dyn Send>,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if !self.finished {
            self.clock.metrics.cancelled.inc();
        }
    }
}

fn data(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

/// Streams the generation as SSE chunks.
pub fn stream(
    meta: ResponseMeta,
    events: UnboundedReceiver<EngineEvent>,
    held: Box<dyn Send>,
    metrics: Arc<Metrics>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut pending = VecDeque::new();
    if meta.endpoint == Endpoint::Chat {
        pending.push_back(data(&meta.chunk(Some(""), true, None)));
    }
    let state = StreamState {
        clock: TokenClock {
            metrics,
            arrived: meta.arrived,
            last_token: None,
        },
        meta,
        events,
        pending,
        finished: false,
        _held: held,
    };
    let s = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.pending.pop_front() {
                return Some((Ok(event), st));
            }
            if st.finished {
                return None;
            }
            let Some(event) = st.events.recv().await else {
                let e = ApiError::internal("the engine stopped before the generation ended");
                st.pending.push_back(data(&e.body()));
                st.pending.push_back(Event::default().data("[DONE]"));
                st.finished = true;
                continue;
            };
            st.clock.on_event(&event);
            match event {
                EngineEvent::Started => {}
                EngineEvent::Step { text, .. } if text.is_empty() => {}
                EngineEvent::Step { text, .. } => {
                    st.pending
                        .push_back(data(&st.meta.chunk(Some(&text), false, None)));
                }
                EngineEvent::Done(summary) => {
                    let finish = summary.finish.openai_name();
                    let last = st.meta.chunk(None, false, Some(finish));
                    st.pending.push_back(data(&last));
                    if st.meta.include_usage {
                        let mut usage = st.meta.envelope(true, json!([]));
                        usage["usage"] =
                            json!(Usage::new(summary.prompt_tokens, summary.completion_tokens));
                        st.pending.push_back(data(&usage));
                    }
                    st.pending.push_back(Event::default().data("[DONE]"));
                    st.finished = true;
                }
                EngineEvent::Failed(message) => {
                    st.pending
                        .push_back(data(&ApiError::internal(message).body()));
                    st.pending.push_back(Event::default().data("[DONE]"));
                    st.finished = true;
                }
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}
