//! `strata generate`: one-shot generation that streams text to stdout and
//! reports token counts and speeds to stderr.

use std::io::Write;

use clap::Args;

use super::model_args::ModelArgs;
use crate::engine::{generate, load, GenerateRequest};
use crate::model::sampling::SamplingParams;
use crate::resources::ResourceManager;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text (special tokens such as `<|im_start|>` are honoured).
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// 1 disables.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// 1 disables.
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed; the same seed repeats the same output (default: random,
    /// printed with the report).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Do not add the model's BOS token in front of the prompt.
    #[arg(long)]
    pub no_bos: bool,
    /// Use only the first N tokens of the prompt (for benchmarks that need
    /// an exact prompt length).
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let resources = ResourceManager::new(args.model.resources.resolve()?.settings);
    resources.apply_priority();
    let settings = resources.settings();
    let loaded = load(&args.model.load_options(resources.budget_policy())?)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut prompt = loaded.tokenizer.encode(&args.prompt, !args.no_bos, true)?;
    if let Some(n) = args.prompt_tokens {
        anyhow::ensure!(
            n <= prompt.len(),
            "`--prompt-tokens` is {n}, but the prompt has only {} tokens",
            prompt.len()
        );
        prompt.truncate(n);
    }
    let req = GenerateRequest {
        prompt,
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            seed,
            ..SamplingParams::default()
        },
        stop_ids: Vec::new(),
        stop_strings: args.stop.clone(),
        decode_pause: settings.decode_pause,
    };
    let mut stdout = std::io::stdout().lock();
    let result = generate(&loaded.model, &loaded.tokenizer, &req, |piece| {
        // A closed stdout (a pipe to `head`) must not abort the report.
        let _ = stdout.write_all(piece.as_bytes());
        let _ = stdout.flush();
    })?;
    let _ = writeln!(stdout);
    let _ = stdout.flush();
    let stages: Vec<String> = loaded
        .model
        .stage_layout()
        .iter()
        .map(|(label, layers)| format!("{label}={}-{}", layers.start, layers.end - 1))
        .collect();
    eprintln!(
        "prompt tokens: {}, generated tokens: {}, prefill: {:.1} tok/s, decode: {:.1} tok/s, finish: {:?}, seed: {seed}, stages: {}",
        result.prompt_tokens,
        result.tokens.len(),
        result.prefill_tok_per_s(),
        result.decode_tok_per_s(),
        result.finish,
        stages.join(" ")
    );
    Ok(())
}
