//! Errors raised while reading a GGUF file and building a model from it.
//!
//! Every variant names the thing that is wrong (the file, the metadata key,
//! the tensor, the architecture) so that a user can act on the message alone.

use std::path::PathBuf;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open model file `{path}`: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not a readable GGUF file: {source}")]
    NotGguf {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("unsupported architecture `{0}` (supported: llama, mistral, qwen2, qwen3)")]
    UnknownArchitecture(String),
    #[error("metadata key `{0}` is missing from the GGUF file")]
    MissingMetadata(String),
    #[error("metadata key `{key}` has an unexpected type: expected {expected}, got {got}")]
    MetadataType {
        key: String,
        expected: &'static str,
        got: String,
    },
    #[error("metadata key `{key}` is invalid: {reason}")]
    InvalidMetadata { key: String, reason: String },
    #[error("tensor `{0}` is missing from the GGUF file")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A caller's argument (stages, context size) that cannot work with this model.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read tensor `{name}`: {source}")]
    TensorRead {
        name: String,
        source: candle_core::Error,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
