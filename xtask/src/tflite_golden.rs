//! `cargo xtask tflite-golden`: the TensorFlow Lite golden fixtures of `trainer import`.
//!
//! Creates a Python virtual environment under `target/tflite-golden/venv` (never the user's
//! Python: `python3 -m venv`, then the venv's own pip, `PYTHONNOUSERSITE=1`) with the exact
//! packages of `xtask/tflite-golden/requirements.txt` (tensorflow-cpu 2.21.0 to train and
//! convert, tflite-micro for TensorFlow Lite Micro's interpreter), and runs
//! `xtask/tflite-golden/golden.py`: the Keras tutorial network trained and converted to
//! int8, 100 digits and MLPerf's anomaly-detection model on 100 random inputs through TFLM,
//! the results written to `tests/fixtures/tflite/`. The venv is kept, and rebuilt only when
//! the requirements change. The Rust test `tests/tests/tflite_import.rs` reads the committed
//! files: `cargo test` needs no Python.

use crate::{from_root, has_mnist, run_step, workspace_root};
use anyhow::{ensure, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let requirements = root.join("xtask/tflite-golden/requirements.txt");
    let venv = root.join("target/tflite-golden/venv");
    let python = ensure_venv(&venv, &requirements)?;
    run_step(
        "golden.py (train, convert, run TFLM)",
        python_command(&python)
            .arg(root.join("xtask/tflite-golden/golden.py"))
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

/// A command running the venv's `python`, isolated from the user's site packages.
fn python_command(python: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.env("PYTHONNOUSERSITE", "1")
        .env("PIP_REQUIRE_VIRTUALENV", "1")
        .env_remove("PYTHONPATH")
        .current_dir(workspace_root());
    cmd
}

/// The venv's python, after creating the venv at `venv` with `requirements` installed if it
/// is missing or was made from other requirements.
fn ensure_venv(venv: &Path, requirements: &Path) -> Result<PathBuf> {
    let wanted = std::fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = venv.join("installed-requirements.txt");
    let python = venv.join("bin/python");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    run_step(
        "python3 -m venv --clear target/tflite-golden/venv",
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(venv)
            .env("PYTHONNOUSERSITE", "1"),
    )?;
    run_step(
        "pip install -r xtask/tflite-golden/requirements.txt (into the venv)",
        python_command(&python)
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "-r"])
            .arg(requirements),
    )?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}
