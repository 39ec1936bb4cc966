//! A quantized linear layer: Strata's CPU kernels where they serve the
//! weight type, candle's `QMatMul` everywhere else (float types, CUDA).

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};

use crate::kernels::CpuQMatMul;

#[derive(Debug)]
pub enum Linear {
    Cpu(CpuQMatMul),
    Candle(QMatMul),
}

impl Linear {
    pub fn from_qtensor(t: QTensor) -> Result<Self> {
        Ok(match CpuQMatMul::from_qtensor(&t)? {
            Some(cpu) => Self::Cpu(cpu),
            None => Self::Candle(QMatMul::from_qtensor(t)?),
        })
    }

    /// Rows `ids` (shape `(1, n)`) of the matrix: an embedding lookup,
    /// shape `(1, n, cols)`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Cpu(m) => {
                let ids = ids.flatten_all()?.to_vec1::<u32>()?;
                let n = ids.len();
                Tensor::from_vec(m.rows_f32(&ids)?, (1, n, m.cols()), &Device::Cpu)
            }
            Self::Candle(m) => m.embedding(ids),
        }
    }

    /// `x`, rows of `cols` values on the host, times the transpose: a new
    /// vector of as many rows of the output width.
    pub fn forward_host(&self, x: &[f32], cols: usize) -> Result<Vec<f32>> {
        match self {
            Self::Cpu(m) => {
                let mut out = vec![0f32; x.len() / m.cols() * m.rows()];
                m.matmul(x, &mut out)?;
                Ok(out)
            }
            Self::Candle(m) => {
                let t = Tensor::from_slice(x, (x.len() / cols, cols), &Device::Cpu)?;
                m.forward(&t)?.flatten_all()?.to_vec1()
            }
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Cpu(m) => m.forward(x),
            Self::Candle(m) => m.forward(x),
        }
    }
}
