//! The CPU kernels of `strata::kernels` against candle's `QMatMul` on the
//! same quantized matrix, at SmolLM2's FFN shape (1536 × 576): one token
//! (decode) and 128 tokens (prefill), plus the AVX2 and scalar dot
//! products of one row.
//!
//! `cargo bench --bench kernels`; throughput is in weight elements
//! multiplied per second (rows × cols × tokens).

use std::time::Duration;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use strata::kernels::blocks::{quantize_q8_1, BlockQ4_1, BlockQ8_1, QK};
use strata::kernels::{dot, CpuQMatMul};

const ROWS: usize = 1536;
const COLS: usize = 576;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn matmuls(c: &mut Criterion) {
    let w = Tensor::from_vec(random(ROWS * COLS, 1), (ROWS, COLS), &Device::Cpu).unwrap();
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
        let q = QTensor::quantize(&w, dtype).unwrap();
        let ours = CpuQMatMul::from_qtensor(&q).unwrap().expect("a kernel");
        let candle = QMatMul::from_qtensor(q).unwrap();
        for tokens in [1, 128] {
            let mut group = c.benchmark_group(format!("{dtype:?}_{tokens}tok"));
            group
                .sample_size(20)
                .measurement_time(Duration::from_secs(5));
            group.throughput(Throughput::Elements((ROWS * COLS * tokens) as u64));
            let x = random(tokens * COLS, 2);
            let xt = Tensor::from_vec(x.clone(), (tokens, COLS), &Device::Cpu).unwrap();
            let mut out = vec![0f32; tokens * ROWS];
            group.bench_function("strata", |b| {
                b.iter(|| ours.matmul(black_box(&x), &mut out).unwrap())
            });
            group.bench_function("candle", |b| {
                b.iter(|| candle.forward(black_box(&xt)).unwrap())
            });
            group.finish();
        }
    }
}

fn dots(c: &mut Criterion) {
    let w = Tensor::from_vec(random(COLS, 3), (1, COLS), &Device::Cpu).unwrap();
    let bytes = QTensor::quantize(&w, GgmlDType::Q4_1)
        .unwrap()
        .data()
        .unwrap()
        .to_vec();
    let row: Vec<BlockQ4_1> = bytes
        .chunks_exact(std::mem::size_of::<BlockQ4_1>())
        // SAFETY: the chunks are whole Q4_1 blocks, plain old data.
        .map(|b| unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<BlockQ4_1>()) })
        .collect();
    let mut acts = vec![BlockQ8_1::ZERO; COLS / QK];
    quantize_q8_1(&random(COLS, 4), &mut acts);
    let mut group = c.benchmark_group("q4_1_dot_row");
    group.throughput(Throughput::Elements(COLS as u64));
    group.bench_function("dispatched", |b| {
        b.iter(|| dot::q4_1_q8_1(black_box(&row), black_box(&acts)))
    });
    group.bench_function("scalar", |b| {
        b.iter(|| dot::q4_1_q8_1_scalar(black_box(&row), black_box(&acts)))
    });
    group.finish();
}

criterion_group!(benches, matmuls, dots);
criterion_main!(benches);
