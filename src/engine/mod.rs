//! The engine: a model loaded onto its planned devices with its tokenizer,
//! and the generation loop that runs requests through it.

pub mod generate;
pub mod load;
pub mod stop;

pub use generate::{generate, FinishReason, GenerateRequest, Generation};
pub use load::{load, plan_for, LoadOptions, LoadedModel, PlanReport};

use crate::devices::DeviceError;
use crate::model::LoadError;
use crate::placement::PlacementError;

/// Why loading or generating failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
}
