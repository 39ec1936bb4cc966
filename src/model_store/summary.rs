//! What `strata models list` says of a GGUF file, read from its header
//! only: architecture, layer count, and the weight type holding most bytes
//! (the quantization a file is known by, e.g. Q4_1).

use std::collections::HashMap;
use std::path::Path;

use crate::model::gguf::{stored_bytes, GgufFile};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelSummary {
    pub architecture: String,
    pub layers: Option<u64>,
    pub quant: String,
}

pub fn summarize(path: &Path) -> Result<ModelSummary, crate::model::LoadError> {
    let gguf = GgufFile::open(path)?;
    let architecture = gguf
        .opt_str("general.architecture")?
        .unwrap_or("unknown")
        .to_string();
    let layers = gguf.u64(&format!("{architecture}.block_count")).ok();
    let mut bytes_by_type: HashMap<String, u64> = HashMap::new();
    for info in gguf.content().tensor_infos.values() {
        *bytes_by_type
            .entry(format!("{:?}", info.ggml_dtype))
            .or_default() += stored_bytes(info);
    }
    let quant = bytes_by_type
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map_or_else(|| "-".into(), |(t, _)| t);
    Ok(ModelSummary {
        architecture,
        layers,
        quant,
    })
}
