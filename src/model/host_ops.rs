//! The small operations of a block on plain f32 slices, for blocks on the
//! CPU: RMS norm, rotary embedding, SiLU×up and attention over a host KV
//! cache. On a CPU, candle runs each of these as a tensor op that
//! allocates and dispatches on its own, which for one decoded token costs
//! more than the arithmetic; here a block's step is a few loops.
//!
//! The arithmetic follows candle's kernels (`rms_norm`, `rope`, `rope_i`,
//! `softmax_last_dim`, `silu`) step by step, so both paths agree to float
//! rounding. Attention splits its (token, head) rows over candle's
//! persistent thread pool, the one the matrix products use.

use candle_core::{bail, Result};

/// Keys and values of one layer in host memory, laid out
/// `(n_kv_head, capacity, head_dim)` like the tensor cache.
#[derive(Debug)]
pub struct HostKvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    n_kv_head: usize,
    head_dim: usize,
    capacity: usize,
}

impl HostKvCache {
    pub fn new(n_kv_head: usize, head_dim: usize, capacity: usize) -> Self {
        let len = n_kv_head * capacity * head_dim;
        Self {
            k: vec![0.0; len],
            v: vec![0.0; len],
            n_kv_head,
            head_dim,
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Writes `k` and `v` (`seq` tokens × `n_kv_head` × `head_dim`) at
    /// positions `pos..pos+seq`.
    pub fn write(&mut self, k: &[f32], v: &[f32], pos: usize) -> Result<()> {
        let row = self.n_kv_head * self.head_dim;
        let seq = k.len() / row;
        if pos + seq > self.capacity {
            bail!(
                "kv cache holds {} positions, cannot write {seq} more at position {pos}",
                self.capacity
            )
        }
        let d = self.head_dim;
        for t in 0..seq {
            for g in 0..self.n_kv_head {
                let at = (g * self.capacity + pos + t) * d;
                let from = t * row + g * d;
                self.k[at..at + d].copy_from_slice(&k[from..from + d]);
                self.v[at..at + d].copy_from_slice(&v[from..from + d]);
            }
        }
        Ok(())
    }

    /// Key and value rows of KV head `g`, positions `0..len`.
    fn head(&self, g: usize, len: usize) -> (&[f32], &[f32]) {
        let at = g * self.capacity * self.head_dim;
        let end = at + len * self.head_dim;
        (&self.k[at..end], &self.v[at..end])
    }
}

/// `sqrt(mean(x²) + eps)`, what candle's RMS norm divides by.
fn rms(x: &[f32], eps: f32) -> f32 {
    let sum2: f32 = x.iter().map(|v| v * v).sum();
    (sum2 / x.len() as f32 + eps).sqrt()
}

/// RMS norm of each row of `x` (rows as long as `weight`) into `out`, as
/// candle computes it: `x / sqrt(mean(x²) + eps) * weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    for (x, out) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let m = rms(x, eps);
        for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
            *o = v / m * w;
        }
    }
}

/// [`rms_norm`] of each row of `x` in place.
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    for x in x.chunks_exact_mut(weight.len()) {
        let m = rms(x, eps);
        for (v, &w) in x.iter_mut().zip(weight) {
            *v = *v / m * w;
        }
    }
}

/// Rotary tables on the host: `cos`/`sin` rows of `rope_dim / 2` per
/// position.
#[derive(Debug, Clone)]
pub struct HostRope {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub rope_dim: usize,
    pub neox: bool,
}

impl HostRope {
    /// Rotates `x` (tokens × `heads` × `head_dim`, first token at `pos`) in
    /// place: the first `rope_dim` values of each head, in halves (NeoX) or
    /// in adjacent pairs.
    pub fn apply(&self, x: &mut [f32], heads: usize, head_dim: usize, pos: usize) {
        let half = self.rope_dim / 2;
        for (t, token) in x.chunks_exact_mut(heads * head_dim).enumerate() {
            let row = (pos + t) * half;
            let (cos, sin) = (&self.cos[row..row + half], &self.sin[row..row + half]);
            for head in token.chunks_exact_mut(head_dim) {
                for i in 0..half {
                    let (a, b) = if self.neox {
                        (i, i + half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }
}

/// `gate = silu(gate) * up`, elementwise.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `x += y`, elementwise.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// Causal attention of `q` (`seq` tokens × `n_head` × `head_dim`, first
/// token at `pos`) over the cache's positions `0..=pos+t` for token `t`;
/// the cache must already hold this call's keys and values. Returns the
/// heads' outputs in `q`'s layout.
pub fn attention(q: &[f32], cache: &HostKvCache, pos: usize, shape: AttentionShape) -> Vec<f32> {
    let AttentionShape {
        n_head,
        n_kv_head,
        head_dim: d,
    } = shape;
    let seq = q.len() / (n_head * d);
    let rep = n_head / n_kv_head;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    let out_ptr = out.as_mut_ptr() as usize;
    let rows_of = |rows: std::ops::Range<usize>| {
        let mut scores = Vec::with_capacity(pos + seq);
        for item in rows {
            let (t, h) = (item / n_head, item % n_head);
            let len = pos + t + 1;
            let (keys, values) = cache.head(h / rep, len);
            let qh = &q[item * d..(item + 1) * d];
            scores.clear();
            scores.extend(keys.chunks_exact(d).map(|k| dot(qh, k) * scale));
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            // SAFETY: each (token, head) row of `out` belongs to exactly
            // one work item.
            let o =
                unsafe { std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(item * d), d) };
            for (p, v) in scores.iter().zip(values.chunks_exact(d)) {
                axpy(p / sum, v, o);
            }
        }
    };
    // A decoded token's few heads over a short cache are cheaper than
    // waking the pool.
    let work = seq * n_head * (pos + seq) * d;
    if work < SERIAL_ATTENTION_WORK {
        rows_of(0..seq * n_head);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(seq * n_head, rows_of);
    }
    out
}

/// Multiply-adds below which attention runs on the calling thread.
const SERIAL_ATTENTION_WORK: usize = 1 << 16;

/// `a · b`, in eight lanes the compiler vectorizes.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x`.
#[inline]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}
