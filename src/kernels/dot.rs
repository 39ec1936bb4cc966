//! Dot products of one row of weight blocks with one row of activation
//! blocks: a scalar reference and an AVX2 version of each.
//!
//! The AVX2 versions compute each block's integer sum and scale products in
//! SIMD (exact, and per block the same float operations) and add the blocks
//! up in the scalar reference's float order, which is candle's and
//! llama.cpp's generic one: their results are the reference's bit for bit,
//! for one row, four rows, or a tile of four rows by two tokens (whose lanes
//! are eight separate sums). That matters more than it seems. After every
//! product the next layer rounds its activations to 8 bits, so a last-bit
//! difference here can flip a rounding there, and over SmolLM2's 30 layers
//! a summation order that is merely as accurate moved its logits by 3 %
//! and changed its greedy output. It also keeps prefill (tiles) and decode
//! (one row) on the same numbers.

use super::blocks::{BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1, QK};

/// Q4_1 · Q8_1, scalar: per block `d_x d_y Σ q_x q_y + m_x s_y`.
pub fn q4_1_q8_1_scalar(xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let lo = i32::from(x.qs[j] & 0x0F);
            let hi = i32::from(x.qs[j] >> 4);
            sumi += lo * i32::from(y.qs[j]) + hi * i32::from(y.qs[j + QK / 2]);
        }
        sum += sumi as f32 * x.d.to_f32() * y.d.to_f32() + x.m.to_f32() * y.s.to_f32();
    }
    sum
}

/// Q5_0 · Q8_0, scalar: per block `d_x d_y Σ (q_x - 16) q_y`.
pub fn q5_0_q8_0_scalar(xs: &[BlockQ5_0], ys: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let sumi: i32 = x
            .values()
            .iter()
            .zip(&y.qs)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        sum += sumi as f32 * x.d.to_f32() * y.d.to_f32();
    }
    sum
}

/// Q8_0 · Q8_0, scalar: per block `d_x d_y Σ q_x q_y`.
pub fn q8_0_q8_0_scalar(xs: &[BlockQ8_0], ys: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
        sum += sumi as f32 * x.d.to_f32() * y.d.to_f32();
    }
    sum
}

/// Q8_0 · Q8_0 on the fastest kernel this CPU has.
#[inline]
pub fn q8_0_q8_0(xs: &[BlockQ8_0], ys: &[BlockQ8_0]) -> f32 {
    fastest!(avx2::q8_0_q8_0(xs, ys), q8_0_q8_0_scalar(xs, ys))
}

/// Q5_0 · Q8_0 on the fastest kernel this CPU has.
#[inline]
pub fn q5_0_q8_0(xs: &[BlockQ5_0], ys: &[BlockQ8_0]) -> f32 {
    fastest!(avx2::q5_0_q8_0(xs, ys), q5_0_q8_0_scalar(xs, ys))
}

/// Q4_1 · Q8_1 on the fastest kernel this CPU has.
#[inline]
pub fn q4_1_q8_1(xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
    fastest!(avx2::q4_1_q8_1(xs, ys), q4_1_q8_1_scalar(xs, ys))
}

/// One token against many weight rows (decode): `out[r]` is row `r` of
/// `xs` (rows of `ys.len()` blocks, one after the other) dotted with `ys`,
/// each the one-row kernel's result. The row loop runs inside the kernel:
/// SmolLM2's rows are 18 blocks long, and a call through the dispatch per
/// row cost about 4 % of a decode step.
pub type Rows<W, A> = fn(&[W], &[A], &mut [f32]);

/// `out[r] = dot(row r of xs, ys)`.
#[inline(always)]
fn each_row<W, A>(xs: &[W], ys: &[A], out: &mut [f32], dot: impl Fn(&[W], &[A]) -> f32) {
    assert!(
        !ys.is_empty() && xs.len() == out.len() * ys.len(),
        "{} weight blocks are not {} rows of {} blocks",
        xs.len(),
        out.len(),
        ys.len()
    );
    for (x, out) in xs.chunks_exact(ys.len()).zip(out) {
        *out = dot(x, ys);
    }
}

/// [`q4_1_q8_1`] over [`Rows`].
pub fn q4_1_q8_1_rows(xs: &[BlockQ4_1], ys: &[BlockQ8_1], out: &mut [f32]) {
    fastest!(
        avx2::q4_1_q8_1_rows(xs, ys, out),
        each_row(xs, ys, out, q4_1_q8_1_scalar)
    )
}

