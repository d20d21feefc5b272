//! `cargo xtask keras-golden`: regenerates the Keras golden runs of the trainer's parity test
//! (`trainer/tests/keras_parity.rs`) under `tests/keras-golden/`, by running
//! `tools/keras-golden/golden.py` in a venv of its own, `target/keras-golden/venv`, with the
//! pinned TensorFlow and Keras of `tools/keras-golden/requirements.txt` from the package index.
//! The user's Python installation is only used to create the venv.

use crate::{has_mnist, run_step, workspace_root};
use anyhow::{ensure, Context, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;
use std::process::Command;

/// Arguments of `cargo xtask keras-golden`.
#[derive(ClapArgs)]
pub struct Args {
    /// The Python that creates the venv (3.11 or newer: the script reads TOML with tomllib).
    #[arg(long, default_value = "python3")]
    python: String,
    /// MNIST IDX directory whose first 256 training images the runs use.
    #[arg(long, default_value = "data/mnist", value_parser = crate::from_root)]
    data: PathBuf,
}

/// Makes the venv if missing, installs the pinned packages (a no-op once they are there) and
/// runs the script.
///
/// # Errors
/// No MNIST, no Python, or a failing pip or script.
pub fn run(args: &Args) -> Result<()> {
    let root = workspace_root();
    ensure!(
        has_mnist(&args.data),
        "no MNIST in {}: run `cargo xtask fetch-mnist` first",
        args.data.display()
    );
    let tools = root.join("tools/keras-golden");
    let venv = root.join("target/keras-golden/venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        std::fs::create_dir_all(venv.parent().context("the venv has a parent")?)?;
        run_step(
            &format!("{} -m venv {}", args.python, venv.display()),
            Command::new(&args.python).arg("-m").arg("venv").arg(&venv),
        )?;
    }
    let requirements = tools.join("requirements.txt");
    run_step(
        "pip install -r tools/keras-golden/requirements.txt",
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(&requirements),
    )?;
    run_step(
        "golden.py (writes tests/keras-golden/)",
        Command::new(&python)
            .arg(tools.join("golden.py"))
            .arg("--root")
            .arg(&root)
            .arg("--data")
            .arg(&args.data),
    )
}
