//! A GGUF file opened for reading: typed metadata access and tensor loading.
//!
//! The header (metadata and tensor infos) is parsed once by candle's reader;
//! tensor data is read on demand, one tensor at a time, straight onto the
//! device that will own it. Every lookup failure names the key or tensor.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use super::error::{candle_message, LoadError};

/// An open GGUF file.
pub struct GgufFile {
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens `path` and parses its header; tensor data is not read yet.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|reason| LoadError::Open {
            path: path.clone(),
            reason,
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| LoadError::NotGguf {
            path,
            reason: candle_message(e),
        })?;
        Ok(Self { content, reader })
    }

    /// The parsed header, for code (such as candle's reference model) that
    /// wants candle's own types.
    pub fn content(&self) -> &Content {
        &self.content
    }

    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn required(&self, key: &str) -> Result<&Value, LoadError> {
        self.metadata(key)
            .ok_or_else(|| LoadError::MissingMetadata(key.to_string()))
    }

    /// An unsigned integer of any width (GGUF writers disagree on widths).
    pub fn u64(&self, key: &str) -> Result<u64, LoadError> {
        value_as_u64(self.required(key)?)
            .ok_or_else(|| type_error(key, "integer", self.metadata(key)))
    }

    pub fn usize(&self, key: &str) -> Result<usize, LoadError> {
        Ok(self.u64(key)? as usize)
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(_) => self.usize(key).map(Some),
        }
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, LoadError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => value_as_f64(v)
                .map(|v| Some(v as f32))
                .ok_or_else(|| type_error(key, "float", Some(v))),
        }
    }

    pub fn f32(&self, key: &str) -> Result<f32, LoadError> {
        self.opt_f32(key)?
            .ok_or_else(|| LoadError::MissingMetadata(key.to_string()))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(type_error(key, "bool", Some(v))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, LoadError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(type_error(key, "string", Some(v))),
        }
    }

    pub fn str(&self, key: &str) -> Result<&str, LoadError> {
        self.opt_str(key)?
            .ok_or_else(|| LoadError::MissingMetadata(key.to_string()))
    }

    /// An array of strings (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`).
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>, LoadError> {
        let Value::Array(items) = self.required(key)? else {
            return Err(type_error(key, "array of strings", self.metadata(key)));
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(type_error(key, "array of strings", Some(other))),
            })
            .collect()
    }

    /// An optional numeric array (`tokenizer.ggml.scores`, `token_type`).
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, LoadError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| value_as_f64(v).map(|x| x as f32))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| type_error(key, "array of numbers", self.metadata(key))),
            Some(v) => Err(type_error(key, "array of numbers", Some(v))),
        }
    }

    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo, LoadError> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor(name.to_string()))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Bytes the tensor occupies in its stored (quantized) form.
    pub fn tensor_bytes(&self, name: &str) -> Result<u64, LoadError> {
        Ok(stored_bytes(self.tensor_info(name)?))
    }

    /// Reads one tensor onto `device`.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor, LoadError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor(name.to_string()))?;
        let offset = self.content.tensor_data_offset;
        info.read(&mut self.reader, offset, device)
            .map_err(|e| LoadError::TensorRead {
                name: name.to_string(),
                reason: candle_message(e),
            })
    }

    /// Reads the matrices `names` (same type, same column count) as one
    /// matrix whose rows are theirs stacked in order, so one matmul computes
    /// all of them. `None` when their types or widths differ.
    pub fn stacked_rows(
        &mut self,
        names: &[&str],
        device: &Device,
    ) -> Result<Option<QTensor>, LoadError> {
        let mut dtype = None;
        let mut cols = None;
        let mut rows = 0;
        for name in names {
            let info = self.tensor_info(name)?;
            let &[r, c] = info.shape.dims() else {
                return Ok(None);
            };
            if dtype.is_some_and(|d| d != info.ggml_dtype) || cols.is_some_and(|x| x != c) {
                return Ok(None);
            }
            dtype = Some(info.ggml_dtype);
            cols = Some(c);
            rows += r;
        }
        let (Some(dtype), Some(cols)) = (dtype, cols) else {
            return Ok(None);
        };
        let mut raw = Vec::new();
        for name in names {
            let info = self.tensor_info(name)?;
            let start = self.content.tensor_data_offset + info.offset;
            let len = stored_bytes(info) as usize;
            let at = raw.len();
            raw.resize(at + len, 0u8);
            let reader = &mut self.reader;
            reader
                .seek(SeekFrom::Start(start))
                .and_then(|_| reader.read_exact(&mut raw[at..]))
                .map_err(|e| LoadError::TensorRead {
                    name: name.to_string(),
                    reason: format!("{e} ({len} bytes at offset {start})"),
                })?;
        }
        let t = candle_core::quantized::ggml_file::qtensor_from_ggml(
            dtype,
            &raw,
            vec![rows, cols],
            device,
        )?;
        Ok(Some(t))
    }
}

/// Writes a GGUF file of `metadata` and `tensors` (in the given order) to
/// `path`: what the synthetic models and requantized files are made with.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[(String, QTensor)],
) -> candle_core::Result<()> {
    let mut file = std::io::BufWriter::new(File::create(path)?);
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    candle_core::quantized::gguf_file::write(&mut file, &md, &ts)?;
    std::io::Write::flush(&mut file)?;
    Ok(())
}

/// Bytes of a tensor in its stored form: whole blocks of its GGML type.
pub fn stored_bytes(info: &TensorInfo) -> u64 {
    let elems = info.shape.elem_count() as u64;
    let block = info.ggml_dtype.block_size() as u64;
    elems.div_ceil(block) * info.ggml_dtype.type_size() as u64
}

fn value_as_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x as u64),
        Value::U16(x) => Some(x as u64),
        Value::U32(x) => Some(x as u64),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

fn value_as_f64(v: &Value) -> Option<f64> {
    match *v {
        Value::F32(x) => Some(x as f64),
        Value::F64(x) => Some(x),
        Value::I8(x) => Some(x as f64),
        Value::I16(x) => Some(x as f64),
        Value::I32(x) => Some(x as f64),
        Value::I64(x) => Some(x as f64),
        _ => value_as_u64(v).map(|x| x as f64),
    }
}

fn type_error(key: &str, expected: &'static str, got: Option<&Value>) -> LoadError {
    LoadError::MetadataType {
        key: key.to_string(),
        expected,
        got: got.map_or("nothing".to_string(), |v| format!("{:?}", v.value_type())),
    }
}
