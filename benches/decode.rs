//! Prefill and decode speed on the issue-2 benchmark model (generated: dim
//! 768, 12 layers, vocab 32000, Q4_0, ~100 MB) for Strata on one device,
//! Strata on three virtual devices, and candle's `quantized_llama`.
//!
//! `cargo bench --bench decode`; throughput is reported in tokens/s.
//! Decode runs from position 64 (after a 64-token prompt) to 192, then the
//! sequence is re-prefilled outside the timed region.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::model::synth::{write_synthetic, SynthSpec};
use strata::model::{GgufFile, LayeredModel, Sequence, StageSpec};

const PROMPT_LEN: usize = 64;
const DECODE_END: usize = 192;

fn bench_model() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-models");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bench-q4_0-768x12.gguf");
    if !path.exists() {
        let tmp = path.with_extension("part");
        write_synthetic(&SynthSpec::bench(), &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

fn prompt() -> Vec<u32> {
    (0..PROMPT_LEN as u32)
        .map(|i| 300 + (i * 97) % 700)
        .collect()
}

fn strata_model(path: &PathBuf, counts: &[usize]) -> LayeredModel {
    let stages = StageSpec::virtual_cpus(counts);
    LayeredModel::load(&mut GgufFile::open(path).unwrap(), &stages, DECODE_END + 8).unwrap()
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

fn strata_prefilled(model: &LayeredModel, seq: &mut Sequence) {
    seq.reset();
    model.forward(seq, &prompt()).unwrap();
}

fn benches(c: &mut Criterion) {
    let path = bench_model();
    let prompt = prompt();

    let mut prefill = c.benchmark_group("prefill");
    prefill
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    prefill.throughput(Throughput::Elements(PROMPT_LEN as u64));
    for (name, counts) in [("strata_1dev", vec![12]), ("strata_3dev", vec![4, 4, 4])] {
        let model = strata_model(&path, &counts);
        let mut seq = model.new_sequence(DECODE_END + 8).unwrap();
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

    let mut decode = c.benchmark_group("decode");
    decode
        .sample_size(20)
        .measurement_time(Duration::from_secs(15));
    decode.throughput(Throughput::Elements(1));
    for (name, counts) in [("strata_1dev", vec![12]), ("strata_3dev", vec![4, 4, 4])] {
        let model = strata_model(&path, &counts);
        let mut seq = model.new_sequence(DECODE_END + 8).unwrap();
        strata_prefilled(&model, &mut seq);
        decode.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for i in 0..iters {
                    if seq.len() >= DECODE_END {
                        strata_prefilled(&model, &mut seq);
                    }
                    let t = Instant::now();
                    model.forward(&mut seq, &[(400 + i % 300) as u32]).unwrap();
                    spent += t.elapsed();
                }
                spent
            })
        });
    }
    let mut pos = PROMPT_LEN;
    reference.clear_kv_cache();
    candle_step(&mut reference, &prompt, 0);
    decode.bench_function("candle_quantized_llama", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                if pos >= DECODE_END {
                    reference.clear_kv_cache();
                    candle_step(&mut reference, &prompt, 0);
                    pos = PROMPT_LEN;
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
