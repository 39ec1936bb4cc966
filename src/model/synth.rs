//! Synthetic GGUF models for tests, benchmarks and demos.
//!
//! [`write_synthetic`] writes a llama-family GGUF file with random weights
//! (deterministic from a seed), the real tensor layout and names, and a real
//! tokenizer: a vocabulary learned by byte-pair merges over a small built-in
//! English corpus, either as a SentencePiece (`llama`) vocabulary with scores
//! and `<0xNN>` byte tokens or as a GPT-2 byte-level BPE vocabulary with
//! merges. No download is involved.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use super::config::Architecture;
use super::gguf::write_gguf;
use super::tokenizer::byte_level;
use super::tokenizer::VocabKind;

/// Text the synthetic vocabularies are learned from.
const CORPUS: &str = "Once upon a time, there was a little girl named Lily. She loved to play \
outside in the park with her friends. One day, she saw a big red ball under the tree. \
The sun was shining and the birds were singing. Her mother said that the garden was \
beautiful in the morning. The city of Nova Haven was a thriving metropolis, and the \
people there worked together to build a better world for their children. \
The quick brown fox jumps over the lazy dog. A model splits its layers across devices \
of different memory, and each layer keeps its cache on its own device. \
Numbers like 12, 345 and 2026 appear in text too; so do questions? And answers!";

/// ChatML, the template SmolLM2 and Qwen models ship.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Where benchmarks and examples keep the generated benchmark model,
/// relative to the crate root.
pub const BENCH_MODEL: &str = "target/bench-models/bench-q4_0-768x12.gguf";

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub architecture: Architecture,
    pub vocab: VocabKind,
    /// Vocabulary size; learned pieces are padded with unused tokens.
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub ffn_dim: usize,
    pub context_length: usize,
    pub rope_base: f32,
    /// Storage type of the 2-D weight matrices (norms and biases stay F32).
    pub weight_type: GgmlDType,
    /// Write `output.weight`; without it the head reuses the embedding.
    pub separate_output: bool,
    pub seed: u64,
}

impl SynthSpec {
    /// A tiny llama model (dim 256, 4 layers, GQA 4:2) that runs in
    /// milliseconds; dimensions are multiples of 256 so every quant type fits.
    pub fn tiny(weight_type: GgmlDType, seed: u64) -> Self {
        Self {
            architecture: Architecture::Llama,
            vocab: VocabKind::SentencePiece,
            vocab_size: 512,
            dim: 256,
            n_layer: 4,
            n_head: 4,
            n_kv_head: 2,
            ffn_dim: 512,
            context_length: 256,
            rope_base: 10_000.0,
            weight_type,
            separate_output: true,
            seed,
        }
    }

    /// The benchmark model of issue 2: dim 768, 12 layers, vocab 32000, ~100 MB in Q4_0.
    pub fn bench() -> Self {
        Self {
            vocab_size: 32_000,
            dim: 768,
            n_layer: 12,
            n_head: 12,
            n_kv_head: 4,
            ffn_dim: 2048,
            context_length: 2048,
            ..Self::tiny(GgmlDType::Q4_0, 7)
        }
    }

    /// The GPU benchmark model: dim 2048, 28 layers, GQA 32:8, ffn 8192,
    /// vocab 32000 — 1.8 B parameters, about 1 GB in Q4_K.
    pub fn large() -> Self {
        Self {
            dim: 2048,
            n_layer: 28,
            n_head: 32,
            n_kv_head: 8,
            ffn_dim: 8192,
            context_length: 4096,
            rope_base: 500_000.0,
            ..Self::bench()
        }
    }

    fn head_dim(&self) -> usize {
        self.dim / self.n_head
    }
}

/// A learned vocabulary in GGUF form.
struct Vocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    merges: Vec<String>,
    bos: u32,
    eos: u32,
    eot: Option<u32>,
}

