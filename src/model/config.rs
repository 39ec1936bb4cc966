//! Hyperparameters of a llama-family model, read from GGUF metadata.
//!
//! GGUF names every key after the architecture (`llama.block_count`,
//! `qwen2.block_count`, ...). The three supported families share one block
//! layout and differ only in the switches of [`Architecture`]: q/k/v biases
//! (qwen2), per-head q/k RMS norms (qwen3) and the rope pairing (NEOX for
//! the qwen families, interleaved for llama and Mistral-style files).

use super::error::LoadError;
use super::gguf::GgufFile;

/// A supported `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `llama`, also Mistral-style files (which GGUF writes as `llama`) and
    /// files that say `mistral`.
    Llama,
    /// `qwen2`: biases on q, k and v; NEOX rope.
    Qwen2,
    /// `qwen3`: RMS norms on q and k per head; NEOX rope; explicit head size.
    Qwen3,
}

impl Architecture {
    pub fn from_gguf_name(name: &str) -> Result<Self, LoadError> {
        match name {
            "llama" | "mistral" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "qwen3" => Ok(Self::Qwen3),
            other => Err(LoadError::UnknownArchitecture(other.to_string())),
        }
    }

    /// The metadata key prefix this family uses in GGUF.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }

    /// NEOX rope pairs element i with i + d/2; the llama convention pairs
    /// 2i with 2i+1 (llama.cpp's `llama_model_rope_type`).
    pub fn rope_is_neox(self) -> bool {
        matches!(self, Self::Qwen2 | Self::Qwen3)
    }

    pub fn has_qkv_bias(self) -> bool {
        matches!(self, Self::Qwen2)
    }

    pub fn has_qk_norm(self) -> bool {
        matches!(self, Self::Qwen3)
    }
}

/// How positions are scaled before the rope rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub base: f32,
    /// Number of dimensions of each head that are rotated.
    pub dim: usize,
    /// Positions are divided by this factor (`rope.scaling.type = linear`).
    pub linear_factor: f32,
    pub neox: bool,
}

/// Everything the forward pass and the placement planner need to know.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub name: String,
    pub n_layer: usize,
    pub dim: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f64,
    pub rope: RopeConfig,
    /// No `output.weight`: the head reuses `token_embd.weight`.
    pub tied_embeddings: bool,
}

impl ModelConfig {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, LoadError> {
        let arch_name = gguf.str("general.architecture")?;
        let architecture = Architecture::from_gguf_name(arch_name)?;
        let p = arch_name;
        let key = |k: &str| format!("{p}.{k}");

        let n_layer = gguf.usize(&key("block_count"))?;
        let dim = gguf.usize(&key("embedding_length"))?;
        let n_head = gguf.usize(&key("attention.head_count"))?;
        let n_kv_head = gguf
            .opt_usize(&key("attention.head_count_kv"))?
            .unwrap_or(n_head);
        let ffn_dim = gguf.usize(&key("feed_forward_length"))?;
        let context_length = gguf.usize(&key("context_length"))?;
        let rms_eps = gguf.f32(&key("attention.layer_norm_rms_epsilon"))? as f64;
        let non_zero = |k: &str, v: usize| {
            if v == 0 {
                Err(LoadError::InvalidMetadata {
                    key: key(k),
                    reason: "must be greater than 0".into(),
                })
            } else {
                Ok(())
            }
        };
        non_zero("block_count", n_layer)?;
        non_zero("embedding_length", dim)?;
        non_zero("attention.head_count", n_head)?;
        non_zero("attention.head_count_kv", n_kv_head)?;
        non_zero("context_length", context_length)?;
        if n_head % n_kv_head != 0 {
            return Err(LoadError::InvalidMetadata {
                key: key("attention.head_count_kv"),
                reason: format!("{n_kv_head} does not divide the head count {n_head}"),
            });
        }
        let head_dim = match gguf.opt_usize(&key("attention.key_length"))? {
            Some(d) => d,
            None if dim % n_head == 0 => dim / n_head,
            None => {
                return Err(LoadError::InvalidMetadata {
                    key: key("attention.head_count"),
                    reason: format!("{n_head} does not divide the embedding length {dim}"),
                })
            }
        };
        let rope_dim = gguf
            .opt_usize(&key("rope.dimension_count"))?
            .unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(LoadError::InvalidMetadata {
                key: key("rope.dimension_count"),
                reason: format!(
                    "must be even and at most the head size {head_dim}, got {rope_dim}"
                ),
            });
        }
        let base = gguf.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        let linear_factor = match gguf.opt_str(&key("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => gguf.opt_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0),
            Some(other) => {
                return Err(LoadError::InvalidMetadata {
                    key: key("rope.scaling.type"),
                    reason: format!("`{other}` is not supported (supported: none, linear)"),
                })
            }
        };
        if linear_factor <= 0.0 || !linear_factor.is_finite() {
            return Err(LoadError::InvalidMetadata {
                key: key("rope.scaling.factor"),
                reason: format!("must be a positive number, got {linear_factor}"),
            });
        }

        let embd = gguf.tensor_info("token_embd.weight")?;
        let vocab_size = embd.shape.dims()[0];
        let tied_embeddings = !gguf.has_tensor("output.weight");
        let name = gguf
            .opt_str("general.name")?
            .unwrap_or(arch_name)
            .to_string();

        Ok(Self {
            architecture,
            name,
            n_layer,
            dim,
            n_head,
            n_kv_head,
            head_dim,
            ffn_dim,
            vocab_size,
            context_length,
            rms_eps,
            rope: RopeConfig {
                base,
                dim: rope_dim,
                linear_factor,
                neox: architecture.rope_is_neox(),
            },
            tied_embeddings,
        })
    }

    /// Bytes of K and V of one layer for `ctx` positions (f32 cache).
    pub fn kv_bytes_per_layer(&self, ctx: usize) -> u64 {
        2 * (self.n_kv_head * self.head_dim * ctx * std::mem::size_of::<f32>()) as u64
    }

    /// Names of the tensors of block `layer`.
    pub fn block_tensor_names(&self, layer: usize) -> Vec<String> {
        let mut names: Vec<String> = [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ]
        .iter()
        .map(|t| format!("blk.{layer}.{t}.weight"))
        .collect();
        if self.architecture.has_qkv_bias() {
            for t in ["attn_q", "attn_k", "attn_v"] {
                names.push(format!("blk.{layer}.{t}.bias"));
            }
        }
        if self.architecture.has_qk_norm() {
            for t in ["attn_q_norm", "attn_k_norm"] {
                names.push(format!("blk.{layer}.{t}.weight"));
            }
        }
        names
    }
}
