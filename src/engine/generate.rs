//! The generation loop: prefill the prompt, then decode token by token,
//! streaming text as it completes and stopping on a stop token, a stop
//! string or the token limit. Timings are measured here for reports.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::model::sampling::{Sampler, SamplingParams};
use crate::model::{LayeredModel, Tokenizer};

use super::stop::{StopMatcher, StopOutcome};
use super::EngineError;

/// One generation.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Extra stop token ids besides the model's EOS / end-of-turn.
    pub stop_ids: Vec<u32>,
    pub stop_strings: Vec<String>,
    /// Sleep this long between two decode steps (the resource manager's
    /// `decode_pause`, which caps the GPU duty cycle on desktops).
    pub decode_pause: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` or the context filled up.
    Length,
    /// The caller stopped it (a client went away).
    Cancelled,
}

impl FinishReason {
    /// The OpenAI name (`stop`, `length`); a cancelled generation has no
    /// client left to tell, and reports `stop`.
    pub fn openai_name(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Cancelled => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One step of a generation, as the caller of [`generate_steps`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Text that became final with this step (often empty mid-character or
    /// while a stop string might be forming).
    pub text: &'a str,
    /// The token this step produced; `None` for the final flush.
    pub token: Option<u32>,
}

/// What a generation produced, with its timings.
#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub prefill: Duration,
    pub decode: Duration,
}

impl Generation {
    pub fn prefill_tok_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Decode speed over the tokens after the first (the first comes from
    /// the prefill).
    pub fn decode_tok_per_s(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// Runs `req` on `model`, calling `on_text` with each piece of text as soon
/// as it is final.
pub fn generate(
    model: &LayeredModel,
    tokenizer: &Tokenizer,
    req: &GenerateRequest,
    mut on_text: impl FnMut(&str),
) -> Result<Generation, EngineError> {
    generate_steps(model, tokenizer, req, |step| {
        if !step.text.is_empty() {
            on_text(step.text);
        }
        ControlFlow::Continue(())
    })
}

/// Runs `req` on `model`, calling `on_step` after every decode step (and
/// once more for text held back at the end). `on_step` returning `Break`
/// stops the generation before the next decode step, with
/// [`FinishReason::Cancelled`].
pub fn generate_steps(
    model: &LayeredModel,
    tokenizer: &Tokenizer,
    req: &GenerateRequest,
    mut on_step: impl FnMut(Step<'_>) -> ControlFlow<()>,
) -> Result<Generation, EngineError> {
    req.sampling.validate().map_err(EngineError::Invalid)?;
    if req.prompt.is_empty() {
        return Err(EngineError::Invalid(
            "the prompt is empty: it must have at least one token".into(),
        ));
    }
    if req.max_tokens == 0 {
        return Err(EngineError::Invalid(
            "`max_tokens` must be at least 1, got 0".into(),
        ));
    }
    let ctx = model.max_positions();
    if req.prompt.len() + req.max_tokens > ctx {
        return Err(EngineError::Invalid(format!(
            "prompt tokens ({}) + `max_tokens` ({}) = {} exceeds the context length {ctx}",
            req.prompt.len(),
            req.max_tokens,
            req.prompt.len() + req.max_tokens
        )));
    }
    let mut stop_ids = tokenizer.stop_ids();
    stop_ids.extend(&req.stop_ids);

    let mut seq = model.new_sequence(req.prompt.len() + req.max_tokens)?;
    let mut sampler = Sampler::new(req.sampling.clone());
    let mut stream = tokenizer.stream();
    let mut stops = StopMatcher::new(req.stop_strings.clone());
    let mut history = req.prompt.clone();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut emit = |piece: &str, token: Option<u32>, text: &mut String| {
        text.push_str(piece);
        on_step(Step { text: piece, token })
    };

    let started = Instant::now();
    let mut logits: Vec<f32> = model.forward(&mut seq, &req.prompt)?.to_vec1()?;
    let prefill = started.elapsed();
    let decode_started = Instant::now();
    let mut finish = FinishReason::Length;
    loop {
        let next = sampler.sample(&logits, &history);
        if stop_ids.contains(&next) {
            finish = FinishReason::Stop;
            break;
        }
        tokens.push(next);
        history.push(next);
        match stops.push(&stream.push(next)) {
            StopOutcome::Continue(piece) => {
                if emit(&piece, Some(next), &mut text).is_break() {
                    finish = FinishReason::Cancelled;
                    break;
                }
            }
            StopOutcome::Stopped(piece) => {
                // Stopping anyway: a cancel here changes nothing.
                let _ = emit(&piece, Some(next), &mut text);
                finish = FinishReason::Stop;
                break;
            }
        }
        if tokens.len() >= req.max_tokens {
            break;
        }
        if !req.decode_pause.is_zero() {
            std::thread::sleep(req.decode_pause);
        }
        logits = model.forward(&mut seq, &[next])?.to_vec1()?;
    }
    if finish == FinishReason::Length {
        let tail = stream.finish();
        let rest = match stops.push(&tail) {
            StopOutcome::Continue(p) => p + &stops.finish(),
            StopOutcome::Stopped(p) => p,
        };
        if !rest.is_empty() {
            let _ = emit(&rest, None, &mut text);
        }
    }
    Ok(Generation {
        tokens,
        text,
        finish,
        prompt_tokens: req.prompt.len(),
        prefill,
        decode: decode_started.elapsed(),
    })
}
