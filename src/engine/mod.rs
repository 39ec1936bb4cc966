//! The engine: a model loaded onto its planned devices with its tokenizer,
//! and the generation loop that runs requests through it; the pool of
//! models a worker loads and unloads by demand.

pub mod actor;
pub mod check;
pub mod generate;
pub mod load;
pub mod pool;
pub mod stop;

pub use actor::{EngineEvent, EngineHandle, EngineStopped, Summary};
pub use generate::{generate, generate_steps, FinishReason, GenerateRequest, Generation, Step};
pub use load::{load, plan_for, LoadOptions, LoadedModel, PlanReport};
pub use pool::{ModelLease, ModelPool, ModelSpec, PoolError, PoolOptions};

use crate::devices::DeviceError;
use crate::model::error::candle_message;
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
    /// A tensor operation failed (message without candle's backtrace).
    #[error("{0}")]
    Candle(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(candle_message(e))
    }
}
