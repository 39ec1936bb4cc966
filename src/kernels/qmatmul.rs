//! `x · Wᵀ` for a quantized `W` on the CPU, on plain f32 slices.
//!
//! Q4_1 and Q5_0 run this module's kernels (candle 0.11 has only scalar
//! dot products for them), and so does Q8_0 on CPUs without VNNI
//! (candle's AVX2 one converts each f16 scale through a runtime-dispatched
//! call, twice the instructions of this one; with VNNI candle repacks Q8_0
//! for `vpdpbusd`, which beats it). Every other type stays with candle's
//! `QMatMul`, which repacks Q4_K and Q6_K into tiles on x86. Activation
//! rows are quantized once per product; work is split by weight rows over
//! candle's persistent barrier pool.

use std::fmt;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};

use super::blocks::{quantize_q8_0, quantize_q8_1, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1, QK};
use super::dot::{
    q4_1_q8_1_rows, q4_1_q8_1_tile, q5_0_q8_0_rows, q5_0_q8_0_tile, q8_0_q8_0_rows, q8_0_q8_0_tile,
    Rows, Tile,
};

/// The weight rows, in a block type there is a kernel for.
enum Weights {
    Q4_1(Vec<BlockQ4_1>),
    Q5_0(Vec<BlockQ5_0>),
    Q8_0(Vec<BlockQ8_0>),
}

/// A quantized matrix of `rows` outputs by `cols` inputs, for products on
/// the CPU.
pub struct CpuQMatMul {
    weights: Weights,
    rows: usize,
    cols: usize,
}

impl fmt::Debug for CpuQMatMul {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dtype = match &self.weights {
            Weights::Q4_1(_) => GgmlDType::Q4_1,
            Weights::Q5_0(_) => GgmlDType::Q5_0,
            Weights::Q8_0(_) => GgmlDType::Q8_0,
        };
        write!(f, "CpuQMatMul({dtype:?}, {}x{})", self.rows, self.cols)
    }
}

/// Weight rows per work item: enough dot products to amortize taking one
/// (a multiple of four, the rows a prefill tile takes).
const ROWS_PER_ITEM: usize = 8;

/// The raw block bytes of a QTensor as a vector of its block type `T`
/// (copied: the storage's bytes need not be aligned for `T`).
fn copy_blocks<T>(bytes: &[u8], dtype: GgmlDType) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) {
        candle_core::bail!(
            "{dtype:?} tensor of {} bytes is not whole blocks of {size}",
            bytes.len()
        )
    }
    let mut out = Vec::<T>::with_capacity(bytes.len() / size);
    // SAFETY: capacity for exactly these bytes; GGML's block types are
    // plain old data in the file's layout, valid for any bit pattern.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), bytes.len());
        out.set_len(bytes.len() / size);
    }
    Ok(out)
}