/// Writes the model `spec` describes to `path`.
pub fn write_synthetic(spec: &SynthSpec, path: &Path) -> candle_core::Result<()> {
    if !spec.dim.is_multiple_of(spec.n_head) || !spec.n_head.is_multiple_of(spec.n_kv_head) {
        candle_core::bail!(
            "synthetic model: heads {} / kv heads {} do not divide dim {}",
            spec.n_head,
            spec.n_kv_head,
            spec.dim
        )
    }
    let vocab = match spec.vocab {
        VocabKind::SentencePiece => spm_vocab(spec.vocab_size),
        VocabKind::BytePairGpt2 => gpt2_vocab(spec.vocab_size),
    };
    let n_vocab = vocab.tokens.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let hd = spec.head_dim();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut matrix =
        |rng: &mut rand::rngs::StdRng, name: String, rows: usize, cols: usize, dt: GgmlDType| {
            let scale = 1.0 / (cols as f32).sqrt();
            let data: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-scale..scale) * 1.7)
                .collect();
            let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu)?;
            tensors.push((name, QTensor::quantize(&t, dt)?));
            candle_core::Result::Ok(())
        };
    let wt = spec.weight_type;
    matrix(&mut rng, "token_embd.weight".into(), n_vocab, spec.dim, wt)?;
    let (q_rows, kv_rows) = (spec.n_head * hd, spec.n_kv_head * hd);
    for l in 0..spec.n_layer {
        for (name, rows, cols) in [
            ("attn_q", q_rows, spec.dim),
            ("attn_k", kv_rows, spec.dim),
            ("attn_v", kv_rows, spec.dim),
            ("attn_output", spec.dim, q_rows),
            ("ffn_gate", spec.ffn_dim, spec.dim),
            ("ffn_up", spec.ffn_dim, spec.dim),
            ("ffn_down", spec.dim, spec.ffn_dim),
        ] {
            matrix(&mut rng, format!("blk.{l}.{name}.weight"), rows, cols, wt)?;
        }
    }
    if spec.separate_output {
        matrix(&mut rng, "output.weight".into(), n_vocab, spec.dim, wt)?;
    }
    let mut vector =
        |rng: &mut rand::rngs::StdRng, name: String, len: usize, center: f32, spread: f32| {
            let data: Vec<f32> = (0..len)
                .map(|_| center + rng.random_range(-spread..spread))
                .collect();
            let t = Tensor::from_vec(data, len, &Device::Cpu)?;
            tensors.push((name, QTensor::quantize(&t, GgmlDType::F32)?));
            candle_core::Result::Ok(())
        };
    for l in 0..spec.n_layer {
        let p = |t: &str| format!("blk.{l}.{t}");
        vector(&mut rng, p("attn_norm.weight"), spec.dim, 1.0, 0.2)?;
        vector(&mut rng, p("ffn_norm.weight"), spec.dim, 1.0, 0.2)?;
        if spec.architecture.has_qkv_bias() {
            vector(&mut rng, p("attn_q.bias"), spec.n_head * hd, 0.0, 0.1)?;
            vector(&mut rng, p("attn_k.bias"), spec.n_kv_head * hd, 0.0, 0.1)?;
            vector(&mut rng, p("attn_v.bias"), spec.n_kv_head * hd, 0.0, 0.1)?;
        }
        if spec.architecture.has_qk_norm() {
            vector(&mut rng, p("attn_q_norm.weight"), hd, 1.0, 0.2)?;
            vector(&mut rng, p("attn_k_norm.weight"), hd, 1.0, 0.2)?;
        }
    }
    vector(&mut rng, "output_norm.weight".into(), spec.dim, 1.0, 0.2)?;

    let arch = spec.architecture.gguf_name();
    let k = |s: &str| format!("{arch}.{s}");
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            "general.name".into(),
            Value::String(format!("strata-synthetic-{arch}")),
        ),
        (k("block_count"), Value::U32(spec.n_layer as u32)),
        (k("embedding_length"), Value::U32(spec.dim as u32)),
        (k("feed_forward_length"), Value::U32(spec.ffn_dim as u32)),
        (k("attention.head_count"), Value::U32(spec.n_head as u32)),
        (
            k("attention.head_count_kv"),
            Value::U32(spec.n_kv_head as u32),
        ),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (k("context_length"), Value::U32(spec.context_length as u32)),
        (k("rope.freq_base"), Value::F32(spec.rope_base)),
        (k("rope.dimension_count"), Value::U32(hd as u32)),
        (k("vocab_size"), Value::U32(n_vocab as u32)),
    ];
    if spec.architecture.has_qk_norm() {
        md.push((k("attention.key_length"), Value::U32(hd as u32)));
        md.push((k("attention.value_length"), Value::U32(hd as u32)));
    }
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    match spec.vocab {
        VocabKind::SentencePiece => {
            md.push(("tokenizer.ggml.model".into(), Value::String("llama".into())));
            md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)));
            md.push(("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)));
        }
        VocabKind::BytePairGpt2 => {
            md.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
            md.push(("tokenizer.ggml.pre".into(), Value::String("gpt2".into())));
            md.push(("tokenizer.ggml.merges".into(), strings(&vocab.merges)));
            md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)));
            md.push((
                "tokenizer.chat_template".into(),
                Value::String(CHATML_TEMPLATE.into()),
            ));
        }
    }
    md.push(("tokenizer.ggml.tokens".into(), strings(&vocab.tokens)));
    md.push((
        "tokenizer.ggml.scores".into(),
        Value::Array(vocab.scores.iter().map(|&s| Value::F32(s)).collect()),
    ));
    md.push((
        "tokenizer.ggml.token_type".into(),
        Value::Array(vocab.types.iter().map(|&t| Value::I32(t)).collect()),
    ));
    md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(vocab.bos)));
    md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(vocab.eos)));
    if let Some(eot) = vocab.eot {
        md.push(("tokenizer.ggml.eot_token_id".into(), Value::U32(eot)));
    }

    write_gguf(path, &md, &tensors)
}

