//! One transformer block of the llama family, owned by one device.
//!
//! Pre-norm attention with grouped-query heads, then a SwiGLU feed-forward,
//! each added to the residual stream. Optional parts are switched by the
//! architecture: q/k/v biases (qwen2) and per-head q/k RMS norms (qwen3).
//! Attention groups the query heads that share a KV head into one matmul
//! against the cache view, so the cache is never copied or repeated.
//!
//! A block runs in one of two ways, to the same numbers up to float
//! rounding: as candle tensor ops ([`Block::forward`], any device), or on
//! host slices with Strata's CPU kernels and a few loops
//! ([`Block::forward_host`], the CPU), which for a decoded token is many
//! times fewer dispatches and allocations.

use candle_core::{Device, Module, Result, Tensor, D};

use super::config::ModelConfig;
use super::error::LoadError;
use super::gguf::GgufFile;
use super::host_ops::{self, AttentionShape, HostKvCache};
use super::kv_cache::LayerKvCache;
use super::linear::Linear;
use super::rope::RopeTables;

/// Matrices that read the same input (q/k/v; gate/up). Stacked row-wise
/// into one matrix when their types and widths agree, so one matmul (one
/// quantization of the input, one parallel region) computes them all; each
/// output element is the same dot product either way.
#[derive(Debug)]
enum SharedInput {
    Stacked { weight: Linear, rows: Vec<usize> },
    Separate(Vec<Linear>),
}

impl SharedInput {
    fn load(
        gguf: &mut GgufFile,
        parts: &[(String, usize, usize)],
        device: &Device,
    ) -> std::result::Result<Self, LoadError> {
        for (name, rows, cols) in parts {
            check_tensor_shape(name, gguf.tensor_info(name)?.shape.dims(), &[*rows, *cols])?;
        }
        let names: Vec<&str> = parts.iter().map(|(n, _, _)| n.as_str()).collect();
        Ok(match gguf.stacked_rows(&names, device)? {
            Some(t) => Self::Stacked {
                weight: Linear::from_qtensor(t)?,
                rows: parts.iter().map(|p| p.1).collect(),
            },
            None => Self::Separate(
                names
                    .iter()
                    .map(|n| Ok(Linear::from_qtensor(gguf.tensor(n, device)?)?))
                    .collect::<std::result::Result<_, LoadError>>()?,
            ),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Self::Stacked { weight, rows } => {
                let y = weight.forward(x)?;
                let mut at = 0;
                rows.iter()
                    .map(|&r| {
                        at += r;
                        y.narrow(D::Minus1, at - r, r)
                    })
                    .collect()
            }
            Self::Separate(ws) => ws.iter().map(|w| w.forward(x)).collect(),
        }
    }

    /// [`Self::forward`] on host rows of `cols` values: one vector per
    /// matrix, each `tokens × its rows`.
    fn forward_host(&self, x: &[f32], cols: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Stacked { weight, rows } => {
                let y = weight.forward_host(x, cols)?;
                let width: usize = rows.iter().sum();
                let mut parts: Vec<Vec<f32>> = rows
                    .iter()
                    .map(|r| Vec::with_capacity(y.len() / width * r))
                    .collect();
                for token in y.chunks_exact(width) {
                    let mut at = 0;
                    for (part, &r) in parts.iter_mut().zip(rows) {
                        part.extend_from_slice(&token[at..at + r]);
                        at += r;
                    }
                }
                Ok(parts)
            }
            Self::Separate(ws) => ws.iter().map(|w| w.forward_host(x, cols)).collect(),
        }
    }
}

#[derive(Debug)]
pub struct Block {
    attn_norm: RmsNorm,
    qkv: SharedInput,
    /// q, k, v biases (qwen2).
    qkv_bias: Option<[Tensor; 3]>,
    /// The biases as host vectors, for a block on the CPU.
    qkv_bias_host: Option<[Vec<f32>; 3]>,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    gate_up: SharedInput,
    down: Linear,
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
        let q_rows = cfg.n_head * cfg.head_dim;
        let kv_rows = cfg.n_kv_head * cfg.head_dim;
        let qkv = SharedInput::load(
            gguf,
            &[
                (name("attn_q.weight"), q_rows, cfg.dim),
                (name("attn_k.weight"), kv_rows, cfg.dim),
                (name("attn_v.weight"), kv_rows, cfg.dim),
            ],
            device,
        )?;
        let gate_up = SharedInput::load(
            gguf,
            &[
                (name("ffn_gate.weight"), cfg.ffn_dim, cfg.dim),
                (name("ffn_up.weight"), cfg.ffn_dim, cfg.dim),
            ],
            device,
        )?;
        let mut matmul =
            |t: &str, rows: usize, cols: usize| -> std::result::Result<Linear, LoadError> {
                let n = name(t);
                let q = gguf.tensor(&n, device)?;
                check_tensor_shape(&n, q.shape().dims(), &[rows, cols])?;
                Ok(Linear::from_qtensor(q)?)
            };
        let o = matmul("attn_output.weight", cfg.dim, q_rows)?;
        let down = matmul("ffn_down.weight", cfg.dim, cfg.ffn_dim)?;

