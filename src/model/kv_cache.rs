//! The key/value cache of one layer, preallocated on that layer's device.
//!
//! K and V have shape `(1, n_kv_head, capacity, head_dim)` from the start;
//! each step writes its new rows in place (`slice_set`) and attention reads a
//! narrowed view of the filled prefix, so decoding allocates no cache memory
//! and never concatenates. Blocks that run on the host (the CPU) keep their
//! cache as plain vectors instead ([`HostKvCache`]).

use candle_core::{DType, Device, Result, Tensor};

pub use super::host_ops::HostKvCache;

/// The cache of one layer, in the form its block computes with.
#[derive(Debug)]
pub enum KvCache {
    Tensors(LayerKvCache),
    Host(HostKvCache),
}

impl KvCache {
    pub fn capacity(&self) -> usize {
        match self {
            Self::Tensors(c) => c.capacity(),
            Self::Host(c) => c.capacity(),
        }
    }
}

#[derive(Debug)]
pub struct LayerKvCache {
    k: Tensor,
    v: Tensor,
    capacity: usize,
}

impl LayerKvCache {
    pub fn new(
        n_kv_head: usize,
        head_dim: usize,
        capacity: usize,
        device: &Device,
    ) -> Result<Self> {
        let shape = (1, n_kv_head, capacity, head_dim);
        Ok(Self {
            k: Tensor::zeros(shape, DType::F32, device)?,
            v: Tensor::zeros(shape, DType::F32, device)?,
            capacity,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Writes `k` and `v` (shape `(1, n_kv_head, seq, head_dim)`) at positions
    /// `pos..pos+seq` and returns views of positions `0..pos+seq`.
    pub fn append(&self, k: &Tensor, v: &Tensor, pos: usize) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        if pos + seq > self.capacity {
            candle_core::bail!(
                "kv cache holds {} positions, cannot write {seq} more at position {pos}",
                self.capacity
            )
        }
        self.k.slice_set(&k.contiguous()?, 2, pos)?;
        self.v.slice_set(&v.contiguous()?, 2, pos)?;
        Ok((
            self.k.narrow(2, 0, pos + seq)?,
            self.v.narrow(2, 0, pos + seq)?,
        ))
    }
}
