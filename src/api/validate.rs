//! Validation on the way in: a `ChatRequest` or `CompletionRequest` becomes
//! a [`ValidRequest`] (prompt tokenized, limits checked against the
//! model's context) or an [`ApiError`] that names the field, the limit and
//! the value. Only a `ValidRequest` reaches the engine.

use crate::engine::GenerateRequest;
use crate::model::chat_template::ChatMessage;
use crate::model::sampling::SamplingParams;

use super::error::ApiError;
use super::types::{
    ChatRequest, CommonFields, CompletionRequest, MessageContent, PromptField, StopField,
};
use super::ServedModel;

/// Most `stop` strings a request may have (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// `max_tokens` of a completion that gives none (OpenAI's default).
pub const DEFAULT_COMPLETION_MAX_TOKENS: usize = 16;

const ROLES: [&str; 5] = ["system", "user", "assistant", "developer", "tool"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// A request that passed every check.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub endpoint: Endpoint,
    pub generate: GenerateRequest,
    pub stream: bool,
    pub include_usage: bool,
}

fn unsupported(param: &str, what: &str) -> ApiError {
    ApiError::invalid(
        param,
        format!("`{param}` is not supported by this server ({what})"),
    )
}

fn check_model(asked: &str, served: &ServedModel) -> Result<(), ApiError> {
    if asked == served.id {
        Ok(())
    } else {
        Err(ApiError::model_not_found(asked, &served.id))
    }
}

pub fn validate_chat(req: ChatRequest, served: &ServedModel) -> Result<ValidRequest, ApiError> {
    check_model(&req.model, served)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must have at least 1 message, got 0",
        ));
    }
    if req
        .tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t != &serde_json::json!([]))
    {
        return Err(unsupported("tools", "no tool calling"));
    }
    if let Some(tc) = &req.tool_choice {
        if tc != "none" && !tc.is_null() {
            return Err(unsupported("tool_choice", "no tool calling"));
        }
    }
    if let Some(rf) = &req.response_format {
        if rf.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(unsupported(
                "response_format",
                "only `{\"type\": \"text\"}`",
            ));
        }
    }
    if req.logprobs == Some(true) {
        return Err(unsupported("logprobs", "no log probabilities"));
    }
    if req.top_logprobs.is_some_and(|n| n > 0) {
        return Err(unsupported("top_logprobs", "no log probabilities"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!(
                    "`messages[{i}].role` must be one of {}, got `{}`",
                    ROLES.join(", "),
                    m.role
                ),
            ));
        }
        if m.tool_calls.as_ref().is_some_and(|t| !t.is_null()) {
            return Err(unsupported(
                &format!("messages[{i}].tool_calls"),
                "no tool calling",
            ));
        }
        let content = match &m.content {
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        ("text", None) => {
                            return Err(ApiError::invalid(
                                &format!("messages[{i}].content[{j}].text"),
                                format!("`messages[{i}].content[{j}].text` is missing"),
                            ))
                        }
                        (other, _) => {
                            return Err(ApiError::invalid(
                                &format!("messages[{i}].content[{j}].type"),
                                format!("`messages[{i}].content[{j}].type` must be `text` (this model reads text only), got `{other}`"),
                            ))
                        }
                    }
                }
                text
            }
            None if m.role == "assistant" => String::new(),
            None => {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].content"),
                    format!("`messages[{i}].content` is missing"),
                ))
            }
        };
        // Templates know `system`; `developer` is OpenAI's newer name for it.
        let role = if m.role == "developer" {
            "system"
        } else {
            &m.role
        };
        messages.push(ChatMessage {
            role: role.to_string(),
            content,
        });
    }
    let text = served
        .loaded
        .template
        .render(&messages, true)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let tokenizer = &served.loaded.tokenizer;
    // A template that writes the BOS itself must not get a second one.
    let add_bos = tokenizer.adds_bos()
        && !(tokenizer.bos_text().is_empty() || text.starts_with(tokenizer.bos_text()));
    let prompt = tokenizer.encode(&text, add_bos, true).map_err(|e| {
        ApiError::invalid(
            "messages",
            format!("`messages` could not be tokenized: {e}"),
        )
    })?;
    let max_tokens = req.max_completion_tokens.or(req.common.max_tokens);
    let field = if req.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let stop_ids = served.loaded.template.stop_ids().to_vec();
    finish(
        Endpoint::Chat,
        &req.common,
        prompt,
        (field, max_tokens),
        None,
        stop_ids,
        served,
    )
}