/// Whether candle's repacked VNNI kernels serve Q8_0 on this CPU.
fn candle_has_vnni_q8_0() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"))
            || is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl CpuQMatMul {
    /// The kernels' copy of `t` (rows × cols), or `None` when it is not on
    /// the CPU or candle's `QMatMul` serves its type better.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let &[rows, cols] = t.shape().dims() else {
            return Ok(None);
        };
        let dtype = t.dtype();
        if !matches!(t.device(), Device::Cpu) || !cols.is_multiple_of(dtype.block_size()) {
            return Ok(None);
        }
        let weights = match dtype {
            GgmlDType::Q4_1 => Weights::Q4_1(copy_blocks(&t.data()?, dtype)?),
            GgmlDType::Q5_0 => Weights::Q5_0(copy_blocks(&t.data()?, dtype)?),
            GgmlDType::Q8_0 if !candle_has_vnni_q8_0() => {
                Weights::Q8_0(copy_blocks(&t.data()?, dtype)?)
            }
            _ => return Ok(None),
        };
        Ok(Some(Self {
            weights,
            rows,
            cols,
        }))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `dst` (m × rows) = `lhs` (m × cols) · Wᵀ, where m is
    /// `lhs.len() / cols`.
    pub fn matmul(&self, lhs: &[f32], dst: &mut [f32]) -> Result<()> {
        let (rows, cols) = (self.rows, self.cols);
        if lhs.is_empty() || !lhs.len().is_multiple_of(cols) {
            candle_core::bail!(
                "quantized matmul: input of {} values is not rows of {cols} columns",
                lhs.len()
            )
        }
        let m = lhs.len() / cols;
        if dst.len() != m * rows {
            candle_core::bail!(
                "quantized matmul: output holds {} values, {m} x {rows} expected",
                dst.len()
            )
        }
        match &self.weights {
            Weights::Q4_1(w) => {
                let acts = quantize_rows(lhs, cols, BlockQ8_1::ZERO, quantize_q8_1);
                product(
                    w,
                    &acts,
                    cols,
                    dst,
                    q4_1_q8_1_rows,
                    q4_1_q8_1_tile,
                    q4_1_q8_1_tile,
                );
            }
            Weights::Q5_0(w) => {
                let acts = quantize_rows(lhs, cols, BlockQ8_0::ZERO, quantize_q8_0);
                product(
                    w,
                    &acts,
                    cols,
                    dst,
                    q5_0_q8_0_rows,
                    q5_0_q8_0_tile,
                    q5_0_q8_0_tile,
                );
            }
            Weights::Q8_0(w) => {
                let acts = quantize_rows(lhs, cols, BlockQ8_0::ZERO, quantize_q8_0);
                product(
                    w,
                    &acts,
                    cols,
                    dst,
                    q8_0_q8_0_rows,
                    q8_0_q8_0_tile,
                    q8_0_q8_0_tile,
                );
            }
        }
        Ok(())
    }

    /// Rows `ids` dequantized, one after the other: an embedding lookup.
    pub fn rows_f32(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let cols = self.cols;
        let mut out = vec![0f32; ids.len() * cols];
        for (&id, out) in ids.iter().zip(out.chunks_exact_mut(cols)) {
            let row = id as usize;
            if row >= self.rows {
                candle_core::bail!("row {row} is outside the matrix of {} rows", self.rows)
            }
            let blocks = cols / QK;
            let range = row * blocks..(row + 1) * blocks;
            match &self.weights {
                Weights::Q4_1(w) => dequantize(&w[range], out, BlockQ4_1::values_f32),
                Weights::Q5_0(w) => dequantize(&w[range], out, BlockQ5_0::values_f32),
                Weights::Q8_0(w) => dequantize(&w[range], out, BlockQ8_0::values_f32),
            }
        }
        Ok(out)
    }

    /// `x` of shape `(.., cols)` times the transpose: shape `(.., rows)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let lhs = x
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let mut out = vec![0f32; lhs.len() / self.cols.max(1) * self.rows];
        self.matmul(&lhs, &mut out)?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("at least one dimension") = self.rows;
        Tensor::from_vec(out, shape, &Device::Cpu)
    }
}

fn dequantize<B>(blocks: &[B], out: &mut [f32], values: impl Fn(&B) -> [f32; QK]) {
    for (b, out) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        out.copy_from_slice(&values(b));
    }
}

/// Each row of `lhs` (rows of `cols`) quantized into activation blocks.
fn quantize_rows<A: Copy>(
    lhs: &[f32],
    cols: usize,
    zero: A,
    quantize: fn(&[f32], &mut [A]),
) -> Vec<A> {
    let blocks = cols / QK;
    let mut acts = vec![zero; lhs.len() / cols * blocks];
    for (x, a) in lhs.chunks_exact(cols).zip(acts.chunks_exact_mut(blocks)) {
        quantize(x, a);
    }
    acts
}