/// [`q5_0_q8_0`] over [`Rows`].
pub fn q5_0_q8_0_rows(xs: &[BlockQ5_0], ys: &[BlockQ8_0], out: &mut [f32]) {
    fastest!(
        avx2::q5_0_q8_0_rows(xs, ys, out),
        each_row(xs, ys, out, q5_0_q8_0_scalar)
    )
}

/// [`q8_0_q8_0`] over [`Rows`].
pub fn q8_0_q8_0_rows(xs: &[BlockQ8_0], ys: &[BlockQ8_0], out: &mut [f32]) {
    fastest!(
        avx2::q8_0_q8_0_rows(xs, ys, out),
        each_row(xs, ys, out, q8_0_q8_0_scalar)
    )
}

/// A prefill tile: four weight rows against `P` pairs of activation rows.
/// `out[p][4 t + r]` is row `r` against token `t` of pair `p`, each the
/// single-row kernel's result bit for bit. Every weight block is decoded
/// once for all `2 P` tokens and every activation block read once for the
/// four rows.
pub type Tile<W, A, const P: usize> = fn([&[W]; 4], [[&[A]; 2]; P]) -> [[f32; 8]; P];

/// The scalar reference of a tile, from a one-row kernel.
fn tile_scalar<W, A, const P: usize>(
    xs: [&[W]; 4],
    ys: [[&[A]; 2]; P],
    dot: fn(&[W], &[A]) -> f32,
) -> [[f32; 8]; P] {
    ys.map(|pair| std::array::from_fn(|i| dot(xs[i % 4], pair[i / 4])))
}

/// [`q4_1_q8_1`] as a [`Tile`].
#[inline]
pub fn q4_1_q8_1_tile<const P: usize>(
    xs: [&[BlockQ4_1]; 4],
    ys: [[&[BlockQ8_1]; 2]; P],
) -> [[f32; 8]; P] {
    fastest!(
        avx2::q4_1_q8_1_tile(xs, ys),
        tile_scalar(xs, ys, q4_1_q8_1_scalar)
    )
}

/// [`q5_0_q8_0`] as a [`Tile`].
#[inline]
pub fn q5_0_q8_0_tile<const P: usize>(
    xs: [&[BlockQ5_0]; 4],
    ys: [[&[BlockQ8_0]; 2]; P],
) -> [[f32; 8]; P] {
    fastest!(
        avx2::q5_0_q8_0_tile(xs, ys),
        tile_scalar(xs, ys, q5_0_q8_0_scalar)
    )
}

