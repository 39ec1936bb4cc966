//! Every supported architecture and weight type against candle's own
//! quantized models on the same synthetic GGUF file: `quantized_llama` for
//! llama in every quantization, `quantized_qwen2` and `quantized_qwen3`.

mod common;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};
use common::*;
use strata::model::synth::SynthSpec;
use strata::model::Architecture;

const PROMPT: [u32; 6] = [1, 310, 320, 330, 340, 350];

/// Something with candle's `forward(tokens, pos)` contract.
trait Reference {
    fn step(&mut self, tokens: &[u32], pos: usize) -> Vec<f32>;
}

macro_rules! reference {
    ($t:ty) => {
        impl Reference for $t {
            fn step(&mut self, tokens: &[u32], pos: usize) -> Vec<f32> {
                let x = Tensor::new(tokens, &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let y = self.forward(&x, pos).unwrap();
                y.flatten_all().unwrap().to_vec1().unwrap()
            }
        }
    };
}
reference!(quantized_llama::ModelWeights);
reference!(quantized_qwen2::ModelWeights);
reference!(quantized_qwen3::ModelWeights);

/// Prefill plus 6 greedy steps on both sides, split over 2 virtual devices.
fn assert_agrees(
    path: &std::path::Path,
    reference: &mut dyn Reference,
    quantized: bool,
    what: &str,
) {
    let model = load_split(&path.to_path_buf(), &[2, 2], 64);
    let mut seq = model.new_sequence(64).unwrap();
    let mut input = PROMPT.to_vec();
    let mut pos = 0;
    for step in 0..7 {
        let ours: Vec<f32> = model.forward(&mut seq, &input).unwrap().to_vec1().unwrap();
        let theirs = reference.step(&input, pos);
        assert_logits_agree(&ours, &theirs, quantized, &format!("{what} step {step}"));
        pos += input.len();
        input = vec![argmax(&theirs)];
    }
}

fn open(path: &std::path::Path) -> (Content, std::fs::File) {
    let mut f = std::fs::File::open(path).unwrap();
    (Content::read(&mut f).unwrap(), f)
}

#[test]
fn llama_agrees_with_candle_in_every_weight_type() {
    use GgmlDType::*;
    for dtype in [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K,
    ] {
        let (_dir, path) = synth_file(&SynthSpec::tiny(dtype, 5));
        let (ct, mut f) = open(&path);
        let mut reference =
            quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
        assert_agrees(
            &path,
            &mut reference,
            is_quantized(dtype),
            &format!("llama {dtype:?}"),
        );
    }
}

#[test]
fn tied_embeddings_agree_with_candle() {
    // Quantized (shared QTensor) and F16 (shared dequantized tensor) heads.
    for dtype in [GgmlDType::Q8_0, GgmlDType::F16] {
        let spec = SynthSpec {
            separate_output: false,
            ..SynthSpec::tiny(dtype, 6)
        };
        let (_dir, path) = synth_file(&spec);
        let (ct, mut f) = open(&path);
        assert!(!ct.tensor_infos.contains_key("output.weight"));
        let mut reference =
            quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
        assert_agrees(
            &path,
            &mut reference,
            is_quantized(dtype),
            &format!("llama tied {dtype:?}"),
        );
    }
}

#[test]
fn qwen2_agrees_with_candle() {
    let spec = SynthSpec {
        architecture: Architecture::Qwen2,
        ..SynthSpec::tiny(GgmlDType::Q8_0, 8)
    };
    let (_dir, path) = synth_file(&spec);
    let (ct, mut f) = open(&path);
    let mut reference = quantized_qwen2::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
    assert_agrees(&path, &mut reference, true, "qwen2");
}

#[test]
fn qwen3_agrees_with_candle() {
    let spec = SynthSpec {
        architecture: Architecture::Qwen3,
        ..SynthSpec::tiny(GgmlDType::Q4K, 9)
    };
    let (dir, path) = synth_file(&spec);
    // candle's qwen3 computes rope in F16 unless the file says F32.
    let f32_path = dir.path().join("qwen3-f32.gguf");
    rewrite_gguf(
        &path,
        &f32_path,
        |md| md.push(("general.dtype".into(), Value::U32(0))),
        |_| true,
    );
    let (ct, mut f) = open(&f32_path);
    let mut reference = quantized_qwen3::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
    assert_agrees(&f32_path, &mut reference, true, "qwen3");
}
