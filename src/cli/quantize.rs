//! `strata quantize`: requantizes a GGUF model (llama.cpp's type choices),
//! for benchmarks that compare engines on Q4_K_M, Q8_0 and other files of
//! the same weights.

use std::path::PathBuf;

use clap::Args;

use super::make_model::{parse_quant, quant_name};
use crate::model::requantize::{requantize, Scheme};

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The GGUF model to read.
    pub input: PathBuf,
    /// Where to write the requantized model.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// `q4_k_m` (llama.cpp's mix) or one type for every matrix: f32, f16,
    /// bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k.
    #[arg(long = "type", short = 't', value_parser = parse_scheme)]
    pub scheme: Scheme,
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    if s.eq_ignore_ascii_case("q4_k_m") {
        Ok(Scheme::Q4KM)
    } else {
        parse_quant(s)
            .map(Scheme::Uniform)
            .map_err(|e| format!("{e}, or q4_k_m").replace("`--quant`", "`--type`"))
    }
}

pub fn run(args: &QuantizeArgs) -> anyhow::Result<()> {
    let part = args.out.with_extension("gguf.part");
    let summary = requantize(&args.input, &part, args.scheme)?;
    std::fs::rename(&part, &args.out)?;
    let types: Vec<String> = summary
        .types
        .iter()
        .map(|(t, n)| format!("{n} {}", quant_name(*t)))
        .collect();
    let bytes = std::fs::metadata(&args.out)?.len();
    eprintln!(
        "wrote {} ({}; tensors: {})",
        args.out.display(),
        crate::devices::HumanBytes(bytes),
        types.join(", ")
    );
    Ok(())
}
