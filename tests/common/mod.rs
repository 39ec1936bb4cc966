//! Helpers shared by the integration tests: synthetic models in temp dirs.

#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use strata::model::synth::{write_synthetic, SynthSpec};
use strata::model::{GgufFile, LayeredModel, StageSpec};

/// Writes `spec` to a fresh temp dir; the dir lives as long as the guard.
pub fn synth_file(spec: &SynthSpec) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.gguf");
    write_synthetic(spec, &path).expect("write synthetic model");
    (dir, path)
}

pub fn tiny(dtype: GgmlDType) -> (tempfile::TempDir, PathBuf) {
    synth_file(&SynthSpec::tiny(dtype, 42))
}

/// Loads `path` with its layers split into stages of `counts` layers each,
/// every stage a virtual CPU device.
pub fn load_split(path: &PathBuf, counts: &[usize], ctx: usize) -> LayeredModel {
    let mut start = 0;
    let stages: Vec<StageSpec> = counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            start += n;
            StageSpec {
                device: Device::Cpu,
                label: format!("cpu:{i}"),
                layers: start - n..start,
            }
        })
        .collect();
    let mut gguf = GgufFile::open(path).expect("open gguf");
    LayeredModel::load(&mut gguf, &stages, ctx).expect("load model")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap()
}
