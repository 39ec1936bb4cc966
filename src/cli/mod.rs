//! Command-line commands. `main.rs` parses and dispatches; each command's
//! arguments and body live in its own file here.

pub mod all_in_one;
pub mod check;
pub mod devices;
pub mod generate;
pub mod listen;
pub mod local_worker;
pub mod make_model;
pub mod model_args;
pub mod models;
pub mod node_models;
pub mod plan;
pub mod quantize;
pub mod resource_args;
pub mod scheduler;
pub mod serve;
pub mod status;
pub mod table;
pub mod worker;

/// Writes a command's output to stdout; a reader that went away (a pipe
/// to `head`) ends the output quietly instead of panicking like `print!`.
pub fn print_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
