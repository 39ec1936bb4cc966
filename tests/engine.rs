//! The engine end to end in-process: planning drives loading, and the
//! generation loop's sampling, limits and errors.

mod common;

use std::time::Duration;

use candle_core::quantized::GgmlDType;
use common::tiny;
use strata::engine::{generate, load, FinishReason, GenerateRequest, LoadOptions};
use strata::model::sampling::SamplingParams;
use strata::placement::Strategy;

fn options(path: &std::path::Path, devices: &str) -> LoadOptions {
    LoadOptions {
        model: path.to_path_buf(),
        devices: devices.parse().unwrap(),
        strategy: Strategy::Balance,
        ctx_size: Some(64),
        budget_policy: Default::default(),
    }
}

fn request(prompt: Vec<u32>, sampling: SamplingParams) -> GenerateRequest {
    GenerateRequest {
        prompt,
        max_tokens: 24,
        sampling,
        stop_ids: vec![],
        stop_strings: vec![],
        decode_pause: Duration::ZERO,
    }
}

#[test]
fn the_plan_decides_the_stages() {
    let (_dir, path) = tiny(GgmlDType::Q8_0);
    let loaded = load(&options(&path, "cpu=3MiB,cpu=3MiB,cpu=3MiB")).unwrap();
    let planned: Vec<_> = loaded
        .plan
        .stages()
        .into_iter()
        .map(|(i, r)| (loaded.devices[i].label.clone(), r))
        .collect();
    assert_eq!(loaded.model.stage_layout(), planned);
    assert!(planned.len() >= 2, "budgets force a split: {planned:?}");
}

#[test]
fn top_k_one_generation_equals_greedy_and_seeds_repeat() {
    let (_dir, path) = tiny(GgmlDType::Q4_0);
    let loaded = load(&options(&path, "cpu")).unwrap();
    let prompt = loaded
        .tokenizer
        .encode("Once upon a time", true, false)
        .unwrap();
    let run = |sampling: SamplingParams| {
        generate(
            &loaded.model,
            &loaded.tokenizer,
            &request(prompt.clone(), sampling),
            |_| {},
        )
        .unwrap()
    };
    let greedy = run(SamplingParams::default());
    let top1 = run(SamplingParams {
        temperature: 1.3,
        top_k: 1,
        seed: 99,
        ..Default::default()
    });
    assert_eq!(greedy.tokens, top1.tokens);
    assert_eq!(greedy.tokens.len(), 24);
    assert_eq!(greedy.finish, FinishReason::Length);

    let hot = SamplingParams {
        temperature: 1.5,
        seed: 4,
        ..Default::default()
    };
    let a = run(hot.clone());
    let b = run(hot.clone());
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.text, b.text);
    let c = run(SamplingParams { seed: 5, ..hot });
    assert_ne!(
        a.tokens, c.tokens,
        "different seeds should differ on a random model"
    );
}

#[test]
fn streamed_pieces_add_up_to_the_text() {
    let (_dir, path) = tiny(GgmlDType::Q4_0);
    let loaded = load(&options(&path, "cpu")).unwrap();
    let mut pieces = String::new();
    let prompt = loaded.tokenizer.encode("The sun", true, false).unwrap();
    let sampling = SamplingParams {
        temperature: 1.0,
        seed: 1,
        ..Default::default()
    };
    let g = generate(
        &loaded.model,
        &loaded.tokenizer,
        &request(prompt, sampling),
        |p| pieces.push_str(p),
    )
    .unwrap();
    assert_eq!(pieces, g.text);
    let mut stream = loaded.tokenizer.stream();
    let mut direct: String = g.tokens.iter().map(|&t| stream.push(t)).collect();
    direct += &stream.finish();
    assert_eq!(direct, g.text);
}

#[test]
fn stop_ids_end_generation_with_stop() {
    let (_dir, path) = tiny(GgmlDType::Q4_0);
    let loaded = load(&options(&path, "cpu")).unwrap();
    let prompt = loaded.tokenizer.encode("Once", true, false).unwrap();
    let greedy = generate(
        &loaded.model,
        &loaded.tokenizer,
        &request(prompt.clone(), SamplingParams::default()),
        |_| {},
    )
    .unwrap();
    let mut req = request(prompt, SamplingParams::default());
    req.stop_ids = vec![greedy.tokens[3]];
    let cut = generate(&loaded.model, &loaded.tokenizer, &req, |_| {}).unwrap();
    let first = greedy
        .tokens
        .iter()
        .position(|&t| t == greedy.tokens[3])
        .unwrap();
    assert_eq!(cut.tokens, greedy.tokens[..first]);
    assert_eq!(cut.finish, FinishReason::Stop);
}

#[test]
fn limits_are_refused_with_the_numbers() {
    let (_dir, path) = tiny(GgmlDType::Q4_0);
    let loaded = load(&options(&path, "cpu")).unwrap();
    let mut req = request(vec![1; 50], SamplingParams::default());
    let err = generate(&loaded.model, &loaded.tokenizer, &req, |_| {})
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "prompt tokens (50) + `max_tokens` (24) = 74 exceeds the context length 64"
    );
    req.prompt = vec![1];
    req.max_tokens = 0;
    let err = generate(&loaded.model, &loaded.tokenizer, &req, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("`max_tokens` must be at least 1"), "{err}");
    req.max_tokens = 4;
    req.sampling.top_p = 1.5;
    let err = generate(&loaded.model, &loaded.tokenizer, &req, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("`top_p`") && err.contains("1.5"), "{err}");
}
