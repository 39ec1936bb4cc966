//! The model: GGUF reading, the layered llama-family forward pass, the
//! tokenizer built from GGUF metadata, sampling, and synthetic test models.

pub mod accounting;
pub mod block;
pub mod chat_template;
pub mod config;
pub mod error;
pub mod gguf;
pub mod host_ops;
pub mod kv_cache;
pub mod layered;
pub mod linear;
pub mod requantize;
pub mod rope;
pub mod sampling;
pub mod synth;
pub mod tokenizer;

pub use config::{Architecture, ModelConfig};
pub use error::LoadError;
pub use gguf::GgufFile;
pub use layered::{LayeredModel, Sequence, StageSpec};
pub use tokenizer::Tokenizer;
