//! Strata: pool mismatched GPUs (and CPUs) into one LLM service.
//!
//! The library behind the `strata` binary: the layered GGUF model, its
//! tokenizer and chat template (`model`), the placement planner
//! (`placement`), device specs (`devices`), the resource manager
//! (`resources`), the engine and its actor (`engine`), the OpenAI HTTP API
//! (`api`) and the command-line commands (`cli`).

pub mod api;
pub mod cli;
pub mod devices;
pub mod engine;
pub mod kernels;
pub mod model;
pub mod model_store;
pub mod placement;
pub mod resources;
pub mod scheduler;
pub mod worker;