/// `dst` (tokens × rows) = `acts` (tokens × blocks) · `w`ᵀ. Weight rows are
/// split over candle's thread pool in items of [`ROWS_PER_ITEM`]; each
/// group of rows meets every token while it is in cache. With several
/// tokens (prefill) rows go four at a time against four tokens at a time
/// (`tile2`: each weight block decoded once for four tokens, each
/// activation block read once for four rows), then a pair (`tile1`; an odd
/// last token goes as a pair with itself). One token (decode) streams one
/// row at a time (`rows`, the row loop inside the kernel), since four
/// concurrent row streams from memory measured slower there (Q8_0 decode
/// 70 against 90 tok/s).
fn product<W: Sync, A: Sync>(
    w: &[W],
    acts: &[A],
    cols: usize,
    dst: &mut [f32],
    rows_of: Rows<W, A>,
    tile1: Tile<W, A, 1>,
    tile2: Tile<W, A, 2>,
) {
    let blocks = cols / QK;
    let m = acts.len() / blocks;
    let rows = w.len() / blocks;
    let row = |r: usize| &w[r * blocks..(r + 1) * blocks];
    let token = |t: usize| &acts[t.min(m - 1) * blocks..(t.min(m - 1) + 1) * blocks];
    let out_ptr = dst.as_mut_ptr() as usize;
    // SAFETY: each (token, row) is written by exactly one work item, within
    // `dst`'s m × rows elements.
    let write = |token: usize, r: usize, v: f32| unsafe {
        *(out_ptr as *mut f32).add(token * rows + r) = v
    };
    // Writes a tile's lanes for the tokens from `t` on (fewer than two at
    // the end: the duplicate lanes are dropped).
    let write_pair = |t: usize, r: usize, lanes: [f32; 8]| {
        for (i, v) in lanes.into_iter().enumerate() {
            if t + i / 4 < m {
                write(t + i / 4, r + i % 4, v);
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(rows.div_ceil(ROWS_PER_ITEM), |items| {
        if m == 1 {
            let (start, end) = (
                items.start * ROWS_PER_ITEM,
                rows.min(items.end * ROWS_PER_ITEM),
            );
            // SAFETY: these rows of the one token's output belong to this
            // range of items alone.
            let out = unsafe {
                std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(start), end - start)
            };
            rows_of(&w[start * blocks..end * blocks], token(0), out);
            return;
        }
        for item in items {
            let (start, end) = (item * ROWS_PER_ITEM, rows.min((item + 1) * ROWS_PER_ITEM));
            let mut r = start;
            while m > 1 && r + 4 <= end {
                let four = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                let mut t = 0;
                while t + 4 <= m {
                    let pairs = [[token(t), token(t + 1)], [token(t + 2), token(t + 3)]];
                    let [a, b] = tile2(four, pairs);
                    write_pair(t, r, a);
                    write_pair(t + 2, r, b);
                    t += 4;
                }
                while t < m {
                    let [lanes] = tile1(four, [[token(t), token(t + 1)]]);
                    write_pair(t, r, lanes);
                    t += 2;
                }
                r += 4;
            }
            for r in r..end {
                for t in 0..m {
                    let mut v = 0f32;
                    rows_of(row(r), token(t), std::slice::from_mut(&mut v));
                    write(t, r, v);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::Module;
    use rand::{Rng, SeedableRng};

    /// The product of this module against candle's dequantize-then-matmul,
    /// for awkward shapes: rows and tokens that are no multiple of the work
    /// item or the SIMD width.
    fn check(dtype: GgmlDType, cols: usize) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(dtype as u64 + cols as u64);
        for (rows, m) in [(37, 1), (5, 3), (70, 7)] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let x: Vec<f32> = (0..m * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let wt = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&wt, dtype).unwrap();
            let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
            let reference = xt
                .matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let ours = CpuQMatMul::from_qtensor(&q).unwrap().expect("a kernel");
            let mut got = vec![0f32; m * rows];
            ours.matmul(&x, &mut got).unwrap();
            // Against the exact product only the activations' 8-bit
            // quantization differs: at most half a step (max|x| / 254) per
            // value times the weight, summed over the row.
            let candle = QMatMul::from_qtensor(q).unwrap().forward(&xt).unwrap();
            let candle = candle.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let tolerance = 2.0 / 254.0 * cols as f32;
            for i in 0..m * rows {
                assert!(
                    (got[i] - reference[i]).abs() <= tolerance,
                    "{dtype:?} {rows}x{cols}, {m} tokens, [{i}]: {} vs dequantized {}",
                    got[i],
                    reference[i]
                );
                // candle quantizes the activations the same way: only the
                // order of the float sums differs.
                assert!(
                    (got[i] - candle[i]).abs()
                        <= 1e-4 * (1.0 + candle[i].abs()) * cols as f32 / 32.0,
                    "{dtype:?} {rows}x{cols}, {m} tokens, [{i}]: {} vs candle {}",
                    got[i],
                    candle[i]
                );
            }
        }
    }

    #[test]
    fn every_kernel_type_agrees_with_candle() {
        // An even number of blocks per row: candle's own Q4_1 reference
        // asserts it in debug builds. Odd counts are tested in `dot`.
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            check(dtype, 192);
            check(dtype, 832);
        }
    }

    #[test]
    fn rows_dequantize_as_candle_does() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            let (rows, cols) = (9, 256);
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let q = QTensor::quantize(
                &Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap(),
                dtype,
            )
            .unwrap();
            let expected = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let mm = CpuQMatMul::from_qtensor(&q).unwrap().unwrap();
            let got = mm.rows_f32(&[7, 0, 7]).unwrap();
            assert_eq!(&got[..cols], &expected[7][..], "{dtype:?}");
            assert_eq!(&got[cols..2 * cols], &expected[0][..], "{dtype:?}");
            let err = mm.rows_f32(&[9]).unwrap_err().to_string();
            assert!(err.contains("row 9") && err.contains("9 rows"), "{err}");
        }
    }

    #[test]
    fn other_types_are_left_to_candle() {
        let t = Tensor::zeros((4, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&t, dtype).unwrap();
            assert!(CpuQMatMul::from_qtensor(&q).unwrap().is_none(), "{dtype:?}");
        }
    }

    #[test]
    fn bad_shapes_are_errors_that_name_the_sizes() {
        let t = Tensor::zeros((4, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q4_1).unwrap();
        let mm = CpuQMatMul::from_qtensor(&q).unwrap().unwrap();
        let err = mm
            .matmul(&[0.0; 65], &mut [0.0; 4])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("65 values") && err.contains("64 columns"),
            "{err}"
        );
        let err = mm
            .matmul(&[0.0; 128], &mut [0.0; 4])
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 x 4"), "{err}");
    }
}