        let mut vector = |t: &str, len: usize| -> std::result::Result<Tensor, LoadError> {
            let n = name(t);
            let q = gguf.tensor(&n, device)?;
            check_tensor_shape(&n, q.shape().dims(), &[len])?;
            Ok(q.dequantize(device)?)
        };
        let norm = |w: Tensor| RmsNorm::new(w, cfg.rms_eps);
        let attn_norm = norm(vector("attn_norm.weight", cfg.dim)?);
        let ffn_norm = norm(vector("ffn_norm.weight", cfg.dim)?);
        let qkv_bias = if cfg.architecture.has_qkv_bias() {
            Some([
                vector("attn_q.bias", q_rows)?,
                vector("attn_k.bias", kv_rows)?,
                vector("attn_v.bias", kv_rows)?,
            ])
        } else {
            None
        };
        let (q_norm, k_norm) = if cfg.architecture.has_qk_norm() {
            (
                Some(norm(vector("attn_q_norm.weight", cfg.head_dim)?)),
                Some(norm(vector("attn_k_norm.weight", cfg.head_dim)?)),
            )
        } else {
            (None, None)
        };
        let qkv_bias_host = match (&qkv_bias, device) {
            (Some([q, k, v]), Device::Cpu) => Some([q.to_vec1()?, k.to_vec1()?, v.to_vec1()?]),
            _ => None,
        };
        Ok(Self {
            attn_norm,
            qkv,
            qkv_bias,
            qkv_bias_host,
            o,
            q_norm,
            k_norm,
            ffn_norm,
            gate_up,
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
        let [gate, up]: [Tensor; 2] = self.gate_up.forward(&h)?.try_into().expect("gate and up");
        let ffn = self.down.forward(&(candle_nn::ops::silu(&gate)? * up)?)?;
        x + ffn
    }

    /// [`Self::forward`] for a block on the CPU, on host memory: `x` holds
    /// `tokens × dim` values whose first token sits at `pos`, and is
    /// updated in place; `cache` already holds positions `0..pos`.
    pub fn forward_host(
        &self,
        x: &mut [f32],
        rope: &host_ops::HostRope,
        cache: &mut HostKvCache,
        pos: usize,
    ) -> Result<()> {
        let dim = self.attn_norm.width();
        let (d, n_head, n_kv) = (self.head_dim, self.n_head, self.n_kv_head);
        let mut h = vec![0f32; x.len()];
        self.attn_norm.forward_host(x, &mut h)?;
        let [mut q, mut k, mut v]: [Vec<f32>; 3] = self
            .qkv
            .forward_host(&h, dim)?
            .try_into()
            .expect("q, k and v");
        if let Some([bq, bk, bv]) = &self.qkv_bias_host {
            for (t, b) in [(&mut q, bq), (&mut k, bk), (&mut v, bv)] {
                for row in t.chunks_exact_mut(b.len()) {
                    host_ops::add_assign(row, b);
                }
            }
        }
        if let Some(norm) = &self.q_norm {
            norm.forward_host_in_place(&mut q)?;
        }
        if let Some(norm) = &self.k_norm {
            norm.forward_host_in_place(&mut k)?;
        }
        rope.apply(&mut q, n_head, d, pos);
        rope.apply(&mut k, n_kv, d, pos);
        cache.write(&k, &v, pos)?;
        let shape = AttentionShape {
            n_head,
            n_kv_head: n_kv,
            head_dim: d,
        };
        let y = host_ops::attention(&q, cache, pos, shape);
        host_ops::add_assign(x, &self.o.forward_host(&y, n_head * d)?);

        self.ffn_norm.forward_host(x, &mut h)?;
        let [mut gate, up]: [Vec<f32>; 2] = self
            .gate_up
            .forward_host(&h, dim)?
            .try_into()
            .expect("gate and up");
        host_ops::silu_mul(&mut gate, &up);
        let ffn_dim = gate.len() / (x.len() / dim);
        host_ops::add_assign(x, &self.down.forward_host(&gate, ffn_dim)?);
        Ok(())
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
        let [mut q, mut k, mut v]: [Tensor; 3] =
            self.qkv.forward(x)?.try_into().expect("q, k and v");
        if let Some([bq, bk, bv]) = &self.qkv_bias {
            q = q.broadcast_add(bq)?;
            k = k.broadcast_add(bk)?;
            v = v.broadcast_add(bv)?;
        }
        let q = heads(q, self.n_head, &self.q_norm)?;
        let k = heads(k, self.n_kv_head, &self.k_norm)?;
        let v = heads(v, self.n_kv_head, &None)?;
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

/// RMS normalisation over the last dimension (candle's fused kernel, or
/// its host twin for a weight on the CPU).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    weight_host: Option<Vec<f32>>,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        let weight_host = match weight.device() {
            Device::Cpu => weight.to_vec1().ok(),
            _ => None,
        };
        Self {
            weight,
            weight_host,
            eps: eps as f32,
        }
    }

    /// The normalised width.
    pub fn width(&self) -> usize {
        self.weight.elem_count()
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }

    fn host_weight(&self) -> Result<&[f32]> {
        match &self.weight_host {
            Some(w) => Ok(w),
            None => candle_core::bail!("RMS norm weight is not on the CPU"),
        }
    }

    /// Each row of `x` normalised into `out`, on the host.
    pub fn forward_host(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        host_ops::rms_norm(x, self.host_weight()?, self.eps, out);
        Ok(())
    }

    /// Each row of `x` normalised in place, on the host.
    pub fn forward_host_in_place(&self, x: &mut [f32]) -> Result<()> {
        host_ops::rms_norm_in_place(x, self.host_weight()?, self.eps);
        Ok(())
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
