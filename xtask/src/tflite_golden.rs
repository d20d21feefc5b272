//! `cargo xtask tflite-golden`: the TensorFlow Lite golden fixtures of `trainer import`.
//!
//! Runs `tools/tflite-golden/golden.py` in the reference scripts' venv ([`crate::venv`]:
//! tensorflow-cpu 2.21.0 to train and convert, tflite-micro for TensorFlow Lite Micro's
//! interpreter): the Keras tutorial network trained and converted to int8, 100 digits and
//! MLPerf's anomaly-detection model on 100 random inputs through TFLM, the results written
//! to `tests/fixtures/tflite/`. The Rust test `tests/tests/tflite_import.rs` reads the
//! committed files: `cargo test` needs no Python.

use crate::{from_root, has_mnist, run_step, venv, workspace_root};
use anyhow::{ensure, Result};
use clap::Args;
use std::path::PathBuf;

/// Options of `cargo xtask tflite-golden`.
#[derive(Args)]
pub struct GoldenArgs {
    /// MNIST IDX directory (`cargo xtask fetch-mnist` makes it).
    #[arg(long, default_value = "data/mnist", value_parser = from_root)]
    pub data: PathBuf,
    /// Where the golden files go.
    #[arg(long, default_value = "tests/fixtures/tflite", value_parser = from_root)]
    pub out: PathBuf,
}

/// Runs `cargo xtask tflite-golden`.
///
/// # Errors
/// No MNIST data, no `python3`, a failed install (the pinned wheels need a Python they
/// are built for: 3.11 was used), or a failed script.
pub fn run(args: &GoldenArgs) -> Result<()> {
    ensure!(
        has_mnist(&args.data),
        "{} has no MNIST data: run `cargo xtask fetch-mnist` first",
        args.data.display()
    );
    ensure!(
        args.out.is_dir(),
        "{} is not a directory (create it first)",
        args.out.display()
    );
    let root = workspace_root();
    let python = venv::python()?;
    run_step(
        "golden.py (train, convert, run TFLM)",
        venv::command(&python)
            .arg(root.join("tools/tflite-golden/golden.py"))
            .arg(&args.data)
            .arg(root.join("tests/fixtures/mlperf-tiny"))
            .arg(&args.out),
    )?;
    eprintln!(
        "Wrote the golden files to {}; check them with `cargo test --release -p e2e-tests \
         --test tflite_import`",
        args.out.display()
    );
    Ok(())
}
