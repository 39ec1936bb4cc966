//! Command-line commands. `main.rs` parses and dispatches; each command's
//! arguments and body live in its own file here.

pub mod generate;
pub mod make_model;
pub mod model_args;
pub mod plan;
