//! `trainer`: train the tutorial CNN, quantize it to int8 and evaluate it.

use clap::{Parser, Subcommand};
use trainer::commands::{eval, fit};

/// Train the Keras MNIST tutorial CNN, quantize it to int8 and evaluate it with infer-core.
#[derive(Parser)]
#[command(name = "trainer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the model, quantize it to int8 and write model.bin.
    Fit(fit::FitArgs),
    /// Evaluate a model.bin on the test set with infer-core's int8 kernels.
    Eval(eval::EvalArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Fit(args) => fit::run(args),
        Command::Eval(args) => eval::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
