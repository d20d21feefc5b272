//! `cargo xtask keras-golden`: regenerates the Keras golden runs of the trainer's parity test
//! (`trainer/tests/keras_parity.rs`) under `tests/keras-golden/`, by running
//! `tools/keras-golden/golden.py` in the reference scripts' venv ([`crate::venv`]: the pinned
//! TensorFlow 2.21.0 and Keras 3.15.1 of `tools/python-requirements.txt` from the package
//! index). The user's Python installation is only used to create the venv.

use crate::{has_mnist, run_step, venv, workspace_root};
use anyhow::{ensure, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;

/// Arguments of `cargo xtask keras-golden`.
#[derive(ClapArgs)]
pub struct Args {
    /// MNIST IDX directory whose first 256 training images the runs use.
    #[arg(long, default_value = "data/mnist", value_parser = crate::from_root)]
    data: PathBuf,
}

/// Makes the venv if missing and runs the script.
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
    let python = venv::python()?;
    run_step(
        "golden.py (writes tests/keras-golden/)",
        venv::command(&python)
            .arg(root.join("tools/keras-golden/golden.py"))
            .arg("--root")
            .arg(&root)
            .arg("--data")
            .arg(&args.data),
    )
}
