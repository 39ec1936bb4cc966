//! GGML's block layouts (the bytes of a GGUF tensor and of candle's
//! QTensor storage) and the quantization of f32 activations into the
//! 8-bit blocks the dot products pair them with.

use half::f16;

/// Values per block of the 32-wide types.
pub const QK: usize = 32;

/// Q4_1: 32 weights `d * q + m`, q in 0..16, two per byte (low nibbles are
/// weights 0..16, high nibbles 16..32).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

/// Q8_1: 32 activations `d * q`, with `s = d * sum(q)` (what Q4_1's offset
/// `m` multiplies).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK],
}

/// Q5_0: 32 weights `d * (q - 16)`, q in 0..32: the low four bits as in
/// Q4_1's nibbles, bit 4 of weight `j` in bit `j` of `qh`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// Q8_0: 32 values `d * q`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl BlockQ8_1 {
    pub const ZERO: Self = Self {
        d: f16::ZERO,
        s: f16::ZERO,
        qs: [0; QK],
    };
}

impl BlockQ8_0 {
    pub const ZERO: Self = Self {
        d: f16::ZERO,
        qs: [0; QK],
    };

    /// The 32 values as f32.
    pub fn values_f32(&self) -> [f32; QK] {
        let d = self.d.to_f32();
        std::array::from_fn(|j| d * f32::from(self.qs[j]))
    }
}

impl BlockQ4_1 {
    /// The 32 weights as f32.
    pub fn values_f32(&self) -> [f32; QK] {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        std::array::from_fn(|j| {
            let q = if j < QK / 2 {
                self.qs[j] & 0x0F
            } else {
                self.qs[j - QK / 2] >> 4
            };
            d * f32::from(q) + m
        })
    }
}

impl BlockQ5_0 {
    /// The 32 weights as f32.
    pub fn values_f32(&self) -> [f32; QK] {
        let d = self.d.to_f32();
        self.values().map(|q| d * f32::from(q))
    }

    /// The 32 quantized values, `q - 16`, in weight order.
    pub fn values(&self) -> [i8; QK] {
        let qh = u32::from_le_bytes(self.qh);
        std::array::from_fn(|j| {
            let nibble = if j < QK / 2 {
                self.qs[j] & 0x0F
            } else {
                self.qs[j - QK / 2] >> 4
            };
            let high = ((qh >> j) & 1) as u8;
            (nibble | (high << 4)) as i8 - 16
        })
    }
}

/// The scale of a block of activations and its inverse (0 for a zero
/// block), as GGML's 8-bit quantizers compute them.
fn q8_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// Quantizes `xs` (a multiple of 32 long) into Q8_0 blocks as GGML's
/// `quantize_row_q8_0` does.
pub fn quantize_q8_0(xs: &[f32], ys: &mut [BlockQ8_0]) {
    debug_assert_eq!(xs.len(), ys.len() * QK);
    for (x, y) in xs.chunks_exact(QK).zip(ys.iter_mut()) {
        let (d, qs) = quantize_block(x.try_into().expect("a block of 32"));
        y.d = f16::from_f32(d);
        y.qs = qs;
    }
}

/// Quantizes `xs` (a multiple of 32 long) into Q8_1 blocks as GGML's
/// `quantize_row_q8_1` does: `d = max|x| / 127`, `q = round(x / d)`.
pub fn quantize_q8_1(xs: &[f32], ys: &mut [BlockQ8_1]) {
    debug_assert_eq!(xs.len(), ys.len() * QK);
    for (x, y) in xs.chunks_exact(QK).zip(ys.iter_mut()) {
        let (d, qs) = quantize_block(x.try_into().expect("a block of 32"));
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        y.d = f16::from_f32(d);
        y.s = f16::from_f32(sum as f32) * y.d;
        y.qs = qs;
    }
}

/// One block's scale `d = max|x| / 127` and values `round(x / d)`
/// (rounding half away from zero), on the fastest path this CPU has.
fn quantize_block(x: &[f32; QK]) -> (f32, [i8; QK]) {
    fastest!(quantize_block_avx2(x), quantize_block_scalar(x))
}

/// [`quantize_block`], scalar: the reference.
pub fn quantize_block_scalar(x: &[f32; QK]) -> (f32, [i8; QK]) {
    let (d, id) = q8_scale(x);
    (d, x.map(|v| (v * id).round() as i8))
}

/// [`quantize_block`] in AVX2, equal to the scalar one bit for bit (for
/// finite input): the same max, division and products, and `round`'s
/// half-away-from-zero built from an exact truncation.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_avx2(x: &[f32; QK]) -> (f32, [i8; QK]) {
    use std::arch::x86_64::*;
    let sign_bit = _mm256_set1_ps(-0.0);
    let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
    let abs = v.map(|v| _mm256_andnot_ps(sign_bit, v));
    let max = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
    let max = _mm_max_ps(_mm256_castps256_ps128(max), _mm256_extractf128_ps::<1>(max));
    let max = _mm_max_ps(max, _mm_movehl_ps(max, max));
    let amax = _mm_cvtss_f32(_mm_max_ss(max, _mm_movehdup_ps(max)));
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let q = v.map(|v| {
        let p = _mm256_mul_ps(v, id);
        // |p| - trunc(|p|) is exact; round up from one half.
        let a = _mm256_andnot_ps(sign_bit, p);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(a);
        let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_sub_ps(a, t), half), one);
        let r = _mm256_or_ps(_mm256_add_ps(t, up), _mm256_and_ps(sign_bit, p));
        _mm256_cvtps_epi32(r)
    });
    // i32 -> i16 -> i8 packs interleave 128-bit lanes; restore the order.
    let packed = _mm256_packs_epi16(
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    );
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut out = [0i8; QK];
    _mm256_storeu_si256(out.as_mut_ptr().cast(), ordered);
    (d, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn simd_quantization_equals_the_scalar_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut blocks: Vec<[f32; QK]> = (0..2000)
            .map(|i| {
                let scale = [1e-3, 1.0, 50.0, 1e4][i % 4];
                std::array::from_fn(|_| rng.random_range(-1.0..1.0) * scale)
            })
            .collect();
        // Exact halves after scaling (max 127 makes id 1): ties round away
        // from zero, in both directions; an all-zero block has d = 0.
        blocks.push(std::array::from_fn(|j| {
            if j == 0 {
                127.0
            } else {
                j as f32 - 15.5
            }
        }));
        blocks.push(std::array::from_fn(|j| {
            if j == 0 {
                -127.0
            } else {
                0.5 - j as f32 / 2.0
            }
        }));
        blocks.push([0.0; QK]);
        for x in &blocks {
            assert_eq!(quantize_block(x), quantize_block_scalar(x), "{x:?}");
        }
        let (d, q) = quantize_block(&blocks[blocks.len() - 3]);
        assert_eq!(d, 1.0);
        assert_eq!((q[1], q[2], q[17]), (-15, -14, 2), "{q:?}");
    }
}
