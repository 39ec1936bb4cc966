//! Using Strata as a library: write a small synthetic model, plan it over
//! three virtual CPU devices with different budgets, load it as planned and
//! stream a greedy generation.
//!
//! `cargo run --example split_generate`

use std::io::Write;

use candle_core::quantized::GgmlDType;
use strata::devices::HumanBytes;
use strata::engine::{generate, load, GenerateRequest, LoadOptions};
use strata::model::sampling::SamplingParams;
use strata::model::synth::{write_synthetic, SynthSpec};
use strata::placement::Strategy;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny-q4_k.gguf");
    write_synthetic(&SynthSpec::tiny(GgmlDType::Q4K, 42), &path)?;

    let loaded = load(&LoadOptions {
        model: path,
        devices: "cpu=3MiB,cpu=3MiB,cpu=3MiB".parse()?,
        strategy: Strategy::Balance,
        ctx_size: Some(128),
        budget_policy: Default::default(),
    })?;
    for d in &loaded.plan.devices {
        println!(
            "{:<6} layers {:?}: {} of {}",
            d.label,
            d.layers,
            HumanBytes(d.total_bytes),
            HumanBytes(d.budget)
        );
    }

    let prompt = loaded.tokenizer.encode("Once upon a time", true, false)?;
    let req = GenerateRequest {
        prompt,
        max_tokens: 32,
        sampling: SamplingParams::default(),
        stop_ids: vec![],
        stop_strings: vec![],
        decode_pause: std::time::Duration::ZERO,
    };
    let out = generate(&loaded.model, &loaded.tokenizer, &req, |piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
    })?;
    println!(
        "\n{} tokens, decode {:.1} tok/s (random weights: the text is noise)",
        out.tokens.len(),
        out.decode_tok_per_s()
    );
    Ok(())
}
