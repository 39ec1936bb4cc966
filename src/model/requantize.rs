//! Requantizing a GGUF model to another weight type, the way llama.cpp's
//! `llama-quantize` picks types, so benchmarks can compare both engines on
//! Q4_K_M-, Q8_0- or Q4_1-style files of the same weights.
//!
//! Every tensor is dequantized to f32 and quantized again with candle's
//! quantizers. 1-D tensors (norms, biases) stay f32. A matrix whose row
//! length is not a multiple of the target's block (576 is not one of 256)
//! takes the type llama.cpp falls back to: Q4_K→Q5_0, Q5_K→Q5_1,
//! Q6_K→Q8_0, Q2_K/Q3_K→Q4_0. `q4_k_m` follows llama.cpp's "mostly Q4_K,
//! medium" rules: the output head (or the tied embedding) in Q6_K, and
//! `attn_v` and `ffn_down` in Q6_K on the first and last eighth of the
//! layers and on every third layer between.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use super::error::{candle_message, LoadError};
use super::gguf::{write_gguf, GgufFile};

/// What to requantize to: one type for every matrix, or llama.cpp's
/// Q4_K_M mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Uniform(GgmlDType),
    Q4KM,
}

impl Scheme {
    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_MOSTLY_*`), where it
    /// has one.
    fn file_type(self) -> Option<u32> {
        Some(match self {
            Self::Q4KM => 15,
            Self::Uniform(t) => match t {
                GgmlDType::F32 => 0,
                GgmlDType::F16 => 1,
                GgmlDType::Q4_0 => 2,
                GgmlDType::Q4_1 => 3,
                GgmlDType::Q8_0 => 7,
                GgmlDType::Q5_0 => 8,
                GgmlDType::Q5_1 => 9,
                GgmlDType::Q2K => 10,
                GgmlDType::Q4K => 14,
                GgmlDType::Q5K => 16,
                GgmlDType::Q6K => 18,
                GgmlDType::BF16 => 32,
                _ => return None,
            },
        })
    }
}

/// llama.cpp's `use_more_bits`: layers whose `attn_v`/`ffn_down` get more
/// bits in the `_M` mixes.
fn uses_more_bits(layer: usize, n_layer: usize) -> bool {
    layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2
}

/// The type llama.cpp stores a matrix in when rows of `cols` values do not
/// divide into `wanted`'s blocks.
fn fallback(wanted: GgmlDType, cols: usize) -> GgmlDType {
    if cols.is_multiple_of(wanted.block_size()) {
        return wanted;
    }
    let fallback = match wanted {
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        _ => GgmlDType::F16,
    };
    if cols.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        GgmlDType::F16
    }
}

/// The type tensor `name` of shape `dims` (GGUF order reversed: rows
/// first, row length last) gets under `scheme`, in a model of `n_layer`
/// layers with or without a separate output head.
pub fn target_type(
    scheme: Scheme,
    name: &str,
    dims: &[usize],
    n_layer: usize,
    has_output: bool,
) -> GgmlDType {
    if dims.len() < 2 {
        return GgmlDType::F32;
    }
    let cols = *dims.last().expect("two dimensions");
    let wanted = match scheme {
        Scheme::Uniform(t) => t,
        Scheme::Q4KM => {
            let is_head = name == "output.weight" || (!has_output && name == "token_embd.weight");
            let layer = name
                .strip_prefix("blk.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|l| l.parse::<usize>().ok());
            let more_bits = (name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight"))
                && layer.is_some_and(|l| uses_more_bits(l, n_layer));
            if is_head || more_bits {
                GgmlDType::Q6K
            } else {
                GgmlDType::Q4K
            }
        }
    };
    fallback(wanted, cols)
}

/// How many tensors ended up in each type.
#[derive(Debug, Default)]
pub struct Summary {
    pub types: Vec<(GgmlDType, usize)>,
}

impl Summary {
    fn add(&mut self, t: GgmlDType) {
        match self.types.iter_mut().find(|(d, _)| *d == t) {
            Some((_, n)) => *n += 1,
            None => self.types.push((t, 1)),
        }
    }
}

/// Writes `input` requantized under `scheme` to `output`; the metadata
/// (tokenizer, hyperparameters) is copied, `general.file_type` updated.
pub fn requantize(input: &Path, output: &Path, scheme: Scheme) -> Result<Summary, LoadError> {
    let mut gguf = GgufFile::open(input)?;
    let n_layer = gguf
        .str("general.architecture")
        .map(|a| format!("{a}.block_count"))
        .and_then(|key| gguf.usize(&key))?;
    let has_output = gguf.has_tensor("output.weight");
    let mut names: Vec<String> = gguf.content().tensor_infos.keys().cloned().collect();
    names.sort();
    let mut summary = Summary::default();
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        let q = gguf.tensor(name, &Device::Cpu)?;
        let dims = q.shape().dims().to_vec();
        let target = target_type(scheme, name, &dims, n_layer, has_output);
        let requantized = if q.dtype() == target {
            q
        } else {
            let f = q.dequantize(&Device::Cpu)?;
            QTensor::quantize(&f, target)?
        };
        summary.add(target);
        tensors.push((name.clone(), requantized));
    }
    let mut metadata: Vec<(String, Value)> = gguf
        .content()
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(ft) = scheme.file_type() {
        metadata.retain(|(k, _)| k != "general.file_type");
        metadata.push(("general.file_type".into(), Value::U32(ft)));
    }
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    write_gguf(output, &metadata, &tensors).map_err(|e| {
        LoadError::Invalid(format!(
            "writing {}: {}",
            output.display(),
            candle_message(e)
        ))
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_follows_llama_cpp_on_a_576_wide_model() {
        let t = |name: &str, dims: &[usize]| target_type(Scheme::Q4KM, name, dims, 30, false);
        // Tied head: Q6_K wanted, 576 columns fall back to Q8_0.
        assert_eq!(t("token_embd.weight", &[49152, 576]), GgmlDType::Q8_0);
        assert_eq!(t("blk.5.attn_q.weight", &[576, 576]), GgmlDType::Q5_0);
        // 1536 columns take Q4_K as asked, Q6_K on the more-bits layers.
        assert_eq!(t("blk.7.ffn_down.weight", &[576, 1536]), GgmlDType::Q4K);
        assert_eq!(t("blk.0.ffn_down.weight", &[576, 1536]), GgmlDType::Q6K);
        assert_eq!(t("blk.29.ffn_down.weight", &[576, 1536]), GgmlDType::Q6K);
        // (5 - 30/8) % 3 == 2: layer 5 is a more-bits layer, 6 is not.
        assert_eq!(t("blk.5.attn_v.weight", &[192, 576]), GgmlDType::Q8_0);
        assert_eq!(t("blk.6.attn_v.weight", &[192, 576]), GgmlDType::Q5_0);
        assert_eq!(t("blk.7.attn_norm.weight", &[576]), GgmlDType::F32);
        let separate_head = target_type(Scheme::Q4KM, "token_embd.weight", &[100, 512], 4, true);
        assert_eq!(separate_head, GgmlDType::Q4K);
    }

    #[test]
    fn uniform_types_fall_back_only_where_blocks_do_not_fit() {
        let t = |q, dims: &[usize]| {
            target_type(Scheme::Uniform(q), "blk.0.ffn_up.weight", dims, 4, true)
        };
        assert_eq!(t(GgmlDType::Q8_0, &[1536, 576]), GgmlDType::Q8_0);
        assert_eq!(t(GgmlDType::Q4K, &[256, 512]), GgmlDType::Q4K);
        assert_eq!(t(GgmlDType::Q6K, &[256, 96]), GgmlDType::Q8_0);
        assert_eq!(t(GgmlDType::Q4_0, &[8, 40]), GgmlDType::F16);
    }
}
