//! The small operations of a block on plain f32 slices, for blocks on the
//! CPU: RMS norm, rotary embedding, SiLU×up and attention over a host KV
//! cache. On a CPU, candle runs each of these as a tensor op that
//! allocates and dispatches on its own, which for one decoded token costs
//! more than the arithmetic; here a block's step is a few loops.
//!
//! The arithmetic follows candle's kernels (`rms_norm`, `rope`, `rope_i`,
//! `softmax_last_dim`, `silu`) step by step, so both paths agree to float
//! rounding. Attention splits its (token, head) rows over candle's
//! persistent thread pool, the one the matrix products use; on AVX2 CPUs
//! its two loops (scores, weighted sum of values) run four keys and 64
//! outputs at a time, bit for bit the portable loops' results.

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
        n_head, head_dim, ..
    } = shape;
    let seq = q.len() / (n_head * head_dim);
    let mut out = vec![0f32; q.len()];
    let call = AttentionCall {
        q,
        cache,
        pos,
        shape,
        out: out.as_mut_ptr() as usize,
    };
    // A decoded token's few heads over a short cache are cheaper than
    // waking the pool.
    let work = seq * n_head * (pos + seq) * head_dim;
    if work < SERIAL_ATTENTION_WORK {
        call.rows(0..seq * n_head);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(seq * n_head, |rows| call.rows(rows));
    }
    out
}

/// Multiply-adds below which attention runs on the calling thread.
const SERIAL_ATTENTION_WORK: usize = 1 << 16;

/// One [`attention`] call, whose rows (token, head) the pool's threads
/// take in ranges.
struct AttentionCall<'a> {
    q: &'a [f32],
    cache: &'a HostKvCache,
    pos: usize,
    shape: AttentionShape,
    /// The output's address: each row is written by the one thread that
    /// takes it.
    out: usize,
}

impl AttentionCall<'_> {
    /// Rows `rows` of the output, in AVX2 where the CPU has it: the same
    /// sums in the same order, four keys and 64 outputs at a time.
    fn rows(&self, rows: std::ops::Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { self.rows_avx2(rows) };
        }
        self.rows_with(rows, scores_portable, weighted_sum)
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2(&self, rows: std::ops::Range<usize>) {
        // SAFETY: the caller's CPU has AVX2.
        self.rows_with(
            rows,
            |q, keys, scores| unsafe { scores_avx2(q, keys, scores) },
            |p, v, o| unsafe { weighted_sum_avx2(p, v, o) },
        )
    }

    /// Per row: `q · k` against every cached key (by `scores`), scaled,
    /// softmax, then the scores' weighted sum of the values (by
    /// `weighted_sum`).
    #[inline(always)]
    fn rows_with(
        &self,
        rows: std::ops::Range<usize>,
        scores_of: impl Fn(&[f32], &[f32], &mut [f32]),
        weighted_sum: impl Fn(&[f32], &[f32], &mut [f32]),
    ) {
        let AttentionShape {
            n_head,
            n_kv_head,
            head_dim: d,
        } = self.shape;
        let rep = n_head / n_kv_head;
        let scale = 1.0 / (d as f32).sqrt();
        let mut scores = Vec::with_capacity(self.cache.capacity());
        for item in rows {
            let (t, h) = (item / n_head, item % n_head);
            let len = self.pos + t + 1;
            let (keys, values) = self.cache.head(h / rep, len);
            let qh = &self.q[item * d..(item + 1) * d];
            scores.resize(len, 0.0);
            scores_of(qh, keys, &mut scores);
            for s in scores.iter_mut() {
                *s *= scale;
            }
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for s in scores.iter_mut() {
                *s /= sum;
            }
            // SAFETY: each (token, head) row of the output belongs to
            // exactly one work item, and lies within `q.len()` values.
            let o =
                unsafe { std::slice::from_raw_parts_mut((self.out as *mut f32).add(item * d), d) };
            weighted_sum(&scores, values, o);
        }
    }
}

/// `a · b`: eight lane sums, then the lanes in order. The fast loops
/// below keep exactly this order (SmolLM2's golden greedy text turns on
/// the last bits of these scores).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    finish_dot(acc, a, b)
}

