//! Byte accounting of a GGUF model for the placement planner: what each
//! layer, the embedding and the head will occupy once loaded.
//!
//! Quantized matrices stay in their stored form; F16, BF16 and F32 tensors
//! and all vectors are held as f32 by the forward pass, so they count four
//! bytes per element. KV caches are f32 for the requested context.

use candle_core::quantized::gguf_file::TensorInfo;
use candle_core::quantized::GgmlDType;

use super::config::ModelConfig;
use super::error::LoadError;
use super::gguf::{stored_bytes, GgufFile};
use super::layered::PREFILL_CHUNK;
use crate::placement::Footprint;

/// Bytes `info` occupies once loaded.
pub fn resident_bytes(info: &TensorInfo) -> u64 {
    let dequantized = matches!(
        info.ggml_dtype,
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
    ) || info.shape.rank() == 1;
    if dequantized {
        info.shape.elem_count() as u64 * 4
    } else {
        stored_bytes(info)
    }
}

/// The planner's view of the model in `gguf` at context length `ctx`.
pub fn footprint(gguf: &GgufFile, cfg: &ModelConfig, ctx: usize) -> Result<Footprint, LoadError> {
    let bytes =
        |name: &str| -> Result<u64, LoadError> { Ok(resident_bytes(gguf.tensor_info(name)?)) };
    let layer_weight_bytes = (0..cfg.n_layer)
        .map(|l| {
            cfg.block_tensor_names(l)
                .iter()
                .map(|n| bytes(n))
                .sum::<Result<u64, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let embedding_bytes = bytes("token_embd.weight")?;
    let output = if cfg.tied_embeddings {
        0
    } else {
        bytes("output.weight")?
    };
    let logits = cfg.vocab_size as u64 * 4;
    let head_bytes = bytes("output_norm.weight")? + output + logits;
    Ok(Footprint {
        layer_weight_bytes,
        layer_kv_bytes: vec![cfg.kv_bytes_per_layer(ctx); cfg.n_layer],
        embedding_bytes,
        head_bytes,
        tied_embeddings: cfg.tied_embeddings,
        workspace_bytes: workspace_bytes(cfg, ctx),
    })
}

/// Peak activations of one block on a prefill chunk: the hidden state and
/// its norm, q/k/v, the feed-forward intermediates, and attention scores
/// with their softmax over the whole context.
pub fn workspace_bytes(cfg: &ModelConfig, ctx: usize) -> u64 {
    let chunk = PREFILL_CHUNK.min(ctx) as u64;
    let per_token = 3 * cfg.dim as u64
        + ((cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim) as u64
        + 3 * cfg.ffn_dim as u64;
    let scores = 2 * cfg.n_head as u64 * chunk * ctx as u64;
    4 * (chunk * per_token + scores)
}
