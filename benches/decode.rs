//! Prefill and decode speed on the issue-2 benchmark model (generated: dim
//! 768, 12 layers, vocab 32000, Q4_0, ~100 MB) for Strata on one device,
//! Strata on three virtual devices, and candle's `quantized_llama`.
//!
//! `cargo bench --bench decode`; throughput is reported in tokens/s.
//! Prefill is a 64-token prompt. Decode runs 128 steps from position 64
//! (`decode`) and from position 1024 (`decode_at_1024`, where the cost of
//! attention over the cache shows), re-prefilling outside the timed region.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::model::synth::{write_if_missing, SynthSpec, BENCH_MODEL};
use strata::model::{GgufFile, LayeredModel, StageSpec};

const PROMPT_LEN: usize = 64;
const LONG_PROMPT_LEN: usize = 1024;
const DECODE_STEPS: usize = 128;

fn bench_model() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(BENCH_MODEL);
    write_if_missing(&SynthSpec::bench(), &path).unwrap();
    path
}

fn prompt(len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| 300 + (i * 97) % 700).collect()
}

fn strata_model(path: &PathBuf, counts: &[usize], ctx: usize) -> LayeredModel {
    let stages = StageSpec::virtual_cpus(counts);
    LayeredModel::load(&mut GgufFile::open(path).unwrap(), &stages, ctx).unwrap()
}

fn candle_model(path: &PathBuf) -> ModelWeights {
    let mut f = std::fs::File::open(path).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap()
}

fn candle_step(m: &mut ModelWeights, tokens: &[u32], pos: usize) {
    let x = Tensor::new(tokens, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    m.forward(&x, pos).unwrap();
}

fn benches(c: &mut Criterion) {
    let path = bench_model();
    let prompt = prompt(PROMPT_LEN);

    let mut prefill = c.benchmark_group("prefill");
    prefill
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    prefill.throughput(Throughput::Elements(PROMPT_LEN as u64));
    for (name, counts) in [("strata_1dev", vec![12]), ("strata_3dev", vec![4, 4, 4])] {
        let model = strata_model(&path, &counts, PROMPT_LEN);
        let mut seq = model.new_sequence(PROMPT_LEN).unwrap();
        prefill.bench_function(name, |b| {
            b.iter(|| {
                seq.reset();
                model.forward(&mut seq, &prompt).unwrap()
            })
        });
    }
    let mut reference = candle_model(&path);
    prefill.bench_function("candle_quantized_llama", |b| {
        b.iter(|| {
            reference.clear_kv_cache();
            candle_step(&mut reference, &prompt, 0)
        })
    });
    prefill.finish();

    decode_group(c, &path, "decode", PROMPT_LEN);
    decode_group(c, &path, "decode_at_1024", LONG_PROMPT_LEN);
}

/// Decode from position `start` for `DECODE_STEPS` steps, then re-prefill
/// outside the timed region.
fn decode_group(c: &mut Criterion, path: &PathBuf, name: &str, start: usize) {
    let prompt = prompt(start);
    let end = start + DECODE_STEPS;
    let mut decode = c.benchmark_group(name);
    decode
        .sample_size(20)
        .measurement_time(Duration::from_secs(15));
    decode.throughput(Throughput::Elements(1));
    for (name, counts) in [("strata_1dev", vec![12]), ("strata_3dev", vec![4, 4, 4])] {
        let model = strata_model(path, &counts, end);
        let mut seq = model.new_sequence(end).unwrap();
        model.forward(&mut seq, &prompt).unwrap();
        decode.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for i in 0..iters {
                    if seq.len() >= end {
                        seq.reset();
                        model.forward(&mut seq, &prompt).unwrap();
                    }
                    let t = Instant::now();
                    model.forward(&mut seq, &[(400 + i % 300) as u32]).unwrap();
                    spent += t.elapsed();
                }
                spent
            })
        });
    }
    let mut reference = candle_model(path);
    candle_step(&mut reference, &prompt, 0);
    let mut pos = start;
    decode.bench_function("candle_quantized_llama", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                if pos >= end {
                    reference.clear_kv_cache();
                    candle_step(&mut reference, &prompt, 0);
                    pos = start;
                }
                let t = Instant::now();
                candle_step(&mut reference, &[(400 + i % 300) as u32], pos);
                spent += t.elapsed();
                pos += 1;
            }
            spent
        })
    });
    decode.finish();
}

criterion_group!(decode_benches, benches);
criterion_main!(decode_benches);
