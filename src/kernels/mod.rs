//! CPU kernels for quantized matrix products, where candle's are slow or
//! missing (Q4_1 has no SIMD path in candle 0.11).
//!
//! The weights stay in GGML's block layout, read straight from the QTensor
//! bytes; activations are quantized once per product into the 8-bit block
//! type GGML pairs with the weight type (Q8_1 for Q4_1), exactly as candle
//! and llama.cpp do, so every block's integer dot product is the same and
//! only the order of the float sums differs. Each kernel has a scalar
//! version, the reference its SIMD version is tested against; AVX2+FMA is
//! (with F16C) picked at run time. Work is split by output rows over candle's
//! persistent barrier pool, the one its own kernels use, so the two never
//! oversubscribe the cores.

/// `$avx2` (an AVX2 kernel) where the CPU has AVX2, FMA and F16C, else
/// `$fallback`: the body of every dispatching kernel function.
macro_rules! fastest {
    ($avx2:expr, $fallback:expr) => {{
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
            return unsafe { $avx2 };
        }
        $fallback
    }};
}

pub mod blocks;
pub mod dot;
pub mod qmatmul;

pub use qmatmul::CpuQMatMul;

/// Whether this CPU runs the AVX2 kernels (AVX2, FMA and F16C; checked
/// once).
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
