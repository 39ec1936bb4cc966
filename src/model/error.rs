//! Errors raised while reading a GGUF file and building a model from it.
//!
//! Every variant names the thing that is wrong (the file, the metadata key,
//! the tensor, the architecture) so that a user can act on the message alone.

use std::path::PathBuf;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open model file `{path}`: {reason}")]
    Open {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("`{path}` is not a readable GGUF file: {reason}")]
    NotGguf { path: PathBuf, reason: String },
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
    #[error("cannot read tensor `{name}`: {reason}")]
    TensorRead { name: String, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed (message without candle's backtrace).
    #[error("{0}")]
    Candle(String),
}

impl From<candle_core::Error> for LoadError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(candle_message(e))
    }
}

/// The message of a candle error without the backtrace candle attaches when
/// `RUST_BACKTRACE` is set: users get the cause, not a stack dump.
pub fn candle_message(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(*inner),
        e => e.to_string(),
    }
}