/// A dot product from its eight lane sums over the whole chunks of eight:
/// the lanes added in order, then the tail's products.
#[inline(always)]
fn finish_dot(acc: [f32; 8], a: &[f32], b: &[f32]) -> f32 {
    let whole = a.len() / 8 * 8;
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `scores[j] = q · k_j` for the rows `k_j` of `keys`.
fn scores_portable(q: &[f32], keys: &[f32], scores: &mut [f32]) {
    for (s, k) in scores.iter_mut().zip(keys.chunks_exact(q.len())) {
        *s = dot(q, k);
    }
}

/// [`scores_portable`] in AVX2, four keys at a time: each key's eight lane
/// sums are [`dot`]'s, in its order, but four keys give four independent
/// chains of adds where one key alone waits on each add.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scores_avx2(q: &[f32], keys: &[f32], scores: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = q.len();
    let chunks = d / 8;
    let rows = scores.len().min(keys.len() / d.max(1));
    let row = |j: usize| &keys[j * d..(j + 1) * d];
    let mut j = 0;
    while j + 4 <= rows {
        let k = [row(j), row(j + 1), row(j + 2), row(j + 3)];
        let mut acc = [_mm256_setzero_ps(); 4];
        for c in 0..chunks {
            // SAFETY: 8 c + 8 <= d, the length of q and of every key row.
            let x = _mm256_loadu_ps(q.as_ptr().add(8 * c));
            for (acc, k) in acc.iter_mut().zip(k) {
                let y = _mm256_loadu_ps(k.as_ptr().add(8 * c));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
            }
        }
        for (i, (acc, k)) in acc.into_iter().zip(k).enumerate() {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
            scores[j + i] = finish_dot(lanes, q, k);
        }
        j += 4;
    }
    for (j, s) in scores.iter_mut().enumerate().take(rows).skip(j) {
        *s = dot(q, row(j));
    }
}

/// `o = Σ_j p[j] v_j` over the rows `v_j` of `values`.
fn weighted_sum(p: &[f32], values: &[f32], o: &mut [f32]) {
    o.fill(0.0);
    for (&p, v) in p.iter().zip(values.chunks_exact(o.len())) {
        for (o, &v) in o.iter_mut().zip(v) {
            *o += p * v;
        }
    }
}

/// [`weighted_sum`] with 64 outputs at a time held in eight AVX2
/// registers (eight independent chains of adds), each output added up in
/// the same order, multiply then add, as the portable loop.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn weighted_sum_avx2(p: &[f32], values: &[f32], o: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = o.len();
    let rows = p.len().min(values.len() / d.max(1));
    let mut at = 0;
    // SAFETY (the loads): row j's values `j d + at .. j d + at + 8 k + 8`
    // lie within `values` (j < rows, at + 8 k + 8 <= d); the stores within
    // `o` likewise.
    while at + 64 <= d {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (j, &pj) in p[..rows].iter().enumerate() {
            let (w, v) = (_mm256_set1_ps(pj), values.as_ptr().add(j * d + at));
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(w, _mm256_loadu_ps(v.add(8 * k))));
            }
        }
        for (k, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.as_mut_ptr().add(at + 8 * k), *acc);
        }
        at += 64;
    }
    while at + 8 <= d {
        let mut acc = _mm256_setzero_ps();
        for (j, &pj) in p[..rows].iter().enumerate() {
            let v = _mm256_loadu_ps(values.as_ptr().add(j * d + at));
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(pj), v));
        }
        _mm256_storeu_ps(o.as_mut_ptr().add(at), acc);
        at += 8;
    }
    for (i, o) in o.iter_mut().enumerate().skip(at) {
        *o = 0.0;
        for (j, &pj) in p[..rows].iter().enumerate() {
            *o += pj * values[j * d + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    /// Attention on the fastest loops this CPU has (AVX2 on x86-64) equals
    /// the portable loops bit for bit, for head sizes that are and are not
    /// multiples of their 64 and 8 lanes, and key counts that are and are
    /// not multiples of four.
    #[test]
    fn fastest_attention_equals_the_portable_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for head_dim in [1, 5, 8, 40, 64, 72, 100, 128, 200] {
            let shape = AttentionShape {
                n_head: 4,
                n_kv_head: 2,
                head_dim,
            };
            let (pos, seq) = (9, 3);
            let mut cache = HostKvCache::new(2, head_dim, 16);
            let kv = 2 * head_dim * (pos + seq);
            cache
                .write(&random(&mut rng, kv), &random(&mut rng, kv), 0)
                .unwrap();
            let q = random(&mut rng, seq * 4 * head_dim);
            let fastest = attention(&q, &cache, pos, shape);
            let mut portable = vec![f32::NAN; q.len()];
            AttentionCall {
                q: &q,
                cache: &cache,
                pos,
                shape,
                out: portable.as_mut_ptr() as usize,
            }
            .rows_with(0..seq * 4, scores_portable, weighted_sum);
            for (i, (f, p)) in fastest.iter().zip(&portable).enumerate() {
                assert_eq!(
                    f.to_bits(),
                    p.to_bits(),
                    "head_dim {head_dim}, value {i}: {f} against {p}"
                );
            }
        }
    }
}
