//! `trainer`: train the tutorial CNN, quantize it to int8, evaluate, inspect and draw it.

use clap::{Parser, Subcommand};
use trainer::commands::{
    eval, fit, import, infer, predict, quantize, report, summary, StoppedBySignal,
};

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
    /// Print the Keras-style layer table, parameter count, flash and RAM.
    Summary(summary::SummaryArgs),
    /// Classify one test image or a picture of your own, with the class probabilities.
    Predict(predict::PredictArgs),
    /// Quantize a float checkpoint (fit --save-float) into a model.bin.
    Quantize(quantize::QuantizeArgs),
    /// Draw the tutorial's pictures (PNG) and an index.html.
    Report(report::ReportArgs),
    /// Import a TensorFlow Lite int8 model (.tflite) as a model.bin.
    Import(import::ImportArgs),
    /// Run a model.bin or .tflite on a batch of .npy inputs, writing its outputs as .npy.
    Infer(infer::InferArgs),
}

fn main() {
    // `trainer … | head` ends quietly (status 141), as `cat` does, instead of panicking.
    if let Err(e) = trainer::pipe::exit_quietly_when_closed() {
        eprintln!("error: cannot install the SIGPIPE handler: {e}");
        std::process::exit(1);
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Fit(args) => fit::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Report(args) => report::run(args),
        Command::Import(args) => import::run(args),
        Command::Infer(args) => infer::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        let status = e
            .downcast_ref::<StoppedBySignal>()
            .map_or(1, |stopped| 128 + stopped.signal);
        std::process::exit(status);
    }
}