/// Writes `spec` to `path` unless the file is already there (benchmarks
/// and examples reuse one generated model). The file appears atomically.
pub fn write_if_missing(spec: &SynthSpec, path: &Path) -> candle_core::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let part = path.with_extension("part");
    write_synthetic(spec, &part)?;
    std::fs::rename(&part, path)?;
    Ok(())
}

/// Learns `n` byte-pair merges over `words` (each a list of symbols) and
/// returns them in order.
fn learn_merges(mut words: Vec<(Vec<String>, usize)>, n: usize) -> Vec<(String, String)> {
    let mut merges = Vec::new();
    while merges.len() < n {
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for (w, freq) in &words {
            for pair in w.windows(2) {
                *counts
                    .entry((pair[0].as_str(), pair[1].as_str()))
                    .or_default() += freq;
            }
        }
        // Most frequent pair; ties broken by text so the result is deterministic.
        let Some(((a, b), _)) = counts
            .into_iter()
            .max_by(|x, y| x.1.cmp(&y.1).then_with(|| y.0.cmp(&x.0)))
        else {
            break;
        };
        let (a, b) = (a.to_string(), b.to_string());
        let joined = format!("{a}{b}");
        for (w, _) in words.iter_mut() {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == a && w[i + 1] == b {
                    w[i] = joined.clone();
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push((a, b));
    }
    merges
}

fn word_counts(words: impl Iterator<Item = String>) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for w in words {
        *counts.entry(w).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort();
    v
}

const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_UNUSED: i32 = 5;
const TYPE_BYTE: i32 = 6;

/// A SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, 256 byte tokens,
/// the corpus characters, then merged pieces scored by merge order.
fn spm_vocab(size: usize) -> Vocab {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TYPE_BYTE);
        scores.push(0.0);
    }
    let words = word_counts(CORPUS.split(' ').map(|w| format!("\u{2581}{w}")));
    let mut chars: Vec<String> = words
        .iter()
        .flat_map(|(w, _)| w.chars().map(String::from))
        .collect();
    chars.sort();
    chars.dedup();
    for c in &chars {
        tokens.push(c.clone());
        types.push(TYPE_NORMAL);
        scores.push(-1e6);
    }
    let room = size.saturating_sub(tokens.len());
    let split = words
        .into_iter()
        .map(|(w, f)| (w.chars().map(String::from).collect(), f))
        .collect();
    for (rank, (a, b)) in learn_merges(split, room).into_iter().enumerate() {
        let piece = format!("{a}{b}");
        if !tokens.contains(&piece) {
            tokens.push(piece);
            types.push(TYPE_NORMAL);
            scores.push(-(rank as f32));
        }
    }
    pad_unused(&mut tokens, &mut types, &mut scores, size);
    Vocab {
        tokens,
        scores,
        types,
        merges: Vec::new(),
        bos: 1,
        eos: 2,
        eot: None,
    }
}

/// A GPT-2 byte-level vocabulary: ChatML control tokens, the 256 byte
/// characters, then merged pieces, with the merges themselves.
fn gpt2_vocab(size: usize) -> Vocab {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let mut types = vec![TYPE_CONTROL; 3];
    let mut scores = vec![0.0; 3];
    for &c in byte_level::byte_to_char() {
        tokens.push(c.to_string());
        types.push(TYPE_NORMAL);
        scores.push(0.0);
    }
    let words = word_counts(CORPUS.split(' ').enumerate().map(|(i, w)| {
        byte_level::encode_bytes(
            if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            }
            .as_bytes(),
        )
    }));
    let split = words
        .into_iter()
        .map(|(w, f)| (w.chars().map(String::from).collect(), f))
        .collect();
    let room = size.saturating_sub(tokens.len());
    let mut merges = Vec::new();
    for (a, b) in learn_merges(split, room) {
        let piece = format!("{a}{b}");
        if !tokens.contains(&piece) {
            tokens.push(piece);
            types.push(TYPE_NORMAL);
            scores.push(0.0);
        }
        merges.push(format!("{a} {b}"));
    }
    pad_unused(&mut tokens, &mut types, &mut scores, size);
    Vocab {
        tokens,
        scores,
        types,
        merges,
        bos: 0,
        eos: 0,
        eot: Some(2),
    }
}

fn pad_unused(tokens: &mut Vec<String>, types: &mut Vec<i32>, scores: &mut Vec<f32>, size: usize) {
    let mut i = 0;
    while tokens.len() < size {
        tokens.push(format!("<unused{i}>"));
        types.push(TYPE_UNUSED);
        scores.push(-1e9);
        i += 1;
    }
}
