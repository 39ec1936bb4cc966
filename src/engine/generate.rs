//! The generation loop: prefill the prompt, then decode token by token,
//! streaming text as it completes and stopping on a stop token, a stop
//! string or the token limit. Timings are measured here for reports.

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
    let mut emit = |piece: &str, text: &mut String| {
        if !piece.is_empty() {
            text.push_str(piece);
            on_text(piece);
        }
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
            StopOutcome::Continue(piece) => emit(&piece, &mut text),
            StopOutcome::Stopped(piece) => {
                emit(&piece, &mut text);
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
        emit(&rest, &mut text);
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