/// [`q8_0_q8_0`] as a [`Tile`].
#[inline]
pub fn q8_0_q8_0_tile<const P: usize>(
    xs: [&[BlockQ8_0]; 4],
    ys: [[&[BlockQ8_0]; 2]; P],
) -> [[f32; 8]; P] {
    fastest!(
        avx2::q8_0_q8_0_tile(xs, ys),
        tile_scalar(xs, ys, q8_0_q8_0_scalar)
    )
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{each_row, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1};

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_1_q8_1_rows(xs: &[BlockQ4_1], ys: &[BlockQ8_1], out: &mut [f32]) {
        // SAFETY (each row): this function's features are the kernel's.
        each_row(xs, ys, out, |x, y| unsafe { q4_1_q8_1(x, y) })
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q5_0_q8_0_rows(xs: &[BlockQ5_0], ys: &[BlockQ8_0], out: &mut [f32]) {
        let token = Q8Token::new(ys);
        // SAFETY (each row): this function's features are the kernel's.
        each_row(xs, ys, out, |x, _| unsafe { q5_0_row(x, &token) })
    }

    /// What a Q5_0 row loop decodes of its token once, for all its rows:
    /// each activation block's scale as f32, and `16 Σ q`, the offset of
    /// the unsigned weights' sum (`Σ (q_x - 16) q_y = Σ q_x q_y - 16 Σ q_y`,
    /// exactly, in integers).
    struct Q8Token<'a> {
        blocks: &'a [BlockQ8_0],
        scale: Vec<f32>,
        offset: Vec<i32>,
    }

    impl<'a> Q8Token<'a> {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn new(blocks: &'a [BlockQ8_0]) -> Self {
            Self {
                blocks,
                scale: blocks.iter().map(|y| f16_to_f32(y.d)).collect(),
                offset: blocks
                    .iter()
                    .map(|y| 16 * y.qs.iter().map(|&q| i32::from(q)).sum::<i32>())
                    .collect(),
            }
        }
    }

    /// One f16 as f32, by F16C (`half` checks the CPU per value).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_to_f32(h: half::f16) -> f32 {
        _mm_cvtss_f32(f16_pairs([h, half::f16::ZERO], [half::f16::ZERO; 2]))
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0_q8_0_rows(xs: &[BlockQ8_0], ys: &[BlockQ8_0], out: &mut [f32]) {
        // SAFETY (each row): this function's features are the kernel's.
        each_row(xs, ys, out, |x, y| unsafe { q8_0_q8_0(x, y) })
    }

    /// The 32 nibbles of 16 bytes as 32 bytes: low nibbles first, then high.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
        let raw = _mm_loadu_si128(qs.as_ptr().cast());
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    /// Two pairs of f16 (`a` = lanes 0, 1; `b` = lanes 2, 3) as f32, by
    /// F16C: far cheaper than a call into `half` per value.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_pairs(a: [half::f16; 2], b: [half::f16; 2]) -> __m128 {
        let bits = |p: [half::f16; 2]| {
            (u32::from(p[0].to_bits()) | (u32::from(p[1].to_bits()) << 16)) as i32
        };
        _mm_cvtph_ps(_mm_set_epi32(0, 0, bits(b), bits(a)))
    }

    /// 0xFF in byte `j` where bit `j` of `bits` is set, 0 elsewhere.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bytes_from_bits(bits: [u8; 4]) -> __m256i {
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(i32::from_le_bytes(bits)),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1))
    }

    /// `Σ x y` of signed bytes as eight i32 lane sums.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_i8_lanes(x: __m256i, y: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0_q8_0(xs: &[BlockQ8_0], ys: &[BlockQ8_0]) -> f32 {
        let mut sum = 0f32;
        // Four blocks at a time, as in `q5_0_q8_0`.
        let (xs4, ys4) = (xs.chunks_exact(4), ys.chunks_exact(4));
        let (xs, ys) = (xs4.remainder(), ys4.remainder());
        for (x, y) in xs4.zip(ys4) {
            prefetch_ahead(x.as_ptr());
            let sums: [__m256i; 4] = std::array::from_fn(|i| {
                let qx = _mm256_loadu_si256(x[i].qs.as_ptr().cast());
                dot_i8_lanes(qx, _mm256_loadu_si256(y[i].qs.as_ptr().cast()))
            });
            let sumi = _mm_cvtepi32_ps(hsum_i32_x4(sums));
            let (dx, dy) = f16_x8(
                std::array::from_fn(|i| x[i].d),
                std::array::from_fn(|i| y[i].d),
            );
            sum = add_in_order(sum, _mm_mul_ps(_mm_mul_ps(sumi, dx), dy));
        }
        for (x, y) in xs.iter().zip(ys) {
            let qx = _mm256_loadu_si256(x.qs.as_ptr().cast());
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            let (dx, dy) = scales(x.d, y.d);
            sum += hsum_i32(dot_i8_lanes(qx, qy)) as f32 * dx * dy;
        }
        sum
    }

    /// Two f16 scales as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(dx: half::f16, dy: half::f16) -> (f32, f32) {
        // [dx, 0, dy, 0]
        let v = f16_pairs([dx, half::f16::ZERO], [dy, half::f16::ZERO]);
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehl_ps(v, v)))
    }

    /// Asks for the two cache lines 1 KiB past `at` (the weight rows
    /// ahead, which lie one after the other): 1-thread decode on SmolLM2
    /// Q4_K_M went from 68.8 to 71.9 tok/s (median of five), the hardware
    /// prefetcher alone restarting on every matrix. A prefetch never
    /// faults, past the end of the weights included.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn prefetch_ahead<T>(at: *const T) {
        let at = at.cast::<i8>();
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(1024));
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(1024 + 64));
    }

    /// Sum of the eight i32 lanes of `v`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q5_0_q8_0(xs: &[BlockQ5_0], ys: &[BlockQ8_0]) -> f32 {
        q5_0_row(xs, &Q8Token::new(ys))
    }

    /// One Q5_0 row against a decoded token: per block the unsigned
    /// weights (the nibble and bit 4, 0..32) times the activations, less
    /// the token's offset, times the scales; four blocks at a time, added
    /// to `sum` one by one in block order.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_0_row(xs: &[BlockQ5_0], token: &Q8Token) -> f32 {
        let n = xs.len().min(token.blocks.len());
        let (ys, dy, offset) = (token.blocks, &token.scale, &token.offset);
        let (ones, sixteen) = (_mm256_set1_epi16(1), _mm256_set1_epi8(16));
        // q_x q_y in pairs of i16: at most 2 * 31 * 128, no saturation.
        let block = |b: usize| {
            // SAFETY: b < n, within the row and the token (all callers).
            let (x, y) = (xs.get_unchecked(b), ys.get_unchecked(b));
            let high = _mm256_and_si256(bytes_from_bits(x.qh), sixteen);
            let qx = _mm256_or_si256(nibbles(&x.qs), high);
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            _mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), ones)
        };
        let mut sum = 0f32;
        let mut b = 0;
        while b + 4 <= n {
            prefetch_ahead(xs.as_ptr().add(b));
            let sums: [__m256i; 4] = std::array::from_fn(|i| block(b + i));
            // SAFETY: b + 4 <= n, within `offset` and `dy` (one per block).
            let offsets = _mm_loadu_si128(offset.as_ptr().add(b).cast());
            let sumi = _mm_cvtepi32_ps(_mm_sub_epi32(hsum_i32_x4(sums), offsets));
            let dx = f16_x8(
                std::array::from_fn(|i| xs.get_unchecked(b + i).d),
                [half::f16::ZERO; 4],
            )
            .0;
            let t = _mm_mul_ps(_mm_mul_ps(sumi, dx), _mm_loadu_ps(dy.as_ptr().add(b)));
            sum = add_in_order(sum, t);
            b += 4;
        }
        while b < n {
            let sumi = hsum_i32(block(b)) - offset[b];
            sum += sumi as f32 * f16_to_f32(xs.get_unchecked(b).d) * dy[b];
            b += 1;
        }
        sum
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_1_q8_1(xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut sum = 0f32;
        // Four blocks at a time, as in `q5_0_q8_0`.
        let (xs4, ys4) = (xs.chunks_exact(4), ys.chunks_exact(4));
        let (xs, ys) = (xs4.remainder(), ys4.remainder());
        for (x, y) in xs4.zip(ys4) {
            prefetch_ahead(x.as_ptr());
            let sums: [__m256i; 4] = std::array::from_fn(|i| {
                let qy = _mm256_loadu_si256(y[i].qs.as_ptr().cast());
                _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles(&x[i].qs), qy), ones)
            });
            let sumi = _mm_cvtepi32_ps(hsum_i32_x4(sums));
            let (dx, mx) = f16_x8(
                std::array::from_fn(|i| x[i].d),
                std::array::from_fn(|i| x[i].m),
            );
            let (dy, sy) = f16_x8(
                std::array::from_fn(|i| y[i].d),
                std::array::from_fn(|i| y[i].s),
            );
            let t = _mm_add_ps(_mm_mul_ps(_mm_mul_ps(sumi, dx), dy), _mm_mul_ps(mx, sy));
            sum = add_in_order(sum, t);
        }
        for (x, y) in xs.iter().zip(ys) {
            let qx = nibbles(&x.qs);
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            // u8 x i8 pairs into i16 (at most 2 * 15 * 127: no saturation),
            // then pairs of those into i32, then the block's sum.
            let pairs = _mm256_maddubs_epi16(qx, qy);
            let sumi = hsum_i32(_mm256_madd_epi16(pairs, ones));
            // [dx, mx, dy, sy]
            let scales = f16_pairs([x.d, x.m], [y.d, y.s]);
            let high = _mm_movehl_ps(scales, scales);
            let (dx, dy) = (_mm_cvtss_f32(scales), _mm_cvtss_f32(high));
            let (mx, sy) = (
                _mm_cvtss_f32(_mm_movehdup_ps(scales)),
                _mm_cvtss_f32(_mm_movehdup_ps(high)),
            );
            sum += sumi as f32 * dx * dy + mx * sy;
        }
        sum
    }

    /// `sum + t[0] + t[1] + t[2] + t[3]`, added left to right (the scalar
    /// kernels' order).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn add_in_order(sum: f32, t: __m128) -> f32 {
        let mut lanes = [0f32; 4];
        _mm_storeu_ps(lanes.as_mut_ptr(), t);
        ((sum + lanes[0]) + lanes[1]) + lanes[2] + lanes[3]
    }

    /// The lane sums of four vectors as `[s0, s1, s2, s3]` (four rows, or
    /// four blocks).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum_i32_x4(s: [__m256i; 4]) -> __m128i {
        let s01 = _mm256_hadd_epi32(s[0], s[1]);
        let s23 = _mm256_hadd_epi32(s[2], s[3]);
        let all = _mm256_hadd_epi32(s01, s23);
        _mm_add_epi32(
            _mm256_castsi256_si128(all),
            _mm256_extracti128_si256::<1>(all),
        )
    }

    /// Eight f16 as f32: `a` in lanes 0..4, `b` in lanes 4..8.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_x8(a: [half::f16; 4], b: [half::f16; 4]) -> (__m128, __m128) {
        let bits = |h: half::f16| h.to_bits() as i16;
        let v = _mm256_cvtph_ps(_mm_set_epi16(
            bits(b[3]),
            bits(b[2]),
            bits(b[1]),
            bits(b[0]),
            bits(a[3]),
            bits(a[2]),
            bits(a[1]),
            bits(a[0]),
        ));
        (_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v))
    }

    /// The lane sums of eight vectors as `[s0, .., s7]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum_i32_x8(s: [__m256i; 8]) -> __m256i {
        let s01 = _mm256_hadd_epi32(s[0], s[1]);
        let s23 = _mm256_hadd_epi32(s[2], s[3]);
        let s45 = _mm256_hadd_epi32(s[4], s[5]);
        let s67 = _mm256_hadd_epi32(s[6], s[7]);
        // Each 128-bit half: the partial sums of s0..s3 (s4..s7) over that
        // half of their lanes.
        let lo = _mm256_hadd_epi32(s01, s23);
        let hi = _mm256_hadd_epi32(s45, s67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(lo, hi),
            _mm256_permute2x128_si256::<0x31>(lo, hi),
        )
    }

    /// Four f16 row scales as f32 lanes `[a0, a1, a2, a3, a0, a1, a2, a3]`
    /// (lane `4 t + r` of a tile).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn row_scales(a: [half::f16; 4]) -> __m256 {
        let (rows, _) = f16_x8(a, [half::f16::ZERO; 4]);
        _mm256_set_m128(rows, rows)
    }

    /// Two f16 token scales as f32 lanes `[b0, b0, b0, b0, b1, b1, b1, b1]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn token_scales(b: [half::f16; 2]) -> __m256 {
        let v = f16_pairs(b, [half::f16::ZERO; 2]);
        _mm256_set_m128(
            _mm_shuffle_ps::<0b0101_0101>(v, v),
            _mm_shuffle_ps::<0b0000_0000>(v, v),
        )
    }

    /// Every row and token of a tile has the same number of blocks (the
    /// kernels index them unchecked).
    #[inline]
    fn check_tile_lengths<W, A, const P: usize>(xs: &[&[W]; 4], ys: &[[&[A]; 2]; P]) {
        let n = xs[0].len();
        assert!(
            xs.iter().all(|x| x.len() == n) && ys.iter().flatten().all(|y| y.len() == n),
            "a tile's rows and tokens must have {n} blocks each"
        );
    }

    /// Stores the lanes of each accumulator.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn store_tile<const P: usize>(sum: [__m256; P]) -> [[f32; 8]; P] {
        sum.map(|s| {
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), s);
            out
        })
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_1_q8_1_tile<const P: usize>(
        xs: [&[BlockQ4_1]; 4],
        ys: [[&[BlockQ8_1]; 2]; P],
    ) -> [[f32; 8]; P] {
        let ones = _mm256_set1_epi16(1);
        // Lane 4 t + r of sum[p]: row r against token t of pair p, in the
        // scalar order: separate multiplies and adds, no fused ones.
        let mut sum = [_mm256_setzero_ps(); P];
        check_tile_lengths(&xs, &ys);
        for b in 0..xs[0].len() {
            // SAFETY (here and for the tokens): b is below every row's and
            // token's length (checked above).
            let rows = xs.map(|x| x.get_unchecked(b));
            let qx = rows.map(|x| nibbles(&x.qs));
            let (dx, mx) = (row_scales(rows.map(|x| x.d)), row_scales(rows.map(|x| x.m)));
            for (sum, pair) in sum.iter_mut().zip(&ys) {
                let tokens = pair.map(|y| y.get_unchecked(b));
                let qy = tokens.map(|y| _mm256_loadu_si256(y.qs.as_ptr().cast()));
                let sums: [__m256i; 8] = std::array::from_fn(|i| {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(qx[i % 4], qy[i / 4]), ones)
                });
                let sumi = _mm256_cvtepi32_ps(hsum_i32_x8(sums));
                let dy = token_scales(tokens.map(|y| y.d));
                let sy = token_scales(tokens.map(|y| y.s));
                let t = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_mul_ps(sumi, dx), dy),
                    _mm256_mul_ps(mx, sy),
                );
                *sum = _mm256_add_ps(*sum, t);
            }
        }
        store_tile(sum)
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q5_0_q8_0_tile<const P: usize>(
        xs: [&[BlockQ5_0]; 4],
        ys: [[&[BlockQ8_0]; 2]; P],
    ) -> [[f32; 8]; P] {
        let ones = _mm256_set1_epi16(1);
        let sixteen = _mm256_set1_epi8(16);
        let mut sum = [_mm256_setzero_ps(); P];
        check_tile_lengths(&xs, &ys);
        for b in 0..xs[0].len() {
            // SAFETY (here and for the tokens): b is below every row's and
            // token's length (checked above).
            let rows = xs.map(|x| x.get_unchecked(b));
            // q in 0..32, unsigned: Σ (q - 16) y = Σ q y - 16 Σ y, exactly,
            // without maddubs' sign trick per pair.
            let qx = rows.map(|x| {
                let high = _mm256_and_si256(bytes_from_bits(x.qh), sixteen);
                _mm256_or_si256(nibbles(&x.qs), high)
            });
            let dx = row_scales(rows.map(|x| x.d));
            for (sum, pair) in sum.iter_mut().zip(&ys) {
                let tokens = pair.map(|y| y.get_unchecked(b));
                let qy = tokens.map(|y| _mm256_loadu_si256(y.qs.as_ptr().cast()));
                // 16 y in pairs of i16: at most 2 * 16 * 128, and q y at
                // most 2 * 31 * 128; their difference fits i16 too.
                let offset = qy.map(|y| _mm256_maddubs_epi16(sixteen, y));
                let sums: [__m256i; 8] = std::array::from_fn(|i| {
                    let pairs = _mm256_maddubs_epi16(qx[i % 4], qy[i / 4]);
                    _mm256_madd_epi16(_mm256_sub_epi16(pairs, offset[i / 4]), ones)
                });
                let sumi = _mm256_cvtepi32_ps(hsum_i32_x8(sums));
                let dy = token_scales(tokens.map(|y| y.d));
                *sum = _mm256_add_ps(*sum, _mm256_mul_ps(_mm256_mul_ps(sumi, dx), dy));
            }
        }
        store_tile(sum)
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0_q8_0_tile<const P: usize>(
        xs: [&[BlockQ8_0]; 4],
        ys: [[&[BlockQ8_0]; 2]; P],
    ) -> [[f32; 8]; P] {
        let ones = _mm256_set1_epi16(1);
        let mut sum = [_mm256_setzero_ps(); P];
        check_tile_lengths(&xs, &ys);
        for b in 0..xs[0].len() {
            // SAFETY (here and for the tokens): b is below every row's and
            // token's length (checked above).
            let rows = xs.map(|x| x.get_unchecked(b));
            let qx = rows.map(|x| _mm256_loadu_si256(x.qs.as_ptr().cast()));
            // maddubs multiplies unsigned by signed: |x| by y with x's sign.
            let abs = qx.map(|q| _mm256_sign_epi8(q, q));
            let dx = row_scales(rows.map(|x| x.d));
            for (sum, pair) in sum.iter_mut().zip(&ys) {
                let tokens = pair.map(|y| y.get_unchecked(b));
                let qy = tokens.map(|y| _mm256_loadu_si256(y.qs.as_ptr().cast()));
                let sums: [__m256i; 8] = std::array::from_fn(|i| {
                    let signed = _mm256_sign_epi8(qy[i / 4], qx[i % 4]);
                    _mm256_madd_epi16(_mm256_maddubs_epi16(abs[i % 4], signed), ones)
                });
                let sumi = _mm256_cvtepi32_ps(hsum_i32_x8(sums));
                let dy = token_scales(tokens.map(|y| y.d));
                *sum = _mm256_add_ps(*sum, _mm256_mul_ps(_mm256_mul_ps(sumi, dx), dy));
            }
        }
        store_tile(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::super::blocks::{quantize_q8_0, quantize_q8_1};
    use super::*;
    use half::f16;
    use rand::{Rng, SeedableRng};

    fn random_q4_1(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<BlockQ4_1> {
        (0..n)
            .map(|_| BlockQ4_1 {
                d: f16::from_f32(rng.random_range(-0.1..0.1)),
                m: f16::from_f32(rng.random_range(-0.5..0.5)),
                qs: std::array::from_fn(|_| rng.random()),
            })
            .collect()
    }

    fn random_q5_0(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<BlockQ5_0> {
        (0..n)
            .map(|_| BlockQ5_0 {
                d: f16::from_f32(rng.random_range(-0.1..0.1)),
                qh: rng.random(),
                qs: std::array::from_fn(|_| rng.random()),
            })
            .collect()
    }

    fn random_acts(rng: &mut rand::rngs::StdRng, blocks: usize) -> Vec<f32> {
        // Mostly small values with the odd outlier, as in real models.
        (0..blocks * QK)
            .map(|i| {
                let v: f32 = rng.random_range(-3.0..3.0);
                if i % 37 == 5 {
                    v * 100.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// `one` (a pair) and `two` (two pairs) against the scalar kernel, lane
    /// by lane, bit for bit.
    fn check_tiles<W, A>(
        rows: &[Vec<W>],
        tokens: &[Vec<A>],
        one: Tile<W, A, 1>,
        two: Tile<W, A, 2>,
        scalar: fn(&[W], &[A]) -> f32,
    ) {
        let xs: [&[W]; 4] = std::array::from_fn(|r| rows[r].as_slice());
        let t = |i: usize| tokens[i].as_slice();
        let [single] = one(xs, [[t(2), t(0)]]);
        let double = two(xs, [[t(0), t(1)], [t(2), t(3)]]);
        for i in 0..8 {
            let (r, tok) = (i % 4, i / 4);
            assert_eq!(
                single[i],
                scalar(xs[r], t([2, 0][tok])),
                "one pair, lane {i}"
            );
            for (p, lanes) in double.iter().enumerate() {
                let expected = scalar(xs[r], t(2 * p + tok));
                assert_eq!(lanes[i], expected, "pair {p}, lane {i}");
            }
        }
    }

    /// `acts` quantized to Q8_0 blocks.
    fn q8_0_of(acts: &[f32]) -> Vec<BlockQ8_0> {
        let mut q = vec![BlockQ8_0::ZERO; acts.len() / QK];
        quantize_q8_0(acts, &mut q);
        q
    }

    /// `acts` quantized to Q8_1 blocks.
    fn q8_1_of(acts: &[f32]) -> Vec<BlockQ8_1> {
        let mut q = vec![BlockQ8_1::ZERO; acts.len() / QK];
        quantize_q8_1(acts, &mut q);
        q
    }

    /// A row loop's every output against the scalar one-row kernel.
    fn check_rows<W, A>(xs: &[W], ys: &[A], rows: Rows<W, A>, scalar: fn(&[W], &[A]) -> f32) {
        let mut out = vec![f32::NAN; xs.len() / ys.len()];
        rows(xs, ys, &mut out);
        for (r, (v, x)) in out.iter().zip(xs.chunks_exact(ys.len())).enumerate() {
            assert_eq!(*v, scalar(x, ys), "row {r} of {} blocks", ys.len());
        }
    }

    #[test]
    fn row_loops_equal_the_scalar_kernel_row_by_row() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for blocks in [1, 3, 18, 77] {
            for rows in [1, 5] {
                let acts = random_acts(&mut rng, blocks);
                let (q8_1, q8_0) = (q8_1_of(&acts), q8_0_of(&acts));
                let x = random_q4_1(&mut rng, rows * blocks);
                check_rows(&x, &q8_1, q4_1_q8_1_rows, q4_1_q8_1_scalar);
                let x = random_q5_0(&mut rng, rows * blocks);
                check_rows(&x, &q8_0, q5_0_q8_0_rows, q5_0_q8_0_scalar);
                let x = q8_0_of(&random_acts(&mut rng, rows * blocks));
                check_rows(&x, &q8_0, q8_0_q8_0_rows, q8_0_q8_0_scalar);
            }
        }
    }

    #[test]
    #[should_panic(expected = "10 weight blocks are not 2 rows of 3 blocks")]
    fn a_row_loop_refuses_rows_of_another_length() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let y = q8_0_of(&random_acts(&mut rng, 3));
        q5_0_q8_0_rows(&random_q5_0(&mut rng, 10), &y, &mut [0.0; 2]);
    }

    #[test]
    fn simd_kernels_equal_the_scalar_ones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for blocks in [1, 2, 3, 18, 48, 77] {
            let acts = random_acts(&mut rng, blocks);
            let (q8_1, q8_0) = (q8_1_of(&acts), q8_0_of(&acts));

            // Every kernel adds up in the scalar order: bit for bit.
            let x = random_q4_1(&mut rng, blocks);
            assert_eq!(
                q4_1_q8_1(&x, &q8_1),
                q4_1_q8_1_scalar(&x, &q8_1),
                "{blocks}"
            );
            let x = random_q5_0(&mut rng, blocks);
            assert_eq!(
                q5_0_q8_0(&x, &q8_0),
                q5_0_q8_0_scalar(&x, &q8_0),
                "{blocks}"
            );

            // Tiles of four rows by one and two pairs of tokens: each lane
            // the scalar single-row result, bit for bit.
            let acts: Vec<Vec<f32>> = (0..4).map(|_| random_acts(&mut rng, blocks)).collect();
            let q8_1s: Vec<_> = acts.iter().map(|a| q8_1_of(a)).collect();
            let q8_0s: Vec<_> = acts.iter().map(|a| q8_0_of(a)).collect();
            let rows: Vec<_> = (0..4).map(|_| random_q4_1(&mut rng, blocks)).collect();
            check_tiles(
                &rows,
                &q8_1s,
                q4_1_q8_1_tile,
                q4_1_q8_1_tile,
                q4_1_q8_1_scalar,
            );
            let rows: Vec<_> = (0..4).map(|_| random_q5_0(&mut rng, blocks)).collect();
            check_tiles(
                &rows,
                &q8_0s,
                q5_0_q8_0_tile,
                q5_0_q8_0_tile,
                q5_0_q8_0_scalar,
            );
            let rows: Vec<_> = (0..4)
                .map(|_| q8_0_of(&random_acts(&mut rng, blocks)))
                .collect();
            check_tiles(
                &rows,
                &q8_0s,
                q8_0_q8_0_tile,
                q8_0_q8_0_tile,
                q8_0_q8_0_scalar,
            );

            let x = q8_0_of(&random_acts(&mut rng, blocks));
            assert_eq!(
                q8_0_q8_0(&x, &q8_0),
                q8_0_q8_0_scalar(&x, &q8_0),
                "{blocks}"
            );
        }
    }

    #[test]
    fn q5_0_values_follow_the_high_bits() {
        let mut x = BlockQ5_0 {
            d: f16::from_f32(1.0),
            qh: [0; 4],
            qs: [0x21; QK / 2],
        };
        assert_eq!(x.values()[0], 1 - 16);
        assert_eq!(x.values()[16], 2 - 16);
        x.qh = 1u32.to_le_bytes();
        assert_eq!(x.values()[0], 1);
        x.qh = (1u32 << 31).to_le_bytes();
        assert_eq!(x.values()[31], 2);
        assert_eq!(x.values()[15], 1 - 16);
    }

    #[test]
    fn q4_1_dot_is_the_dot_of_the_dequantized_rows() {
        // Activations that are multiples of 1/4 with a largest of 127/4 make
        // d = 1/4 exactly, so Q8_1 is lossless and the dot is exact.
        let x = BlockQ4_1 {
            d: f16::from_f32(0.5),
            m: f16::from_f32(-1.0),
            qs: std::array::from_fn(|j| (j as u8 % 16) | ((15 - j as u8 % 16) << 4)),
        };
        let weights: Vec<f32> = (0..QK)
            .map(|i| {
                let q = if i < 16 {
                    x.qs[i] & 0x0F
                } else {
                    x.qs[i - 16] >> 4
                };
                0.5 * f32::from(q) - 1.0
            })
            .collect();
        let mut acts: Vec<f32> = (0..QK).map(|i| (i as f32 - 16.0) * 0.25).collect();
        acts[3] = 127.0 * 0.25;
        let ys = q8_1_of(&acts);
        let expected: f32 = weights.iter().zip(&acts).map(|(w, a)| w * a).sum();
        for got in [q4_1_q8_1_scalar(&[x], &ys), q4_1_q8_1(&[x], &ys)] {
            assert!((got - expected).abs() < 1e-4, "{got} vs {expected}");
        }
    }
}
