//! The model store: where model files live on a node and how they get
//! there.
//!
//! - [`reference`]: `PATH` or `hf:owner/repo/file.gguf[@revision]`.
//! - [`cache`]: the Hugging Face hub cache layout (find, list, remove).
//! - [`pull`]: downloads through `hf-hub` with resume and a SHA-256 check;
//!   [`progress`]: what a pull shows while it runs.
//! - [`catalog`]: digests pinned by the operator; [`digest`]: SHA-256.
//! - [`summary`]: architecture, layers and quantization of a file;
//!   [`inventory`]: every model in the store with those.

pub mod cache;
pub mod catalog;
pub mod digest;
pub mod inventory;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod summary;

pub use cache::HubCache;
pub use reference::{HubFile, ModelRef};
