//! The `strata` binary: parses the command line and dispatches to the
//! library's commands. Exit code 1 on any error, with the message on stderr.

use clap::{Parser, Subcommand};
use strata::cli;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Pool mismatched GPUs (and CPUs) into one LLM service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI API on a model split over the local devices.
    Serve(cli::serve::ServeArgs),
    /// Serve a model and keep a lease with a scheduler.
    Worker(cli::worker::WorkerArgs),
    /// The lease registry of workers and the OpenAI gateway in front of them.
    Scheduler(cli::scheduler::SchedulerArgs),
    /// The cluster as a scheduler sees it.
    Status(cli::status::StatusArgs),
    /// One-shot generation from the command line.
    Generate(cli::generate::GenerateArgs),
    /// Dry run: which layers land on which device, and the bytes on each.
    Plan(cli::plan::PlanArgs),
    /// The devices found, their memory, and what each mode allows on them.
    Devices(cli::devices::DevicesArgs),
    /// Check that a device computes what the CPU and candle compute.
    Check(cli::check::CheckArgs),
    /// Write a synthetic GGUF model (random weights, real tokenizer).
    MakeModel(cli::make_model::MakeModelArgs),
    /// Requantize a GGUF model (llama.cpp's type choices, `q4_k_m` too).
    Quantize(cli::quantize::QuantizeArgs),
    /// The model store: pull, list and remove models.
    Models(cli::models::ModelsArgs),
}

fn main() -> std::process::ExitCode {
    // NVML numbers GPUs by PCI bus; make CUDA's ordinals agree, so that
    // `cuda:N` in `--devices` and GPU N in `strata devices` are one card.
    if std::env::var_os("CUDA_DEVICE_ORDER").is_none() {
        std::env::set_var("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
    }
    let cli = Cli::parse();
    // A server logs what it does; one-shot commands only what goes wrong.
    let default_filter = match cli.command {
        Command::Serve(_) | Command::Worker(_) | Command::Scheduler(_) | Command::Models(_) => {
            "strata=info"
        }
        _ => "strata=warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    let result = match &cli.command {
        Command::Serve(a) => cli::serve::run(a),
        Command::Worker(a) => cli::worker::run(a),
        Command::Scheduler(a) => cli::scheduler::run(a),
        Command::Status(a) => cli::status::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Plan(a) => cli::plan::run(a),
        Command::Devices(a) => cli::devices::run(a),
        Command::Check(a) => cli::check::run(a),
        Command::MakeModel(a) => cli::make_model::run(a),
        Command::Quantize(a) => cli::quantize::run(a),
        Command::Models(a) => cli::models::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
