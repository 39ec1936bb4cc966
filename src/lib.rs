//! Strata: pool mismatched GPUs (and CPUs) into one LLM service.
//!
//! The library behind the `strata` binary: the layered GGUF model and its
//! tokenizer (`model`), the placement planner (`placement`), device specs
//! (`devices`) and generation (`generate`).

pub mod api;
pub mod cli;
pub mod devices;
pub mod engine;
pub mod model;
pub mod placement;
pub mod resources;
