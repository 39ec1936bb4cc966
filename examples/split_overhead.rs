//! What crossing virtual devices costs in decode: the benchmark model on one
//! device and on three, measured in alternating rounds in one process so
//! that machine drift falls on both alike (criterion measures one after the
//! other).
//!
//! `cargo run --release --example split_overhead`

use std::path::Path;
use std::time::Instant;

use strata::model::synth::{write_if_missing, SynthSpec, BENCH_MODEL};
use strata::model::{GgufFile, LayeredModel, StageSpec};

const ROUNDS: usize = 6;
const STEPS: u32 = 128;

fn main() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(BENCH_MODEL);
    write_if_missing(&SynthSpec::bench(), &path)?;
    let load = |counts: &[usize]| -> anyhow::Result<LayeredModel> {
        let stages = StageSpec::virtual_cpus(counts);
        Ok(LayeredModel::load(
            &mut GgufFile::open(&path)?,
            &stages,
            256,
        )?)
    };
    let models = [("1 device", load(&[12])?), ("3 devices", load(&[4, 4, 4])?)];
    let prompt: Vec<u32> = (0..64u32).map(|i| 300 + (i * 97) % 700).collect();
    let mut sums = [0f64; 2];
    for round in 0..ROUNDS {
        for (i, (name, model)) in models.iter().enumerate() {
            let mut seq = model.new_sequence(256)?;
            model.forward(&mut seq, &prompt)?;
            let started = Instant::now();
            for step in 0..STEPS {
                model.forward(&mut seq, &[400 + step])?;
            }
            let tok_s = STEPS as f64 / started.elapsed().as_secs_f64();
            // Round 0 warms caches and the thread pool.
            if round > 0 {
                sums[i] += tok_s;
            }
            println!("round {round} {name}: {tok_s:.2} tok/s");
        }
    }
    let n = (ROUNDS - 1) as f64;
    println!(
        "decode mean: 1 device {:.2} tok/s, 3 devices {:.2} tok/s, ratio {:.3}",
        sums[0] / n,
        sums[1] / n,
        sums[1] / sums[0]
    );
    Ok(())
}
