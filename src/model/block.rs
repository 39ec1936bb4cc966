//! One transformer block of the llama family, owned by one device.
//!
//! Pre-norm attention with grouped-query heads, then a SwiGLU feed-forward,
//! each added to the residual stream. Optional parts are switched by the
//! architecture: q/k/v biases (qwen2) and per-head q/k RMS norms (qwen3).
//! Attention groups the query heads that share a KV head into one matmul
//! against the cache view, so the cache is never copied or repeated.

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Result, Tensor};

use super::config::ModelConfig;
use super::error::LoadError;
use super::gguf::GgufFile;
use super::kv_cache::LayerKvCache;
use super::rope::RopeTables;

#[derive(Debug)]
struct Projection {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Projection {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[derive(Debug)]
pub struct Block {
    attn_norm: RmsNorm,
    q: Projection,
    k: Projection,
    v: Projection,
    o: QMatMul,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

impl Block {
    /// Reads block `layer` from `gguf` onto `device`.
    pub fn load(
        gguf: &mut GgufFile,
        cfg: &ModelConfig,
        layer: usize,
        device: &Device,
    ) -> std::result::Result<Self, LoadError> {
        let name = |t: &str| format!("blk.{layer}.{t}");
        let mut matmul =
            |t: &str, rows: usize, cols: usize| -> std::result::Result<QMatMul, LoadError> {
                let n = name(t);
                let q = gguf.tensor(&n, device)?;
                check_tensor_shape(&n, q.shape().dims(), &[rows, cols])?;
                Ok(QMatMul::from_qtensor(q)?)
            };
        let q_rows = cfg.n_head * cfg.head_dim;
        let kv_rows = cfg.n_kv_head * cfg.head_dim;
        let wq = matmul("attn_q.weight", q_rows, cfg.dim)?;
        let wk = matmul("attn_k.weight", kv_rows, cfg.dim)?;
        let wv = matmul("attn_v.weight", kv_rows, cfg.dim)?;
        let o = matmul("attn_output.weight", cfg.dim, q_rows)?;
        let gate = matmul("ffn_gate.weight", cfg.ffn_dim, cfg.dim)?;
        let up = matmul("ffn_up.weight", cfg.ffn_dim, cfg.dim)?;
        let down = matmul("ffn_down.weight", cfg.dim, cfg.ffn_dim)?;

        let mut vector = |t: &str, len: usize| -> std::result::Result<Tensor, LoadError> {
            let n = name(t);
            let q = gguf.tensor(&n, device)?;
            check_tensor_shape(&n, q.shape().dims(), &[len])?;
            Ok(q.dequantize(device)?)
        };
        let norm = |w: Tensor| -> Result<RmsNorm> { Ok(RmsNorm::new(w, cfg.rms_eps)) };
        let attn_norm = norm(vector("attn_norm.weight", cfg.dim)?)?;
        let ffn_norm = norm(vector("ffn_norm.weight", cfg.dim)?)?;
        let (bq, bk, bv) = if cfg.architecture.has_qkv_bias() {
            (
                Some(vector("attn_q.bias", q_rows)?),
                Some(vector("attn_k.bias", kv_rows)?),
                Some(vector("attn_v.bias", kv_rows)?),
            )
        } else {
            (None, None, None)
        };
        let (q_norm, k_norm) = if cfg.architecture.has_qk_norm() {
            (
                Some(norm(vector("attn_q_norm.weight", cfg.head_dim)?)?),
                Some(norm(vector("attn_k_norm.weight", cfg.head_dim)?)?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            attn_norm,
            q: Projection {
                weight: wq,
                bias: bq,
            },
            k: Projection {
                weight: wk,
                bias: bk,
            },
            v: Projection {
                weight: wv,
                bias: bv,
            },
            o,
            q_norm,
            k_norm,
            ffn_norm,
            gate,
            up,
            down,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim,
        })
    }

    /// Runs the block on `x` of shape `(1, seq, dim)` whose first row sits at
    /// position `pos`. `mask` is the additive causal mask `(seq, pos + seq)`,
    /// `None` for a single row.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: Option<&Tensor>,
        cache: &LayerKvCache,
        pos: usize,
    ) -> Result<Tensor> {
        let h = self.attn_norm.forward(x)?;
        let attn = self.attention(&h, rope, mask, cache, pos)?;
        let x = (x + attn)?;
        let h = self.ffn_norm.forward(&x)?;
        let gate = candle_nn::ops::silu(&self.gate.forward(&h)?)?;
        let ffn = self.down.forward(&(gate * self.up.forward(&h)?)?)?;
        x + ffn
    }

    fn attention(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: Option<&Tensor>,
        cache: &LayerKvCache,
        pos: usize,
    ) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let t = t.reshape((b, seq, n, self.head_dim))?;
            let t = match norm {
                Some(norm) => norm.forward(&t)?,
                None => t,
            };
            t.transpose(1, 2)
        };
        let q = heads(self.q.forward(x)?, self.n_head, &self.q_norm)?;
        let k = heads(self.k.forward(x)?, self.n_kv_head, &self.k_norm)?;
        let v = heads(self.v.forward(x)?, self.n_kv_head, &None)?;
        let q = rope.apply(&q, pos)?;
        let k = rope.apply(&k, pos)?;
        let (k_all, v_all) = cache.append(&k, &v, pos)?;
        let kv_len = pos + seq;

        // Query heads that share a KV head form one group: (b, kv, rep*seq, d).
        let rep = self.n_head / self.n_kv_head;
        let q = q.reshape((b, self.n_kv_head, rep * seq, self.head_dim))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k_all.t()?)? * scale)?;
        let scores = match mask {
            Some(mask) => scores
                .reshape((b, self.n_kv_head, rep, seq, kv_len))?
                .broadcast_add(mask)?
                .reshape((b, self.n_kv_head, rep * seq, kv_len))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(&v_all)?;
        let y = y
            .reshape((b, self.n_head, seq, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, seq, self.n_head * self.head_dim))?;
        self.o.forward(&y)
    }
}

/// RMS normalisation over the last dimension (candle's fused kernel).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self {
            weight,
            eps: eps as f32,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

pub(crate) fn check_tensor_shape(
    name: &str,
    got: &[usize],
    expected: &[usize],
) -> std::result::Result<(), LoadError> {
    if got == expected {
        Ok(())
    } else {
        Err(LoadError::TensorShape {
            name: name.to_string(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}
