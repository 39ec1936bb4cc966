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
        let (d, id) = q8_scale(x);
        for (q, v) in y.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        y.d = f16::from_f32(d);
    }
}

/// Quantizes `xs` (a multiple of 32 long) into Q8_1 blocks as GGML's
/// `quantize_row_q8_1` does: `d = max|x| / 127`, `q = round(x / d)`.
pub fn quantize_q8_1(xs: &[f32], ys: &mut [BlockQ8_1]) {
    debug_assert_eq!(xs.len(), ys.len() * QK);
    for (x, y) in xs.chunks_exact(QK).zip(ys.iter_mut()) {
        let (d, id) = q8_scale(x);
        let mut sum = 0i32;
        for (q, v) in y.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += i32::from(*q);
        }
        y.d = f16::from_f32(d);
        y.s = f16::from_f32(sum as f32) * y.d;
    }
}