pub fn validate_completion(
    req: CompletionRequest,
    served: &ServedModel,
) -> Result<ValidRequest, ApiError> {
    check_model(&req.model, served)?;
    if req.echo == Some(true) {
        return Err(unsupported("echo", "the prompt is not echoed"));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(unsupported("suffix", "no fill-in-the-middle"));
    }
    if req.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::invalid(
            "best_of",
            format!(
                "`best_of` must be 1, got {}",
                req.best_of.unwrap_or_default()
            ),
        ));
    }
    if req.logprobs.is_some_and(|n| n > 0) {
        return Err(unsupported("logprobs", "no log probabilities"));
    }
    let tokenizer = &served.loaded.tokenizer;
    let vocab = tokenizer.vocab_size();
    let ids = |ids: &[i64]| -> Result<Vec<u32>, ApiError> {
        ids.iter()
            .enumerate()
            .map(|(i, &t)| {
                u32::try_from(t)
                    .ok()
                    .filter(|&t| (t as usize) < vocab)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "prompt",
                            format!("`prompt[{i}]` must be a token id below the vocabulary size {vocab}, got {t}"),
                        )
                    })
            })
            .collect()
    };
    let encode = |text: &str| {
        tokenizer
            .encode(text, tokenizer.adds_bos(), true)
            .map_err(|e| {
                ApiError::invalid("prompt", format!("`prompt` could not be tokenized: {e}"))
            })
    };
    let batch_of_one = |n: usize| -> Result<(), ApiError> {
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::invalid(
                "prompt",
                format!("`prompt` may hold 1 prompt (one choice per request), got {n}"),
            ))
        }
    };
    let prompt = match &req.prompt {
        PromptField::Text(t) => encode(t)?,
        PromptField::Tokens(t) => ids(t)?,
        PromptField::TextBatch(b) => {
            batch_of_one(b.len())?;
            encode(&b[0])?
        }
        PromptField::TokenBatch(b) => {
            batch_of_one(b.len())?;
            ids(&b[0])?
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            "prompt",
            "`prompt` must have at least 1 token, got 0",
        ));
    }
    let stop_ids = Vec::new();
    finish(
        Endpoint::Completion,
        &req.common,
        prompt,
        ("max_tokens", req.common.max_tokens),
        Some(DEFAULT_COMPLETION_MAX_TOKENS),
        stop_ids,
        served,
    )
}

/// The checks both endpoints share, after the prompt is known.
fn finish(
    endpoint: Endpoint,
    c: &CommonFields,
    prompt: Vec<u32>,
    (max_field, max_tokens): (&str, Option<i64>),
    default_max: Option<usize>,
    stop_ids: Vec<u32>,
    served: &ServedModel,
) -> Result<ValidRequest, ApiError> {
    if let Some(n) = c.n {
        if n != 1 {
            return Err(ApiError::invalid(
                "n",
                format!("`n` must be 1 (one choice per request), got {n}"),
            ));
        }
    }
    let ctx = served.loaded.ctx_size;
    let prompt_len = prompt.len();
    if prompt_len >= ctx {
        return Err(ApiError::invalid(
            if endpoint == Endpoint::Chat { "messages" } else { "prompt" },
            format!("the prompt has {prompt_len} tokens, which leaves no room in the context length {ctx}"),
        ));
    }
    let max_tokens = match max_tokens {
        Some(m) if m < 1 => {
            return Err(ApiError::invalid(
                max_field,
                format!("`{max_field}` must be at least 1, got {m}"),
            ))
        }
        Some(m) => {
            let m = usize::try_from(m).unwrap_or(usize::MAX);
            if prompt_len.saturating_add(m) > ctx {
                return Err(ApiError::invalid(
                    max_field,
                    format!(
                        "prompt tokens ({prompt_len}) + `{max_field}` ({m}) = {} exceeds the context length {ctx}",
                        prompt_len.saturating_add(m)
                    ),
                ));
            }
            m
        }
        None => default_max.unwrap_or(ctx).min(ctx - prompt_len),
    };
    let float = |name: &str, v: Option<f64>, lo: f64, hi: f64, lo_open: bool, default: f32| {
        let Some(v) = v else { return Ok(default) };
        let ok = v <= hi && if lo_open { v > lo } else { v >= lo };
        if ok {
            Ok(v as f32)
        } else {
            let range = if lo_open {
                format!("in ({lo}, {hi}]")
            } else {
                format!("between {lo} and {hi}")
            };
            Err(ApiError::invalid(
                name,
                format!("`{name}` must be {range}, got {v}"),
            ))
        }
    };
    let temperature = float("temperature", c.temperature, 0.0, 2.0, false, 1.0)?;
    let top_p = float("top_p", c.top_p, 0.0, 1.0, true, 1.0)?;
    let frequency_penalty = float(
        "frequency_penalty",
        c.frequency_penalty,
        -2.0,
        2.0,
        false,
        0.0,
    )?;
    let presence_penalty = float(
        "presence_penalty",
        c.presence_penalty,
        -2.0,
        2.0,
        false,
        0.0,
    )?;
    let min_p = float("min_p", c.min_p, 0.0, 1.0, false, 0.0)?;
    let repeat_penalty = float("repeat_penalty", c.repeat_penalty, 0.0, 10.0, true, 1.0)?;
    let top_k = match c.top_k {
        None => 0,
        Some(k) if (0..=100_000).contains(&k) => k as usize,
        Some(k) => {
            return Err(ApiError::invalid(
                "top_k",
                format!("`top_k` must be between 0 and 100000, got {k}"),
            ))
        }
    };
    let stop_strings = match &c.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s.clone()],
        Some(StopField::Many(v)) => v.clone(),
    };
    if stop_strings.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "`stop` may have at most {MAX_STOP_STRINGS} strings, got {}",
                stop_strings.len()
            ),
        ));
    }
    if let Some(i) = stop_strings.iter().position(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            format!("`stop[{i}]` must not be empty"),
        ));
    }
    let seed = c.seed.map_or_else(rand::random::<u64>, |s| s as u64);
    let include_usage = c.stream_options.as_ref().is_some_and(|o| o.include_usage);
    Ok(ValidRequest {
        endpoint,
        generate: GenerateRequest {
            prompt,
            max_tokens,
            sampling: SamplingParams {
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                frequency_penalty,
                presence_penalty,
                seed,
                ..SamplingParams::default()
            },
            stop_ids,
            stop_strings,
            decode_pause: served.decode_pause,
        },
        stream: c.stream,
        include_usage,
    })
}
