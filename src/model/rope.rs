//! Rotary position embedding tables, built once per device.
//!
//! `cos` and `sin` have shape `(max_positions, rope_dim / 2)`. They follow
//! llama.cpp: frequency `i` is `base^(-2i/d)`, divided by the optional
//! per-frequency factors of `rope_freqs.weight` (Llama 3.1), and positions
//! are divided by the linear scaling factor.

use candle_core::{Device, Result, Tensor};

use super::config::RopeConfig;
use super::host_ops::HostRope;

#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    neox: bool,
    rope_dim: usize,
    /// The same tables as vectors, for blocks that run on the host.
    host: Option<HostRope>,
}

impl RopeTables {
    pub fn new(
        cfg: &RopeConfig,
        freq_factors: Option<&[f32]>,
        max_positions: usize,
        device: &Device,
    ) -> Result<Self> {
        let half = cfg.dim / 2;
        if let Some(f) = freq_factors {
            if f.len() != half {
                candle_core::bail!(
                    "`rope_freqs.weight` has {} factors, expected {half}",
                    f.len()
                )
            }
        }
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let f = 1f32 / cfg.base.powf(2.0 * i as f32 / cfg.dim as f32);
                f / freq_factors.map_or(1.0, |ff| ff[i])
            })
            .collect();
        let mut angles = Vec::with_capacity(max_positions * half);
        for pos in 0..max_positions {
            let p = pos as f32 / cfg.linear_factor;
            angles.extend(inv_freq.iter().map(|f| p * f));
        }
        let angles = Tensor::from_vec(angles, (max_positions, half), &Device::Cpu)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let host = match device {
            Device::Cpu => Some(HostRope {
                cos: cos.flatten_all()?.to_vec1()?,
                sin: sin.flatten_all()?.to_vec1()?,
                rope_dim: cfg.dim,
                neox: cfg.neox,
            }),
            _ => None,
        };
        Ok(Self {
            cos: cos.to_device(device)?,
            sin: sin.to_device(device)?,
            neox: cfg.neox,
            rope_dim: cfg.dim,
            host,
        })
    }

    /// The host copy of the tables (for tables on the CPU).
    pub fn host(&self) -> Option<&HostRope> {
        self.host.as_ref()
    }

    /// Rotates `x` of shape `(batch, heads, seq, head_dim)` whose first row
    /// sits at position `pos`.
    pub fn apply(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let (_b, _h, seq, head_dim) = x.dims4()?;
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let rotate = |x: &Tensor| {
            let x = x.contiguous()?;
            if self.neox {
                candle_nn::rotary_emb::rope(&x, &cos, &sin)
            } else {
                candle_nn::rotary_emb::rope_i(&x, &cos, &sin)
            }
        };
        if self.rope_dim == head_dim {
            rotate(x)
        } else {
            // Partial rotary: only the first `rope_dim` dims of each head turn.
            let rotated = rotate(&x.narrow(3, 0, self.rope_dim)?)?;
            let rest = x.narrow(3, self.rope_dim, head_dim - self.rope_dim)?;
            Tensor::cat(&[&rotated, &rest], 3)
        }
    }
}
