//! `strata make-model`: writes a synthetic GGUF model (random weights, real
//! layout and tokenizer) for tests, benchmarks and demos.

use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use clap::{Args, ValueEnum};

use crate::model::synth::{write_synthetic, SynthSpec};
use crate::model::tokenizer::VocabKind;
use crate::model::Architecture;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Preset {
    /// dim 256, 4 layers, vocab 512: milliseconds per token.
    Tiny,
    /// dim 768, 12 layers, vocab 32000: the ~100 MB benchmark model.
    Bench,
    /// dim 2048, 28 layers, vocab 32000: ~1 GB in Q4_K, for GPU benchmarks.
    Large,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ArchArg {
    Llama,
    Qwen2,
    Qwen3,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VocabArg {
    /// SentencePiece (`tokenizer.ggml.model = llama`).
    Spm,
    /// GPT-2 byte-level BPE.
    Gpt2,
}

#[derive(Debug, Args)]
pub struct MakeModelArgs {
    /// Where to write the GGUF file.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: Preset,
    #[arg(long, value_enum, default_value = "llama")]
    pub arch: ArchArg,
    #[arg(long, value_enum, default_value = "spm")]
    pub vocab: VocabArg,
    /// Storage type of the weight matrices: f32, f16, bf16, q4_0, q4_1,
    /// q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k.
    #[arg(long, default_value = "q4_0", value_parser = parse_quant)]
    pub quant: GgmlDType,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Parses a GGML type name as llama.cpp writes it.
pub fn parse_quant(s: &str) -> Result<GgmlDType, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlDType::F32,
        "f16" => GgmlDType::F16,
        "bf16" => GgmlDType::BF16,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        "q8_0" => GgmlDType::Q8_0,
        "q2_k" => GgmlDType::Q2K,
        "q3_k" => GgmlDType::Q3K,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        other => return Err(format!("`--quant` `{other}` is not one of f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k")),
    })
}

/// The name llama.cpp gives a GGML type (`q4_k`), what [`parse_quant`] reads.
pub fn quant_name(dtype: GgmlDType) -> String {
    match dtype {
        GgmlDType::Q2K => "q2_k".into(),
        GgmlDType::Q3K => "q3_k".into(),
        GgmlDType::Q4K => "q4_k".into(),
        GgmlDType::Q5K => "q5_k".into(),
        GgmlDType::Q6K => "q6_k".into(),
        GgmlDType::Q8K => "q8_k".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

pub fn run(args: &MakeModelArgs) -> anyhow::Result<()> {
    let mut spec = match args.preset {
        Preset::Tiny => SynthSpec::tiny(args.quant, args.seed),
        Preset::Bench => SynthSpec::bench(),
        Preset::Large => SynthSpec::large(),
    };
    spec.weight_type = args.quant;
    spec.seed = args.seed;
    spec.architecture = match args.arch {
        ArchArg::Llama => Architecture::Llama,
        ArchArg::Qwen2 => Architecture::Qwen2,
        ArchArg::Qwen3 => Architecture::Qwen3,
    };
    spec.vocab = match args.vocab {
        VocabArg::Spm => VocabKind::SentencePiece,
        VocabArg::Gpt2 => VocabKind::BytePairGpt2,
    };
    write_synthetic(&spec, &args.out)?;
    let bytes = std::fs::metadata(&args.out)?.len();
    eprintln!(
        "wrote {} ({}, {} bytes)",
        args.out.display(),
        crate::devices::HumanBytes(bytes),
        bytes
    );
    Ok(())
}
